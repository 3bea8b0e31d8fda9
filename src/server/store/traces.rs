//! The trace stream: every telemetry frame the processor accepted, written in
//! chunks by the trace writer (trace_writer.rs) to a JetStream stream the broker
//! keeps, so a lap can be read back frame by frame for `sessions.trace` and
//! `sessions.compare`.
//!
//! Why the processor writes it, in chunks, rather than the stream taking the
//! monitors' subjects itself (as it first did): a JetStream message per frame
//! made the broker's stream writes the bound of burst ingest: 0.33 × raw NATS at
//! 100 sessions and 0.5 KB frames, 0.10 × at 16 KB (docs/BENCHMARKS.md, #40).
//! Written by the processor, the record holds only what it accepted (not frames
//! refused for their rate or size); a chunk of up to [`CHUNK_BYTES`] is one
//! message (a hundredth of the messages); and the writer stands back while the
//! ingest queue is busy, so a burst is applied first and recorded after.
//!
//! A chunk is [`CHUNK_MAGIC`] then records of `at` (microseconds since the
//! epoch, the processor's clock: the lap records' clock, i64 LE), the frame's
//! length (u32 LE) and the frame's bytes. Its `Paddock-Recorder` header names
//! the processor that wrote it: replicas each record what they accept, and a
//! read takes one recorder's frames (the one with the most in the window).
//!
//! Bounded three ways (docs/PROTOCOL.md "Traces"): `max_bytes` is the traces'
//! share of `--kv-max-bytes` ([`super::BucketSizes`]); `max_msgs_per_subject`
//! (`--trace-session-bytes` in chunks) bounds each session, so one session's
//! flood pushes out its own oldest frames first; `max_age` is the archive
//! retention. When full the oldest chunks go.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;

#[cfg(test)]
use crate::protocol::subjects;

use super::StoreError;

/// How the trace stream is made.
#[derive(Debug, Clone)]
pub(crate) struct TraceConfig {
    pub(crate) name: String,
    /// What it records: [`subjects::TRACE_SUBJECTS`], or the best-lap
    /// stream's [`subjects::BEST_SUBJECTS`].
    pub(crate) subjects: &'static [&'static str],
    pub(crate) description: &'static str,
    pub(crate) max_bytes: usize,
    /// Bytes of chunks kept per session (per subject), counted in chunks of
    /// [`CHUNK_BYTES`].
    pub(crate) per_session_bytes: usize,
    pub(crate) max_age: Duration,
    /// The largest frame recorded (`--max-payload`): a chunk is at most
    /// [`max_chunk`] of it.
    pub(crate) max_payload: usize,
    pub(crate) replicas: usize,
    /// Whether the broker is 2.10 or later, which compresses streams (S2).
    pub(crate) compress: bool,
}

impl TraceConfig {
    fn max_bytes(&self) -> i64 {
        i64::try_from(self.max_bytes)
            .ok()
            .filter(|&b| b < i64::MAX)
            .unwrap_or(-1)
    }

    fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            description: Some(self.description.into()),
            subjects: self.subjects.iter().map(|s| s.to_string()).collect(),
            max_bytes: self.max_bytes(),
            max_messages_per_subject: i64::try_from(self.per_session_bytes.div_ceil(CHUNK_BYTES))
                .unwrap_or(-1),
            max_age: self.max_age,
            max_message_size: i32::try_from(max_chunk(self.max_payload)).unwrap_or(i32::MAX),
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            num_replicas: self.replicas.max(1),
            // The writer waits for each chunk's PubAck: a chunk the stream
            // refused is counted, not assumed stored.
            no_ack: false,
            // NATS 2.9 knows no compression: the field is left out for it.
            compression: self.compress.then_some(stream::Compression::S2),
            ..Default::default()
        }
    }
}

/// Whether a server version (`2.9.10`, `2.15.1-beta`) compresses streams: 2.10+.
pub(crate) fn compresses(version: &str) -> bool {
    let mut parts = version
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 10)
}

/// Opens the trace stream, creating it, or updating its limits to these.
pub(crate) async fn open(
    js: &jetstream::Context,
    config: &TraceConfig,
) -> Result<stream::Stream, StoreError> {
    let fail = |reason: String| StoreError::Open {
        bucket: config.name.clone(),
        reason,
    };
    let wanted = config.stream_config();
    match js.get_stream(&config.name).await {
        Ok(existing) => {
            let mut current = existing.cached_info().config.clone();
            // The subjects too: a stream made by an earlier paddock took the
            // monitors' telemetry subjects itself.
            let differs = current.subjects != wanted.subjects
                || current.no_ack != wanted.no_ack
                || current.max_bytes != wanted.max_bytes
                || current.max_messages_per_subject != wanted.max_messages_per_subject
                || current.max_age != wanted.max_age
                || current.max_message_size != wanted.max_message_size;
            if differs {
                tracing::info!(
                    stream = config.name,
                    max_bytes = wanted.max_bytes,
                    per_session = wanted.max_messages_per_subject,
                    "updating the stream's limits"
                );
                current.subjects = wanted.subjects.clone();
                current.no_ack = wanted.no_ack;
                current.max_bytes = wanted.max_bytes;
                current.max_messages_per_subject = wanted.max_messages_per_subject;
                current.max_age = wanted.max_age;
                current.max_message_size = wanted.max_message_size;
                if let Err(e) = js.update_stream(current).await {
                    tracing::warn!(stream = config.name, error = %e, "could not update the stream's limits; using it as it is");
                }
            }
            Ok(existing)
        }
        Err(_) => match js.create_stream(wanted).await {
            Ok(stream) => {
                tracing::info!(
                    stream = config.name,
                    max_bytes = config.max_bytes,
                    per_session_bytes = config.per_session_bytes,
                    compressed = config.compress,
                    "created the stream"
                );
                Ok(stream)
            }
            Err(e) => match js.get_stream(&config.name).await {
                // Another processor made it in the meantime.
                Ok(stream) => Ok(stream),
                Err(_) if super::recovery::no_room(&e.to_string()) => {
                    Err(StoreError::NoRoom(format!(
                        "the broker's JetStream refused to set aside {} bytes for the {} \
                         stream ({e})",
                        config.max_bytes, config.name
                    )))
                }
                Err(_) => Err(fail(e.to_string())),
            },
        },
    }
}

/// What every chunk starts with: the format and its version.
pub(crate) const CHUNK_MAGIC: &[u8; 4] = b"PTR1";
/// A record's head: `at` (8 bytes) and the frame's length (4).
pub(crate) const RECORD_HEAD: usize = 12;
/// A chunk is written once it holds this many bytes (a frame is never split:
/// one that does not fit starts the next chunk). 64 KiB is 40 frames of 1.5 KB
/// at 60 Hz, under a second of a car; 130 frames of 0.5 KB at 20 Hz, 6.5 s.
pub(crate) const CHUNK_BYTES: usize = 64 * 1024;
/// The header naming the processor that wrote a chunk.
pub(crate) const RECORDER: &str = "Paddock-Recorder";

/// The largest chunk: a full one, then the largest frame alone after it would
/// not fit (the stream's `max_msg_size`).
pub(crate) fn max_chunk(max_payload: usize) -> usize {
    CHUNK_MAGIC.len() + CHUNK_BYTES + RECORD_HEAD + max_payload
}

/// Starts a chunk.
pub(crate) fn new_chunk() -> Vec<u8> {
    let mut chunk = Vec::with_capacity(CHUNK_BYTES + 4096);
    chunk.extend_from_slice(CHUNK_MAGIC);
    chunk
}

/// Appends one frame, received `at`, to a chunk.
pub(crate) fn append(chunk: &mut Vec<u8>, at: DateTime<Utc>, frame: &[u8]) {
    chunk.extend_from_slice(&at.timestamp_micros().to_le_bytes());
    let len = u32::try_from(frame.len()).expect("a frame is under --max-payload");
    chunk.extend_from_slice(&len.to_le_bytes());
    chunk.extend_from_slice(frame);
}

/// The frames of a chunk, in the order written, each a slice of `chunk` (no
/// copy). A chunk that is not one (no magic, a record cut short) yields what
/// came before the fault and then stops: a read never fails on one bad chunk.
pub(crate) fn records(chunk: &Bytes) -> impl Iterator<Item = Recorded> + '_ {
    let mut at = if chunk.starts_with(CHUNK_MAGIC) {
        CHUNK_MAGIC.len()
    } else {
        chunk.len()
    };
    std::iter::from_fn(move || {
        let head = chunk.get(at..at + RECORD_HEAD)?;
        let micros = i64::from_le_bytes(head[..8].try_into().ok()?);
        let len = u32::from_le_bytes(head[8..].try_into().ok()?) as usize;
        let start = at + RECORD_HEAD;
        let end = start.checked_add(len).filter(|&end| end <= chunk.len())?;
        at = end;
        Some(Recorded {
            at: DateTime::from_timestamp_micros(micros)?,
            payload: chunk.slice(start..end),
        })
    })
}

/// One recorded frame: when the processor accepted it, and the frame.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: DateTime<Utc>,
    pub payload: Bytes,
}

/// How long a read may wait for its next chunk before it gives up (the
/// consumer was created, so chunks that exist come at once).
const READ_STALL: Duration = Duration::from_secs(5);

/// Chunks are written after their frames were accepted: within a second or
/// two while the processor keeps up, later after a burst (the writer stands
/// back while the ingest queue is busy). A read stops at the first chunk that
/// starts this long after the window.
const WRITTEN_WITHIN: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// The frames recorded on `subject` that were accepted from `from` to `to`,
/// of one recorder (the one with the most of them: replicas each record),
/// at most `limit` and one more (the caller refuses that many), read with an
/// ordered consumer that exists for this read only.
pub(crate) async fn read(
    stream: &stream::Stream,
    client: &async_nats::Client,
    subject: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Recorded>, StoreError> {
    // A chunk is written after its frames: the first that may hold `from`
    // was published at `from` or later (less the margin the caller gives for
    // another machine's clock).
    let start = time::OffsetDateTime::from_unix_timestamp_nanos(
        from.timestamp_nanos_opt().unwrap_or_default().into(),
    )
    .map_err(StoreError::write)?;
    let consumer = stream
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            description: Some("paddock trace read".into()),
            filter_subject: subject,
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: start },
            ..Default::default()
        })
        .await
        .map_err(StoreError::write)?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(Vec::new());
    }
    let mut messages = consumer.messages().await.map_err(StoreError::write)?;
    // Frames per recorder; almost always one.
    let mut by_recorder: Vec<(String, Vec<Recorded>)> = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(READ_STALL, messages.next()).await {
        let message = message.map_err(StoreError::write)?;
        let pending = message
            .info()
            .map_err(|e| StoreError::write(e.to_string()))?
            .pending;
        let recorder = message
            .headers
            .as_ref()
            .and_then(|h| h.get(RECORDER))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        let mut chunk = records(&message.payload).peekable();
        if chunk
            .peek()
            .is_some_and(|first| first.at > to + WRITTEN_WITHIN)
        {
            break;
        }
        let slot = match by_recorder.iter().position(|(r, _)| *r == recorder) {
            Some(i) => i,
            None => {
                by_recorder.push((recorder, Vec::new()));
                by_recorder.len() - 1
            }
        };
        let frames = &mut by_recorder[slot].1;
        frames.extend(chunk.filter(|r| r.at >= from && r.at <= to));
        if pending == 0 || frames.len() > limit {
            break;
        }
    }
    Ok(by_recorder
        .into_iter()
        .map(|(_, frames)| frames)
        .max_by_key(Vec::len)
        .unwrap_or_default())
}

/// Writes one lap's `chunks` on `subject` of the best-lap stream, then purges
/// the subject's older chunks (the previous best): a read meanwhile finds the
/// old copy, the new one or both (told apart by their times), never neither.
pub(crate) async fn keep(
    js: &jetstream::Context,
    stream: &stream::Stream,
    subject: String,
    recorder: &str,
    chunks: Vec<Vec<u8>>,
) -> Result<(), StoreError> {
    let kept = chunks.len() as u64;
    let mut headers = HeaderMap::new();
    headers.insert(RECORDER, recorder);
    let mut acks = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let sent = js
            .publish_with_headers(subject.clone(), headers.clone(), Bytes::from(chunk))
            .await
            .map_err(StoreError::write)?;
        acks.push(sent);
    }
    for ack in acks {
        ack.await.map_err(StoreError::write)?;
    }
    stream
        .purge()
        .filter(subject)
        .keep(kept)
        .await
        .map_err(StoreError::write)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_is_asked_of_2_10_and_later_only() {
        assert!(!compresses("2.9.10"));
        assert!(compresses("2.10.0"));
        assert!(compresses("2.15.1"));
        assert!(compresses("2.11.0-beta.2"));
        assert!(!compresses("garbage"));
    }

    #[test]
    fn the_stream_is_bounded_per_session_and_in_bytes() {
        let config = TraceConfig {
            name: "paddock_sessions_traces".into(),
            subjects: &subjects::TRACE_SUBJECTS,
            description: "test",
            max_bytes: 256 << 20,
            per_session_bytes: 64 << 20,
            max_age: Duration::from_secs(3600),
            max_payload: 65_536,
            replicas: 1,
            compress: false,
        };
        let made = config.stream_config();
        assert_eq!(made.max_bytes, 256 << 20);
        assert_eq!(made.max_messages_per_subject, 1024);
        assert_eq!(made.max_message_size, 4 + 65_536 + 12 + 65_536);
        assert_eq!(made.discard, stream::DiscardPolicy::Old);
        assert_eq!(made.compression, None);
        assert!(!made.no_ack, "the writer counts chunks the stream refused");
        assert_eq!(made.subjects, ["paddock.trace.*"]);
    }

    fn at(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(micros).unwrap()
    }

    #[test]
    fn a_chunk_reads_back_its_frames_and_times_in_order() {
        let mut chunk = new_chunk();
        append(&mut chunk, at(1_700_000_000_000_001), br#"{"lap":1}"#);
        append(&mut chunk, at(1_700_000_000_050_002), b"");
        append(
            &mut chunk,
            at(1_700_000_000_100_003),
            br#"{"lap":2,"x":[1,2]}"#,
        );
        let chunk = Bytes::from(chunk);
        let read: Vec<_> = records(&chunk).map(|r| (r.at, r.payload)).collect();
        assert_eq!(
            read,
            [
                (
                    at(1_700_000_000_000_001),
                    Bytes::from_static(br#"{"lap":1}"#)
                ),
                (at(1_700_000_000_050_002), Bytes::new()),
                (
                    at(1_700_000_000_100_003),
                    Bytes::from_static(br#"{"lap":2,"x":[1,2]}"#)
                ),
            ]
        );
    }

    #[test]
    fn a_damaged_chunk_yields_what_precedes_the_damage_and_never_panics() {
        let mut whole = new_chunk();
        append(&mut whole, at(1), b"first");
        append(&mut whole, at(2), b"second");
        for cut in 0..whole.len() {
            let chunk = Bytes::copy_from_slice(&whole[..cut]);
            let n = records(&chunk).count();
            assert!(n <= 1, "a cut chunk yields at most its whole records");
        }
        assert_eq!(
            records(&Bytes::from_static(b"not a chunk at all")).count(),
            0
        );
        let mut lying = new_chunk();
        lying.extend_from_slice(&1i64.to_le_bytes());
        lying.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(records(&Bytes::from(lying)).count(), 0);
    }
}
