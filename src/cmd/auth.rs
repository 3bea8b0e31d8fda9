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
    /// DIR: nats-operator.conf (include it from the broker's configuration),
    /// issuer.account and issuer.seed (the processor's --issuer-account and
    /// --issuer-signing-seed), processor.creds, ops.creds and creator.creds.
    Init {
        /// Where to write; created if missing. Keep it private: it holds seeds.
        #[arg(long, env = "PADDOCK_AUTH_DIR")]
        out: PathBuf,
    },
}

/// `paddock auth …`.
pub fn run(args: &AuthArgs) -> anyhow::Result<()> {
    match &args.command {
        AuthCommand::Init { out } => {
            let setup = OperatorSetup::new();
            setup.write(out)?;
            println!(
                "wrote {dir}/: nats-operator.conf, issuer.account, issuer.seed, \
                 processor.creds, ops.creds, creator.creds\n\
                 broker:    include {dir}/nats-operator.conf from its configuration (JetStream on)\n\
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
