//! The links bucket (`<bucket>_links`): every shared link under its id, with
//! when it was made, last renewed and withdrawn (server/links.rs). What makes
//! a withdrawal every processor's, and outlive a restart.
//!
//! Each key is written when its link is made (a KV `create`), renewed and
//! withdrawn (an `update` at the revision read: a compare-and-set). A renewal
//! reads the key first and is refused if the link was withdrawn, so a renewal
//! that raced a withdrawal on another processor loses, whichever processor
//! answers it. Every processor also follows the bucket, so its memory
//! refuses a withdrawn link without asking.
//!
//! The stream's `max_age` is `--credentials-ttl` plus [`MAX_AGE_MARGIN`]:
//! every key is rewritten at each renewal, so a key that old belongs to a link
//! whose credentials have all expired, and the bucket forgets it by itself.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::protocol::documents::Link;
use crate::protocol::id::LinkId;
use crate::server::app::App;
use crate::server::links::LinkError;

use super::StoreError;

/// The links bucket's size at most: about 500 bytes a link, so 8 MiB holds
/// four times the default `--max-links` (4,096). Past it the oldest writes go:
/// links no page renewed for the longest, and a link the bucket no longer
/// has is refused.
pub(super) const LINKS_BUCKET_BYTES: usize = 8 * 1024 * 1024;

/// How much longer than `--credentials-ttl` the bucket keeps a key nobody
/// wrote: room for processors whose clocks, or TTLs, differ a little.
pub(super) const MAX_AGE_MARGIN: Duration = Duration::from_secs(10 * 60);

/// Tries at a key another processor is writing at the same moment.
const ATTEMPTS: usize = 5;

/// A new link, stored before its credentials are handed out.
pub(super) async fn create(bucket: &kv::Store, link: &Link) -> Result<(), StoreError> {
    bucket
        .create(link.link.as_str(), encode(link))
        .await
        .map(|_| ())
        .map_err(StoreError::write)
}

/// A renewal recorded, unless the stored link was withdrawn (or is gone):
/// then the renewal is refused, whatever this processor's memory says.
pub(super) async fn renew(
    bucket: &kv::Store,
    id: &LinkId,
    expires_at: DateTime<Utc>,
) -> Result<Result<Link, LinkError>, StoreError> {
    for _ in 0..ATTEMPTS {
        let Some((mut link, revision)) = read(bucket, id).await? else {
            return Ok(Err(LinkError::Unknown(id.clone())));
        };
        if link.revoked_at.is_some() {
            return Ok(Err(LinkError::Revoked(id.clone())));
        }
        crate::server::links::renew(&mut link, expires_at, Utc::now());
        match bucket.update(id.as_str(), encode(&link), revision).await {
            Ok(_) => return Ok(Ok(link)),
            // Written meanwhile (a withdrawal, another renewal): read again.
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(StoreError::write(e)),
        }
    }
    Err(StoreError::write(format!(
        "link {id} changed {ATTEMPTS} times while it was renewed"
    )))
}

/// A withdrawal recorded; a link the bucket no longer has needs none.
pub(super) async fn revoke(bucket: &kv::Store, withdrawn: &Link) -> Result<(), StoreError> {
    let id = &withdrawn.link;
    for _ in 0..ATTEMPTS {
        let Some((mut link, revision)) = read(bucket, id).await? else {
            return Ok(());
        };
        if link.revoked_at.is_some() {
            return Ok(());
        }
        link.revoked_at = withdrawn.revoked_at;
        match bucket.update(id.as_str(), encode(&link), revision).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(StoreError::write(e)),
        }
    }
    Err(StoreError::write(format!(
        "link {id} changed {ATTEMPTS} times while it was withdrawn"
    )))
}

/// One link as stored, with its revision; `None` when the bucket has none.
pub(super) async fn read(
    bucket: &kv::Store,
    id: &LinkId,
) -> Result<Option<(Link, u64)>, StoreError> {
    let entry = bucket.entry(id.as_str()).await.map_err(StoreError::write)?;
    match entry {
        Some(entry) if entry.operation == kv::Operation::Put => {
            let link = serde_json::from_slice(&entry.value).map_err(StoreError::write)?;
            Ok(Some((link, entry.revision)))
        }
        _ => Ok(None),
    }
}

/// Applies what the bucket holds (at start-up, and before a withdrawal or a
/// listing, so that links made on another processor a moment ago count).
pub(super) fn apply_all(app: &App, values: Vec<(String, bytes::Bytes)>) -> usize {
    let mut applied = 0;
    for (key, value) in values {
        match serde_json::from_slice::<Link>(&value) {
            Ok(link) => {
                app.links.apply(link);
                applied += 1;
            }
            Err(e) => tracing::error!(key, error = %e, "skipping an unreadable stored link"),
        }
    }
    applied
}

/// Follows other processors' writes: links made, renewed and withdrawn
/// elsewhere are known here within the broker's delivery time.
pub(super) async fn follow(mut watch: kv::Watch, app: Arc<App>) {
    while let Some(entry) = watch.next().await {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(error = %e, "the links bucket's watcher failed");
                continue;
            }
        };
        if entry.operation != kv::Operation::Put {
            continue;
        }
        match serde_json::from_slice::<Link>(&entry.value) {
            Ok(link) => app.links.apply(link),
            Err(e) => {
                tracing::error!(key = entry.key, error = %e, "skipping an unreadable stored link")
            }
        }
    }
    tracing::warn!("the links bucket's watcher ended");
}

fn encode(link: &Link) -> bytes::Bytes {
    serde_json::to_vec(link).expect("a link serializes").into()
}
