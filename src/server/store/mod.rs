//! Durable state in JetStream key-value buckets: the broker teams already run, no
//! new database.
//!
//! - `<bucket>` holds each live session's document under its id.
//! - `<bucket>_archive` holds each ended session (deleted or expired): its final
//!   document, when and why it ended. The stream's `max_age` is the archive
//!   retention. While an id is archived its data stays refused, across restarts.
//! - `<bucket>_laps` holds each completed lap under `<id>.<n>` (server/laps.rs; stored by laps_writer.rs). A lap is
//!   written through with a KV `create` before it is announced: with several
//!   processors the first stores it and announces it, the others take the stored
//!   copy. The bucket's `max_age` is the archive retention too, so an ended
//!   session's laps leave with it (and a session live for longer than that keeps
//!   older laps in memory only). The oldest beyond `--max-laps` are removed.
//!
//! - `<bucket>_alerts` holds each session's last announced alert event per kind
//!   under `<id>.<kind>` (alerts_writer.rs): a change is announced by the
//!   processor that moves the key to it, so once across processors, and a
//!   restarted processor reads the raised ones back.
//!
//! - `<bucket>_links` holds every shared link under its id: when it was made,
//!   last renewed and withdrawn (links.rs; server/links.rs), so a withdrawal is
//!   every processor's and outlives restarts.
//!
//! One task, the persister, owns every write, so writes land in order, and each
//! write renders the session as it is *at write time*: the last write is always the
//! newest state. Telemetry is written behind: changed sessions are flushed together
//! every `--persist-interval`, one write per session however many frames arrived.
//! Creates and setups are written through: acknowledged only once stored.
//!
//! Several processors share the buckets. Each watches both for the others' writes:
//! a session a peer created is adopted (so any processor can answer for it), and a
//! session a peer ended is ended here too. Archiving uses a KV `create`, so exactly
//! one processor archives (and announces) each end.
//!
//! Buckets are created with `create_stream` and opened with `get_key_value`:
//! async-nats's `create_key_value` asks for account details that NATS 2.9 does
//! not send.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::{self, kv};
use tokio::sync::{mpsc, oneshot};

use crate::protocol::documents::{Alert, AlertEvent};
use crate::protocol::id::SessionId;
use crate::server::app::App;
use crate::server::laps::LapRecord;
use crate::server::metrics::Metrics;
use crate::server::sessions::{Ended, Snapshot};

mod alerts_writer;
mod laps_writer;
mod links;
pub mod mirror;
mod peers;
mod persister;
mod recovery;
mod trace_writer;
mod traces;

pub(crate) use alerts_writer::publish as publish_alert;
use alerts_writer::{ALERT_QUEUE, ALERTS_BUCKET_BYTES, AlertWriter};
use laps_writer::{LapQueue, LapWriter};
use peers::{Peers, follow_peers};
use persister::{Outage, Persister};
pub(crate) use recovery::{BucketConfig, Full, open_bucket};
use recovery::{load, read_archived};
pub use trace_writer::TraceWriterHandle;
use trace_writer::{TraceQueue, TraceWriter};
pub use traces::Recorded;

/// Writes waiting for the persister beyond this make the sender wait (backpressure
/// on creates, setups and ends only; telemetry never queues here).
const JOB_QUEUE: usize = 1024;

/// Where session state is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// JetStream key-value buckets: sessions survive restarts.
    Jetstream,
    /// Memory only: every session is lost when the processor stops.
    Memory,
}

/// `--persist-rate`'s default: sessions written per second by the write-behind.
/// At 10,000 sessions each sending frames, writing every one every second cost
/// ingest a tenth of its throughput (`paddock bench`, 0.83 × raw NATS against
/// 0.93 with no bucket), and the broker's disk and CPU with it; beyond 2,000
/// changed sessions each is written less often instead (every 5 s at 10,000),
/// and the processor's CPU per frame there fell from 6.2 to 5.1 µs.
pub const DEFAULT_PERSIST_RATE: usize = 2_000;

/// `--trace-session-bytes`' default: bytes of frames the trace stream keeps
/// per session. 64 MiB is an hour of 0.9 KB frames at 20 Hz (20 minutes at 60
/// Hz), a quarter of the default traces share: a flooding session holds at most
/// that, and four cars' full hours fit side by side.
pub const DEFAULT_TRACE_SESSION_BYTES: usize = 64 * 1024 * 1024;

/// How the processor persists.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// Live sessions' bucket; the archive is `<bucket>_archive`.
    pub bucket: String,
    /// How long telemetry may wait before it is written (the write-behind window).
    pub persist_interval: Duration,
    /// Sessions the write-behind writes per second at most (`--persist-rate`;
    /// 0: no limit).
    pub persist_rate: usize,
    /// How long ended sessions are kept in the archive.
    pub archive_retention: Duration,
    /// JetStream replicas for every bucket (3 on a 3-node cluster).
    pub replicas: usize,
    /// Bytes all the buckets together may hold (`--kv-max-bytes`, default
    /// `--max-memory`), shared as [`BucketSizes::split`] says.
    pub max_bytes: usize,
    /// Where start-up says what it is waiting for (`/readyz` reads it).
    pub progress: StartupProgress,
    /// Bytes of frames the trace stream keeps per session
    /// (`--trace-session-bytes`).
    pub trace_session_bytes: usize,
    /// The largest frame the trace stream records (`--max-payload`).
    pub max_payload: usize,
}

/// What start-up is waiting for, in words for an operator: written while the
/// buckets are opened, read by `/readyz` (`Health`) before the processor serves.
#[derive(Debug, Clone, Default)]
pub struct StartupProgress(Arc<std::sync::Mutex<Option<String>>>);

impl StartupProgress {
    pub fn say(&self, what: impl Into<String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(what.into());
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// How `--kv-max-bytes` is shared among the buckets. JetStream sets aside each
/// stream's `max_bytes` (times its replicas) from the broker's (or account's)
/// storage when the stream is made, so what paddock asks for in all must fit what
/// the broker grants: the buckets share one budget instead of each taking it.
///
/// Everything the buckets hold is a copy of what `--max-memory` bounds in memory
/// (live sessions, ended ones, lap records), so the budget defaults to it. Its
/// shares follow what each holds and what a full one costs: the live documents
/// (a setup and a frame each, a few KB: 375 MiB is some 100,000 sessions) get
/// 3/8, as a full live bucket refuses writes (`/readyz` fails); the trace
/// stream (every frame, for lap traces) a quarter, as it holds the most and
/// only drops its oldest; each session's best lap (a copy the trace stream's
/// turnover cannot take: about 1.5 MB for a 3-minute lap at 20 Hz) 1/8; lap
/// records (two edge frames each, about 3 KB: 125 MiB is some 40,000 laps)
/// 1/8, as a full laps bucket only drops its oldest; the archive (ended
/// sessions' final documents) 1/8; the alerts bucket about 300 bytes per
/// session and kind; the links bucket about 500 bytes per shared link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSizes {
    pub live: usize,
    pub archive: usize,
    pub laps: usize,
    pub alerts: usize,
    pub links: usize,
    /// The trace stream (`<bucket>_traces`, store/traces.rs).
    pub traces: usize,
    /// The best-lap stream (`<bucket>_best`, server/traces.rs).
    pub best: usize,
}

impl BucketSizes {
    /// `budget` shared: the alerts bucket its 16 MiB (at most a sixteenth) and
    /// the links bucket its 8 MiB (at most a sixty-fourth), then of the rest
    /// live 3/8, traces 1/4, best laps 1/8, laps 1/8, archive 1/8. A budget JetStream cannot take as a
    /// size (beyond `i64::MAX`) means no limit for any bucket.
    pub fn split(budget: usize) -> Self {
        if i64::try_from(budget).is_err() {
            return BucketSizes {
                live: usize::MAX,
                archive: usize::MAX,
                laps: usize::MAX,
                alerts: usize::MAX,
                links: usize::MAX,
                traces: usize::MAX,
                best: usize::MAX,
            };
        }
        let alerts = ALERTS_BUCKET_BYTES.min(budget / 16);
        let links = links::LINKS_BUCKET_BYTES.min(budget / 64);
        let rest = budget - alerts - links;
        let traces = rest / 4;
        let laps = rest / 8;
        let archive = rest / 8;
        let best = rest / 8;
        BucketSizes {
            live: rest - traces - laps - archive - best,
            archive,
            laps,
            alerts,
            links,
            traces,
            best,
        }
    }

    /// Bytes asked of JetStream in all (each replica counts).
    pub fn total(&self, replicas: usize) -> u128 {
        [
            self.live,
            self.archive,
            self.laps,
            self.alerts,
            self.links,
            self.traces,
            self.best,
        ]
        .iter()
        .map(|&b| b as u128)
        .sum::<u128>()
            * replicas.max(1) as u128
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Jetstream,
            bucket: "paddock_sessions".into(),
            persist_interval: Duration::from_secs(1),
            persist_rate: DEFAULT_PERSIST_RATE,
            archive_retention: Duration::from_secs(7 * 24 * 3600),
            replicas: 1,
            max_bytes: crate::server::sessions::DEFAULT_MAX_MEMORY,
            progress: StartupProgress::default(),
            trace_session_bytes: DEFAULT_TRACE_SESSION_BYTES,
            max_payload: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the {bucket} bucket: {reason} (is JetStream enabled on the broker, \
         e.g. nats-server -js? --store memory runs without it, keeping nothing)"
    )]
    Open { bucket: String, reason: String },
    /// The broker's JetStream cannot set aside what the buckets ask: a
    /// configuration that cannot work, refused at start (never retried).
    #[error("{0}")]
    NoRoom(String),
    /// A read came from a replica that has not caught up with the stream's leader.
    #[error(
        "the {bucket} bucket was read from a replica behind its leader (message {read} of {leader})"
    )]
    Behind {
        bucket: String,
        read: u64,
        leader: u64,
    },
    /// A write was refused; the cause is the JetStream error.
    #[error("storage unavailable")]
    Write(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
    #[error("the persister has stopped")]
    Stopped,
}

type Done = oneshot::Sender<Result<(), StoreError>>;

/// What the persister is asked to do, besides its periodic flush.
enum Job {
    /// Write this session now (create, setup).
    Persist { id: SessionId, done: Done },
    /// Archive this ended session and remove it from the live bucket; answers
    /// whether this processor archived it first.
    End {
        ended: Box<Ended>,
        done: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Remove a session a peer ended from the live bucket (this processor may have
    /// written it back before it learned of the end).
    Purge { id: SessionId },
    /// Write every changed session, then answer (shutdown).
    FlushAll { done: Done },
}

/// The processor's handle on storage. With `--store memory` every call succeeds
/// at once.
#[derive(Clone)]
pub struct Storage {
    jobs: Option<mpsc::Sender<Job>>,
    /// Completed laps for the lap writer.
    laps: Option<LapQueue>,
    /// The live bucket, for reads outside the persister (see [`Storage::lookup`]).
    live: Option<kv::Store>,
    /// Alert events for the alert writer.
    alerts: Option<mpsc::Sender<AlertEvent>>,
    /// The links bucket: links made, renewed and withdrawn (links.rs).
    links: Option<kv::Store>,
    /// The trace stream, for reading laps back (traces.rs).
    traces: Option<Traces>,
    /// Accepted telemetry frames for the trace writer (trace_writer.rs).
    trace_queue: Option<TraceQueue>,
}

/// The most one session's best lap may hold in the best-lap stream: 256
/// chunks. A lap's frames as kept (each frame's numbers, about 300 bytes of a
/// 1 KB frame) fill it at 60 Hz in about 15 minutes; a longer lap is not kept.
pub const BEST_LAP_BYTES: usize = 16 * 1024 * 1024;

/// A handle on the trace stream: reads one session's frames over a time window.
#[derive(Clone)]
pub struct Traces {
    stream: jetstream::stream::Stream,
    /// The best-lap stream: each session's fastest lap (server/traces.rs).
    best: jetstream::stream::Stream,
    js: jetstream::Context,
    /// This process's name in the best-lap chunks' `Paddock-Recorder` header.
    recorder: String,
    client: Client,
    /// Has a session's frames written before a read.
    writer: TraceWriterHandle,
}

impl Traces {
    /// The frames `id`'s session sent that this processor accepted from
    /// `from` to `to`, at most `limit` and one more (the caller refuses that
    /// many). What the writer still holds of the session is written first, so
    /// a lap just completed reads whole.
    pub async fn read(
        &self,
        id: crate::protocol::id::SessionId,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<Recorded>, StoreError> {
        self.writer.flush(id).await;
        let subject = crate::protocol::subjects::trace_record(&id);
        traces::read(&self.stream, &self.client, subject, from, to, limit).await
    }

    /// The frames of `id`'s best lap copy that were accepted from `from` to
    /// `to` (nothing when the copy is of another lap).
    pub async fn read_best(
        &self,
        id: crate::protocol::id::SessionId,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<Recorded>, StoreError> {
        let subject = crate::protocol::subjects::best_record(&id);
        traces::read(&self.best, &self.client, subject, from, to, limit).await
    }

    /// Keeps `frames` (each with when it was accepted) as `id`'s best lap, in
    /// place of the one kept before. Answers false, keeping nothing, when
    /// they are more than [`BEST_LAP_BYTES`].
    pub async fn keep_best(
        &self,
        id: crate::protocol::id::SessionId,
        frames: &[(chrono::DateTime<chrono::Utc>, Vec<u8>)],
    ) -> Result<bool, StoreError> {
        let mut chunks = vec![traces::new_chunk()];
        for (at, frame) in frames {
            let last = chunks.last().expect("there is a chunk");
            // As the trace writer's: a frame is never split.
            if last.len() > traces::CHUNK_MAGIC.len()
                && last.len() + traces::RECORD_HEAD + frame.len() > traces::CHUNK_BYTES
            {
                chunks.push(traces::new_chunk());
            }
            let last = chunks.last_mut().expect("there is a chunk");
            traces::append(last, *at, frame);
        }
        if chunks.len() > BEST_LAP_BYTES.div_ceil(traces::CHUNK_BYTES) {
            return Ok(false);
        }
        let subject = crate::protocol::subjects::best_record(&id);
        traces::keep(&self.js, &self.best, subject, &self.recorder, chunks).await?;
        Ok(true)
    }

    /// Has everything the writer holds written (shutdown).
    pub async fn flush(&self) {
        self.writer.flush_all().await;
    }
}

impl Storage {
    pub fn memory() -> Self {
        Storage {
            jobs: None,
            laps: None,
            live: None,
            alerts: None,
            links: None,
            traces: None,
            trace_queue: None,
        }
    }

    /// The trace stream, if this processor records (not with `--store memory`).
    pub fn traces(&self) -> Option<Traces> {
        self.traces.clone()
    }

    /// Opens the buckets, loads what they hold into `app`, and starts the persister.
    pub async fn open(
        client: &Client,
        config: &StoreConfig,
        app: &Arc<App>,
    ) -> Result<Self, StoreError> {
        if config.kind == StoreKind::Memory {
            tracing::warn!(
                "--store memory: sessions live in this process only and are lost when it stops"
            );
            return Ok(Storage::memory());
        }
        let js = jetstream::new(client.clone());
        let archive_name = format!("{}_archive", config.bucket);
        let laps_name = format!("{}_laps", config.bucket);
        let alerts_name = format!("{}_alerts", config.bucket);
        let links_name = format!("{}_links", config.bucket);
        // A key no one rewrote for this long is a link whose credentials all
        // expired (each renewal rewrites it): the bucket forgets it by itself.
        let links_age = app.limits.credentials_ttl + links::MAX_AGE_MARGIN;
        let retention = Some(config.archive_retention);
        let sizes = BucketSizes::split(config.max_bytes);
        let started = std::time::Instant::now();
        // Opening, watching and loading are retried together: a cluster that lost a
        // node can refuse new consumers for a while (about a minute on NATS 2.9).
        let opened = retry_while_starting(client, &config.progress, || async {
            // A cluster still electing its metadata leader drops JetStream
            // requests unanswered, and each would wait out a 10 s timeout: ask
            // cheaply until it answers, then open.
            let live_stream = crate::protocol::subjects::kv_stream(&config.bucket);
            config
                .progress
                .say("starting: waiting for the broker's JetStream to answer");
            crate::client::jetstream_answers(client, &live_stream, STARTUP_PATIENCE).await;
            config
                .progress
                .say("starting: opening the JetStream buckets");
            check_account(client, &sizes, config).await?;
            // The live bucket refuses writes when full (its sessions stay in memory
            // and are retried); the archive and laps drop their oldest instead.
            let bucket = |name: &str, max_age, max_bytes, when_full| BucketConfig {
                name: name.to_string(),
                max_age,
                replicas: config.replicas,
                max_bytes,
                when_full,
            };
            let js = &js;
            let open = |bucket: BucketConfig| async move {
                open_bucket(js, &bucket)
                    .await
                    .map_err(|e| no_room(e, &sizes, config))
            };
            let live = open(bucket(&config.bucket, None, sizes.live, Full::Refuse)).await?;
            let archive = open(bucket(
                &archive_name,
                retention,
                sizes.archive,
                Full::DropOldest,
            ))
            .await?;
            let laps = open(bucket(&laps_name, retention, sizes.laps, Full::DropOldest)).await?;
            let alerts = open(bucket(
                &alerts_name,
                retention,
                sizes.alerts,
                Full::DropOldest,
            ))
            .await?;
            // Full: the oldest writes go, links no page renewed for the
            // longest; a link the bucket lost is refused, never let through.
            let links_bucket = bucket(&links_name, Some(links_age), sizes.links, Full::DropOldest);
            let links = open(links_bucket.clone()).await?;
            keep_max_age(js, &links_bucket).await;
            let trace_config = traces::TraceConfig {
                name: crate::protocol::subjects::trace_stream(&config.bucket),
                subjects: &crate::protocol::subjects::TRACE_SUBJECTS,
                description: "paddock: every accepted telemetry frame, for lap traces",
                max_bytes: sizes.traces,
                per_session_bytes: config.trace_session_bytes,
                max_age: config.archive_retention,
                max_payload: config.max_payload,
                replicas: config.replicas,
                compress: traces::compresses(&client.server_info().version),
            };
            let trace_stream = traces::open(js, &trace_config)
                .await
                .map_err(|e| no_room(e, &sizes, config))?;
            let best_config = traces::TraceConfig {
                name: crate::protocol::subjects::best_stream(&config.bucket),
                subjects: &crate::protocol::subjects::BEST_SUBJECTS,
                description: "paddock: each session's best lap, for the live delta and comparisons",
                max_bytes: sizes.best,
                per_session_bytes: BEST_LAP_BYTES,
                ..trace_config
            };
            let best_stream = traces::open(js, &best_config)
                .await
                .map_err(|e| no_room(e, &sizes, config))?;
            config.progress.say("starting: recovering sessions");
            // Watch for other processors' writes from before the load on: whatever
            // changes after this point arrives on the watchers, so nothing falls
            // between the load and the watch.
            let peers_live = live
                .watch_all()
                .await
                .map_err(|e| open_error(&config.bucket, e))?;
            let peers_archive = archive
                .watch_all()
                .await
                .map_err(|e| open_error(&archive_name, e))?;
            let peers_laps = laps
                .watch_all()
                .await
                .map_err(|e| open_error(&laps_name, e))?;
            let peers_links = links
                .watch_all()
                .await
                .map_err(|e| open_error(&links_name, e))?;
            let live_values = load(&live, &config.bucket).await?;
            let archive_values = load(&archive, &archive_name).await?;
            let lap_values = load(&laps, &laps_name).await?;
            let alert_values = load(&alerts, &alerts_name).await?;
            let link_values = load(&links, &links_name).await?;
            Ok((
                (
                    live,
                    archive,
                    laps,
                    alerts,
                    links,
                    trace_stream,
                    best_stream,
                ),
                Peers {
                    live: peers_live,
                    archive: peers_archive,
                    laps: peers_laps,
                },
                peers_links,
                (live_values, archive_values, lap_values, alert_values),
                link_values,
            ))
        })
        .await?;
        let (
            (live, archive, laps, alerts, links, trace_stream, best_stream),
            peers,
            peers_links,
            (live_values, archive_values, lap_values, alert_values),
            link_values,
        ) = opened;
        // Every link, whatever the partitions: a link is not a session's.
        let shared_links = links::apply_all(app, link_values);

        let Restored {
            restored,
            archived,
            lap_records,
            raised,
        } = restore(app, live_values, archive_values, lap_values, alert_values);
        tracing::info!(
            restored,
            archived,
            lap_records,
            raised,
            shared_links,
            elapsed_ms = started.elapsed().as_millis() as u64,
            bucket = config.bucket,
            "recovered sessions from JetStream"
        );

        let (tx, rx) = mpsc::channel(JOB_QUEUE);
        let persister = Persister {
            live: live.clone(),
            archive,
            app: Arc::clone(app),
            retry_ends: Vec::new(),
            outage: Outage::default(),
        };
        tokio::spawn(persister.run(rx, config.persist_interval, config.persist_rate));
        let lap_queue = LapQueue::new(Arc::clone(app));
        let writer = LapWriter {
            bucket: laps,
            client: client.clone(),
            app: Arc::clone(app),
            queue: lap_queue.clone(),
        };
        tokio::spawn(writer.run(config.persist_interval));
        tokio::spawn(follow_peers(peers, Arc::clone(app), tx.clone()));
        tokio::spawn(links::follow(peers_links, Arc::clone(app)));
        let (alerts_tx, alerts_rx) = alert_queue();
        let alert_writer = AlertWriter {
            bucket: alerts,
            client: client.clone(),
        };
        tokio::spawn(alert_writer.run(alerts_rx));
        let trace_queue = TraceQueue::new(Arc::clone(app));
        let (trace_writer, trace_writer_handle) =
            TraceWriter::new(trace_queue.clone(), js.clone(), Arc::clone(app));
        tokio::spawn(trace_writer.run());
        Ok(Storage {
            jobs: Some(tx),
            laps: Some(lap_queue),
            live: Some(live),
            alerts: Some(alerts_tx),
            links: Some(links),
            traces: Some(Traces {
                stream: trace_stream,
                best: best_stream,
                js: js.clone(),
                recorder: uuid::Uuid::new_v4().simple().to_string(),
                client: client.clone(),
                writer: trace_writer_handle,
            }),
            trace_queue: Some(trace_queue),
        })
    }

    /// Stores a new link; with `--store memory` it lives in this processor only.
    pub async fn link_created(
        &self,
        link: &crate::protocol::documents::Link,
    ) -> Result<(), StoreError> {
        match &self.links {
            Some(bucket) => links::create(bucket, link).await,
            None => Ok(()),
        }
    }

    /// Records a renewal, or refuses it when the stored link was withdrawn
    /// (the inner error): the last word on a renewal is the bucket's.
    pub async fn link_renewed(
        &self,
        id: &crate::protocol::id::LinkId,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Result<(), crate::server::links::LinkError>, StoreError> {
        let Some(bucket) = &self.links else {
            return Ok(Ok(()));
        };
        Ok(links::renew(bucket, id, expires_at).await?.map(|_| ()))
    }

    /// Records withdrawals, for every processor and for restarts.
    pub async fn links_revoked(
        &self,
        withdrawn: &[crate::protocol::documents::Link],
    ) -> Result<(), StoreError> {
        let Some(bucket) = &self.links else {
            return Ok(());
        };
        for link in withdrawn {
            links::revoke(bucket, link).await?;
        }
        Ok(())
    }

    /// A link another processor made but this one has not heard of yet.
    pub async fn link(
        &self,
        id: &crate::protocol::id::LinkId,
    ) -> Option<crate::protocol::documents::Link> {
        let bucket = self.links.as_ref()?;
        links::read(bucket, id).await.ok()?.map(|(link, _)| link)
    }

    /// Reads every stored link into `app` (before a withdrawal or a listing:
    /// a link another processor made a moment ago counts too). A bucket that
    /// cannot be read leaves what this processor knows.
    pub async fn refresh_links(&self, app: &App) {
        let Some(bucket) = &self.links else { return };
        match load(bucket, "links").await {
            Ok(values) => {
                links::apply_all(app, values);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the links bucket; using what this processor knows")
            }
        }
    }

    /// A session another processor stored but this one has not heard of yet: a
    /// `get` answered here right after a create answered there still finds it.
    pub async fn lookup(&self, id: SessionId) -> Option<Snapshot> {
        let value = self.live.as_ref()?.get(id.to_string()).await.ok()??;
        Snapshot::from_json(&value).ok()
    }

    /// Writes one session now; for acknowledgements that promise it is stored.
    pub async fn persist(&self, id: SessionId) -> Result<(), StoreError> {
        self.ask((), |done| Job::Persist { id, done }).await
    }

    /// Archives an ended session and removes it from the live bucket. Answers
    /// whether this processor archived it first (with several processors, each may
    /// find the same idle session). On failure the persister keeps retrying: an
    /// ended session must not come back.
    pub async fn end(&self, ended: Ended) -> Result<bool, StoreError> {
        self.ask(true, |done| Job::End {
            ended: Box::new(ended),
            done,
        })
        .await
    }

    /// Hands a completed lap to the lap writer, which stores it and then
    /// announces it on `session.<id>.lap` (with several processors, only the one
    /// that stored it first announces it). Never waits: the ingest loop must not
    /// stall on storage, whatever the lap rate. Answers false with `--store
    /// memory`: then nothing is stored, and the caller announces.
    pub fn lap(&self, record: Arc<LapRecord>) -> bool {
        match &self.laps {
            Some(queue) => {
                queue.push(record);
                true
            }
            None => false,
        }
    }

    /// Hands an alert event to the alert writer, which announces it on
    /// `session.<id>.alerts` unless another processor already did. Never
    /// waits. Gives the event back when the caller must announce it itself:
    /// with `--store memory`, or when the writer's queue ([`ALERT_QUEUE`]) is
    /// full, which is counted here (`alerts_unqueued`) so no caller can forget.
    pub fn alert(&self, event: AlertEvent, metrics: &Metrics) -> Option<AlertEvent> {
        let Some(writer) = &self.alerts else {
            return Some(event);
        };
        match writer.try_send(event) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(event)) => {
                metrics
                    .alerts_unqueued
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Some(event)
            }
            Err(mpsc::error::TrySendError::Closed(event)) => Some(event),
        }
    }

    /// Hands an accepted telemetry frame to the trace writer (never waits;
    /// with `--store memory` nothing is recorded). `lap_ended`: the frame
    /// completed its session's lap.
    pub fn record(
        &self,
        id: crate::protocol::id::SessionId,
        at: chrono::DateTime<chrono::Utc>,
        frame: bytes::Bytes,
        lap_ended: bool,
    ) {
        if let Some(queue) = &self.trace_queue {
            queue.push(id, at, frame, lap_ended);
        }
    }

    /// Has the trace writer write what it holds (at shutdown).
    pub async fn traces_written(&self) {
        if let Some(traces) = &self.traces {
            traces.flush().await;
        }
    }

    /// Writes every changed session (at shutdown: no write-behind window is lost).
    pub async fn flush_all(&self) -> Result<(), StoreError> {
        self.ask((), |done| Job::FlushAll { done }).await
    }

    /// Waits, at most `patience`, until the lap writer has stored every lap
    /// handed to it (at shutdown: a writer behind, after a burst or while
    /// storage refused writes, would otherwise lose its queue with the process).
    /// Answers how many laps are still unstored when it gives up.
    pub async fn laps_stored(&self, patience: Duration) -> usize {
        match &self.laps {
            Some(queue) => queue.stored(patience).await,
            None => 0,
        }
    }

    /// Hands a job to the persister and waits for its answer; with `--store
    /// memory` there is no persister and the answer is `memory`.
    async fn ask<T>(
        &self,
        memory: T,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let Some(jobs) = &self.jobs else {
            return Ok(memory);
        };
        let (done, answer) = oneshot::channel();
        jobs.send(job(done))
            .await
            .map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }
}

/// The alert writer's queue: [`ALERT_QUEUE`] events (docs/SECURITY.md).
fn alert_queue() -> (mpsc::Sender<AlertEvent>, mpsc::Receiver<AlertEvent>) {
    mpsc::channel(ALERT_QUEUE)
}

/// How long start-up waits for JetStream to become available (a cluster electing
/// leaders, a broker still starting, a cluster that lost a node and refuses new
/// consumers for about a minute) before giving up.
const STARTUP_PATIENCE: Duration = Duration::from_secs(120);

/// What [`retry_while_starting`] asks of the connection: a trait, so that its
/// rules are unit-tested without a broker.
trait Link {
    fn connected(&self) -> bool;
    fn has_jetstream(&self) -> bool;
}

impl Link for Client {
    fn connected(&self) -> bool {
        self.connection_state() == async_nats::connection::State::Connected
    }
    fn has_jetstream(&self) -> bool {
        self.server_info().jetstream
    }
}

/// Runs `open` until it succeeds or [`STARTUP_PATIENCE`] passes: a read from a
/// replica behind its leader ([`StoreError::Behind`]) or a cluster still electing
/// leaders is read again. A broker that says it has no JetStream will not grow
/// one: that fails at once.
async fn retry_while_starting<T, F, Fut>(
    client: &impl Link,
    progress: &StartupProgress,
    mut open: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut deadline = tokio::time::Instant::now() + STARTUP_PATIENCE;
    loop {
        let connected = client.connected();
        match open().await {
            Ok(value) => return Ok(value),
            Err(e) if connected && !client.has_jetstream() => return Err(e),
            // A configuration that cannot fit is not going to start fitting.
            Err(e @ StoreError::NoRoom(_)) => return Err(e),
            // No broker yet: wait for one without limit (systemd or compose may
            // start the processor first); the patience counts once connected.
            Err(_) if !connected => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                deadline = tokio::time::Instant::now() + STARTUP_PATIENCE;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "JetStream not ready; retrying");
                progress.say(format!("starting: JetStream not ready ({e}); retrying"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

impl StoreError {
    fn write(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError::Write(std::sync::Arc::from(cause.into()))
    }
}

/// The buckets' sizes in words: "1.0 GiB in all (paddock_sessions 504 MiB, …)".
fn describe_sizes(sizes: &BucketSizes, config: &StoreConfig) -> String {
    let b = &config.bucket;
    let replicas = if config.replicas > 1 {
        format!(", each {} times (--kv-replicas)", config.replicas)
    } else {
        String::new()
    };
    format!(
        "{} in all ({b} {}, {b}_archive {}, {b}_laps {}, {b}_alerts {}, {b}_links {}, \
         {b}_traces {}, {b}_best {}{replicas})",
        human_bytes(sizes.total(config.replicas)),
        human_bytes(sizes.live as u128),
        human_bytes(sizes.archive as u128),
        human_bytes(sizes.laps as u128),
        human_bytes(sizes.alerts as u128),
        human_bytes(sizes.links as u128),
        human_bytes(sizes.traces as u128),
        human_bytes(sizes.best as u128),
    )
}

/// `1.5 GiB`, `378 MiB`, `912 B`: sizes as a configuration file writes them.
pub fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// What to change when the buckets do not fit, after what did not.
fn no_room_advice(sizes: &BucketSizes, config: &StoreConfig) -> String {
    format!(
        "paddock's JetStream buckets need {}: give the broker's JetStream at least that much \
         file storage (nats.conf: `jetstream {{ max_file_store: ... }}`; in operator mode the \
         account's disk_storage limit), or lower --kv-max-bytes (PADDOCK_KV_MAX_BYTES; default \
         --max-memory)",
        describe_sizes(sizes, config)
    )
}

/// A bucket the broker had no room for, said with every number and what to
/// change; other errors as they are.
fn no_room(e: StoreError, sizes: &BucketSizes, config: &StoreConfig) -> StoreError {
    match e {
        StoreError::NoRoom(refused) => {
            StoreError::NoRoom(format!("{refused}; {}", no_room_advice(sizes, config)))
        }
        e => e,
    }
}

/// Refuses at once a budget the account's own JetStream limit (operator mode:
/// the account JWT's `disk_storage`) cannot hold, before any bucket is made. A
/// broker-wide limit (`max_file_store`) is not in the account's information:
/// that one is found when a bucket is refused ([`no_room`]).
async fn check_account(
    client: &Client,
    sizes: &BucketSizes,
    config: &StoreConfig,
) -> Result<(), StoreError> {
    let asked = client.request(
        crate::protocol::subjects::JS_ACCOUNT_INFO,
        bytes::Bytes::new(),
    );
    let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(5), asked).await else {
        return Ok(());
    };
    let Ok(info) = serde_json::from_slice::<serde_json::Value>(&reply.payload) else {
        return Ok(());
    };
    let limit = info
        .pointer("/limits/max_storage")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(-1);
    if limit >= 0 && sizes.total(config.replicas) > limit as u128 {
        return Err(StoreError::NoRoom(format!(
            "the account's JetStream storage limit is {} ({limit} bytes); {}",
            human_bytes(limit as u128),
            no_room_advice(sizes, config)
        )));
    }
    Ok(())
}

/// Sets a bucket's `max_age` to what it should be, if it was made with
/// another (`--credentials-ttl` changed); on failure it is used as it is.
async fn keep_max_age(js: &jetstream::Context, bucket: &BucketConfig) {
    let Some(max_age) = bucket.max_age else {
        return;
    };
    let stream = crate::protocol::subjects::kv_stream(&bucket.name);
    let Ok(mut existing) = js.get_stream(&stream).await else {
        return;
    };
    let Ok(info) = existing.info().await else {
        return;
    };
    let mut config = info.config.clone();
    if config.max_age != max_age {
        config.max_age = max_age;
        if let Err(e) = js.update_stream(config).await {
            tracing::warn!(bucket = bucket.name, error = %e, "could not update the bucket's max_age; using it as it is");
        }
    }
}

fn open_error(bucket: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        bucket: bucket.to_string(),
        reason: e.to_string(),
    }
}

/// What [`restore`] put back.
pub(crate) struct Restored {
    pub(crate) restored: usize,
    pub(crate) archived: usize,
    pub(crate) lap_records: usize,
    pub(crate) raised: usize,
}

/// Puts what the buckets hold (each key's last value) into `app`: live sessions,
/// ended ones, their laps and the raised alerts. The processor's start, and
/// the hub's copy (mirror.rs), which reads the same buckets mirrored.
pub(crate) fn restore(
    app: &App,
    live_values: Vec<(String, bytes::Bytes)>,
    archive_values: Vec<(String, bytes::Bytes)>,
    lap_values: Vec<(String, bytes::Bytes)>,
    alert_values: Vec<(String, bytes::Bytes)>,
) -> Restored {
    // With partitions, the buckets hold every processor's sessions; this one
    // restores (and later adopts) those of the partitions it owns.
    let mut restored = 0usize;
    for (key, value) in live_values {
        match Snapshot::from_json(&value) {
            Ok(snapshot) if !app.partitions.owns(&snapshot.session_id) => {}
            Ok(snapshot) => {
                app.sessions.restore(snapshot);
                restored += 1;
            }
            Err(e) => tracing::error!(key, error = %e, "skipping an unreadable stored session"),
        }
    }
    let mut archived = 0usize;
    for (key, value) in archive_values {
        match read_archived(&value) {
            Ok(ended) if !app.partitions.owns(&ended.last.session_id) => {}
            Ok(ended) => {
                app.sessions.restore_ended(ended);
                archived += 1;
            }
            Err(e) => {
                tracing::error!(key, error = %e, "skipping an unreadable archived session")
            }
        }
    }
    // After the sessions: each lap goes to its live or archived session.
    let mut lap_records = 0usize;
    for (key, value) in lap_values {
        match LapRecord::from_stored(&value) {
            Ok(record) if !app.partitions.owns(&record.session_id) => {}
            Ok(record) => {
                app.sessions.restore_lap(record);
                lap_records += 1;
            }
            Err(e) => tracing::error!(key, error = %e, "skipping an unreadable stored lap"),
        }
    }
    // The alerts raised when the last processor stopped: held, not raised
    // again, and cleared (announced) when they no longer hold. The board
    // forgets those of sessions that are not live at its first check.
    let mut raised = 0usize;
    {
        let mut board = app.alert_board();
        for (key, value) in alert_values {
            match serde_json::from_slice::<AlertEvent>(&value) {
                Ok(event) if !app.partitions.owns(&event.session_id) => {}
                Ok(event) if event.state == "raised" => {
                    let alert = Alert {
                        reading: event.reading,
                        since: event.at,
                    };
                    board.restore(event.session_id, alert);
                    raised += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(key, error = %e, "skipping an unreadable stored alert")
                }
            }
        }
    }
    Restored {
        restored,
        archived,
        lap_records,
        raised,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Up {
        jetstream: bool,
    }

    impl Link for Up {
        fn connected(&self) -> bool {
            true
        }
        fn has_jetstream(&self) -> bool {
            self.jetstream
        }
    }

    fn behind() -> StoreError {
        StoreError::Behind {
            bucket: "paddock_sessions".into(),
            read: 7,
            leader: 9,
        }
    }

    /// A load that read a replica behind its leader is not taken: it is read
    /// again, and the second, complete read is what recovery restores.
    #[tokio::test]
    async fn a_read_from_a_replica_behind_is_read_again() {
        let attempts = std::sync::atomic::AtomicUsize::new(0);
        let loaded = retry_while_starting(
            &Up { jetstream: true },
            &StartupProgress::default(),
            || async {
                match attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
                    0 => Err(behind()),
                    _ => Ok("complete"),
                }
            },
        )
        .await;
        assert_eq!(loaded.unwrap(), "complete");
        assert_eq!(attempts.into_inner(), 2);
    }

    #[test]
    fn the_buckets_share_one_budget() {
        const MIB: usize = 1024 * 1024;
        let sizes = BucketSizes::split(1024 * MIB);
        assert_eq!(sizes.alerts, 16 * MIB);
        assert_eq!(sizes.links, 8 * MIB);
        assert_eq!(sizes.traces, 250 * MIB);
        assert_eq!(sizes.laps, 125 * MIB);
        assert_eq!(sizes.archive, 125 * MIB);
        assert_eq!(sizes.best, 125 * MIB);
        assert_eq!(sizes.live, 375 * MIB);
        assert_eq!(sizes.total(1), 1024 * MIB as u128);
        assert_eq!(sizes.total(3), 3 * 1024 * MIB as u128);
        // A small budget: the alerts bucket takes at most a sixteenth.
        assert_eq!(BucketSizes::split(64 * MIB).alerts, 4 * MIB);
        assert_eq!(BucketSizes::split(64 * MIB).links, MIB);
        assert_eq!(BucketSizes::split(64 * MIB).total(1), 64 * MIB as u128);
        // Beyond what JetStream takes as a size: no limit anywhere.
        assert_eq!(BucketSizes::split(usize::MAX).live, usize::MAX);
        assert_eq!(human_bytes(504 * MIB as u128), "504 MiB");
        assert_eq!(human_bytes(1024 * MIB as u128), "1.0 GiB");
    }

    #[tokio::test]
    async fn a_broker_without_jetstream_fails_at_once() {
        let attempts = std::sync::atomic::AtomicUsize::new(0);
        let loaded: Result<(), _> = retry_while_starting(
            &Up { jetstream: false },
            &StartupProgress::default(),
            || async {
                attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(behind())
            },
        )
        .await;
        assert!(matches!(loaded, Err(StoreError::Behind { .. })));
        assert_eq!(attempts.into_inner(), 1);
    }

    /// docs/SECURITY.md: past 4,096 events waiting for the alert writer, an
    /// event is announced straight away and counted (`alerts_unqueued`).
    #[test]
    fn the_alert_writers_queue_holds_4096_events_then_hands_back_and_counts() {
        let (alerts, _writer) = alert_queue();
        let storage = Storage {
            alerts: Some(alerts),
            ..Storage::memory()
        };
        let metrics = Metrics::default();
        let event = |n: usize| AlertEvent {
            session_id: SessionId::new_v4(),
            state: "raised".into(),
            reading: crate::protocol::documents::AlertReading {
                kind: "fuel_low".into(),
                level: "warning".into(),
                value: n as f64,
                threshold: 2.0,
                message: String::new(),
            },
            at: chrono::Utc::now(),
        };
        // The documented number, not the constant: a changed bound fails here
        // until docs/SECURITY.md says so too.
        for n in 0..4096 {
            assert!(storage.alert(event(n), &metrics).is_none(), "event {n}");
        }
        let unqueued = |m: &Metrics| m.alerts_unqueued.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(unqueued(&metrics), 0);
        for n in 0..3 {
            let back = storage.alert(event(4096 + n), &metrics);
            assert_eq!(back.unwrap().reading.value, (4096 + n) as f64);
        }
        assert_eq!(unqueued(&metrics), 3);
        // Without a writer (--store memory) the caller announces; nothing is lost
        // to a queue, so nothing is counted.
        assert!(Storage::memory().alert(event(0), &metrics).is_some());
        assert_eq!(unqueued(&metrics), 3);
    }
}
