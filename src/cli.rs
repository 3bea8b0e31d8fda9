//! Command-line interface. Every flag can also come from the environment, so the
//! same binary is configured by a shell, a systemd unit or a compose file alike.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::app::Limits;
use crate::telemetry::LogFormat;

/// paddock: live sim-racing sessions on NATS.
#[derive(Debug, Parser)]
#[command(name = "paddock", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format (filter with RUST_LOG, e.g. RUST_LOG=paddock=debug).
    #[arg(long, env = "PADDOCK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the session processor until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Run a local stack: a broker from nats.conf (unless one is reachable) and the processor.
    Demo(DemoArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Largest frame or request accepted, in bytes; larger ones are refused with 413.
    /// Keep it below the broker's max_payload (1 MiB by default).
    #[arg(long, env = "PADDOCK_MAX_PAYLOAD", default_value_t = Limits::default().max_payload)]
    pub max_payload: usize,
    /// Most live sessions; past it, sessions.create answers 503.
    #[arg(long, env = "PADDOCK_MAX_SESSIONS", default_value_t = Limits::default().max_sessions)]
    pub max_sessions: usize,
}

impl ServeArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_payload: self.max_payload,
            max_sessions: self.max_sessions,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Broker configuration used when no broker is reachable at --nats-url.
    #[arg(long, env = "PADDOCK_NATS_CONF", default_value = "nats.conf")]
    pub nats_conf: PathBuf,
    /// nats-server binary used to start that broker.
    #[arg(long, env = "NATS_SERVER_BIN", default_value = "nats-server")]
    pub nats_server_bin: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
