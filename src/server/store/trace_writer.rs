//! The trace writer: the telemetry frames the processor accepted, put in chunks
//! per session and written to the trace stream (traces.rs says why and how),
//! off the processor loop and out of a burst's way.
//!
//! The loop hands each accepted frame to a [`TraceQueue`] (a refcount and a
//! push: the frame is the copy the session already keeps). The writer takes
//! what is queued into per-session chunks and publishes a chunk when it is
//! full ([`CHUNK_BYTES`]), when its lap ends (so a completed lap is recorded at
//! once), when its session has sent nothing for [`IDLE`], before a trace read
//! of its session ([`TraceWriterHandle::flush`]), and at shutdown.
//!
//! It stands back while the processor is in a burst (the ingest queue holds
//! more than [`INGEST_BUSY`], or frames arrive faster than [`BUSY_RATE`] or
//! [`BUSY_BYTES`]): a
//! burst is applied first and recorded after, from the queue, which holds at
//! most a sixteenth of `--max-memory` (64 MiB of 1 GiB, [`queue_bytes`]). Written during the burst, the record took the
//! processor's and the broker's CPU from the frames: 0.49 × raw NATS instead of
//! 0.84 on the same loaded machine (0.5 KB frames, docs/BENCHMARKS.md). What does not fit is left out of the record, counted
//! (`trace_frames_unrecorded`) and logged at most every few seconds; a trace
//! read says the gap as a gap. The writer waits no longer than [`MAX_WAIT`]
//! for the ingest queue to empty, so a processor that stays busy still records.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::protocol::id::SessionId;
use crate::protocol::subjects;
use crate::server::app::App;
use crate::server::ratelimit::LogThrottle;

use super::traces::{self, CHUNK_BYTES, RECORD_HEAD};

/// Frames waiting to be chunked, in bytes (each frame, its head and the
/// queue's slot): a sixteenth of `--max-memory`, at most 64 MiB (the default's
/// share): ~100,000 frames of 0.5 KB, about a minute of 30 cars at 60 Hz, or
/// the first quarter of a 500,000-frame burst. Memory beyond `--max-memory`'s
/// frames, so a share of it rather than a constant.
pub(super) fn queue_bytes(max_memory: usize) -> usize {
    (max_memory / 16).clamp(1024 * 1024, 64 * 1024 * 1024)
}
/// What a queued frame costs beyond its bytes.
const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>() + 16;
/// Bytes of unfinished chunks held at once: past it every chunk is written,
/// full or not. A thirty-second of `--max-memory`, at most 32 MiB (10,000
/// sessions with 3 KB each).
fn chunks_held_max(max_memory: usize) -> usize {
    (max_memory / 32).clamp(512 * 1024, 32 * 1024 * 1024)
}
/// Ingest queue bytes above which the processor is busy and the writer waits.
pub(super) const INGEST_BUSY: usize = 1024 * 1024;
/// Telemetry frames a second above which the processor is in a burst: 11 times
/// a 30-car race at 60 Hz, a hundredth of what a burst brings.
pub(super) const BUSY_RATE: f64 = 20_000.0;
/// Bytes of accepted frames a second above which the processor is in a burst:
/// six times a 30-car race at 60 Hz with 1.5 KB frames.
const BUSY_BYTES: f64 = 16.0 * 1024.0 * 1024.0;
/// The shortest time the arrival rates are measured over: a few cars' frames
/// arriving together are not a burst.
const RATE_WINDOW: Duration = Duration::from_millis(50);
/// The longest the writer waits for a burst to end.
const MAX_WAIT: Duration = Duration::from_secs(2);
/// A session silent this long has its chunk written (a monitor gone, a burst
/// over): the record never waits on the next frame for long. A car sends
/// frames all the time, in the garage too, so this does not cut its chunks.
const IDLE: Duration = Duration::from_secs(1);
/// How often the writer looks at the queue when nothing wakes it.
const TICK: Duration = Duration::from_millis(250);
/// Chunks published before their acknowledgements are awaited.
const IN_FLIGHT: usize = 256;
/// How often at most the "left out of the record" warning is logged.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One accepted frame.
struct Entry {
    id: SessionId,
    at: DateTime<Utc>,
    frame: Bytes,
    /// The frame completed its session's lap (the first of the next).
    lap_ended: bool,
}

#[derive(Default)]
struct Pending {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// When the oldest queued entry was queued.
    since: Option<Instant>,
}

/// The loop's end of the writer: never waits.
#[derive(Clone)]
pub(super) struct TraceQueue {
    pending: Arc<std::sync::Mutex<Pending>>,
    wake: Arc<Notify>,
    app: Arc<App>,
    log: Arc<LogThrottle>,
    /// [`queue_bytes`] of this processor's `--max-memory`.
    max_bytes: usize,
}

impl TraceQueue {
    pub(super) fn new(app: Arc<App>) -> Self {
        let max_bytes = queue_bytes(app.limits.budgets.max_memory);
        TraceQueue {
            max_bytes,
            pending: Arc::default(),
            wake: Arc::default(),
            app,
            log: Arc::default(),
        }
    }

    /// Queues an accepted frame, or counts it out of the record when the queue
    /// is full.
    pub(super) fn push(&self, id: SessionId, at: DateTime<Utc>, frame: Bytes, lap_ended: bool) {
        let cost = frame.len() + ENTRY_OVERHEAD;
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.bytes + cost <= self.max_bytes {
                pending.bytes += cost;
                pending.since.get_or_insert_with(Instant::now);
                pending.entries.push_back(Entry {
                    id,
                    at,
                    frame,
                    lap_ended,
                });
                drop(pending);
                if lap_ended {
                    self.wake.notify_one();
                }
                return;
            }
        }
        self.app
            .metrics
            .trace_frames_unrecorded
            .fetch_add(1, Relaxed);
        if let Some(unlogged) = self.log.allow(LOG_INTERVAL) {
            tracing::warn!(
                session_id = %id,
                queue_bytes = self.max_bytes,
                unlogged,
                "the trace writer's queue is full: frames are left out of the record \
                 (counted as trace_frames_unrecorded); ingest is not affected"
            );
        }
    }

    fn take(&self) -> VecDeque<Entry> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.bytes = 0;
        pending.since = None;
        std::mem::take(&mut pending.entries)
    }

    /// Whether frames come as a burst does (frames and bytes a second queued
    /// since the oldest waiting one came, over at least [`RATE_WINDOW`], past
    /// [`BUSY_RATE`] or [`BUSY_BYTES`]), and whether the write cannot wait
    /// (its oldest frame waiting [`MAX_WAIT`]).
    fn look(&self) -> (bool, bool) {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some(since) = pending.since else {
            return (false, false);
        };
        let waited = since.elapsed();
        let over = waited.max(RATE_WINDOW).as_secs_f64();
        let burst = pending.entries.len() as f64 / over > BUSY_RATE
            || pending.bytes as f64 / over > BUSY_BYTES;
        // Not when the queue fills: written during a burst, the record took
        // 10-30 % of the burst's pace (the chunks' copies and the broker's
        // writes on the same cores) and still left a quarter out; what does
        // not fit now is left out, counted, and the burst is applied first.
        let due = waited >= MAX_WAIT;
        (burst, due)
    }
}

/// What a reader or the shutdown asks of the writer.
enum Command {
    /// Write this session's frames so far, then answer.
    Flush {
        id: SessionId,
        done: oneshot::Sender<()>,
    },
    /// Write everything, then answer.
    FlushAll { done: oneshot::Sender<()> },
}

/// Asks the writer to write what it holds (see [`Command`]).
#[derive(Clone)]
pub struct TraceWriterHandle {
    commands: mpsc::Sender<Command>,
}

impl TraceWriterHandle {
    /// Has `id`'s frames accepted so far written to the stream: a read after
    /// it sees every frame the processor had accepted when it was asked.
    /// Gives up after a few seconds (the read then shows what is there).
    pub async fn flush(&self, id: SessionId) {
        let (done, written) = oneshot::channel();
        if self
            .commands
            .send(Command::Flush { id, done })
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(Duration::from_secs(5), written).await;
        }
    }

    /// Has everything held written (shutdown).
    pub async fn flush_all(&self) {
        let (done, written) = oneshot::channel();
        if self.commands.send(Command::FlushAll { done }).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), written).await;
        }
    }
}

/// One session's unfinished chunk.
struct Chunk {
    bytes: Vec<u8>,
    frames: u64,
    last: Instant,
}

/// The writer task's state.
pub(super) struct TraceWriter {
    queue: TraceQueue,
    commands: mpsc::Receiver<Command>,
    js: jetstream::Context,
    app: Arc<App>,
    chunks: HashMap<SessionId, Chunk>,
    held: usize,
    /// This process's name in the `Paddock-Recorder` header.
    recorder: String,
    /// Chunks ready to publish, with their frame counts.
    ready: Vec<(SessionId, Vec<u8>, u64)>,
    log: LogThrottle,
}

impl TraceWriter {
    pub(super) fn new(
        queue: TraceQueue,
        js: jetstream::Context,
        app: Arc<App>,
    ) -> (Self, TraceWriterHandle) {
        let (commands_tx, commands) = mpsc::channel(64);
        let writer = TraceWriter {
            queue,
            commands,
            js,
            app,
            chunks: HashMap::new(),
            held: 0,
            recorder: uuid::Uuid::new_v4().simple().to_string(),
            ready: Vec::new(),
            log: LogThrottle::default(),
        };
        (
            writer,
            TraceWriterHandle {
                commands: commands_tx,
            },
        )
    }

    /// Runs until every [`TraceWriterHandle`] is dropped.
    pub(super) async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Flush { id, done }) => {
                        self.chunk_queued();
                        if let Some(chunk) = self.chunks.remove(&id) {
                            self.finish(id, chunk);
                        }
                        self.publish().await;
                        let _ = done.send(());
                    }
                    Some(Command::FlushAll { done }) => {
                        self.chunk_queued();
                        self.finish_all();
                        self.publish().await;
                        let _ = done.send(());
                    }
                    None => {
                        self.chunk_queued();
                        self.finish_all();
                        self.publish().await;
                        return;
                    }
                },
                () = self.queue.wake.notified() => {}
                _ = tick.tick() => {}
            }
            if self.may_write() {
                self.chunk_queued();
                self.finish_idle();
                self.publish().await;
            }
        }
    }

    /// Whether to write now: no burst (the ingest queue nearly empty, frames
    /// slower than [`BUSY_RATE`]), or its oldest
    /// frame has waited [`MAX_WAIT`].
    fn may_write(&self) -> bool {
        // Measured on the queue itself, at each look: a rate kept from the
        // last look would miss the start of a burst shorter than a tick.
        let (burst, due) = self.queue.look();
        !(burst || self.app.metrics.ingest.held.load(Relaxed) > INGEST_BUSY) || due
    }

    /// Moves the queued frames into their sessions' chunks; a chunk whose lap
    /// ended, or that is full, is made ready.
    fn chunk_queued(&mut self) {
        let entries = self.queue.take();
        let now = Instant::now();
        for entry in entries {
            let grows = RECORD_HEAD + entry.frame.len();
            if let Some(chunk) = self.chunks.get(&entry.id)
                && (entry.lap_ended || chunk.bytes.len() + grows > CHUNK_BYTES)
            {
                let chunk = self.chunks.remove(&entry.id).expect("just seen");
                self.finish(entry.id, chunk);
            }
            let chunk = self.chunks.entry(entry.id).or_insert_with(|| Chunk {
                bytes: traces::new_chunk(),
                frames: 0,
                last: now,
            });
            traces::append(&mut chunk.bytes, entry.at, &entry.frame);
            chunk.frames += 1;
            chunk.last = now;
            self.held += grows;
        }
        if self.held > chunks_held_max(self.app.limits.budgets.max_memory) {
            self.finish_all();
        }
    }

    fn finish(&mut self, id: SessionId, chunk: Chunk) {
        self.held = self
            .held
            .saturating_sub(chunk.bytes.len() - traces::CHUNK_MAGIC.len());
        self.ready.push((id, chunk.bytes, chunk.frames));
    }

    fn finish_all(&mut self) {
        for (id, chunk) in std::mem::take(&mut self.chunks) {
            self.finish(id, chunk);
        }
        self.held = 0;
    }

    fn finish_idle(&mut self) {
        let idle: Vec<SessionId> = self
            .chunks
            .iter()
            .filter(|(_, c)| c.last.elapsed() >= IDLE)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            let chunk = self.chunks.remove(&id).expect("just listed");
            self.finish(id, chunk);
        }
    }

    /// Publishes the ready chunks, [`IN_FLIGHT`] at a time, and counts each
    /// chunk's frames as recorded or, when the stream refused it, unrecorded.
    async fn publish(&mut self) {
        let mut ready = std::mem::take(&mut self.ready).into_iter().peekable();
        let mut headers = HeaderMap::new();
        headers.insert(traces::RECORDER, self.recorder.as_str());
        while ready.peek().is_some() {
            let mut acks = Vec::with_capacity(IN_FLIGHT);
            for (id, bytes, frames) in ready.by_ref().take(IN_FLIGHT) {
                let sent = self
                    .js
                    .publish_with_headers(
                        subjects::trace_record(&id),
                        headers.clone(),
                        Bytes::from(bytes),
                    )
                    .await;
                acks.push((sent, frames));
            }
            for (sent, frames) in acks {
                let stored = match sent {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match stored {
                    Ok(()) => self
                        .app
                        .metrics
                        .trace_frames_recorded
                        .fetch_add(frames, Relaxed),
                    Err(e) => {
                        if let Some(unlogged) = self.log.allow(LOG_INTERVAL) {
                            tracing::warn!(error = %e, frames, unlogged, "a trace chunk was not stored: its frames are left out of the record");
                        }
                        self.app
                            .metrics
                            .trace_frames_unrecorded
                            .fetch_add(frames, Relaxed)
                    }
                };
            }
        }
    }
}
