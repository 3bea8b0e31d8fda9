//! The trace stream: every telemetry frame as the broker received it, recorded
//! by the broker itself (a JetStream stream over the telemetry subjects), so a
//! lap can be read back frame by frame for `sessions.trace` and
//! `sessions.compare` without a line of ours on the ingest path.
//!
//! Bounded three ways (docs/PROTOCOL.md "Traces"): `max_bytes` is the traces'
//! share of `--kv-max-bytes` ([`super::BucketSizes`]); `max_msgs_per_subject`
//! (`--trace-frames`) bounds each session, so one session's flood pushes out
//! its own oldest frames first and holds at most that many (the bytes are
//! shared: a full stream drops the oldest of any session); `max_age` is the archive
//! retention. When full the oldest frames go. A frame over `--max-payload` is
//! refused by the stream as the processor refuses it; frames the processor
//! refuses for their rate are recorded all the same (the broker cannot tell).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::protocol::subjects;

use super::StoreError;

/// How the trace stream is made.
#[derive(Debug, Clone)]
pub(crate) struct TraceConfig {
    pub(crate) name: String,
    pub(crate) max_bytes: usize,
    /// Frames kept per session (per subject).
    pub(crate) per_session: usize,
    pub(crate) max_age: Duration,
    pub(crate) max_msg_size: usize,
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
            description: Some("paddock: every telemetry frame, for lap traces".into()),
            subjects: subjects::TRACE_SUBJECTS.map(String::from).to_vec(),
            max_bytes: self.max_bytes(),
            max_messages_per_subject: i64::try_from(self.per_session).unwrap_or(-1),
            max_age: self.max_age,
            max_message_size: i32::try_from(self.max_msg_size).unwrap_or(i32::MAX),
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            num_replicas: self.replicas.max(1),
            // A frame sent as a request (for the processor's ack or refusal)
            // must get the processor's answer, not the stream's: no PubAck.
            no_ack: true,
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
            let differs = current.max_bytes != wanted.max_bytes
                || current.max_messages_per_subject != wanted.max_messages_per_subject
                || current.max_age != wanted.max_age
                || current.max_message_size != wanted.max_message_size;
            if differs {
                tracing::info!(
                    stream = config.name,
                    max_bytes = wanted.max_bytes,
                    per_session = wanted.max_messages_per_subject,
                    "updating the trace stream's limits"
                );
                current.max_bytes = wanted.max_bytes;
                current.max_messages_per_subject = wanted.max_messages_per_subject;
                current.max_age = wanted.max_age;
                current.max_message_size = wanted.max_message_size;
                if let Err(e) = js.update_stream(current).await {
                    tracing::warn!(stream = config.name, error = %e, "could not update the trace stream's limits; using it as it is");
                }
            }
            Ok(existing)
        }
        Err(_) => match js.create_stream(wanted).await {
            Ok(stream) => {
                tracing::info!(
                    stream = config.name,
                    max_bytes = config.max_bytes,
                    per_session = config.per_session,
                    compressed = config.compress,
                    "created the trace stream"
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

/// One recorded frame: when the broker received it, and the frame.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: DateTime<Utc>,
    pub payload: Bytes,
}

/// How long a read may wait for its next frame before it gives up (the
/// consumer was created, so frames that exist come at once).
const READ_STALL: Duration = Duration::from_secs(5);

/// The frames recorded on `subject` from `from` on, until the first received
/// after `to` or `limit` of them (the caller refuses a lap that long), read
/// with an ordered consumer that exists for this read only.
pub(crate) async fn read(
    stream: &stream::Stream,
    client: &async_nats::Client,
    subject: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Recorded>, StoreError> {
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
    let mut frames = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(READ_STALL, messages.next()).await {
        let message = message.map_err(StoreError::write)?;
        let (at, pending) = {
            let info = message
                .info()
                .map_err(|e| StoreError::write(e.to_string()))?;
            let nanos = info.published.unix_timestamp_nanos();
            let at = DateTime::from_timestamp_nanos(i64::try_from(nanos).unwrap_or(i64::MAX));
            (at, info.pending)
        };
        if at > to {
            break;
        }
        frames.push(Recorded {
            at,
            payload: message.payload.clone(),
        });
        if pending == 0 || frames.len() > limit {
            break;
        }
    }
    Ok(frames)
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
            max_bytes: 256 << 20,
            per_session: 72_000,
            max_age: Duration::from_secs(3600),
            max_msg_size: 65_536,
            replicas: 1,
            compress: false,
        };
        let made = config.stream_config();
        assert_eq!(made.max_bytes, 256 << 20);
        assert_eq!(made.max_messages_per_subject, 72_000);
        assert_eq!(made.discard, stream::DiscardPolicy::Old);
        assert_eq!(made.compression, None);
        assert!(made.no_ack, "the processor answers frames sent as requests");
        assert_eq!(
            made.subjects,
            ["session.*.telemetry", "session.*.telemetry.*"]
        );
    }
}
