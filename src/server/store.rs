//! Durable state in JetStream key-value buckets: the broker teams already run, no
//! new database.
//!
//! - `<bucket>` holds each live session's document under its id.
//! - `<bucket>_archive` holds each ended session (deleted or expired): its final
//!   document, when and why it ended. The stream's `max_age` is the archive
//!   retention. While an id is archived its data stays refused, across restarts.
//! - `<bucket>_laps` holds each completed lap under `<id>.<n>` (laps.rs). A lap is
//!   written through with a KV `create` before it is announced: with several
//!   processors the first stores it and announces it, the others take the stored
//!   copy. The bucket's `max_age` is the archive retention too, so an ended
//!   session's laps leave with it (and a session live for longer than that keeps
//!   older laps in memory only). The oldest beyond `--max-laps` are removed.
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
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::protocol::id::SessionId;
use crate::protocol::subjects;
use crate::server::app::App;
use crate::server::laps::{self, LapRecord};
use crate::server::sessions::{EndReason, Ended, Snapshot, format_time};

/// Writes waiting for the persister beyond this make the sender wait (backpressure
/// on creates, setups and ends only; telemetry never queues here).
const JOB_QUEUE: usize = 1024;
/// Concurrent puts in one flush.
const PUTS_IN_FLIGHT: usize = 256;

/// Where session state is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// JetStream key-value buckets: sessions survive restarts.
    Jetstream,
    /// Memory only: every session is lost when the processor stops.
    Memory,
}

/// How the processor persists.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// Live sessions' bucket; the archive is `<bucket>_archive`.
    pub bucket: String,
    /// How long telemetry may wait before it is written (the write-behind window).
    pub persist_interval: Duration,
    /// How long ended sessions are kept in the archive.
    pub archive_retention: Duration,
    /// JetStream replicas for both buckets (3 on a 3-node cluster).
    pub replicas: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Jetstream,
            bucket: "paddock_sessions".into(),
            persist_interval: Duration::from_secs(1),
            archive_retention: Duration::from_secs(7 * 24 * 3600),
            replicas: 1,
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
    /// A read came from a replica that has not caught up with the stream's leader.
    #[error(
        "the {bucket} bucket was read from a replica behind its leader (message {read} of {leader})"
    )]
    Behind {
        bucket: String,
        read: u64,
        leader: u64,
    },
    #[error("storage unavailable: {0}")]
    Write(String),
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
}

impl Storage {
    pub fn memory() -> Self {
        Storage {
            jobs: None,
            laps: None,
            live: None,
        }
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
        let retention = Some(config.archive_retention);
        let started = std::time::Instant::now();
        // Opening, watching and loading are retried together: a cluster that lost a
        // node can refuse new consumers for a while (about a minute on NATS 2.9).
        let opened = retry_while_starting(client, || async {
            let live = open_bucket(&js, &config.bucket, None, config.replicas).await?;
            let archive = open_bucket(&js, &archive_name, retention, config.replicas).await?;
            let laps = open_bucket(&js, &laps_name, retention, config.replicas).await?;
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
            let live_values = load(&live, &config.bucket).await?;
            let archive_values = load(&archive, &archive_name).await?;
            let lap_values = load(&laps, &laps_name).await?;
            Ok((
                (live, archive, laps),
                Peers {
                    live: peers_live,
                    archive: peers_archive,
                    laps: peers_laps,
                },
                (live_values, archive_values, lap_values),
            ))
        })
        .await?;
        let ((live, archive, laps), peers, (live_values, archive_values, lap_values)) = opened;

        let mut restored = 0usize;
        for (key, value) in live_values {
            match Snapshot::from_json(&value) {
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
                Ok(record) => {
                    app.sessions.restore_lap(record);
                    lap_records += 1;
                }
                Err(e) => tracing::error!(key, error = %e, "skipping an unreadable stored lap"),
            }
        }
        tracing::info!(
            restored,
            archived,
            lap_records,
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
        tokio::spawn(persister.run(rx, config.persist_interval));
        let lap_queue = LapQueue::default();
        let writer = LapWriter {
            bucket: laps,
            client: client.clone(),
            app: Arc::clone(app),
            queue: lap_queue.clone(),
        };
        tokio::spawn(writer.run(config.persist_interval));
        tokio::spawn(follow_peers(peers, Arc::clone(app), tx.clone()));
        Ok(Storage {
            jobs: Some(tx),
            laps: Some(lap_queue),
            live: Some(live),
        })
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

    /// Writes every changed session (at shutdown: no write-behind window is lost).
    pub async fn flush_all(&self) -> Result<(), StoreError> {
        self.ask((), |done| Job::FlushAll { done }).await
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

/// How long start-up waits for JetStream to become available (a cluster electing
/// leaders, a broker still starting, a cluster that lost a node and refuses new
/// consumers for about a minute) before giving up.
const STARTUP_PATIENCE: Duration = Duration::from_secs(120);

/// Runs `open` until it succeeds or [`STARTUP_PATIENCE`] passes. A broker that
/// says it has no JetStream will not grow one: that fails at once.
async fn retry_while_starting<T, F, Fut>(client: &Client, mut open: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = tokio::time::Instant::now() + STARTUP_PATIENCE;
    loop {
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        match open().await {
            Ok(value) => return Ok(value),
            Err(e) if connected && !client.server_info().jetstream => return Err(e),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "JetStream not ready; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn open_error(bucket: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        bucket: bucket.to_string(),
        reason: e.to_string(),
    }
}

/// Watchers on the three buckets, for [`follow_peers`].
struct Peers {
    live: kv::Watch,
    archive: kv::Watch,
    laps: kv::Watch,
}

/// Applies other processors' writes: sessions they created are adopted, sessions
/// they ended are ended here, laps they stored are kept here (their copy wins).
/// This processor's own writes come back too, and are no-ops (the id is known, or
/// already ended; the lap is the same).
async fn follow_peers(peers: Peers, app: Arc<App>, jobs: mpsc::Sender<Job>) {
    use std::sync::atomic::Ordering::Relaxed;
    let Peers {
        mut live,
        mut archive,
        mut laps,
    } = peers;
    loop {
        tokio::select! {
            Some(entry) = laps.next() => {
                let entry = match put(entry) {
                    Watched::Put(entry) => entry,
                    Watched::Skip => continue,
                    Watched::Closed => return,
                };
                if let Ok(record) = LapRecord::from_stored(&entry.value) {
                    app.sessions.restore_lap(record);
                }
            }
            Some(entry) = live.next() => {
                let entry = match put(entry) {
                    Watched::Put(entry) => entry,
                    Watched::Skip => continue,
                    Watched::Closed => return,
                };
                if let Ok(snapshot) = Snapshot::from_json(&entry.value) {
                    let id = snapshot.session_id;
                    if app.sessions.adopt(snapshot) {
                        app.metrics.sessions_created.fetch_add(1, Relaxed);
                        tracing::debug!(session_id = %id, "adopted a session another processor stored");
                    }
                }
            }
            Some(entry) = archive.next() => {
                let entry = match put(entry) {
                    Watched::Put(entry) => entry,
                    Watched::Skip => continue,
                    Watched::Closed => return,
                };
                let Ok(ended) = read_archived(&entry.value) else { continue };
                let (id, reason) = (ended.last.session_id, ended.reason);
                if app.sessions.adopt_end(ended) {
                    match reason {
                        EndReason::Deleted => app.metrics.sessions_deleted.fetch_add(1, Relaxed),
                        EndReason::Expired => app.metrics.sessions_expired.fetch_add(1, Relaxed),
                    };
                    tracing::debug!(session_id = %id, %reason, "another processor ended a session");
                    let _ = jobs.send(Job::Purge { id }).await;
                }
            }
            else => {
                tracing::warn!("stopped following other processors' writes");
                return;
            }
        }
    }
}

/// What a watcher handed over, for [`follow_peers`].
enum Watched {
    /// A value written: the only operation a peer's session changes arrive as.
    Put(kv::Entry),
    /// A delete or purge marker, or a transient error: nothing to do.
    Skip,
    /// The client is gone: stop watching.
    Closed,
}

fn put(entry: Result<kv::Entry, kv::WatcherError>) -> Watched {
    match entry {
        Ok(entry) if entry.operation == kv::Operation::Put => Watched::Put(entry),
        Ok(_) => Watched::Skip,
        Err(e) if watcher_closed(&e) => Watched::Closed,
        Err(e) => {
            tracing::debug!(error = %e, "a bucket watcher erred; it goes on");
            Watched::Skip
        }
    }
}

/// Whether a watcher error means its client is gone (the processor is stopping).
/// Most watcher errors are transient (a missed heartbeat: the watcher re-creates
/// its consumer and goes on), but after this one async-nats 0.51's ordered
/// consumer must not be polled again: it panics ("`async fn` resumed after
/// completion", consumer/push.rs). It carries no kind of its own, hence the text.
fn watcher_closed(e: &kv::WatcherError) -> bool {
    e.to_string().contains("state watcher dropped")
}

/// Opens a KV bucket, creating its stream first if it does not exist.
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Option<Duration>,
    replicas: usize,
) -> Result<kv::Store, StoreError> {
    let fail = |reason: String| StoreError::Open {
        bucket: bucket.to_string(),
        reason,
    };
    let stream_name = format!("KV_{bucket}");
    if js.get_stream(&stream_name).await.is_err() {
        // The stream a KV bucket is made of, as async-nats's create_key_value would
        // configure it (history 1, rollups for purges, direct gets).
        let config = stream::Config {
            name: stream_name.clone(),
            description: Some(format!("paddock sessions ({bucket})")),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age: max_age.unwrap_or_default(),
            storage: stream::StorageType::File,
            num_replicas: replicas.max(1),
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        };
        match js.create_stream(config).await {
            Ok(_) => tracing::info!(bucket, replicas, "created JetStream bucket"),
            // Another processor created it in the meantime: use theirs.
            Err(e) if js.get_stream(&stream_name).await.is_ok() => {
                tracing::debug!(bucket, error = %e, "bucket created concurrently");
            }
            Err(e) => return Err(fail(e.to_string())),
        }
    }
    js.get_key_value(bucket)
        .await
        .map_err(|e| fail(e.to_string()))
}

/// How long reading a bucket at start-up may make no progress before the attempt
/// is given up (and retried).
const LOAD_STALL: Duration = Duration::from_secs(10);

/// The latest value of every key, read with one watcher (a consumer replaying the
/// last message per key) rather than one request per key.
async fn load(store: &kv::Store, bucket: &str) -> Result<Vec<(String, Bytes)>, StoreError> {
    let fail = |reason: String| StoreError::Open {
        bucket: bucket.to_string(),
        reason,
    };
    let status = store.status().await.map_err(|e| fail(e.to_string()))?;
    if status.values() == 0 {
        return Ok(Vec::new());
    }
    let mut watch = store
        .watch_with_history(">")
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut values = Vec::new();
    // In a cluster the watcher reads from one replica of the stream, which may be
    // behind (a node that just came back): it would hand over older values. The
    // status came from the stream's leader, and with one message per key the last
    // message read must be the leader's last: otherwise this read is stale, and is
    // retried (the replica catches up within seconds).
    let leader_last = status.info.state.last_sequence;
    let mut read_last = 0;
    loop {
        // A consumer that was created but delivers nothing (a cluster in trouble)
        // must not hold start-up forever: give up on this attempt, and retry.
        let next = tokio::time::timeout(LOAD_STALL, watch.next()).await;
        let Some(entry) = next.map_err(|_| fail("no progress reading the bucket".into()))? else {
            break;
        };
        let entry = entry.map_err(|e| fail(e.to_string()))?;
        read_last = read_last.max(entry.revision);
        let last = entry.delta == 0;
        // A purged key's last message is its purge marker: nothing to restore.
        if entry.operation == kv::Operation::Put {
            values.push((entry.key, entry.value));
        }
        if last {
            break;
        }
    }
    if read_last < leader_last {
        return Err(StoreError::Behind {
            bucket: bucket.to_string(),
            read: read_last,
            leader: leader_last,
        });
    }
    Ok(values)
}

/// Reads an archive record: `{"session": <document>, "ended_at": …, "reason": …}`.
fn read_archived(value: &[u8]) -> Result<Ended, String> {
    #[derive(serde::Deserialize)]
    struct Record<'a> {
        #[serde(borrow)]
        session: &'a serde_json::value::RawValue,
        ended_at: DateTime<Utc>,
        reason: EndReason,
    }
    let record: Record<'_> = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    let last = Snapshot::from_json(record.session.get().as_bytes())?;
    Ok(Ended {
        at: record.ended_at,
        reason: record.reason,
        last,
        // The laps come from their own bucket (restore_lap).
        laps: Vec::new(),
    })
}

struct Persister {
    live: kv::Store,
    archive: kv::Store,
    app: Arc<App>,
    /// Ended sessions whose archiving failed, retried on each tick.
    retry_ends: Vec<Ended>,
    outage: Outage,
}

/// Laps waiting to be stored: filled by the ingest loop without waiting, drained
/// by the [`LapWriter`].
#[derive(Clone, Default)]
struct LapQueue {
    pending: Arc<std::sync::Mutex<std::collections::VecDeque<Arc<LapRecord>>>>,
    wake: Arc<tokio::sync::Notify>,
}

/// Laps queued beyond this (storage down for long, or a monitor that changes its
/// lap value in every frame) are dropped oldest first, counted and logged: memory
/// stays bounded, and the laps stay in memory for `sessions.laps` meanwhile.
const LAP_QUEUE_MAX: usize = 100_000;
/// Laps stored at once.
const LAPS_IN_FLIGHT: usize = 64;

impl LapQueue {
    fn push(&self, record: Arc<LapRecord>) {
        let dropped = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.push_back(record);
            (pending.len() > LAP_QUEUE_MAX).then(|| pending.pop_front())
        };
        if let Some(Some(lost)) = dropped {
            tracing::warn!(session_id = %lost.session_id, n = lost.n, "lap queue full: an unstored lap is dropped from it");
        }
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<Arc<LapRecord>> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.drain(..).collect()
    }

    /// Puts back laps whose write failed, ahead of newer ones.
    fn retry(&self, failed: Vec<Arc<LapRecord>>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for record in failed.into_iter().rev() {
            pending.push_front(record);
        }
    }
}

/// Stores completed laps (a KV `create` each, several at once) and announces the
/// ones this processor stored first. A task of its own, beside the persister, so
/// neither creates, setups and ends nor the ingest loop wait behind laps.
struct LapWriter {
    bucket: kv::Store,
    client: Client,
    app: Arc<App>,
    queue: LapQueue,
}

impl LapWriter {
    async fn run(self, retry_every: Duration) {
        let mut outage = Outage::default();
        loop {
            // Woken by a new lap; retries failed ones on the clock.
            let _ = tokio::time::timeout(retry_every, self.queue.wake.notified()).await;
            let batch = self.queue.take();
            if batch.is_empty() {
                continue;
            }
            // Each session's laps in order (so they are announced in order), the
            // sessions side by side.
            let mut by_session: Vec<Vec<Arc<LapRecord>>> = Vec::new();
            let mut index: std::collections::HashMap<SessionId, usize> = Default::default();
            for record in batch {
                let i = *index.entry(record.session_id).or_insert_with(|| {
                    by_session.push(Vec::new());
                    by_session.len() - 1
                });
                by_session[i].push(record);
            }
            let this = &self;
            let failed: Vec<Arc<LapRecord>> = futures::stream::iter(by_session)
                .map(|laps| async move {
                    let mut laps = laps.into_iter();
                    while let Some(record) = laps.next() {
                        if let Err(e) = this.store(&record).await {
                            tracing::debug!(session_id = %record.session_id, n = record.n, error = %e, "lap not stored yet");
                            // The rest wait too: laps are stored and announced in order.
                            return std::iter::once(record).chain(laps).collect();
                        }
                    }
                    Vec::new()
                })
                .buffer_unordered(LAPS_IN_FLIGHT)
                .flat_map(futures::stream::iter)
                .collect()
                .await;
            let result = if failed.is_empty() {
                Ok(())
            } else {
                Err(StoreError::Write(format!(
                    "{} laps not stored yet",
                    failed.len()
                )))
            };
            let failing = !failed.is_empty();
            self.queue.retry(failed);
            outage.observe(result);
            if failing {
                // Wait for the clock before trying again, not for the next lap.
                tokio::time::sleep(retry_every).await;
            }
        }
    }

    /// Stores a lap unless another processor did, and announces it if this one
    /// stored it; otherwise keeps the stored copy. Drops the lap `--max-laps`
    /// before it from the bucket.
    async fn store(&self, record: &LapRecord) -> Result<(), StoreError> {
        let key = record.key();
        match self.bucket.create(&key, record.to_stored().into()).await {
            Ok(_) => {
                let subject = subjects::session_lap(&record.session_id);
                if let Err(e) = self.client.publish(subject, record.to_json().into()).await {
                    tracing::warn!(session_id = %record.session_id, error = %e, "could not announce a lap");
                }
                let max = self.app.limits.max_laps as u64;
                if record.n > max {
                    let old = laps::key(&record.session_id, record.n - max);
                    if let Err(e) = self.bucket.purge(&old).await {
                        tracing::debug!(key = old, error = %e, "could not drop an old lap");
                    }
                }
                Ok(())
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                if let Ok(Some(stored)) = self.bucket.get(&key).await
                    && let Ok(stored) = LapRecord::from_stored(&stored)
                {
                    self.app.sessions.restore_lap(stored);
                }
                Ok(())
            }
            Err(e) => Err(StoreError::Write(e.to_string())),
        }
    }
}

/// How long storage has been refusing write-behind flushes. A JetStream cluster
/// that lost a stream leader's node answers "no stream found" until it has elected
/// a new leader (5–9 s in tests/cluster.rs); a broker outage lasts longer. Either
/// way the changes stay dirty in memory and are retried on every tick, so this
/// only decides what to log: the start, a reminder every 30 s, and the end.
#[derive(Default)]
struct Outage {
    since: Option<(std::time::Instant, std::time::Instant)>,
}

impl Outage {
    const REMIND: Duration = Duration::from_secs(30);

    fn observe(&mut self, result: Result<(), StoreError>) {
        let now = std::time::Instant::now();
        match (result, &mut self.since) {
            (Ok(()), None) => {}
            (Ok(()), Some((since, _))) => {
                tracing::info!(
                    after_ms = since.elapsed().as_millis() as u64,
                    "storage accepts writes again; the changes kept meanwhile are stored"
                );
                self.since = None;
            }
            (Err(e), None) => {
                tracing::warn!(error = %e, "storage refused writes; changes are kept and retried");
                self.since = Some((now, now));
            }
            (Err(e), Some((since, logged))) => {
                if now.duration_since(*logged) >= Self::REMIND {
                    tracing::warn!(
                        error = %e,
                        for_s = since.elapsed().as_secs(),
                        "storage still refuses writes; changes are kept and retried"
                    );
                    *logged = now;
                }
            }
        }
    }
}

impl Persister {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                job = jobs.recv() => match job {
                    Some(Job::Persist { id, done }) => {
                        let result = match self.app.sessions.take_for_persist(id) {
                            Some(snapshot) => self.put(&snapshot).await,
                            None => Ok(()),
                        };
                        let _ = done.send(result);
                    }
                    Some(Job::End { ended, done }) => {
                        let result = self.end(&ended).await;
                        if result.is_err() {
                            self.retry_ends.push(*ended);
                        }
                        let _ = done.send(result);
                    }
                    Some(Job::Purge { id }) => {
                        if let Err(e) = self.live.purge(id.to_string()).await {
                            tracing::warn!(session_id = %id, error = %e, "could not remove an ended session");
                        }
                    }
                    Some(Job::FlushAll { done }) => {
                        let _ = done.send(self.flush().await);
                    }
                    // Every Storage handle is gone: the processor has stopped.
                    None => return,
                },
                _ = ticker.tick() => {
                    let result = self.flush().await;
                    self.outage.observe(result);
                    for ended in std::mem::take(&mut self.retry_ends) {
                        if self.end(&ended).await.is_err() {
                            self.retry_ends.push(ended);
                        }
                    }

                }
            }
        }
    }

    /// Writes every session changed since the last flush; failed ones stay dirty.
    async fn flush(&self) -> Result<(), StoreError> {
        let dirty = self.app.sessions.take_dirty();
        if dirty.is_empty() {
            return Ok(());
        }
        let results: Vec<(SessionId, Result<(), StoreError>)> = futures::stream::iter(dirty)
            .map(|snapshot| async move { (snapshot.session_id, self.put(&snapshot).await) })
            .buffer_unordered(PUTS_IN_FLIGHT)
            .collect()
            .await;
        let mut first_error = None;
        for (id, result) in results {
            if let Err(e) = result {
                self.app.sessions.mark_dirty(id);
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn put(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.live
            .put(snapshot.session_id.to_string(), snapshot.to_json().into())
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Write(e.to_string()))
    }

    /// Archives `ended` unless another processor did; removes it from the live
    /// bucket either way. Answers whether this call archived it.
    async fn end(&self, ended: &Ended) -> Result<bool, StoreError> {
        let key = ended.last.session_id.to_string();
        let record = serde_json::json!({
            "session": ended.last.to_value(),
            "ended_at": format_time(&ended.at),
            "reason": ended.reason,
        });
        let first = match self.archive.create(&key, record.to_string().into()).await {
            Ok(_) => true,
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => false,
            Err(e) => return Err(StoreError::Write(e.to_string())),
        };
        self.live
            .purge(&key)
            .await
            .map_err(|e| StoreError::Write(e.to_string()))?;
        Ok(first)
    }
}
