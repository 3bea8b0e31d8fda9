//! The processor: wires the session map to NATS and runs until told to stop.
//!
//! [`Processor::start`] subscribes everything (the `sessions` micro service and the
//! monitor data subjects) and flushes, so when it returns the processor is reachable.
//! [`Processor::run`] serves until the shutdown future the caller passes in completes
//! (ctrl-c/SIGTERM in production, a channel in tests), then drains: it stops taking
//! new messages, handles every one already delivered, and flushes replies out.
//!
//! Tasks: one per control endpoint (so a large `list` never delays a `get`) and one
//! for ingest (so frames of a session are applied in the order the broker delivered
//! them, and the final frame is the one that stays).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::endpoint::Endpoint;
use async_nats::service::{Request, Service, ServiceExt};
use async_nats::{Client, HeaderMap, Message, Subscriber};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::app::{Announcement, App, Limits};
use crate::subjects;

/// How long shutdown waits for already-delivered messages before giving up on them.
/// Bounded so a wedged connection can never keep the process from exiting.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors that stop the processor from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not start the micro service: {0}")]
    Service(async_nats::Error),
    #[error("could not subscribe to {subject}: {source}")]
    Subscribe {
        subject: &'static str,
        source: async_nats::SubscribeError,
    },
    #[error("could not flush subscriptions to the broker: {0}")]
    Flush(#[from] async_nats::client::FlushError),
}

/// A started processor, ready to [`run`](Processor::run).
pub struct Processor {
    client: Client,
    app: Arc<App>,
    service: Service,
    endpoints: Vec<(&'static str, Endpoint)>,
    data: Vec<Subscriber>,
}

impl Processor {
    /// Subscribes the service and the data subjects on `client`.
    pub async fn start(client: Client, limits: Limits) -> Result<Self, StartError> {
        let broker_max = client.server_info().max_payload;
        if broker_max > 0 && limits.max_payload >= broker_max {
            tracing::warn!(
                max_payload = limits.max_payload,
                broker_max_payload = broker_max,
                "--max-payload is not below the broker's max_payload: oversized frames will be \
                 refused by the broker without a 413 from paddock"
            );
        }
        let app = Arc::new(App::new(limits));
        let stats_app = Arc::clone(&app);
        let service = client
            .service_builder()
            .description("paddock: live sim-racing sessions (setup, telemetry, lifecycle)")
            // `$SRV.STATS` carries the service-wide counters in each endpoint's `data`.
            .stats_handler(move |_endpoint, _stats| {
                serde_json::to_value(stats_app.metrics.snapshot(stats_app.sessions.len()))
                    .unwrap_or_default()
            })
            .start(subjects::SERVICE_NAME, env!("CARGO_PKG_VERSION"))
            .await
            .map_err(StartError::Service)?;

        // Endpoints join the micro default queue group: several processors share the load.
        let group = service.group(subjects::CONTROL_PREFIX);
        let mut endpoints = Vec::new();
        for name in [
            subjects::CREATE,
            subjects::GET,
            subjects::LIST,
            subjects::DELETE,
            subjects::STATS,
        ] {
            endpoints.push((
                name,
                group.endpoint(name).await.map_err(StartError::Service)?,
            ));
        }

        // Data subscriptions take no queue group: every processor sees every frame.
        let mut data = Vec::new();
        for subject in [subjects::ALL_SETUP, subjects::ALL_TELEMETRY] {
            let sub = client
                .subscribe(subject)
                .await
                .map_err(|source| StartError::Subscribe { subject, source })?;
            data.push(sub);
        }
        client.flush().await?;
        tracing::info!(
            max_payload = app.limits.max_payload,
            max_sessions = app.limits.max_sessions,
            "processor started: serving sessions.* and ingesting session.*.setup|telemetry"
        );
        Ok(Processor {
            client,
            app,
            service,
            endpoints,
            data,
        })
    }

    /// The shared state, for in-process inspection (tests, benchmarks).
    pub fn app(&self) -> Arc<App> {
        Arc::clone(&self.app)
    }

    /// Serves until `shutdown` completes, then drains and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Processor {
            client,
            app,
            service,
            endpoints,
            data,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for (name, endpoint) in endpoints {
            let (app, client, stop) = (Arc::clone(&app), client.clone(), stop_rx.clone());
            tasks.spawn(serve_endpoint(name, endpoint, app, client, stop));
        }
        tasks.spawn(ingest(data, Arc::clone(&app), client.clone(), stop_rx));

        shutdown.await;
        tracing::info!("shutting down: draining subscriptions");
        // Nobody else holds a receiver that could be dropped first, so this cannot fail.
        let _ = stop_tx.send(true);
        while let Some(result) = tasks.join_next().await {
            if let Err(e) = result {
                tracing::error!(error = %e, "a processor task failed during shutdown");
            }
        }
        if let Err(e) = service.stop().await {
            tracing::warn!(error = %e, "could not stop the micro service cleanly");
        }
        if let Err(e) = tokio::time::timeout(DRAIN_TIMEOUT, client.flush()).await {
            tracing::warn!(error = %e, "replies may not all have been flushed");
        }
        let live = app.sessions.len();
        tracing::info!(live_sessions = live, "shutdown complete");
    }
}

/// Completes once shutdown was signalled. (The guard `wait_for` returns must not live
/// across the select's other branch: it is not `Send`.)
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens at shutdown too.
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn serve_endpoint(
    name: &'static str,
    mut endpoint: Endpoint,
    app: Arc<App>,
    client: Client,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            request = endpoint.next() => match request {
                Some(request) => respond(name, &app, &client, request).await,
                None => return,
            },
        }
    }
    // Stop taking new requests, then answer those already delivered.
    if let Err(e) = endpoint.stop().await {
        tracing::warn!(endpoint = name, error = %e, "could not unsubscribe endpoint");
    }
    while let Ok(Some(request)) = tokio::time::timeout(DRAIN_TIMEOUT, endpoint.next()).await {
        respond(name, &app, &client, request).await;
    }
}

async fn respond(name: &'static str, app: &App, client: &Client, request: Request) {
    let (body, headers, announce) = match app.handle_control(name, &request.message.payload) {
        Ok(reply) => (reply.body, HeaderMap::new(), reply.announce),
        Err(e) => {
            tracing::debug!(endpoint = name, code = e.code(), error = %e, "request refused");
            // The micro helper sends an empty body with `Err`; the contract wants the
            // JSON body too, so the error headers go out with an `Ok` payload.
            (e.body(), e.headers(), None)
        }
    };
    if let Err(e) = request.respond_with_headers(Ok(body), headers).await {
        tracing::warn!(endpoint = name, error = %e, "could not send reply");
    }
    if let Some(announcement) = announce {
        announce_event(client, announcement).await;
    }
}

async fn ingest(
    data: Vec<Subscriber>,
    app: Arc<App>,
    client: Client,
    mut stop: watch::Receiver<bool>,
) {
    let mut subs = futures::stream::select_all(data);
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            message = subs.next() => match message {
                Some(message) => ingest_one(&app, &client, message).await,
                None => return,
            },
        }
    }
    // Drain: the broker stops sending, everything it already sent is still applied.
    for sub in subs.iter_mut() {
        if let Err(e) = sub.drain().await {
            tracing::warn!(error = %e, "could not drain a data subscription");
        }
    }
    while let Ok(Some(message)) = tokio::time::timeout(DRAIN_TIMEOUT, subs.next()).await {
        ingest_one(&app, &client, message).await;
    }
}

async fn ingest_one(app: &App, client: &Client, message: Message) {
    let result = app.ingest(&message.subject, &message.payload);
    // Fire-and-forget frames (no reply subject) cost nothing more; a monitor that
    // sends setup as a request is answered once the setup is stored, or refused.
    if let Some(reply) = message.reply {
        let sent = match &result {
            Ok(ingested) => client.publish(reply, ingested.ack()).await,
            Err(e) => {
                client
                    .publish_with_headers(reply, e.headers(), e.body())
                    .await
            }
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not acknowledge a frame");
        }
    }
    if let Some(announcement) = result.ok().and_then(|ingested| ingested.announcement()) {
        announce_event(client, announcement).await;
    }
}

async fn announce_event(client: &Client, announcement: Announcement) {
    let Announcement {
        session_id,
        event,
        body,
    } = announcement;
    for subject in [
        subjects::session_event(&session_id, event),
        subjects::service_event(event),
    ] {
        if let Err(e) = client.publish(subject, body.clone()).await {
            tracing::warn!(%session_id, event = event.as_str(), error = %e, "could not announce");
        }
    }
}
