//! The processor: what `paddock serve` runs. [`processor`] wires the rest to NATS;
//! everything else takes bytes and returns replies, unit-tested without a broker.
//!
//! - [`sessions`]: the session map, the one owner of session state; [`laps`]: each
//!   session's lap history.
//! - [`app`], [`control`], [`ingest`]: what each request and each frame does.
//! - [`error`]: every error a client can cause, mapped to a micro error code.
//! - [`metrics`]: service-wide counters; [`ratelimit`]: per-client limits.
//! - [`store`]: JetStream buckets (recovery, write-behind, peers, laps, archive).
//! - [`credentials`]: per-session NATS user JWTs; [`links`]: shared links and
//!   their withdrawal.
//! - [`partitions`]: partitioned ownership: which sessions are held here, and
//!   the requests answered across partitions.
//! - [`health`]: what readiness depends on (read by `crate::web`).
//! - [`hub`]: `paddock hub`, at home: answers from the hub's mirrored copy of a
//!   track's records while no processor answers (store/mirror.rs).

pub mod alerts;
pub mod app;
pub mod control;
pub mod credentials;
pub mod error;
pub mod health;
pub mod hub;
pub mod ingest;
pub mod intake;
pub mod laps;
pub mod links;
pub mod metrics;
pub mod partitions;
pub mod processor;
pub mod race;
pub mod ratelimit;
pub mod rejoin;
pub mod sessions;
pub mod store;
pub mod tower;
pub mod traces;

use std::future::Future;

use async_nats::Client;

pub use processor::{Lifecycle, Processor, StartError};

/// How the processor is configured: the `serve` flags as values.
#[derive(Debug, Default)]
pub struct Config {
    pub limits: app::Limits,
    pub store: store::StoreConfig,
    pub lifecycle: Lifecycle,
    /// Issues each new session's credentials (operator mode, `--issuer-*`).
    pub issuer: Option<credentials::Issuer>,
    /// Where the dashboard page is opened (`--public-url`), advertised in the
    /// service's metadata so `sessions share` and `monitor` can print links.
    pub dashboard_url: Option<String>,
    /// The partitions this processor owns (`--partitions`, `--owns`).
    pub partitions: partitions::Partitions,
}

/// Starts the processor on `client` and serves until `shutdown` completes,
/// reporting its progress to `health` (read by `/readyz`).
///
/// Shutdown is honoured from the first moment, including while start-up waits for
/// a broker that is not up yet.
pub async fn serve(
    client: Client,
    config: Config,
    health: &health::Health,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    health.connecting(client.clone());
    let mut shutdown = std::pin::pin!(shutdown);
    let processor = tokio::select! {
        started = Processor::start(client, config) => started?,
        () = &mut shutdown => {
            tracing::info!("stopped before the broker answered");
            return Ok(());
        }
    };
    health.started(processor.app());
    run_on_worker(processor, async {
        shutdown.await;
        health.stopping();
    })
    .await;
    Ok(())
}

/// Runs a started processor until `shutdown`, with its loop as a task on a runtime
/// worker, not on the caller's (the main) thread: the client's connection task
/// also runs on the workers, and handing frames between two workers, which tokio
/// keeps busy, is cheaper than waking the main thread from its park for every
/// batch (measured by `paddock bench`).
pub async fn run_on_worker(processor: Processor, shutdown: impl Future<Output = ()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut running = tokio::spawn(processor.run(async {
        let _ = stopped.await;
    }));
    let joined = tokio::select! {
        () = shutdown => {
            let _ = stop.send(());
            running.await
        }
        ended = &mut running => ended,
    };
    if let Err(e) = joined {
        tracing::error!(error = %e, "the processor's loop failed");
    }
}
