//! The persister: the one task that writes sessions, so writes land in order.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::protocol::id::SessionId;
use crate::server::app::App;
use crate::server::metrics::Metrics;
use crate::server::sessions::{Ended, Snapshot};

use super::recovery::ArchiveRecord;
use super::trace_writer::{BUSY_RATE, INGEST_BUSY};
use super::{Job, StoreError};

/// Concurrent puts in one flush.
const PUTS_IN_FLIGHT: usize = 256;

/// Puts started before the persister lets other tasks run. `serve` has one
/// runtime thread by default, shared with the ordered loop: a flush that
/// serialized and sent every dirty session in one go held up every request that
/// arrived meanwhile (in `paddock bench --only get`, 100 dirty sessions each
/// second added about 0.04 to the `sessions.get` p99 ratio). In slices, a
/// request waits for one slice at most; the puts stay `PUTS_IN_FLIGHT` deep.
const PUTS_PER_SLICE: usize = 16;

/// How often the persister looks whether a flush is due and the processor out
/// of a burst.
const LOOK: Duration = Duration::from_millis(100);

/// The longest a due flush waits for a burst to end. Written during a burst,
/// the write-behind's puts (up to `--persist-rate` a second) took the broker's
/// and the processor's CPU from the frames: at 10,000 sessions 0.70 × raw NATS
/// against 0.87 with the write-behind held off (`paddock bench --only ingest`).
/// A session's latest frame is stored this much later in a burst; its setup,
/// create and end are written at once as ever.
const MAX_DEFER: Duration = Duration::from_secs(2);

/// Whether the processor is in a burst, as the trace writer tells one:
/// telemetry frames faster than [`BUSY_RATE`] since the last look, or the
/// ingest queue holding more than [`INGEST_BUSY`].
struct BurstWatch {
    frames: u64,
    at: std::time::Instant,
}

impl BurstWatch {
    fn new(metrics: &Metrics) -> Self {
        BurstWatch {
            frames: metrics.telemetry_frames.load(Relaxed),
            at: std::time::Instant::now(),
        }
    }

    fn look(&mut self, metrics: &Metrics) -> bool {
        let (frames, at) = (
            metrics.telemetry_frames.load(Relaxed),
            std::time::Instant::now(),
        );
        let over = at.duration_since(self.at).as_secs_f64().max(1e-3);
        let rate = frames.saturating_sub(self.frames) as f64 / over;
        (self.frames, self.at) = (frames, at);
        rate > BUSY_RATE || metrics.ingest.held.load(Relaxed) > INGEST_BUSY
    }
}

pub(super) struct Persister {
    pub(super) live: kv::Store,
    pub(super) archive: kv::Store,
    pub(super) app: Arc<App>,
    /// Ended sessions whose archiving failed, retried on each tick.
    pub(super) retry_ends: Vec<Ended>,
    pub(super) outage: Outage,
}

/// How long storage has been refusing write-behind flushes. A JetStream cluster
/// that lost a stream leader's node answers "no stream found" until it has elected
/// a new leader (5–9 s in tests/it/cluster.rs); a broker outage lasts longer. Either
/// way the changes stay dirty in memory and are retried on every tick, so this
/// only decides what to log: the start, a reminder every 30 s, and the end.
#[derive(Default)]
pub(super) struct Outage {
    pub(super) since: Option<(std::time::Instant, std::time::Instant)>,
}

impl Outage {
    const REMIND: Duration = Duration::from_secs(30);

    /// Logs what changed, and reports the write's outcome to `metrics` (counted,
    /// and readiness).
    pub(super) fn observe(&mut self, result: Result<(), StoreError>, metrics: &Metrics) {
        metrics.storage_write(
            result
                .as_ref()
                .map_err(|e| e as &dyn std::fmt::Display)
                .copied(),
        );
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
    pub(super) async fn run(
        mut self,
        mut jobs: mpsc::Receiver<Job>,
        interval: Duration,
        rate: usize,
    ) {
        // Sessions per tick: the rate's share of one interval, at least one.
        let per_tick = if rate == 0 {
            usize::MAX
        } else {
            ((rate as f64 * interval.as_secs_f64()).ceil() as usize).max(1)
        };
        let mut look = tokio::time::interval(LOOK.min(interval));
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut due = tokio::time::Instant::now() + interval;
        let mut burst = BurstWatch::new(&self.app.metrics);
        loop {
            tokio::select! {
                job = jobs.recv() => match job {
                    Some(Job::Persist { id, done }) => {
                        let result = match self.app.sessions.take_for_persist(id) {
                            Some(snapshot) => self.put(&snapshot).await,
                            None => Ok(()),
                        };
                        self.outage.observe(result.clone(), &self.app.metrics);
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
                        let _ = done.send(self.flush(usize::MAX).await);
                    }
                    // Every Storage handle is gone: the processor has stopped.
                    None => return,
                },
                _ = look.tick() => {
                    let busy = burst.look(&self.app.metrics);
                    let now = tokio::time::Instant::now();
                    if now < due || (busy && now < due + MAX_DEFER) {
                        continue;
                    }
                    due = now + interval;
                    let result = self.flush(per_tick).await;
                    self.outage.observe(result, &self.app.metrics);
                    for ended in std::mem::take(&mut self.retry_ends) {
                        if self.end(&ended).await.is_err() {
                            self.retry_ends.push(ended);
                        }
                    }

                }
            }
        }
    }

    /// Writes up to `at_most` sessions changed since they were last written,
    /// those waiting longest first; failed ones stay dirty.
    async fn flush(&self, at_most: usize) -> Result<(), StoreError> {
        let dirty = self.app.sessions.take_dirty(at_most);
        if dirty.is_empty() {
            return Ok(());
        }
        let sliced = futures::stream::iter(dirty)
            .chunks(PUTS_PER_SLICE)
            .then(|slice| async move {
                tokio::task::yield_now().await;
                futures::stream::iter(slice)
            })
            .flatten();
        let results: Vec<(SessionId, Result<(), StoreError>)> = sliced
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
            .map_err(StoreError::write)
    }

    /// Archives `ended` unless another processor did; removes it from the live
    /// bucket either way. Answers whether this call archived it.
    async fn end(&self, ended: &Ended) -> Result<bool, StoreError> {
        let key = ended.last.session_id.to_string();
        let record = serde_json::to_vec(&ArchiveRecord {
            session: ended.last.document(),
            ended_at: ended.at,
            reason: ended.reason,
        })
        .expect("an archive record serializes");
        let first = match self.archive.create(&key, record.into()).await {
            Ok(_) => true,
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => false,
            Err(e) => return Err(StoreError::write(e)),
        };
        self.live.purge(&key).await.map_err(StoreError::write)?;
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_frames_faster_than_the_busy_rate_or_a_queue_waiting() {
        let metrics = Metrics::default();
        let mut watch = BurstWatch::new(&metrics);
        std::thread::sleep(Duration::from_millis(100));
        // 100 frames in 100 ms: a race, not a burst.
        metrics.telemetry_frames.fetch_add(100, Relaxed);
        assert!(!watch.look(&metrics));
        std::thread::sleep(Duration::from_millis(100));
        // 10,000 in 100 ms: 100,000 a second.
        metrics.telemetry_frames.fetch_add(10_000, Relaxed);
        assert!(watch.look(&metrics));
        // Quiet again, but frames wait for the processor.
        std::thread::sleep(Duration::from_millis(100));
        metrics.ingest.held.store(INGEST_BUSY + 1, Relaxed);
        assert!(watch.look(&metrics));
        metrics.ingest.held.store(0, Relaxed);
        std::thread::sleep(Duration::from_millis(100));
        assert!(!watch.look(&metrics));
    }
}
