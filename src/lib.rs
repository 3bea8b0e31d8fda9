//! paddock keeps live sim-racing sessions — a car's setup and its telemetry — and
//! serves them over NATS to race engineers' dashboards and ops tooling.
//!
//! How the crate is laid out:
//!
//! - [`subjects`]: every NATS subject, in one place (the public contract).
//! - [`id`]: session ids, accepted in one canonical spelling only.
//! - [`payload`]: validation of frames and requests without building a DOM.
//! - [`sessions`]: the session map, the one owner of session state; [`laps`]: each
//!   session's lap history.
//! - [`metrics`]: service-wide counters and rate-limited rejection logs.
//! - [`app`], [`control`], [`ingest`]: what each request and each frame does, with
//!   no NATS in sight (unit-tested on bytes).
//! - [`error`]: every error a client can cause, mapped to a micro error code.
//! - [`ratelimit`]: what one client may make the processor do per minute.
//! - [`processor`]: wires all of that to NATS and drains it on shutdown.
//! - [`client`]: a typed client for the `sessions` service, used by the commands.
//! - [`ops`], [`monitor`], [`watch`], [`demo`]: the commands for ops, simulated
//!   monitors, race engineers, and newcomers; [`sim`] is the simulated race.
//! - [`bench`]: `paddock bench`, paddock measured beside raw NATS and JetStream KV.
//! - [`broker`]: a local nats-server for demo, bench and tests: found, or fetched
//!   (pinned and verified) into the user's cache, and started.
//! - [`connect`], [`shutdown`], [`telemetry`], [`cli`]: the binary's plumbing.
#![deny(unreachable_pub)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod app;
pub mod bench;
pub mod broker;
pub mod cli;
pub mod client;
pub mod connect;
pub mod control;
pub mod credentials;
pub mod demo;
pub mod error;
pub mod id;
pub mod ingest;
pub mod laps;
pub mod metrics;
pub mod monitor;
pub mod ops;
pub mod payload;
pub mod processor;
pub mod ratelimit;
pub mod sessions;
pub mod shutdown;
pub mod sim;
pub mod store;
pub mod subjects;
pub mod telemetry;
pub mod watch;

use std::future::Future;

pub use app::Limits;
pub use id::SessionId;
pub use processor::Processor;

/// Runs the processor against `args.connect.nats_url` until `shutdown` completes.
///
/// Shutdown is honoured from the first moment, including while start-up waits for a
/// broker that is not up yet.
pub async fn serve(
    args: &cli::ServeArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut shutdown = std::pin::pin!(shutdown);
    let options = connect::options("paddock-processor").subscription_capacity(args.ingest_buffer);
    let client = connect::connect_with(options, &args.connect)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", args.connect.nats_url))?;
    let store = args.store_config();
    let issuer = args
        .issuer()
        .context("--issuer-account/--issuer-signing-seed")?;
    let processor = tokio::select! {
        started = Processor::start(client, args.limits(), &store, args.lifecycle()) => {
            started.context("cannot start the processor")?
        }
        () = &mut shutdown => {
            tracing::info!("stopped before the broker answered");
            return Ok(());
        }
    };
    if let Some(issuer) = issuer {
        tracing::info!(
            ?issuer,
            "issuing per-session credentials at sessions.create"
        );
        let _ = processor.app().issuer.set(issuer);
    }
    // The loop runs as a task on a runtime worker, not on this (the main) thread:
    // the client's connection task also runs on the workers, and handing frames
    // between two workers, which tokio keeps busy, is cheaper than waking the
    // main thread from its park for every batch (measured by `paddock bench`).
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut running = tokio::spawn(processor.run(async {
        let _ = stopped.await;
    }));
    tokio::select! {
        () = &mut shutdown => {
            let _ = stop.send(());
            running.await.context("the processor's loop failed")?;
        }
        ended = &mut running => ended.context("the processor's loop failed")?,
    }
    Ok(())
}
