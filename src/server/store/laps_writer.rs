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
#[derive(Clone, Default)]
pub(super) struct LapQueue {
    pub(super) pending: Arc<std::sync::Mutex<std::collections::VecDeque<Arc<LapRecord>>>>,
    pub(super) wake: Arc<tokio::sync::Notify>,
}

/// Laps queued beyond this (storage down for long, or a monitor that changes its
/// lap value in every frame) are dropped oldest first, counted and logged: memory
/// stays bounded, and the laps stay in memory for `sessions.laps` meanwhile.
const LAP_QUEUE_MAX: usize = 100_000;
/// Laps stored at once.
const LAPS_IN_FLIGHT: usize = 64;

impl LapQueue {
    pub(super) fn push(&self, record: Arc<LapRecord>) {
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
