//! `paddock auth init`: the production setup for per-session access.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::server::credentials::OperatorSetup;

#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    #[command(subcommand)]
    pub command: AuthCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AuthCommand {
    /// Make a new operator, system account and paddock account, and write into
    /// DIR: nats-operator.conf (the broker's trust; `nats-server.conf` beside it
    /// includes it), issuer.account and issuer.seed (the processor's
    /// --issuer-account and --issuer-signing-seed), processor.creds, ops.creds,
    /// creator.creds and leaf.creds (a track broker's uplink to its hub:
    /// `paddock broker config --creds`).
    Init {
        /// Where to write; created if missing. Keep it private: it holds seeds.
        #[arg(long, env = "PADDOCK_AUTH_DIR")]
        out: PathBuf,
        /// Replace an existing setup in DIR. A new operator invalidates every
        /// credential the old one issued, so this is refused without it.
        #[arg(long, env = "PADDOCK_AUTH_FORCE")]
        force: bool,
        /// Write the subject mappings that split sessions into N partitions into
        /// the account (for `paddock serve --partitions N --owns …`); 1: none.
        #[arg(long, env = "PADDOCK_PARTITIONS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::server::partitions::MAX_PARTITIONS)))]
        partitions: u32,
        /// The JetStream domain of the track's broker (`paddock broker config
        /// --domain`): leaf.creds lets the hub's mirrors reach its API alone.
        #[arg(long, env = "PADDOCK_DOMAIN", default_value = "track")]
        leaf_domain: String,
    },
}

/// `paddock auth …`.
pub fn run(args: &AuthArgs) -> anyhow::Result<()> {
    match &args.command {
        AuthCommand::Init {
            out,
            force,
            partitions,
            leaf_domain,
        } => {
            crate::broker::leaf::valid_domain(leaf_domain).map_err(anyhow::Error::msg)?;
            if out.join("nats-operator.conf").exists() && !force {
                anyhow::bail!(
                    "{} already holds an operator setup; a new one would invalidate every \
                     credential it issued. Pass --force to replace it.",
                    out.display()
                );
            }
            let mut setup = OperatorSetup::new();
            setup.partitions = *partitions;
            setup.leaf_domain = leaf_domain.clone();
            setup.write(out)?;
            out!(
                "wrote {dir}/: nats-operator.conf, nats-server.conf, issuer.account, issuer.seed, \
                 processor.creds, ops.creds, creator.creds, leaf.creds\n\
                 broker:    nats-server -c {dir}/nats-server.conf   (or, in a configuration of \
                 your own: include <path of nats-operator.conf relative to that file>; \
                 JetStream on)\n\
                 processor: paddock serve --creds {dir}/processor.creds \\\n           \
                 --issuer-account {account} --issuer-signing-seed {dir}/issuer.seed\n\
                 ops:       paddock sessions list --creds {dir}/ops.creds --inbox-prefix _INBOX_ops",
                dir = out.display(),
                account = setup.account.public_key(),
            );
            Ok(())
        }
    }
}
