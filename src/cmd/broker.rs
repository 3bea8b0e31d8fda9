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
}

/// `paddock broker fetch|which`: prints a binary's path on stdout, for scripts
/// (`NATS_SERVER_BIN=$(paddock broker fetch)`).
pub fn run(command: &BrokerCommand) -> anyhow::Result<()> {
    let path = match command {
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
