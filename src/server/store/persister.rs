//! The persister: the one task that writes sessions, so writes land in order.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::protocol::id::SessionId;
use crate::server::app::App;
use crate::server::metrics::Metrics;
use crate::server::sessions::{Ended, Snapshot};

use super::recovery::ArchiveRecord;
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
                _ = ticker.tick() => {
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
