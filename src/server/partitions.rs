//! Partitioned ownership (`serve --partitions N --owns a,b`): which sessions this
//! processor holds, and the requests it answers across partitions.
//!
//! The broker does the partitioning: its subject mappings
//! ([`subjects::mappings`]) append the partition of the session id to every
//! subject that carries one, and a processor subscribes only to the partitions it
//! owns. What no mapping can route, a processor routes itself, here:
//!
//! - `sessions.list`, `sessions.archive.list` and `sessions.stats` are gathered
//!   from every partition (`sessions.partition.<p>.<endpoint>`, answered by one
//!   owner of each) and merged into the reply a single processor would give;
//! - a body-form request for a session of another partition (`sessions.get` with
//!   `{"session_id": …}`) is forwarded to that partition and its answer relayed,
//!   headers (error codes) and all.
//!
//! These run on tasks of their own, never in the processor's ordered loop: the
//! loop answers the forwarded requests, its own included.

use std::collections::BTreeMap;

use async_nats::{Client, HeaderMap, Message};
use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::protocol::documents::{
    ArchivedSummary, LIST_MAX_LIMIT, ListRequest, Page, SessionSummary, Stats,
};
use crate::protocol::id::SessionId;
use crate::protocol::subjects::{self, Endpoint};
use crate::server::error::ServiceError;

/// Partition numbers are bits of one word: 64 processors' worth of partitions is
/// far past what one broker cluster delivers (docs/ARCHITECTURE.md).
pub const MAX_PARTITIONS: u32 = 64;

/// How many partitions there are and which this processor owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitions {
    count: u32,
    owned: u64,
}

impl Default for Partitions {
    /// One partition, owned: every session is this processor's (no mapping).
    fn default() -> Self {
        Partitions { count: 1, owned: 1 }
    }
}

/// Why `--partitions`/`--owns` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionsError {
    #[error("--partitions must be between 1 and {MAX_PARTITIONS}, not {0}")]
    Count(u32),
    #[error("--owns {owned}: there is no partition {owned} among {count} (0 to {})", count - 1)]
    Unknown { owned: u32, count: u32 },
    #[error("--owns names no partition")]
    None,
}

impl Partitions {
    /// `count` partitions, of which this processor owns `owns` (every one when
    /// `None`).
    pub fn new(count: u32, owns: Option<&[u32]>) -> Result<Self, PartitionsError> {
        if !(1..=MAX_PARTITIONS).contains(&count) {
            return Err(PartitionsError::Count(count));
        }
        let owned = match owns {
            None => u64::MAX >> (64 - count),
            Some(owns) => owns.iter().try_fold(0u64, |bits, &owned| {
                if owned < count {
                    Ok(bits | 1 << owned)
                } else {
                    Err(PartitionsError::Unknown { owned, count })
                }
            })?,
        };
        if owned == 0 {
            return Err(PartitionsError::None);
        }
        Ok(Partitions { count, owned })
    }

    /// Whether the subject space is partitioned at all: with one partition the
    /// processor subscribes to the plain subjects, as without the flag.
    pub fn is_partitioned(&self) -> bool {
        self.count > 1
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The partitions this processor owns, in order.
    pub fn owned(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.count).filter(|p| self.owned & (1 << p) != 0)
    }

    pub fn owns_partition(&self, partition: u32) -> bool {
        partition < self.count && self.owned & (1 << partition) != 0
    }

    /// The partition of a session.
    pub fn of(&self, id: &SessionId) -> u32 {
        subjects::partition(id, self.count)
    }

    /// Whether this processor holds the session: what recovery restores, what
    /// it adopts from other processors' writes, and what `create` hands out.
    pub fn owns(&self, id: &SessionId) -> bool {
        !self.is_partitioned() || self.owns_partition(self.of(id))
    }

    /// A subject pattern as this processor subscribes to it: as it is without
    /// partitions; else once per owned partition, as the broker's mappings
    /// deliver it (`<pattern>.<p>`), with that partition.
    pub fn subscriptions(&self, pattern: &str) -> Vec<(Option<u32>, String)> {
        if !self.is_partitioned() {
            return vec![(None, pattern.to_string())];
        }
        self.owned()
            .map(|p| (Some(p), subjects::partitioned(pattern, p)))
            .collect()
    }

    /// `0,1` for logs and the service's metadata.
    pub fn describe_owned(&self) -> String {
        let owned: Vec<String> = self.owned().map(|p| p.to_string()).collect();
        owned.join(",")
    }
}

/// What a partition answers to a gathered `sessions.stats`: the counters of the
/// processor that answered, and the live sessions of the partition alone.
#[derive(Debug, Serialize, Deserialize)]
pub struct PartitionStats {
    /// The answering processor (its micro service instance id): a processor that
    /// owns several partitions has its counters summed once.
    pub processor: String,
    pub live_sessions: usize,
    pub stats: Stats,
}

/// The reply of a request forwarded to the owners of `partition`: their body and
/// headers, or why no owner answered.
pub async fn forward(
    client: &Client,
    partition: u32,
    endpoint: Endpoint,
    body: Bytes,
) -> Result<Message, ServiceError> {
    client
        .request(subjects::partition_request(partition, endpoint), body)
        .await
        .map_err(|e| {
            let why = match e.kind() {
                async_nats::RequestErrorKind::NoResponders => "no processor owns it".to_string(),
                async_nats::RequestErrorKind::TimedOut => "its processor did not answer".into(),
                _ => e.to_string(),
            };
            ServiceError::PartitionUnavailable(format!("partition {partition}: {why}"))
        })
}

/// A partition's answer to a forwarded request, read as `T`; an error when it
/// answered one (`Nats-Service-Error-Code`) or none: a gathered reply is whole or
/// an error, never a part passed off as the whole.
async fn ask<T: DeserializeOwned>(
    client: &Client,
    partition: u32,
    endpoint: Endpoint,
    body: Bytes,
) -> Result<T, ServiceError> {
    let reply = forward(client, partition, endpoint, body).await?;
    let unavailable =
        |why: String| ServiceError::PartitionUnavailable(format!("partition {partition} {why}"));
    if let Some(code) = reply
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::service::NATS_SERVICE_ERROR_CODE))
    {
        let text = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::service::NATS_SERVICE_ERROR))
            .map_or("", |v| v.as_str());
        return Err(unavailable(format!("answered {code}: {text}")));
    }
    serde_json::from_slice(&reply.payload).map_err(|e| unavailable(format!("answered: {e}")))
}

/// `sessions.list` or `sessions.archive.list` across every partition: the page
/// the request asks for, in the order one processor lists them (one team's
/// rows only when it names a team: each partition filters its own).
pub async fn gather_page(
    client: &Client,
    partitions: Partitions,
    endpoint: Endpoint,
    request: &ListRequest,
) -> Result<Bytes, ServiceError> {
    let bounds = request.bounds();
    let team = request.team.as_deref();
    match endpoint {
        // Oldest first, like `Sessions::list`.
        Endpoint::List => {
            merged_page::<SessionSummary, _>(client, partitions, endpoint, bounds, team, |row| {
                (row.created_at, row.session_id)
            })
            .await
        }
        // Most recently ended first, like `Sessions::list_ended`.
        _ => {
            merged_page::<ArchivedSummary, _>(client, partitions, endpoint, bounds, team, |row| {
                std::cmp::Reverse((row.ended_at, row.session_id))
            })
            .await
        }
    }
}

/// Every partition's first `offset + limit` rows, merged in the order of `key`,
/// and the page at `offset` of them.
async fn merged_page<T, K: Ord>(
    client: &Client,
    partitions: Partitions,
    endpoint: Endpoint,
    (offset, limit): (usize, usize),
    team: Option<&str>,
    key: impl Fn(&T) -> K,
) -> Result<Bytes, ServiceError>
where
    T: Serialize + DeserializeOwned,
{
    let (total, mut rows) =
        gather_rows::<T>(client, partitions, endpoint, offset + limit, team).await?;
    rows.sort_by_key(key);
    let page = Page::slice(rows, total, offset, limit);
    Ok(serde_json::to_vec(&page).expect("a page serializes").into())
}

/// The first `wanted` rows of every partition (each in its own order) and the
/// total of all: the merged page's rows are among them.
async fn gather_rows<T: DeserializeOwned>(
    client: &Client,
    partitions: Partitions,
    endpoint: Endpoint,
    wanted: usize,
    team: Option<&str>,
) -> Result<(usize, Vec<T>), ServiceError> {
    let each = (0..partitions.count()).map(|partition| async move {
        let mut rows = Vec::new();
        let mut offset = 0;
        loop {
            let request = ListRequest {
                limit: Some(wanted.saturating_sub(offset).clamp(1, LIST_MAX_LIMIT)),
                offset,
                team: team.map(str::to_string),
            };
            let body = serde_json::to_string(&request).expect("a list request serializes");
            let page: Page<T> = ask(client, partition, endpoint, body.into()).await?;
            rows.extend(page.sessions);
            match page.next_offset {
                Some(next) if next < wanted => offset = next,
                _ => return Ok::<_, ServiceError>((page.total, rows)),
            }
        }
    });
    let mut total = 0;
    let mut all = Vec::new();
    for gathered in futures::future::join_all(each).await {
        let (partition_total, rows) = gathered?;
        total += partition_total;
        all.extend(rows);
    }
    Ok((total, all))
}

/// `sessions.stats` across every partition: live sessions summed over the
/// partitions, counters summed over the processors that answered (each once).
pub async fn gather_stats(client: &Client, partitions: Partitions) -> Result<Bytes, ServiceError> {
    let each = (0..partitions.count())
        .map(|partition| ask::<PartitionStats>(client, partition, Endpoint::Stats, Bytes::new()));
    let mut live_sessions = 0;
    let mut by_processor = BTreeMap::new();
    for gathered in futures::future::join_all(each).await {
        let answer = gathered?;
        live_sessions += answer.live_sessions;
        by_processor.insert(answer.processor, answer.stats);
    }
    let mut merged = by_processor
        .into_values()
        .reduce(add_stats)
        .expect("at least one partition");
    merged.live_sessions = live_sessions;
    Ok(serde_json::to_vec(&merged).expect("stats serialize").into())
}

fn add_stats(mut a: Stats, b: Stats) -> Stats {
    a.ingest_rate_hz += b.ingest_rate_hz;
    a.sessions_created += b.sessions_created;
    a.sessions_deleted += b.sessions_deleted;
    a.sessions_expired += b.sessions_expired;
    a.telemetry_frames += b.telemetry_frames;
    a.setup_frames += b.setup_frames;
    a.field_frames += b.field_frames;
    a.laps_completed += b.laps_completed;
    a.lap_records += b.lap_records;
    a.laps_dropped += b.laps_dropped;
    a.laps_trimmed += b.laps_trimmed;
    a.laps_unstored += b.laps_unstored;
    a.alerts_unqueued += b.alerts_unqueued;
    a.trace_frames_recorded += b.trace_frames_recorded;
    a.trace_frames_unrecorded += b.trace_frames_unrecorded;
    a.memory.frame_bytes += b.memory.frame_bytes;
    a.memory.lap_bytes += b.memory.lap_bytes;
    a.memory.budget_bytes += b.memory.budget_bytes;
    a.memory.over_budget |= b.memory.over_budget;
    a.rejected_total += b.rejected_total;
    for (reason, n) in b.rejected {
        *a.rejected.entry(reason).or_default() += n;
    }
    a
}

/// A request that needs other partitions, taken by this processor.
#[derive(Debug)]
pub enum Across {
    /// A page of `sessions.list` or `sessions.archive.list`, from every partition.
    Page {
        partitions: Partitions,
        endpoint: Endpoint,
        request: ListRequest,
    },
    /// `sessions.stats`, from every partition.
    Stats(Partitions),
    /// A body-form request for a session of a partition this processor does not
    /// own: forwarded there.
    Forward {
        partition: u32,
        endpoint: Endpoint,
        body: Bytes,
    },
}

impl Across {
    /// The reply to send: body and headers (a forwarded request's owner's, error
    /// headers included).
    pub async fn run(self, client: &Client) -> Result<(Bytes, HeaderMap), ServiceError> {
        match self {
            Across::Page {
                partitions,
                endpoint,
                request,
            } => Ok((
                gather_page(client, partitions, endpoint, &request).await?,
                HeaderMap::new(),
            )),
            Across::Stats(partitions) => {
                Ok((gather_stats(client, partitions).await?, HeaderMap::new()))
            }
            Across::Forward {
                partition,
                endpoint,
                body,
            } => {
                let reply = forward(client, partition, endpoint, body).await?;
                Ok((reply.payload, reply.headers.unwrap_or_default()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_partitions_are_checked() {
        let all = Partitions::new(4, None).unwrap();
        assert_eq!(all.owned().collect::<Vec<_>>(), [0, 1, 2, 3]);
        let some = Partitions::new(4, Some(&[1, 3])).unwrap();
        assert_eq!(some.describe_owned(), "1,3");
        assert!(some.owns_partition(3) && !some.owns_partition(2) && !some.owns_partition(4));
        assert_eq!(
            Partitions::new(4, Some(&[4])),
            Err(PartitionsError::Unknown { owned: 4, count: 4 })
        );
        assert_eq!(Partitions::new(0, None), Err(PartitionsError::Count(0)));
        assert_eq!(Partitions::new(65, None), Err(PartitionsError::Count(65)));
        assert_eq!(Partitions::new(4, Some(&[])), Err(PartitionsError::None));
        assert_eq!(Partitions::new(64, None).unwrap().owned().count(), 64);
    }

    #[test]
    fn gathered_pages_and_stats_read_as_one_processors() {
        let page = Page::slice(vec![1, 2, 3, 4, 5], 7, 2, 2);
        assert_eq!(
            (page.total, page.count, page.offset, page.next_offset),
            (7, 2, 2, Some(4))
        );
        assert_eq!(page.sessions, [3, 4]);
        let last = Page::slice(vec![1, 2, 3], 3, 2, 5);
        assert_eq!((last.count, last.next_offset), (1, None));

        let metrics = crate::server::metrics::Metrics::default();
        metrics
            .telemetry_frames
            .fetch_add(10, std::sync::atomic::Ordering::Relaxed);
        metrics.reject("too_large", "s", &"big");
        let one = metrics.snapshot(crate::server::sessions::Load {
            live: 5,
            rate_hz: 2.0,
            lap_records: 1,
            ..Default::default()
        });
        let sum = add_stats(one.clone(), one);
        assert_eq!((sum.telemetry_frames, sum.lap_records), (20, 2));
        assert_eq!((sum.rejected_total, sum.rejected["too_large"]), (2, 2));
        assert_eq!(sum.ingest_rate_hz, 4.0);
    }

    #[test]
    fn a_processor_owns_the_sessions_of_its_partitions_only() {
        let whole = Partitions::default();
        let half = Partitions::new(2, Some(&[0])).unwrap();
        let ids: Vec<SessionId> = (0..200).map(|_| SessionId::new_v4()).collect();
        assert!(ids.iter().all(|id| whole.owns(id)));
        let owned = ids.iter().filter(|id| half.owns(id)).count();
        assert!((50..150).contains(&owned), "{owned}");
        assert!(
            ids.iter()
                .all(|id| half.owns(id) == (subjects::partition(id, 2) == 0))
        );
    }
}
