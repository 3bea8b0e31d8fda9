//! The processor: wires the session map to NATS and runs until told to stop.
//!
//! [`Processor::start`] subscribes everything (the `sessions` micro service and the
//! monitor data subjects) and makes a round trip to the broker, so when it returns
//! the broker has every subscription and the processor is reachable.
//! [`Processor::run`] serves until the shutdown future the caller passes in completes
//! (ctrl-c/SIGTERM in production, a channel in tests), then drains: it stops taking
//! new messages, handles every one already delivered, and flushes replies out.
//!
//! # Ordering
//!
//! One loop handles both data and control, and before it answers a control request
//! it first applies every data message already delivered ([`CATCH_UP_LIMIT`]). The
//! broker keeps each connection's messages in order, so a request sees every frame
//! the broker routed before it. That is what makes the dashboard's join safe:
//! subscribe, then `sessions.get` on the same connection. A frame routed before the
//! subscription is in the snapshot; every frame after it arrives live. (With data
//! and control in separate tasks the snapshot could miss such a frame, and a
//! dashboard would show a stale setup until the next one.) The catch-up is bounded
//! and the select is not biased, so a flood of frames cannot starve queries.
//!
//! # Partitions
//!
//! With `--partitions` (server/partitions.rs) the processor subscribes only to its
//! partitions' subjects, and a request that needs other partitions (a list, the
//! stats, a body-form request for another partition's session) is gathered or
//! forwarded on a task of its own ([`Route::Body`] with an `Across`), so the loop
//! never waits on another processor, nor on itself.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::{Request, Service, ServiceExt};
use async_nats::{Client, HeaderMap, Message};
use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};

use crate::protocol::id::SessionId;
use crate::protocol::subjects;
use crate::protocol::subjects::{DataKind, Endpoint, Event};
use crate::server::app::{Announcement, App};
use crate::server::control::PersistAction;
use crate::server::error::ServiceError;
use crate::server::intake::Intake;
use crate::server::partitions::Across;
use crate::server::ratelimit::{self, PerClient, TokenBucket};
use crate::server::sessions::{Ended, Now, SessionError};
use crate::server::store::{Storage, StoreError};

/// How long shutdown waits for already-delivered messages before giving up on them.
/// Bounded so a wedged connection can never keep the process from exiting.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How often every session's alerts are checked: at most one raise or clear
/// per kind per second, whatever the frame rate.
const ALERT_EVERY: Duration = Duration::from_secs(1);

/// How long a graceful stop keeps trying to store the last changes: long enough
/// for a JetStream cluster to elect new leaders after losing a node. (systemd's
/// TimeoutStopSec in deploy/ leaves room for it.)
const FINAL_FLUSH_PATIENCE: Duration = Duration::from_secs(15);

/// How many messages the processor's client may buffer per subscription by
/// default (`--ingest-buffer`), before the ingest queue (server/intake.rs) takes
/// them. They wait there only until the queue's task next runs; the channel
/// allocates as it fills, so a large bound costs nothing while unused.
pub const DEFAULT_INGEST_BUFFER: usize = 262_144;

/// Most data messages applied before a control request is answered: the most
/// the ingest queue holds of the smallest frames at the default
/// `--ingest-buffer-bytes`, so everything delivered before the request is
/// covered, and the wait is bounded even while a flood keeps arriving.
const CATCH_UP_LIMIT: usize = 1 << 20;

/// Storage reads for unknown ids per minute, all clients together (see `Ctx`).
/// Well above what read-your-writes across processors needs: one per create.
const LOOKUPS_PER_MINUTE: u32 = 6_000;

/// Frames applied in one go once one arrives, before the loop looks at its other
/// sources again: the `select!` over four sources then costs once per batch, not
/// once per frame. Small enough that a sweep or a shutdown waits only microseconds.
const BATCH: usize = 256;

/// Errors that stop the processor from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not start the micro service: {0}")]
    Service(async_nats::Error),
    #[error("could not subscribe to {subject}: {source}")]
    Subscribe {
        subject: String,
        source: async_nats::SubscribeError,
    },
    #[error("the broker did not confirm the subscriptions: {0}")]
    Confirm(async_nats::RequestError),
    /// `--partitions N` on a broker that does not map subjects into N partitions:
    /// such a processor would receive nothing.
    #[error(
        "--partitions {0}: the broker does not split subjects into {0} partitions ({1}); add \
         the mappings `paddock broker mappings --partitions {0}` prints to its configuration \
         (or use `paddock auth init --partitions {0}`)"
    )]
    Unmapped(u32, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request and how it came.
type ControlStream = BoxStream<'static, (Route, Request)>;

/// How a request came: which endpoint, and in which form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `sessions.get` and the like: any id is in the body.
    Body(Endpoint),
    /// `sessions.get.<id>` (`Endpoint::one_session`), with a partition token after
    /// the id when the broker partitions.
    Subject(Endpoint),
    /// Forwarded by another processor to a partition this one owns
    /// (`sessions.partition.<p>.<endpoint>`, server/partitions.rs).
    Partition(u32, Endpoint),
    /// A `sessions.partition.…` subject naming no endpoint.
    Unroutable,
}

/// When sessions end by themselves.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    /// End a session when nothing arrived for this long; `None` keeps them all.
    pub expire_after: Option<Duration>,
    /// Forget archived sessions after this long.
    pub archive_retention: Duration,
    /// Publish each team's tower this often (`--tower-interval`); `None`: never.
    pub tower_every: Option<Duration>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            expire_after: Some(Duration::from_secs(3600)),
            archive_retention: Duration::from_secs(7 * 24 * 3600),
            tower_every: Some(Duration::from_millis(500)),
        }
    }
}

impl Lifecycle {
    /// How often to look for idle sessions: a tenth of the expiry window, so a
    /// session ends at most 10% late, between 100 ms and 30 s.
    fn sweep_every(&self) -> Duration {
        let base = self.expire_after.unwrap_or(Duration::from_secs(30)) / 10;
        base.clamp(Duration::from_millis(100), Duration::from_secs(30))
    }
}

/// What the alerts keep of a session's laps between checks, read again only
/// when it completes one: laps completed, fuel per lap, pit loss.
type Paced = (u64, Option<f64>, (f64, &'static str, u32));

/// Every live session's alert inputs, its latest frame read (server::alerts):
/// team, (when the frame was stored, what it reads with its field), completed laps.
struct AlertReading {
    at: chrono::DateTime<chrono::Utc>,
    #[allow(clippy::type_complexity)]
    cars: Vec<(
        SessionId,
        Option<String>,
        Option<(
            chrono::DateTime<chrono::Utc>,
            crate::server::alerts::Readings,
        )>,
        u64,
    )>,
}

/// A started processor, ready to [`run`](Processor::run).
pub struct Processor {
    ctx: Ctx,
    service: Service,
    control: SelectAll<ControlStream>,
    data: Intake,
}

impl Processor {
    /// Recovers stored sessions, then subscribes the service and the data subjects.
    pub async fn start(client: Client, config: super::Config) -> Result<Self, StartError> {
        let super::Config {
            limits,
            store,
            lifecycle,
            issuer,
            dashboard_url,
            partitions,
        } = config;
        let store = &store;
        if let Some(issuer) = &issuer {
            tracing::info!(
                ?issuer,
                "issuing per-session credentials at sessions.create"
            );
        }
        let app = Arc::new(App {
            partitions,
            ..App::with_issuer(limits, issuer)
        });
        if partitions.is_partitioned() {
            tracing::info!(
                partitions = partitions.count(),
                owns = partitions.describe_owned(),
                "holding the sessions of the partitions this processor owns"
            );
        }
        // Recovery comes before any subscription: no frame is applied to a
        // half-loaded map, and requests see every recovered session.
        let storage = Storage::open(&client, store, &app).await?;
        let stats_app = Arc::clone(&app);
        let mut metadata = std::collections::HashMap::new();
        if let Some(url) = dashboard_url {
            metadata.insert(subjects::DASHBOARD_URL_METADATA.to_string(), url);
        }
        metadata.insert(
            subjects::ISSUES_CREDENTIALS_METADATA.to_string(),
            app.issuer.is_some().to_string(),
        );
        if partitions.is_partitioned() {
            metadata.insert("partitions".into(), partitions.count().to_string());
            metadata.insert("owns".into(), partitions.describe_owned());
        }
        let service = client
            .service_builder()
            .description("paddock: live sim-racing sessions (setup, telemetry, lifecycle)")
            .metadata(metadata)
            // `$SRV.STATS` carries the service-wide counters in each endpoint's `data`.
            .stats_handler(move |_endpoint, _stats| {
                serde_json::to_value(stats_app.metrics.snapshot(stats_app.sessions.load()))
                    .unwrap_or_default()
            })
            .start(subjects::SERVICE_NAME, env!("CARGO_PKG_VERSION"))
            .await
            .map_err(StartError::Service)?;

        // Endpoints join the micro default queue group: several processors share the load.
        let group = service.group(subjects::CONTROL_PREFIX);
        let mut control = SelectAll::new();
        for endpoint in Endpoint::ALL {
            let requests = group
                .endpoint(endpoint.name())
                .await
                .map_err(StartError::Service)?;
            control.push(requests.map(move |r| (Route::Body(endpoint), r)).boxed());
            let Some((name, pattern)) = endpoint.one_session() else {
                continue;
            };
            // With partitions, the broker's mapping appends the partition to the
            // subject: one endpoint per owned partition.
            for (partition, pattern) in partitions.subscriptions(pattern) {
                let name = match partition {
                    Some(p) => format!("{name}-{p}"),
                    None => name.to_string(),
                };
                let requests = group
                    .endpoint_builder()
                    .name(name)
                    .add(pattern)
                    .await
                    .map_err(StartError::Service)?;
                control.push(requests.map(move |r| (Route::Subject(endpoint), r)).boxed());
            }
        }
        // `sessions.team.<team token>`: a team is not a session, so this form is
        // never mapped into partitions; a car of another partition is forwarded
        // like a body-form request (see `respond`).
        let requests = group
            .endpoint_builder()
            .name("team-one")
            .add(subjects::TEAM_ONE)
            .await
            .map_err(StartError::Service)?;
        control.push(
            requests
                .map(|r| (Route::Subject(Endpoint::Team), r))
                .boxed(),
        );
        // `sessions.renew.link.<link id>`: a link is not a session either, so
        // never mapped; a session link's renewal is forwarded to its session's
        // partition like a body-form request.
        let requests = group
            .endpoint_builder()
            .name("renew-link-one")
            .add(subjects::RENEW_LINK_ONE)
            .await
            .map_err(StartError::Service)?;
        control.push(
            requests
                .map(|r| (Route::Subject(Endpoint::RenewLink), r))
                .boxed(),
        );
        if partitions.is_partitioned() {
            for p in partitions.owned() {
                let requests = group
                    .endpoint_builder()
                    .name(format!("partition-{p}"))
                    .add(subjects::partition_requests(p))
                    .await
                    .map_err(StartError::Service)?;
                let routed = requests.map(|r| {
                    let route = match subjects::parse_partition_request(&r.message.subject) {
                        Some((p, endpoint)) => Route::Partition(p, endpoint),
                        None => Route::Unroutable,
                    };
                    (route, r)
                });
                control.push(routed.boxed());
            }
        }

        // Data subscriptions take no queue group: every processor sees every frame
        // (of the partitions it owns).
        let data_subjects = [
            subjects::ALL_SETUP,
            subjects::ALL_TELEMETRY,
            subjects::ALL_FIELD,
        ]
        .into_iter()
        .flat_map(|pattern| partitions.subscriptions(pattern))
        .map(|(_, subject)| subject);
        let mut subscriptions = Vec::new();
        for subject in data_subjects {
            match client.subscribe(subject.clone()).await {
                Ok(subscription) => subscriptions.push(subscription),
                Err(source) => return Err(StartError::Subscribe { subject, source }),
            }
        }
        let data = Intake::start(subscriptions, Arc::clone(&app));

        confirm_subscriptions(&client, &service).await?;
        if partitions.is_partitioned() {
            check_mappings(&client, partitions.count()).await?;
        }
        // Only now is the connection surely up (it may have waited for the broker),
        // so the broker's limit is known.
        let broker_max = client.server_info().max_payload;
        if broker_max > 0 && app.limits.max_payload >= broker_max {
            tracing::warn!(
                max_payload = app.limits.max_payload,
                broker_max_payload = broker_max,
                "--max-payload is not below the broker's max_payload: oversized frames will be \
                 refused by the broker without a 413 from paddock"
            );
        }

        tracing::info!(
            max_payload = app.limits.max_payload,
            max_sessions = app.limits.max_sessions,
            "processor started: serving sessions.* and ingesting session.*.setup|telemetry|field"
        );
        let reader = crate::server::traces::Reader {
            traces: storage.traces(),
            lap_field: app.limits.lap_field.clone(),
            permits: Arc::new(tokio::sync::Semaphore::new(
                crate::server::traces::READS_AT_ONCE,
            )),
        };
        Ok(Processor {
            ctx: Ctx {
                processor: service.info().await.id,
                client,
                creates: std::sync::Mutex::new(PerClient::new(app.limits.creates_per_minute)),
                lookups: std::sync::Mutex::new(TokenBucket::new(
                    LOOKUPS_PER_MINUTE,
                    std::time::Instant::now(),
                )),
                best: crate::server::traces::BestLaps::start(reader.clone(), Arc::clone(&app)),
                reader,
                app,
                storage,
                lifecycle,
            },
            service,
            control,
            data,
        })
    }

    /// The shared state, for in-process inspection (tests, benchmarks).
    pub fn app(&self) -> Arc<App> {
        Arc::clone(&self.ctx.app)
    }

    /// Serves until `shutdown` completes, then drains and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Processor {
            ctx,
            service,
            mut control,
            mut data,
        } = self;
        let shutdown = std::pin::pin!(shutdown);
        let mut shutdown = shutdown.fuse();
        let mut sweeps = tokio::time::interval(ctx.lifecycle.sweep_every());
        sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut towers = crate::server::tower::Towers::new(
            ctx.app.limits.fuel_reserve_laps,
            ctx.app.limits.pit_loss,
        );
        // Alerts are checked once a second, whatever the frame rates.
        let mut alert_ticks = tokio::time::interval(ALERT_EVERY);
        alert_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut paces = std::collections::HashMap::new();
        // The frames being read for the alerts, on a thread of their own; a tick
        // that finds the last reading unfinished is skipped.
        let mut alert_reading: Option<tokio::task::JoinHandle<AlertReading>> = None;
        let mut tower_ticks = ctx.lifecycle.tower_every.map(|every| {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = async {
                    match &mut tower_ticks {
                        Some(ticks) => ticks.tick().await,
                        None => std::future::pending().await,
                    }
                } => ctx.publish_towers(&mut towers, &paces).await,
                _ = alert_ticks.tick() => {
                    for (id, dropped) in data.take_dropped() {
                        ctx.app.sessions.note_dropped(id, dropped);
                    }
                    if alert_reading.is_none() {
                        alert_reading = Some(ctx.read_for_alerts());
                    }
                }
                read = async { alert_reading.as_mut().expect("guarded").await },
                    if alert_reading.is_some() =>
                {
                    alert_reading = None;
                    match read {
                        Ok(read) => ctx.check_alerts(read, &mut paces).await,
                        Err(e) => tracing::error!(error = %e, "reading frames for the alerts failed"),
                    }
                }
                // In this loop, not a task of its own: an expiry is ordered with the
                // frames and requests around it, like everything else.
                _ = sweeps.tick() => ctx.sweep().await,
                Some(message) = data.next() => {
                    let now = Now::read();
                    ctx.ingest(message, now).await;
                    ctx.catch_up(&mut data, BATCH, now).await;
                }
                Some((route, request)) = control.next() => {
                    let taken = std::time::Instant::now();
                    // Frames the client delivered before this request may not be
                    // in the queue yet.
                    data.flush().await;
                    ctx.catch_up(&mut data, CATCH_UP_LIMIT, Now::read()).await;
                    ctx.respond(route, request, taken).await;
                }
                else => {
                    tracing::error!("every subscription ended; stopping");
                    break;
                }
            }
        }

        tracing::info!("shutting down: applying what the broker already sent");
        // Stopping the service ends its endpoints. The data subscriptions are
        // not drained with async-nats' `drain`: in 0.51 it forgets a subscription
        // on its next poll, without waiting for the broker, so frames still in
        // the socket were dropped (a caught-up processor lost its last ~80
        // frames one stop in five). Instead a round trip the broker answers after
        // everything it had sent this connection, then whatever is buffered.
        if let Err(e) = service.stop().await {
            tracing::warn!(error = %e, "could not stop the micro service cleanly");
        }
        if !delivered(&ctx.client).await {
            tracing::warn!(
                "the broker did not confirm its deliveries within {DRAIN_TIMEOUT:?}: \
                 frames in flight may be lost"
            );
        }
        data.flush().await;
        // Outside tokio's budget, like `catch_up`: within it the queue would
        // answer `Pending` after 128 frames with more waiting.
        let drained = tokio::time::timeout(
            DRAIN_TIMEOUT,
            tokio::task::unconstrained(async {
                loop {
                    if let Some(Some(message)) = data.next().now_or_never() {
                        ctx.ingest(message, Now::read()).await;
                    } else if let Some(Some((route, request))) = control.next().now_or_never() {
                        let taken = std::time::Instant::now();
                        ctx.respond(route, request, taken).await;
                    } else {
                        break;
                    }
                }
            }),
        )
        .await;
        if drained.is_err() {
            tracing::warn!("gave up applying in-flight messages after {DRAIN_TIMEOUT:?}");
        }
        data.stop().await;
        if tokio::time::timeout(DRAIN_TIMEOUT, ctx.client.flush())
            .await
            .is_err()
        {
            tracing::warn!("replies may not all have been flushed");
        }
        // The last write-behind window: every frame applied is stored before exit.
        // Retried, because a JetStream cluster that just lost a node refuses writes
        // until it has elected new stream leaders (a few seconds).
        let deadline = tokio::time::Instant::now() + FINAL_FLUSH_PATIENCE;
        loop {
            match tokio::time::timeout(DRAIN_TIMEOUT, ctx.storage.flush_all()).await {
                Ok(Ok(())) => break,
                Ok(Err(e)) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "storing the last changes; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "the last changes could not be stored");
                    break;
                }
                Err(_) => {
                    tracing::error!("gave up storing the last changes after {DRAIN_TIMEOUT:?}");
                    break;
                }
            }
        }
        // The laps completed before the stop: the lap writer may be behind (a
        // burst, or storage that refused writes for a while).
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let unstored = ctx.storage.laps_stored(left.max(DRAIN_TIMEOUT)).await;
        if unstored > 0 {
            tracing::error!(
                unstored,
                "laps completed before the stop could not be stored"
            );
        }
        // The trace writer's unfinished chunks: the last frames of every lap
        // being driven (up to 64 KiB a session).
        ctx.storage.traces_written().await;
        tracing::info!(live_sessions = ctx.app.sessions.len(), "shutdown complete");
    }
}

/// Waits until the broker has every subscription made so far. `flush` only means
/// "written to the socket"; a request to our own service's PING is answered only
/// after the broker processed every SUB sent before it. A processor started before
/// its broker (systemd, compose) keeps waiting here: the client connects in the
/// background, and each attempt times out until it does.
/// Whether the broker has answered a request no one serves: it writes its
/// no-responders reply after every message it had already sent this
/// connection, and the client hands messages out in order, so afterwards all
/// of them sit in the subscriptions' buffers. The subject is a partition check
/// (`subjects::PARTITION_CHECK`): allowed to the processor, read by no one.
async fn delivered(client: &Client) -> bool {
    let subject = format!(
        "{}.{}",
        subjects::PARTITION_CHECK,
        crate::protocol::id::SessionId::new_v4()
    );
    matches!(
        tokio::time::timeout(DRAIN_TIMEOUT, client.request(subject, "".into())).await,
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders
    )
}

async fn confirm_subscriptions(client: &Client, service: &Service) -> Result<(), StartError> {
    let ping = subjects::discovery_ping(&service.info().await.id);
    loop {
        match client.request(ping.clone(), "".into()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
                tracing::warn!("waiting for the NATS broker before serving");
            }
            Err(e) => return Err(StartError::Confirm(e)),
        }
    }
}

/// Whether the broker maps subjects into `count` partitions as paddock computes
/// them: check subjects (`subjects::PARTITION_CHECK`) must come back with
/// the partition of their id appended.
async fn check_mappings(client: &Client, count: u32) -> Result<(), StartError> {
    // Sixteen: a mapping into another number of partitions puts a random id
    // where paddock expects it about half the time or less, so all sixteen
    // agreeing by chance is a 1-in-65,536 event.
    let unmapped = |why: String| StartError::Unmapped(count, why);
    for _ in 0..16 {
        let id = crate::protocol::id::SessionId::new_v4();
        let mut echo = client
            .subscribe(format!("{}.{id}.*", subjects::PARTITION_CHECK))
            .await
            .map_err(|e| unmapped(format!("cannot subscribe to check: {e}")))?;
        client
            .publish(format!("{}.{id}", subjects::PARTITION_CHECK), "".into())
            .await
            .map_err(|e| unmapped(format!("cannot publish to check: {e}")))?;
        let want = subjects::partition(&id, count).to_string();
        match tokio::time::timeout(Duration::from_secs(2), echo.next()).await {
            Ok(Some(message)) if message.subject.ends_with(&format!(".{want}")) => {}
            Ok(Some(message)) => {
                return Err(unmapped(format!(
                    "{} came back as {}, not in partition {want}",
                    subjects::PARTITION_CHECK,
                    message.subject
                )));
            }
            _ => return Err(unmapped("a check subject came back unmapped".into())),
        }
    }
    tracing::info!(
        partitions = count,
        "the broker maps subjects into partitions"
    );
    Ok(())
}

/// What every handler needs: the state, the connection, and storage.
struct Ctx {
    client: Client,
    /// This processor's micro service instance id.
    processor: String,
    app: Arc<App>,
    storage: Storage,
    lifecycle: Lifecycle,
    /// Creates per client ([`Limits::creates_per_minute`]).
    creates: std::sync::Mutex<PerClient>,
    /// Storage reads for ids this processor does not hold, for everyone together:
    /// a flood of gets for random ids must not turn into a flood of reads, each
    /// awaited in the ordered loop.
    lookups: std::sync::Mutex<TokenBucket>,
    /// Reads laps back from the trace stream, off the loop.
    reader: crate::server::traces::Reader,
    /// Keeps each session's best lap (`None`: nothing recorded).
    best: Option<crate::server::traces::BestLaps>,
}

impl Ctx {
    /// Applies the data messages already delivered, up to [`CATCH_UP_LIMIT`].
    ///
    /// "Already delivered" is read as "ready without waiting". That holds only outside
    /// tokio's cooperative budget: within it, a channel answers `Pending` after 128
    /// receives in one poll even with messages queued, and the catch-up would stop
    /// early. The limit bounds the time spent outside the budget.
    ///
    /// `now` is the batch's time (see `Now`), read again every [`BATCH`] frames so
    /// a long catch-up still stamps each frame within a batch's time of its own.
    async fn catch_up(&self, data: &mut Intake, limit: usize, mut now: Now) {
        tokio::task::unconstrained(async {
            for n in 1..=limit {
                match data.next().now_or_never() {
                    Some(Some(message)) => self.ingest(message, now).await,
                    _ => return,
                }
                if n % BATCH == 0 {
                    now = Now::read();
                }
            }
        })
        .await;
    }

    /// Whether this request may go ahead: creates are limited per client.
    fn admit(&self, endpoint: Endpoint, request: &Request) -> Result<(), ServiceError> {
        if endpoint != Endpoint::Create {
            return Ok(());
        }
        let client = request
            .message
            .reply
            .as_ref()
            .map_or("", |reply| ratelimit::client_of(reply.as_str()));
        self.creates
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take(client, std::time::Instant::now())
            .map_err(|retry_after| {
                tracing::info!(client, "session creation rate-limited");
                ServiceError::RateLimited {
                    what: "sessions created",
                    retry_after,
                }
            })
    }

    fn may_look_up(&self) -> bool {
        self.lookups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take(std::time::Instant::now())
            .is_ok()
    }

    /// Answers one request; `taken` is when the loop took it, for its latency.
    async fn respond(&self, route: Route, request: Request, taken: std::time::Instant) {
        let endpoint = match route {
            Route::Body(endpoint) | Route::Subject(endpoint) | Route::Partition(_, endpoint) => {
                endpoint
            }
            Route::Unroutable => {
                let e = ServiceError::BadRequest(format!(
                    "no such endpoint: {}",
                    request.message.subject
                ));
                self.send(&request, e.body(), e.headers(), "partition")
                    .await;
                return;
            }
        };
        let name = endpoint.name();
        // Refused before it is handled: counted and answered like any refusal.
        let asked = &request;
        let refuse = |e: ServiceError| async move {
            self.app
                .metrics
                .reject(e.reason(), &asked.message.subject, &e);
            self.send(asked, e.body(), e.headers(), name).await;
            self.app.metrics.request(name, e.code(), taken.elapsed());
        };
        // A forwarded create was admitted by the processor that took it.
        if !matches!(route, Route::Partition(..))
            && let Err(e) = self.admit(endpoint, &request)
        {
            return refuse(e).await;
        }
        // A team link's request names its team in the subject: from here on it
        // is the body-form request it stands for (forwarded like one).
        let (route, payload) = match route {
            Route::Subject(Endpoint::Team) => {
                let token = subjects::id_token(&request.message.subject, endpoint);
                match self
                    .app
                    .team_subject_request(token, &request.message.payload)
                {
                    Ok(body) => (Route::Body(Endpoint::Team), body),
                    Err(e) => return refuse(e).await,
                }
            }
            // Likewise a link's renewal, its link in the subject.
            Route::Subject(Endpoint::RenewLink) => {
                let token = subjects::id_token(&request.message.subject, endpoint);
                match self
                    .app
                    .renew_link_subject_request(token, &request.message.payload)
                {
                    Ok(body) => (Route::Body(Endpoint::RenewLink), body),
                    Err(e) => return refuse(e).await,
                }
            }
            _ => (route, request.message.payload.clone()),
        };
        if let Route::Body(endpoint) = route
            && self.app.partitions.is_partitioned()
            && let Some(across) = self.across_partitions(endpoint, &payload)
        {
            // Gathered or forwarded on a task of its own: the answer comes from
            // other processors, or from this loop after this request.
            let (client, app) = (self.client.clone(), Arc::clone(&self.app));
            tokio::spawn(async move {
                let (body, headers) = match across.run(&client).await {
                    Ok(answer) => answer,
                    Err(e) => {
                        // Counted like any refusal (a partition without processor).
                        app.metrics.reject(e.reason(), &request.message.subject, &e);
                        (e.body(), e.headers())
                    }
                };
                let code = headers
                    .get(async_nats::service::NATS_SERVICE_ERROR_CODE)
                    .and_then(|code| code.as_str().parse().ok())
                    .unwrap_or(200);
                if let Err(e) = request.respond_with_headers(Ok(body), headers).await {
                    tracing::warn!(endpoint = name, error = %e, "could not send reply");
                }
                app.metrics.request(name, code, taken.elapsed());
            });
            return;
        }
        // A trace or comparison: its laps found here, in order with the frames
        // before it; the stream read and the answer on a task of their own, so
        // a slow read never holds up frames.
        if matches!(endpoint, Endpoint::Trace | Endpoint::Compare) {
            let subject_id = matches!(route, Route::Subject(_))
                .then(|| subjects::id_token(&request.message.subject, endpoint));
            let plan = match self.app.plan(endpoint, subject_id, &payload) {
                Ok(plan) => plan,
                Err(e) => return refuse(e).await,
            };
            // Per-session and team-link credentials may ask for their own
            // session's trace only (the broker checks the subject's id): a
            // comparison must not hand them another session's channels, but
            // a team link's may read a teammate's (both sessions in its team).
            if let crate::server::traces::Plan::Compare { lap, reference, .. } = &plan
                && let Some(reply) = request
                    .message
                    .reply
                    .as_deref()
                    .filter(|r| subjects::scoped_inbox(r))
                && lap.session_id != reference.session_id
            {
                let team = subjects::team_of_inbox(reply);
                let teammates = team.is_some()
                    && self.app.team_token_of(lap.session_id).as_deref() == team
                    && self.app.team_token_of(reference.session_id).as_deref() == team;
                if !teammates {
                    return refuse(ServiceError::Forbidden(
                        "a session's credentials compare its own laps only, a team link's \
                         its team's"
                            .into(),
                    ))
                    .await;
                }
            }
            let (reader, app) = (self.reader.clone(), Arc::clone(&self.app));
            let counted = !matches!(route, Route::Partition(..));
            tokio::spawn(async move {
                let (body, headers, code) = match reader.answer(plan).await {
                    Ok(body) => (body, HeaderMap::new(), 200),
                    Err(e) => {
                        app.metrics.reject(e.reason(), &request.message.subject, &e);
                        (e.body(), e.headers(), e.code())
                    }
                };
                if let Err(e) = request.respond_with_headers(Ok(body), headers).await {
                    tracing::warn!(endpoint = name, error = %e, "could not send reply");
                }
                if counted {
                    app.metrics.request(name, code, taken.elapsed());
                }
            });
            return;
        }
        let subject = request.message.subject.as_str();
        // `sessions.get.<id>` and friends: the id is the subject's token after the
        // endpoint's name.
        let subject_id =
            matches!(route, Route::Subject(_)).then(|| subjects::id_token(subject, endpoint));
        let body: &[u8] = &payload;
        let handle = || match route {
            Route::Partition(p, _) => self
                .app
                .handle_partition(endpoint, p, &self.processor, body),
            _ => self.app.handle_control_for(endpoint, subject_id, body),
        };
        // A withdrawal or a listing counts the links another processor made a
        // moment ago, which this one may not have heard of yet.
        if matches!(endpoint, Endpoint::Revoke | Endpoint::Links) {
            self.storage.refresh_links(&self.app).await;
        }
        let mut result = handle();
        // Likewise one link another processor made a moment ago.
        if let Err(ServiceError::Link(crate::server::links::LinkError::Unknown(link))) = &result
            && let Some(stored) = self.storage.link(link).await
        {
            self.app.links.apply(stored);
            result = handle();
        }
        // Read your writes across processors: a session another processor created
        // a moment ago may not have reached this one's replica yet; storage has it.
        if let Err(ServiceError::Session(SessionError::NotFound(id))) = &result
            && self.app.partitions.owns(id)
            && self.may_look_up()
            && let Some(snapshot) = self.storage.lookup(*id).await
        {
            // Learned of here first (the watch would have counted it otherwise).
            if self.app.sessions.adopt(snapshot) {
                self.app.metrics.session_created();
            }
            result = handle();
        }
        // A create or delete is answered only once storage has it.
        if let Ok(reply) = &result
            && let Err(e) = self.persist(reply.persist.as_ref()).await
        {
            result = Err(e);
        }
        let code = result.as_ref().map_or_else(ServiceError::code, |_| 200);
        let (body, headers, announce) = match result {
            Ok(reply) => (reply.body, HeaderMap::new(), reply.announce),
            Err(e) => {
                // Counted like refused frames (and logged rate-limited with them).
                self.app.metrics.reject(e.reason(), subject, &e);
                (e.body(), e.headers(), None)
            }
        };
        self.send(&request, body, headers, name).await;
        // A forwarded request was counted by the processor that took it.
        if !matches!(route, Route::Partition(..)) {
            self.app.metrics.request(name, code, taken.elapsed());
        }
        if let Some(announcement) = announce {
            self.announce(announcement).await;
        }
    }

    /// The micro helper sends an empty body with `Err`; the contract wants the
    /// JSON body too, so error headers go out with an `Ok` payload.
    async fn send(&self, request: &Request, body: bytes::Bytes, headers: HeaderMap, name: &str) {
        if let Err(e) = request.respond_with_headers(Ok(body), headers).await {
            tracing::warn!(endpoint = name, error = %e, "could not send reply");
        }
    }

    /// What a body-form request needs from other partitions, if anything: the
    /// lists and stats of all of them, or the partition of the session it names.
    /// A body that is not valid for the endpoint is answered here.
    fn across_partitions(&self, endpoint: Endpoint, body: &bytes::Bytes) -> Option<Across> {
        let partitions = self.app.partitions;
        match endpoint {
            // A new session's partition is that of a random id, as it would be
            // for any id: an even spread over the partitions, however many
            // processors own each. Created here when this processor owns it.
            Endpoint::Create => {
                let partition = partitions.of(&crate::protocol::id::SessionId::new_v4());
                self.app.optional_object(body).ok()?;
                (!partitions.owns_partition(partition)).then(|| Across::Forward {
                    partition,
                    endpoint,
                    body: body.clone(),
                })
            }
            Endpoint::List | Endpoint::ArchiveList => {
                let request = self.app.page_request(body).ok()?;
                Some(Across::Page {
                    partitions,
                    endpoint,
                    request,
                })
            }
            Endpoint::Stats => self
                .app
                .optional_object(body)
                .ok()
                .map(|()| Across::Stats(partitions)),
            _ => {
                let id = self.app.session_named(endpoint, body)?;
                (!partitions.owns(&id)).then(|| Across::Forward {
                    partition: partitions.of(&id),
                    endpoint,
                    body: body.clone(),
                })
            }
        }
    }

    async fn persist(&self, action: Option<&PersistAction>) -> Result<(), ServiceError> {
        let result = match action {
            None => return Ok(()),
            Some(PersistAction::Session(id)) => self.storage.persist(*id).await,
            Some(PersistAction::End(ended)) => {
                self.archive((**ended).clone()).await;
                Ok(())
            }
            Some(PersistAction::LinkCreated(link)) => self.storage.link_created(link).await,
            Some(PersistAction::LinkRenewed { link, expires_at }) => {
                match self.storage.link_renewed(link, *expires_at).await {
                    // Withdrawn (or gone) by the bucket's word: refused, and
                    // known here from now on.
                    Ok(Err(refused)) => {
                        if let Some(stored) = self.storage.link(link).await {
                            self.app.links.apply(stored);
                        }
                        return Err(refused.into());
                    }
                    Ok(Ok(())) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Some(PersistAction::LinksRevoked(links)) => self.storage.links_revoked(links).await,
        };
        result.map_err(|e| ServiceError::Unavailable(format!("{:#}", anyhow::Error::new(e))))
    }

    async fn ingest(&self, message: Message, now: Now) {
        let mut result = self.app.ingest_at(&message.subject, &message.payload, now);
        // A setup is written through before it is acknowledged; telemetry is
        // written behind (see server/store/), so the hot path never waits for storage.
        if let Ok(ingested) = &result
            && ingested.kind == DataKind::Setup
            && let Err(e) = self.storage.persist(ingested.session_id).await
        {
            tracing::warn!(session_id = %ingested.session_id, error = %e, "setup not stored yet");
            if message.reply.is_some() {
                result = Err(ServiceError::Unavailable(format!(
                    "{:#}",
                    anyhow::Error::new(e.clone())
                )));
            }
        }
        // Fire-and-forget frames (no reply subject) cost nothing more; a monitor that
        // sends setup as a request is answered once the setup is stored, or refused.
        if let Some(reply) = message.reply {
            let sent = match &result {
                Ok(ingested) => self.client.publish(reply, ingested.ack()).await,
                Err(e) => {
                    self.client
                        .publish_with_headers(reply, e.headers(), e.body())
                        .await
                }
            };
            if let Err(e) = sent {
                tracing::warn!(error = %e, "could not acknowledge a frame");
            }
        }
        let Ok(ingested) = result else { return };
        // Recorded for lap traces: only what was accepted, off this loop.
        if let Some(frame) = &ingested.frame {
            let lap_ended = ingested.applied.lap.is_some() || ingested.applied.lap_dropped;
            self.storage.record(
                ingested.session_id,
                ingested.applied.at,
                frame.clone(),
                lap_ended,
            );
        }
        if let (Some(lap), Some(best)) = (&ingested.applied.lap, &self.best) {
            best.offer(Arc::clone(lap));
        }
        // A completed lap is stored before it is announced (by the persister).
        if let Some(lap) = ingested.applied.lap.clone()
            && !self.storage.lap(lap.clone())
        {
            let subject = subjects::session_lap(&lap.session_id);
            if let Err(e) = self.client.publish(subject, lap.to_json().into()).await {
                tracing::warn!(session_id = %lap.session_id, error = %e, "could not announce a lap");
            }
        }
        if let Some(announcement) = ingested.announcement() {
            self.announce(announcement).await;
        }
    }

    /// Stores an ended session in the archive. The session already ended in memory;
    /// the persister retries archiving it until it succeeds, so the end stands
    /// either way.
    ///
    /// Answers whether this processor is the one that ended it, and should announce
    /// it: with several processors each finds the same idle session, and only the
    /// first to archive it announces. When storage cannot tell, announce: a
    /// duplicate announcement does less harm than a missing one.
    async fn archive(&self, ended: Ended) -> bool {
        let id = ended.last.session_id;
        match self.storage.end(ended).await {
            Ok(first) => first,
            Err(e) => {
                tracing::warn!(session_id = %id, error = %e, "end of session not stored yet; retrying");
                true
            }
        }
    }

    /// Ends the sessions idle for `--expire-after`, and drops archived ones past
    /// their retention.
    async fn sweep(&self) {
        if let Some(max_idle) = self.lifecycle.expire_after {
            for ended in self
                .app
                .sessions
                .expire_idle(tokio::time::Instant::now(), max_idle)
            {
                let id = ended.last.session_id;
                self.app.metrics.session_ended(ended.reason);
                tracing::info!(session_id = %id, idle = ?max_idle, "session expired");
                let announcement =
                    Announcement::new(id, Event::Expired, ended.at, "expiry", Some(&ended.last));
                if self.archive(ended).await {
                    self.announce(announcement).await;
                }
            }
        }
        let retention = chrono::Duration::from_std(self.lifecycle.archive_retention)
            .unwrap_or(chrono::TimeDelta::MAX);
        let forgotten = self.app.links.prune(chrono::Utc::now());
        if forgotten > 0 {
            tracing::debug!(forgotten, "links whose credentials all expired forgotten");
        }
        let pruned = self
            .app
            .sessions
            .prune_ended(chrono::Utc::now() - retention);
        if pruned > 0 {
            tracing::info!(pruned, "archived sessions past their retention forgotten");
        }
    }

    /// Each team's tower (server/tower.rs), on `team.<token>.tower`. Published
    /// without waiting for the broker: a lost message is replaced half a second on.
    async fn publish_towers(
        &self,
        towers: &mut crate::server::tower::Towers,
        paces: &std::collections::HashMap<SessionId, Paced>,
    ) {
        let mut cars = self.app.sessions.team_cars();
        // The pit loss the alerts measured from each car's laps (once per
        // lap), so the tower's rejoin line is the session document's.
        for car in &mut cars {
            car.pit_loss = paces.get(&car.session_id).map(|(_, _, loss)| *loss);
        }
        let mut ticked = towers.tick(cars, chrono::Utc::now(), &self.processor);
        {
            let board = self.app.alert_board();
            for car in ticked.iter_mut().flat_map(|tower| tower.cars.iter_mut()) {
                car.alerts = board
                    .active(&car.session_id)
                    .into_iter()
                    .map(|alert| alert.reading)
                    .collect();
            }
        }
        for tower in ticked {
            let body = serde_json::to_vec(&tower).expect("serializes");
            if let Err(e) = self
                .client
                .publish(subjects::team_tower(&tower.team), body.into())
                .await
            {
                tracing::warn!(team = %tower.team, error = %e, "could not publish the tower");
            }
        }
    }

    /// Reads every live session's latest frame for the alerts, on a blocking
    /// thread: parsing them is the check's costly part (at 100,000 sessions each
    /// with a new frame, ~0.5 s a check), and on this loop it held every frame
    /// and request behind it. Only the refcounted frames are taken here.
    fn read_for_alerts(&self) -> tokio::task::JoinHandle<AlertReading> {
        let at = chrono::Utc::now();
        let cars = self.app.sessions.alert_inputs();
        tokio::task::spawn_blocking(move || AlertReading {
            at,
            cars: cars
                .into_iter()
                .map(|(id, team, frame, laps, field)| {
                    let frame = frame.map(|f| {
                        let mut readings = crate::server::alerts::read(&f.body);
                        // The field (held to its schema at ingest) for the
                        // undercut window.
                        readings.field =
                            field.and_then(|f| crate::protocol::field::Field::parse(&f.body).ok());
                        (f.at, readings)
                    });
                    (id, team, frame, laps)
                })
                .collect(),
        })
    }

    /// Checks every live session's alerts on what [`read_for_alerts`] read and
    /// announces what was raised or cleared on `session.<id>.alerts`. Each
    /// session's pace (fuel per lap) is read from its laps again only when it
    /// completed one.
    ///
    /// [`read_for_alerts`]: Ctx::read_for_alerts
    async fn check_alerts(
        &self,
        read: AlertReading,
        paces: &mut std::collections::HashMap<SessionId, Paced>,
    ) {
        let AlertReading { at: now, cars } = read;
        // The sessions live now (one pass under the map's lock): one that ended
        // while its frame was read has no alerts to raise.
        let mut live = std::collections::HashSet::with_capacity(cars.len());
        self.app.sessions.count_where(|id| live.insert(*id));
        paces.retain(|id, _| live.contains(id));
        let mut events = Vec::new();
        {
            let mut board = self.app.alert_board();
            board.retain(|id| live.contains(id));
            for (id, team, frame, laps) in &cars {
                // A session that never sent a frame has nothing to say yet.
                let Some((frame_at, readings)) = frame else {
                    continue;
                };
                if !live.contains(id) {
                    continue;
                }
                let (fuel_per_lap, pit_loss) = match paces.get(id) {
                    Some((seen, pace, loss)) if seen == laps => (*pace, *loss),
                    _ => {
                        let records = self.app.sessions.laps(*id).unwrap_or_default();
                        let pace = crate::server::race::pace(&records).fuel_per_lap;
                        let laps_read: Vec<crate::server::race::Lap> = records
                            .iter()
                            .map(|r| crate::server::race::Lap::of(r))
                            .collect();
                        let loss =
                            crate::server::rejoin::loss_of(&laps_read, self.app.limits.pit_loss);
                        paces.insert(*id, (*laps, pace, loss));
                        (pace, loss)
                    }
                };
                let input = crate::server::alerts::Input {
                    readings,
                    frame_age_s: ((now - *frame_at).num_milliseconds() as f64 / 1000.0).max(0.0),
                    fuel_per_lap,
                    reserve_laps: self.app.limits.fuel_reserve_laps,
                    rejoin: readings
                        .field
                        .as_ref()
                        .and_then(|field| crate::server::rejoin::rejoin(field, pit_loss)),
                };
                let thresholds = self.app.limits.alerts_for(team.as_deref());
                events.extend(board.check(*id, thresholds, &input, now));
            }
        }
        // Announced by the alert writer (once across processors), or here.
        for event in events {
            let Some(event) = self.storage.alert(event, &self.app.metrics) else {
                continue;
            };
            crate::server::store::publish_alert(&self.client, &event).await;
        }
    }

    async fn announce(&self, announcement: Announcement) {
        let Announcement {
            session_id,
            event,
            body,
        } = announcement;
        for subject in [
            subjects::session_event(&session_id, event),
            subjects::service_event(event),
        ] {
            if let Err(e) = self.client.publish(subject, body.clone()).await {
                tracing::warn!(%session_id, event = event.as_str(), error = %e, "could not announce");
            }
        }
    }
}
