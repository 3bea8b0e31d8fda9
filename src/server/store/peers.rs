//! Following the other processors: their writes to the buckets, applied here.

use std::sync::Arc;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::server::app::App;
use crate::server::laps::LapRecord;
use crate::server::sessions::{Followed, Snapshot};

use super::Job;
use super::recovery::read_archived;

/// Watchers on the three buckets, for [`follow_peers`].
pub(super) struct Peers {
    pub(super) live: kv::Watch,
    pub(super) archive: kv::Watch,
    pub(super) laps: kv::Watch,
}

/// Applies other processors' writes (to sessions of the partitions this one
/// owns): sessions they created are adopted, newer setups and labels taken
/// (`Sessions::follow`), sessions they ended are ended here, laps they stored
/// are kept here (their copy wins).
/// This processor's own writes come back too, and are no-ops (the id is known, or
/// already ended; the lap is the same).
pub(super) async fn follow_peers(peers: Peers, app: Arc<App>, jobs: mpsc::Sender<Job>) {
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
                if let Ok(record) = LapRecord::from_stored(&entry.value)
                    && app.partitions.owns(&record.session_id)
                {
                    app.sessions.adopt_lap(record);
                }
            }
            Some(entry) = live.next() => {
                let entry = match put(entry) {
                    Watched::Put(entry) => entry,
                    Watched::Skip => continue,
                    Watched::Closed => return,
                };
                if let Ok(snapshot) = Snapshot::from_json(&entry.value)
                    && app.partitions.owns(&snapshot.session_id)
                {
                    let id = snapshot.session_id;
                    match app.sessions.follow(snapshot) {
                        Followed::Adopted => {
                            app.metrics.session_created();
                            tracing::debug!(session_id = %id, "adopted a session another processor stored");
                        }
                        Followed::Taken => {
                            tracing::info!(session_id = %id, "took a newer setup or label another processor stored");
                        }
                        Followed::Same => {}
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
                if !app.partitions.owns(&ended.last.session_id) {
                    continue;
                }
                let (id, reason) = (ended.last.session_id, ended.reason);
                if app.sessions.adopt_end(ended) {
                    app.metrics.session_ended(reason);
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
pub(super) enum Watched {
    /// A value written: the only operation a peer's session changes arrive as.
    Put(kv::Entry),
    /// A delete or purge marker, or a transient error: nothing to do.
    Skip,
    /// The client is gone: stop watching.
    Closed,
}

pub(super) fn put(entry: Result<kv::Entry, kv::WatcherError>) -> Watched {
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
pub(super) fn watcher_closed(e: &kv::WatcherError) -> bool {
    e.to_string().contains("state watcher dropped")
}
