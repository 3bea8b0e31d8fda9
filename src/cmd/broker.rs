//! `paddock broker fetch|which`: the local nats-server paddock starts when no broker
//! is at hand (see [`crate::broker`]).

use clap::Subcommand;

use crate::broker;

#[derive(Debug, Clone, Subcommand)]
pub enum BrokerCommand {
    /// Fetch the pinned NATS Server release into paddock's cache (checked against
    /// its pinned SHA-256; a damaged copy is fetched again) and print its path.
    /// The cache is $XDG_CACHE_HOME/paddock, else ~/.cache/paddock.
    Fetch,
    /// Print the nats-server that demo, bench and the tests would start:
    /// NATS_SERVER_BIN, else `nats-server` on PATH, else the pinned release
    /// (fetched if missing).
    Which,
    /// Print the subject mappings that split sessions into N partitions, for the
    /// broker's configuration (top level, or inside paddock's account block), to
    /// go with `paddock serve --partitions N --owns …`.
    Mappings {
        /// How many partitions (2 to 64).
        #[arg(long, env = "PADDOCK_PARTITIONS", value_parser = clap::value_parser!(u32).range(2..=i64::from(crate::server::partitions::MAX_PARTITIONS)))]
        partitions: u32,
    },
}

/// `paddock broker fetch|which`: prints a binary's path on stdout, for scripts
/// (`NATS_SERVER_BIN=$(paddock broker fetch)`).
pub fn run(command: &BrokerCommand) -> anyhow::Result<()> {
    let path = match command {
        BrokerCommand::Mappings { partitions } => {
            out!("{}", broker::mappings_config(*partitions).trim_end());
            return Ok(());
        }
        BrokerCommand::Fetch => broker::managed()?,
        BrokerCommand::Which => {
            let (path, source) = broker::locate_from_env()?;
            say!("{} ({source:?})", broker::version(&path));
            path
        }
    };
    out!("{}", path.display());
    Ok(())
}
