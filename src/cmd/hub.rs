//! `paddock hub --mirror-of DOMAIN`: at home, beside the hub's broker. Makes the
//! hub's mirrors of a track's records and answers from them while no processor
//! answers (server/hub.rs).

use clap::Args;

use super::args::{ConnectArgs, parse_bytes, parse_count};
use crate::client::connect::connect_persistent;
use crate::server::hub::{self, HubConfig};
use crate::server::store::mirror::MirrorConfig;

#[derive(Debug, Clone, Args)]
pub struct HubArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The track broker's JetStream domain (`paddock broker config --domain`).
    #[arg(long, env = "PADDOCK_MIRROR_OF")]
    pub mirror_of: String,
    /// The track processor's --kv-bucket: its buckets and trace stream are
    /// mirrored under the same names.
    #[arg(long, env = "PADDOCK_KV_BUCKET", default_value = "paddock_sessions")]
    pub kv_bucket: String,
    /// Bytes the mirrors may hold in all, shared as the track shares its
    /// --kv-max-bytes (give the same; the hub's JetStream must have room).
    #[arg(long, env = "PADDOCK_KV_MAX_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub kv_max_bytes: usize,
    /// Replicas of each mirror (3 on a 3-node hub cluster).
    #[arg(long, env = "PADDOCK_KV_REPLICAS", default_value_t = 1, value_parser = parse_count)]
    pub kv_replicas: usize,
    /// Serve the dashboard page (and /healthz, /readyz, /metrics) for engineers
    /// at home on this address; off when unset. The track's processor serves
    /// its own at the track.
    #[arg(long, env = "PADDOCK_HTTP_ADDR")]
    pub http_addr: Option<std::net::SocketAddr>,
    /// The hub broker's WebSocket listener as browsers at home reach it.
    #[arg(long, env = "PADDOCK_WS_URL", value_parser = super::serve::parse_ws_url)]
    pub ws_url: Option<String>,
}

/// Runs until `shutdown` completes.
pub async fn run(
    args: &HubArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    crate::broker::leaf::valid_domain(&args.mirror_of).map_err(anyhow::Error::msg)?;
    let client = connect_persistent(&args.connect.config(), "paddock-hub").await?;
    let config = HubConfig {
        mirror: MirrorConfig {
            bucket: args.kv_bucket.clone(),
            domain: args.mirror_of.clone(),
            max_bytes: args.kv_max_bytes,
            replicas: args.kv_replicas,
        },
    };
    // The page at home: the same page, pointed at the hub's broker (it follows
    // the track live over the leaf, and reads the copy's answers while the link
    // is down). /readyz says ready once the reader runs.
    let web = match args.http_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on --http-addr {addr} ({e}); pass another")
            })?;
            tracing::info!(http_addr = %listener.local_addr()?, ws_url = args.ws_url, "serving the dashboard page at home");
            let health = std::sync::Arc::new(crate::server::health::Health::default());
            health.connecting(client.clone());
            health.started(std::sync::Arc::new(crate::server::app::App::new(
                Default::default(),
            )));
            let config = crate::web::WebConfig {
                ws_url: args.ws_url.clone(),
                ..Default::default()
            };
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(crate::web::serve(listener, config, health, async move {
                let _ = stopped.await;
            }));
            Some((stop, task))
        }
        None => None,
    };
    let result = hub::run(client, config, shutdown).await;
    if let Some((stop, task)) = web {
        let _ = stop.send(());
        let _ = task.await;
    }
    result?;
    Ok(())
}
