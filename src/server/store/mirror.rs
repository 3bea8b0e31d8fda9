//! The hub's copy of a track's records: JetStream mirrors, in the hub's own
//! domain, of the streams the track's processor and broker write (the session
//! buckets, lap records, alerts, the trace and best-lap streams). The broker keeps them in
//! step across the leaf link, and catches up after an outage from where each
//! mirror stopped; no code of ours moves a record.
//!
//! A mirror keeps its source's name (`KV_paddock_sessions` at the hub mirrors
//! `KV_paddock_sessions` in the track's domain), so one hub holds one track per
//! bucket name: a second track at the same hub runs with another `--bucket`.
//! Links are not mirrored: withdrawing one is the track's to answer.

use async_nats::jetstream::{self, stream};
use chrono::{DateTime, Utc};

use crate::protocol::subjects;
use crate::server::app::App;

use super::recovery::load;
use super::{BucketSizes, StoreError, restore};

/// The track's streams the hub mirrors.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    /// The track's `--bucket` (its buckets and trace stream are named after it).
    pub bucket: String,
    /// The track's JetStream domain (`$JS.<domain>.API` reaches it over the leaf).
    pub domain: String,
    /// Bytes the mirrors may hold in all, shared as the track shares its own
    /// (`BucketSizes::split`): give the hub the track's `--kv-max-bytes`.
    pub max_bytes: usize,
    /// Replicas of each mirror at the hub.
    pub replicas: usize,
}

/// One mirror: its name (the source's), whether it is a KV bucket, its size.
struct Mirrored {
    name: String,
    kv: bool,
    max_bytes: usize,
}

impl MirrorConfig {
    /// The buckets read back (live, archive, laps, alerts), in that order.
    pub fn buckets(&self) -> [String; 4] {
        let b = &self.bucket;
        [
            b.clone(),
            format!("{b}_archive"),
            format!("{b}_laps"),
            format!("{b}_alerts"),
        ]
    }

    fn mirrored(&self) -> Vec<Mirrored> {
        let sizes = BucketSizes::split(self.max_bytes);
        let [live, archive, laps, alerts] = self.buckets();
        let kv = |bucket: &str, max_bytes| Mirrored {
            name: subjects::kv_stream(bucket),
            kv: true,
            max_bytes,
        };
        vec![
            kv(&live, sizes.live),
            kv(&archive, sizes.archive),
            kv(&laps, sizes.laps),
            kv(&alerts, sizes.alerts),
            Mirrored {
                name: subjects::trace_stream(&self.bucket),
                kv: false,
                max_bytes: sizes.traces,
            },
            // A mirror does not take its source's purges: the hub's copy
            // keeps earlier best laps too, oldest dropped first; a read
            // finds the lap it asks for by its time.
            Mirrored {
                name: subjects::best_stream(&self.bucket),
                kv: false,
                max_bytes: sizes.best,
            },
        ]
    }
}

/// Creates the mirrors that do not exist yet. One that exists but mirrors
/// something else (or nothing) is refused: the hub would serve the wrong copy.
/// The track need not be reachable: a mirror waits for its source.
pub async fn ensure(js: &jetstream::Context, config: &MirrorConfig) -> Result<(), StoreError> {
    let api = subjects::js_domain_api(&config.domain);
    for m in config.mirrored() {
        let fail = |reason: String| StoreError::Open {
            bucket: m.name.clone(),
            reason,
        };
        if let Ok(mut existing) = js.get_stream(&m.name).await {
            let info = existing.info().await.map_err(|e| fail(e.to_string()))?;
            let source = info.config.mirror.as_ref();
            let same = source.is_some_and(|s| {
                s.name == m.name
                    && s.external.as_ref().map(|e| e.api_prefix.as_str()) == Some(api.as_str())
            });
            if !same {
                return Err(fail(format!(
                    "the hub has a stream {} that is not a mirror of {} in domain {}; \
                     remove it or give the track another --bucket",
                    m.name, m.name, config.domain
                )));
            }
            continue;
        }
        let max_bytes = i64::try_from(m.max_bytes)
            .ok()
            .filter(|&b| b < i64::MAX)
            .unwrap_or(-1);
        let stream_config = stream::Config {
            name: m.name.clone(),
            description: Some(format!("paddock: {} of domain {}", m.name, config.domain)),
            mirror: Some(stream::Source {
                name: m.name.clone(),
                external: Some(stream::External {
                    api_prefix: api.clone(),
                    delivery_prefix: None,
                }),
                ..Default::default()
            }),
            // A KV bucket's shape, so it opens as one (`get_key_value` wants
            // one message per key) and reads the last value per key directly.
            max_messages_per_subject: if m.kv { 1 } else { 0 },
            mirror_direct: m.kv,
            allow_direct: m.kv,
            max_bytes,
            // Full: the oldest go, as at the track; a mirror never refuses
            // its source (it would stall there).
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            num_replicas: config.replicas.max(1),
            ..Default::default()
        };
        match js.create_stream(stream_config).await {
            Ok(_) => tracing::info!(
                stream = m.name,
                domain = config.domain,
                max_bytes = m.max_bytes,
                "created the hub's mirror"
            ),
            // Another hub reader made it meanwhile.
            Err(_) if js.get_stream(&m.name).await.is_ok() => {}
            Err(e) => return Err(fail(e.to_string())),
        }
    }
    Ok(())
}

/// Where the mirrors stand: the last record of each (changes mean the copy
/// moved on) and when the newest of them was written at the track.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    pub last_sequences: Vec<u64>,
    pub newest: Option<DateTime<Utc>>,
}

/// The mirrors' [`Position`] (the trace stream aside: frames move it many times
/// a second and nothing the copy answers reads it).
pub async fn position(
    js: &jetstream::Context,
    config: &MirrorConfig,
) -> Result<Position, StoreError> {
    let mut position = Position::default();
    for bucket in config.buckets() {
        let name = subjects::kv_stream(&bucket);
        let fail = |e: String| StoreError::Open {
            bucket: bucket.clone(),
            reason: e,
        };
        let mut stream = js
            .get_stream(&name)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let info = stream.info().await.map_err(|e| fail(e.to_string()))?;
        position.last_sequences.push(info.state.last_sequence);
        if info.state.last_sequence > 0 {
            let ts = info.state.last_timestamp;
            let at = DateTime::from_timestamp(ts.unix_timestamp(), ts.nanosecond());
            position.newest = position.newest.max(at);
        }
    }
    Ok(position)
}

/// The copy as an [`App`] (the processor's own reading of the buckets), for the
/// hub's reader to answer from: every live and ended session, lap and raised
/// alert the mirrors hold.
pub async fn read_copy(js: &jetstream::Context, config: &MirrorConfig) -> Result<App, StoreError> {
    let mut values = Vec::with_capacity(4);
    for bucket in config.buckets() {
        let store = js
            .get_key_value(&bucket)
            .await
            .map_err(|e| StoreError::Open {
                bucket: bucket.clone(),
                reason: e.to_string(),
            })?;
        values.push(load(&store, &bucket).await?);
    }
    let [live, archive, laps, alerts]: [Vec<_>; 4] = values
        .try_into()
        .unwrap_or_else(|_| unreachable!("four buckets"));
    let app = App::new(Default::default());
    let restored = restore(&app, live, archive, laps, alerts);
    tracing::debug!(
        restored = restored.restored,
        archived = restored.archived,
        lap_records = restored.lap_records,
        "read the hub's copy"
    );
    Ok(app)
}
