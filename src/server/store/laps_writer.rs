//! The lap writer: completed laps stored (once across processors) and announced.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::kv;
use futures::StreamExt;

use crate::protocol::id::SessionId;
use crate::protocol::subjects;
use crate::server::app::App;
use crate::server::laps::{self, LapRecord};

use super::StoreError;
use super::persister::Outage;

/// Laps waiting to be stored: filled by the ingest loop without waiting, drained
/// by the [`LapWriter`].
#[derive(Clone)]
pub(super) struct LapQueue {
    pending: Arc<std::sync::Mutex<Pending>>,
    pub(super) wake: Arc<tokio::sync::Notify>,
    /// Where dropped laps are counted (`laps_unstored`).
    app: Arc<App>,
}

/// The queue and the bytes of its records ([`LapRecord::bytes`]), and whether
/// the writer holds a batch taken from it (so an empty queue with no batch out
/// means every lap handed in was stored, or dropped and counted).
#[derive(Default)]
struct Pending {
    laps: std::collections::VecDeque<Arc<LapRecord>>,
    bytes: usize,
    writing: bool,
}

/// Laps queued beyond this many, or these many bytes (storage down for long, or
/// a monitor that changes its lap value in every frame) are dropped oldest first,
/// counted (`laps_unstored` in sessions.stats, /metrics) and logged: memory stays
/// bounded, and the laps stay in memory for `sessions.laps` meanwhile. A record is
/// at most two 8 KiB edge frames (laps::LAP_FRAME_MAX), so the bytes bind first
/// only for large records: about 4,000 of them.
const LAP_QUEUE_MAX: usize = 100_000;
const LAP_QUEUE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Laps stored at once.
const LAPS_IN_FLIGHT: usize = 64;

impl Pending {
    fn push_back(&mut self, record: Arc<LapRecord>) {
        self.bytes += record.bytes();
        self.laps.push_back(record);
    }

    fn push_front(&mut self, record: Arc<LapRecord>) {
        self.bytes += record.bytes();
        self.laps.push_front(record);
    }

    /// Drops the oldest while over either bound; returns how many and the last.
    fn shed(&mut self) -> (u64, Option<Arc<LapRecord>>) {
        let (mut n, mut last) = (0, None);
        while self.laps.len() > LAP_QUEUE_MAX || self.bytes > LAP_QUEUE_MAX_BYTES {
            let Some(lost) = self.laps.pop_front() else {
                break;
            };
            self.bytes -= lost.bytes();
            n += 1;
            last = Some(lost);
        }
        (n, last)
    }
}

impl LapQueue {
    pub(super) fn new(app: Arc<App>) -> Self {
        LapQueue {
            pending: Default::default(),
            wake: Default::default(),
            app,
        }
    }

    pub(super) fn push(&self, record: Arc<LapRecord>) {
        let (dropped, last) = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.push_back(record);
            pending.shed()
        };
        self.count_dropped(dropped, last);
        self.wake.notify_one();
    }

    fn count_dropped(&self, dropped: u64, last: Option<Arc<LapRecord>>) {
        if let Some(lost) = last {
            self.app
                .metrics
                .laps_unstored
                .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(session_id = %lost.session_id, n = lost.n, dropped, "lap queue full: unstored laps dropped from it");
        }
    }

    /// The whole queue, as the writer's batch.
    fn take(&self) -> Vec<Arc<LapRecord>> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.bytes = 0;
        pending.writing = !pending.laps.is_empty();
        pending.laps.drain(..).collect()
    }

    /// Ends the writer's batch, putting back laps whose write failed ahead of
    /// newer ones (within the bounds: the oldest go first).
    fn retry(&self, failed: Vec<Arc<LapRecord>>) {
        let (dropped, last) = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for record in failed.into_iter().rev() {
                pending.push_front(record);
            }
            pending.writing = false;
            pending.shed()
        };
        self.count_dropped(dropped, last);
    }

    /// Whether every lap handed in so far is stored (or was dropped, counted).
    pub(super) fn is_stored(&self) -> bool {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.laps.is_empty() && !pending.writing
    }

    /// Waits until every lap handed in is stored, at most `patience`: what a
    /// graceful stop does, so the laps of its last moments are not lost with the
    /// process. Answers how many are still waiting when it gives up.
    pub(super) async fn stored(&self, patience: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + patience;
        self.wake.notify_one();
        loop {
            if self.is_stored() {
                return 0;
            }
            if tokio::time::Instant::now() >= deadline {
                let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                return pending.laps.len();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Stores completed laps (a KV `create` each, several at once) and announces the
/// ones this processor stored first. A task of its own, beside the persister, so
/// neither creates, setups and ends nor the ingest loop wait behind laps.
pub(super) struct LapWriter {
    pub(super) bucket: kv::Store,
    pub(super) client: Client,
    pub(super) app: Arc<App>,
    pub(super) queue: LapQueue,
}

impl LapWriter {
    pub(super) async fn run(self, retry_every: Duration) {
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
                Err(StoreError::write(format!(
                    "{} laps not stored yet",
                    failed.len()
                )))
            };
            let failing = !failed.is_empty();
            self.queue.retry(failed);
            outage.observe(result, &self.app.metrics);
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
                // As many as the session keeps in memory (its --max-laps and
                // --max-lap-bytes): the lap that many before this one leaves the
                // bucket too. (When a large record made the history drop several
                // at once, the others leave with the retention or the bucket's
                // max_bytes.)
                let kept = self
                    .app
                    .sessions
                    .laps_kept(record.session_id)
                    .unwrap_or(self.app.limits.budgets.history.max_laps)
                    as u64;
                let max = kept.max(1);
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
                    self.app.sessions.adopt_lap(stored);
                }
                Ok(())
            }
            Err(e) => Err(StoreError::write(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded_in_bytes_and_drops_the_oldest() {
        let id = SessionId::new_v4();
        let frame = bytes::Bytes::from(vec![b' '; 8 * 1024]);
        let record = |n| {
            Arc::new(LapRecord {
                session_id: id,
                n,
                lap: bytes::Bytes::from_static(b"1"),
                started_at: chrono::Utc::now(),
                ended_at: chrono::Utc::now(),
                frames: 1,
                last_frame: frame.clone(),
                next_frame: frame.clone(),
                pitted: false,
            })
        };
        let mut pending = Pending::default();
        let mut dropped = 0;
        for n in 1..=10_000 {
            pending.push_back(record(n));
            dropped += pending.shed().0;
        }
        assert!(pending.bytes <= LAP_QUEUE_MAX_BYTES);
        assert_eq!(
            pending.bytes,
            pending.laps.iter().map(|r| r.bytes()).sum::<usize>()
        );
        assert_eq!(dropped as usize + pending.laps.len(), 10_000);
        // The newest stay.
        assert_eq!(pending.laps.back().unwrap().n, 10_000);
        assert_eq!(pending.laps.front().unwrap().n, dropped + 1);
    }

    /// docs/SECURITY.md: the lap writer's queue holds 100,000 laps; past it the
    /// oldest go, counted (`laps_unstored`), and the newest stay.
    #[test]
    fn the_queue_is_bounded_in_laps_and_counts_what_it_drops() {
        let app = Arc::new(App::new(crate::server::app::Limits::default()));
        let queue = LapQueue::new(Arc::clone(&app));
        let id = SessionId::new_v4();
        let empty = bytes::Bytes::new();
        let record = |n| {
            Arc::new(LapRecord {
                session_id: id,
                n,
                lap: empty.clone(),
                started_at: chrono::Utc::now(),
                ended_at: chrono::Utc::now(),
                frames: 1,
                last_frame: empty.clone(),
                next_frame: empty.clone(),
                pitted: false,
            })
        };
        let unstored = || {
            app.metrics
                .laps_unstored
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        // The documented number, not the constant: a changed bound fails here
        // until docs/SECURITY.md says so too.
        for n in 1..=100_000 {
            queue.push(record(n));
        }
        assert_eq!(unstored(), 0, "small laps: the count binds, not the bytes");
        for n in 1..=5 {
            queue.push(record(100_000 + n));
        }
        assert_eq!(unstored(), 5);
        let kept = queue.take();
        assert_eq!(kept.len(), 100_000);
        assert_eq!(kept.first().unwrap().n, 6);
        assert_eq!(kept.last().unwrap().n, 100_000 + 5);
        // Laps put back after a failed write are held to the same bound.
        queue.push(record(100_000 + 6));
        queue.retry(kept);
        assert_eq!(unstored(), 6);
    }
}
