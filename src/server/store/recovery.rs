//! Opening the buckets and reading them back at start-up.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::protocol::documents::{SessionDocument, time};
use crate::protocol::subjects;
use crate::server::sessions::{EndReason, Ended, Snapshot};

use super::StoreError;

/// What a bucket does when it holds its `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// Writes are refused (JetStream's DiscardNew): for the live sessions, whose
    /// every key is needed; the processor keeps them in memory and retries.
    Refuse,
    /// The oldest entries go (DiscardOld): for the archive and the laps.
    DropOldest,
}

/// How a bucket is made.
#[derive(Debug, Clone)]
pub(crate) struct BucketConfig {
    pub(crate) name: String,
    pub(crate) max_age: Option<Duration>,
    pub(crate) replicas: usize,
    pub(crate) max_bytes: usize,
    pub(crate) when_full: Full,
}

impl BucketConfig {
    fn discard(&self) -> stream::DiscardPolicy {
        match self.when_full {
            Full::Refuse => stream::DiscardPolicy::New,
            Full::DropOldest => stream::DiscardPolicy::Old,
        }
    }

    /// JetStream's `max_bytes`: -1 (no limit) for sizes beyond what it takes.
    fn max_bytes(&self) -> i64 {
        i64::try_from(self.max_bytes)
            .ok()
            .filter(|&b| b < i64::MAX)
            .unwrap_or(-1)
    }
}

/// Opens a KV bucket, creating its stream first if it does not exist. A bucket
/// that exists with another size limit or policy when full (made by an older
/// paddock, or with other flags) is updated to this one: both can be changed on
/// a live stream (2.9 and later). A failed update is logged, and the bucket used
/// as it is.
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    bucket: &BucketConfig,
) -> Result<kv::Store, StoreError> {
    let name = bucket.name.as_str();
    let fail = |reason: String| StoreError::Open {
        bucket: name.to_string(),
        reason,
    };
    let stream_name = subjects::kv_stream(name);
    match js.get_stream(&stream_name).await {
        Ok(mut existing) => {
            let mut config = existing.cached_info().config.clone();
            if config.max_bytes != bucket.max_bytes() || config.discard != bucket.discard() {
                tracing::info!(
                    bucket = name,
                    from = config.max_bytes,
                    to = bucket.max_bytes(),
                    "updating the bucket's size limit"
                );
                config.max_bytes = bucket.max_bytes();
                config.discard = bucket.discard();
                if let Err(e) = js.update_stream(config).await {
                    tracing::warn!(bucket = name, error = %e, "could not update the bucket's size limit; using it as it is");
                }
            }
            let _ = existing.info().await;
        }
        Err(_) => {
            // The stream a KV bucket is made of, as async-nats's create_key_value
            // would configure it (history 1, rollups for purges, direct gets),
            // with a size limit.
            let config = stream::Config {
                name: stream_name.clone(),
                description: Some(format!("paddock sessions ({name})")),
                subjects: vec![subjects::kv_subjects(name)],
                max_messages_per_subject: 1,
                max_age: bucket.max_age.unwrap_or_default(),
                max_bytes: bucket.max_bytes(),
                storage: stream::StorageType::File,
                num_replicas: bucket.replicas.max(1),
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: bucket.discard(),
                ..Default::default()
            };
            match js.create_stream(config).await {
                Ok(_) => {
                    tracing::info!(
                        bucket = name,
                        replicas = bucket.replicas,
                        max_bytes = bucket.max_bytes,
                        "created JetStream bucket"
                    )
                }
                // Another processor created it in the meantime: use theirs.
                Err(e) if js.get_stream(&stream_name).await.is_ok() => {
                    tracing::debug!(bucket = name, error = %e, "bucket created concurrently");
                }
                Err(e) if no_room(&e.to_string()) => {
                    return Err(StoreError::NoRoom(format!(
                        "the broker's JetStream refused to set aside {} bytes for the {name} \
                         bucket ({e})",
                        bucket.max_bytes
                    )));
                }
                Err(e) => return Err(fail(e.to_string())),
            }
        }
    }
    js.get_key_value(name)
        .await
        .map_err(|e| fail(e.to_string()))
}

/// Whether JetStream refused a stream for want of storage: "insufficient
/// storage resources" (10047, the server's `max_file_store`), "insufficient
/// resources" (10023), or an account's or tier's limit ("maximum storage
/// exceeded", "exceeds account limit").
pub(super) fn no_room(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    ["insufficient", "storage exceeded", "exceeds account limit"]
        .iter()
        .any(|words| error.contains(words))
}

/// How long reading a bucket at start-up may make no progress before the attempt
/// is given up (and retried).
const LOAD_STALL: Duration = Duration::from_secs(10);

/// The latest value of every key, read with one watcher (a consumer replaying the
/// last message per key) rather than one request per key.
pub(super) async fn load(
    store: &kv::Store,
    bucket: &str,
) -> Result<Vec<(String, Bytes)>, StoreError> {
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
    caught_up(bucket, read_last, leader_last)?;
    Ok(values)
}

/// A read is complete when it reached the last message the leader reported: with
/// one message per key, every key's latest value is then among those read.
fn caught_up(bucket: &str, read_last: u64, leader_last: u64) -> Result<(), StoreError> {
    if read_last < leader_last {
        return Err(StoreError::Behind {
            bucket: bucket.to_string(),
            read: read_last,
            leader: leader_last,
        });
    }
    Ok(())
}

/// An ended session as the archive bucket keeps it (under its id).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct ArchiveRecord<F> {
    pub(super) session: SessionDocument<F>,
    #[serde(with = "time")]
    pub(super) ended_at: DateTime<Utc>,
    pub(super) reason: EndReason,
}

/// Reads an archive record back.
pub(super) fn read_archived(value: &[u8]) -> Result<Ended, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Record<'a> {
        #[serde(borrow)]
        session: &'a serde_json::value::RawValue,
        ended_at: DateTime<Utc>,
        reason: EndReason,
    }
    // The document is read by Snapshot, which knows what it holds.
    let record: Record<'_> = serde_json::from_slice(value)?;
    let last = Snapshot::from_json(record.session.get().as_bytes())?;
    Ok(Ended {
        at: record.ended_at,
        reason: record.reason,
        last,
        // The laps come from their own bucket (restore_lap).
        laps: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_short_of_the_leaders_last_message_is_behind() {
        assert!(matches!(
            caught_up("b", 41, 42),
            Err(StoreError::Behind {
                read: 41,
                leader: 42,
                ..
            })
        ));
        assert!(caught_up("b", 42, 42).is_ok());
        // A write after the leader's status was read arrives on the watcher too.
        assert!(caught_up("b", 43, 42).is_ok());
    }
}
