//! `paddock broker fetch|which`: the local nats-server paddock starts when no broker
//! is at hand (see [`crate::broker`]); `broker mappings` and `broker config`: the
//! configuration of brokers paddock runs on.

use std::path::PathBuf;

use clap::Subcommand;

use crate::broker;

// Parsed once per run: the size of the largest variant (`config`'s paths)
// costs nothing worth boxing it for.
#[allow(clippy::large_enum_variant)]
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
    /// Write the configurations of a track's broker and its hub: the track's
    /// broker is a leaf node of the hub (it dials out, needs no inbound port) with
    /// a JetStream domain of its own, so the pit wall works with the uplink down,
    /// and the hub mirrors what it records (`paddock hub --mirror-of DOMAIN`).
    /// Writes DIR/track.conf and DIR/hub.conf (docs/ARCHITECTURE.md, "At the
    /// track and at home").
    Config {
        /// The hub's leaf listener as the track dials it, e.g.
        /// nats-leaf://hub.example.com:7422 (tls://… with TLS).
        #[arg(long, env = "PADDOCK_LEAF_OF")]
        leaf_of: String,
        /// The credentials the track's broker presents to the hub: `leaf.creds`
        /// from `paddock auth init`, which lets only paddock's subjects cross.
        #[arg(long, env = "PADDOCK_LEAF_CREDS")]
        creds: Option<PathBuf>,
        /// The directory `paddock auth init` wrote: both brokers then trust its
        /// operator (one operator: credentials issued at the track work at the
        /// hub with the same scope), and the leaf binds paddock's account.
        #[arg(long, env = "PADDOCK_AUTH_DIR")]
        auth: Option<PathBuf>,
        /// The track's JetStream domain (what `paddock hub --mirror-of` names).
        #[arg(long, env = "PADDOCK_DOMAIN", default_value = "track")]
        domain: String,
        /// The hub's JetStream domain.
        #[arg(long, env = "PADDOCK_HUB_DOMAIN", default_value = "hub")]
        hub_domain: String,
        /// Each broker's client port.
        #[arg(long, env = "PADDOCK_BROKER_PORT", default_value_t = 4222)]
        port: u16,
        /// Each broker's WebSocket port (the dashboard page).
        #[arg(long, env = "PADDOCK_BROKER_WS_PORT", default_value_t = 8080)]
        ws_port: u16,
        /// Each broker's JetStream store.
        #[arg(
            long,
            env = "PADDOCK_BROKER_STORE",
            default_value = "/var/lib/nats-server"
        )]
        store_dir: PathBuf,
        /// With --leaf-of tls://…: the hub's certificate for its leaf
        /// listener (PEM; its name as the tracks dial the hub).
        #[arg(long, env = "PADDOCK_HUB_TLS_CERT", requires = "hub_tls_key")]
        hub_tls_cert: Option<PathBuf>,
        /// With --leaf-of tls://…: the key of --hub-tls-cert (PEM).
        #[arg(long, env = "PADDOCK_HUB_TLS_KEY", requires = "hub_tls_cert")]
        hub_tls_key: Option<PathBuf>,
        /// The CA the track checks the hub's certificate against, when it is
        /// not one the system trusts (PEM).
        #[arg(long, env = "PADDOCK_HUB_TLS_CA", requires = "hub_tls_cert")]
        hub_tls_ca: Option<PathBuf>,
        /// Where to write track.conf and hub.conf; created if missing.
        #[arg(long, env = "PADDOCK_BROKER_OUT", default_value = ".")]
        out: PathBuf,
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
        BrokerCommand::Config {
            leaf_of,
            creds,
            auth,
            domain,
            hub_domain,
            port,
            ws_port,
            store_dir,
            hub_tls_cert,
            hub_tls_key,
            hub_tls_ca,
            out,
        } => {
            for d in [domain, hub_domain] {
                broker::leaf::valid_domain(d).map_err(anyhow::Error::msg)?;
            }
            anyhow::ensure!(
                domain != hub_domain,
                "the track and the hub need different domains (both are {domain:?})"
            );
            let operator = match auth {
                Some(dir) => {
                    let account = std::fs::read_to_string(dir.join("issuer.account"))
                        .map_err(|e| {
                            anyhow::anyhow!(
                                "cannot read {}/issuer.account ({e}); run `paddock auth init --out {}` first",
                                dir.display(),
                                dir.display()
                            )
                        })?;
                    // nats-server resolves `include` from the including file's
                    // directory: the operator's file goes beside the two.
                    std::fs::create_dir_all(out)?;
                    std::fs::copy(
                        dir.join("nats-operator.conf"),
                        out.join("nats-operator.conf"),
                    )?;
                    Some(("./nats-operator.conf".into(), account.trim().to_string()))
                }
                None => None,
            };
            let absolute = |p: &PathBuf| std::path::absolute(p);
            let tls = match (hub_tls_cert, hub_tls_key) {
                (Some(cert), Some(key)) => Some(broker::leaf::LeafTls {
                    cert: absolute(cert)?,
                    key: absolute(key)?,
                    ca: hub_tls_ca.as_ref().map(absolute).transpose()?,
                }),
                _ => None,
            };
            broker::leaf::check_tls(leaf_of, tls.as_ref()).map_err(anyhow::Error::msg)?;
            let plan = broker::leaf::LeafPlan {
                hub_url: leaf_of.clone(),
                domain: domain.clone(),
                hub_domain: hub_domain.clone(),
                creds: creds.clone().map(std::path::absolute).transpose()?,
                operator,
                client_port: i32::from(*port),
                websocket_port: i32::from(*ws_port),
                leaf_port: broker::leaf::leaf_port_of(leaf_of),
                store_dir: store_dir.clone(),
                tls,
            };
            std::fs::create_dir_all(out)?;
            std::fs::write(out.join("track.conf"), plan.track_config())?;
            std::fs::write(out.join("hub.conf"), plan.hub_config())?;
            out!(
                "wrote {dir}/track.conf and {dir}/hub.conf
                 hub:   nats-server -c hub.conf;   paddock hub --mirror-of {domain}
                 track: nats-server -c track.conf; paddock serve (as ever)",
                dir = out.display()
            );
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
