//! The binary's commands: the only place clap appears. One file per
//! `paddock <command>`, its flags beside its `run`; `main.rs` parses [`Cli`] and
//! calls [`run`].

mod acc_broadcast;
pub mod args;
mod attach;
pub mod auth;
pub mod bench;
pub mod broker;
pub mod chaos;
mod datagrams;
pub mod demo;
mod endings;
mod f1;
pub mod format;
mod forza;
pub mod gt7;
pub mod hub;
pub mod monitor;
mod monitoring;
pub mod serve;
pub mod sessions;
mod shm;
pub mod shutdown;
pub mod sim;
pub mod telemetry;
pub mod watch;

use clap::{Parser, Subcommand};

use telemetry::LogFormat;

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
    Serve(serve::ServeArgs),
    /// Run a local stack: a broker from nats.conf (unless one is reachable), the
    /// processor and a few simulated monitors.
    Demo(demo::DemoArgs),
    /// List, inspect and delete sessions through the broker (ops).
    Sessions(sessions::SessionsArgs),
    /// Simulate a monitor (or many): create a session, send a setup, stream telemetry.
    Monitor(monitor::MonitorArgs),
    /// Watch one session live: a race engineer's view in the terminal.
    Watch(watch::WatchArgs),
    /// Measure paddock beside raw NATS and a JetStream KV bucket, in one run,
    /// against a broker and a processor it starts itself (docs/BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// 24 hours in minutes: load, injected faults (processors killed and paused,
    /// broker nodes killed), invariants checked; a table for docs/RELIABILITY.md.
    Chaos(chaos::ChaosArgs),
    /// Set up per-session access (docs/SECURITY.md): `paddock auth init --out DIR`
    /// writes a broker configuration in operator mode and paddock's credentials.
    Auth(auth::AuthArgs),
    /// The local nats-server that demo, bench and the tests start when no broker
    /// is at hand.
    #[command(subcommand)]
    Broker(broker::BrokerCommand),
    /// At home: mirror a track's records at the hub and answer get, list, laps
    /// and stints from them while the track is out of reach (`"as_of"`).
    Hub(hub::HubArgs),
    /// The fixed workload `bench` counts instructions of, under callgrind.
    #[command(hide = true)]
    BenchHotpath(bench::HotpathArgs),
    /// The plain subscriber of the bench's `pinned` part, in a process of its own.
    #[command(hide = true)]
    BenchSink(bench::SinkArgs),
    /// The plain responder of the bench's `get` part, in a process of its own.
    #[command(hide = true)]
    BenchEcho(bench::EchoArgs),
}

impl Command {
    /// The log level when RUST_LOG is not set: long-running services log their
    /// life at info; commands a person runs stay quiet unless something is wrong.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Serve(_) | Command::Demo(_) | Command::Hub(_) => "info",
            Command::Sessions(_)
            | Command::Monitor(_)
            | Command::Watch(_)
            | Command::Bench(_)
            | Command::Auth(_)
            | Command::Broker(_)
            | Command::BenchHotpath(_)
            | Command::BenchSink(_)
            | Command::BenchEcho(_) => "warn",
            // Its own clients see the faults it injects: expected, and reported
            // in its table instead.
            Command::Chaos(_) => "error",
        }
    }

    /// The runtime's worker threads: `serve` chooses (--worker-threads); every
    /// other command takes tokio's default (one per core).
    pub fn worker_threads(&self) -> Option<usize> {
        match self {
            Command::Serve(args) => Some(args.worker_threads.into()),
            // Run as `serve` runs by default, so that the two consumers compare.
            Command::BenchSink(_) | Command::BenchEcho(_) => Some(1),
            _ => None,
        }
    }

    /// Whether logs may be written to the terminal. Not under the full-screen watch
    /// view: a log line would be drawn over it (the view shows the link state itself).
    pub fn logs_to_terminal(&self) -> bool {
        !matches!(self, Command::Watch(args) if !args.plain)
    }
}

/// Runs the parsed command line until it is done (or, for the long-running
/// commands, until SIGINT or SIGTERM).
pub async fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Serve(args) => serve::run(args, shutdown::signal()).await,
        Command::Demo(args) => demo::run(args, shutdown::signal()).await,
        Command::Sessions(args) => sessions::run(args).await,
        Command::Monitor(args) => monitor::run(args, shutdown::signal()).await,
        Command::Watch(args) => watch::run(args, shutdown::signal()).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Chaos(args) => chaos::run(args).await,
        Command::Auth(args) => auth::run(args),
        Command::Broker(command) => broker::run(command),
        Command::Hub(args) => hub::run(args, shutdown::signal()).await,
        Command::BenchHotpath(args) => {
            bench::hotpath(args.frames, args.frame == "rich", args.lap_field.0.clone())
        }
        Command::BenchSink(args) => bench::sink(args).await,
        Command::BenchEcho(args) => bench::echo(args).await,
    }
}

/// How to run this binary again, for commands printed to the user: the path of the
/// running executable, relative to the working directory when it is below it (so
/// after `cargo run` it reads `target/release/paddock`), else `paddock`.
pub fn self_command() -> String {
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().ok();
    match (exe, cwd) {
        (Some(exe), Some(cwd)) => match exe.strip_prefix(&cwd) {
            Ok(relative) => relative.display().to_string(),
            Err(_) if exe.file_name().is_some_and(|n| n == "paddock") && on_path(&exe) => {
                "paddock".into()
            }
            Err(_) => exe.display().to_string(),
        },
        _ => "paddock".into(),
    }
}

fn on_path(exe: &std::path::Path) -> bool {
    let Some(dir) = exe.parent() else {
        return false;
    };
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d == dir))
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
