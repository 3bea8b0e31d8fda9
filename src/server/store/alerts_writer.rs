//! The alert writer: each raise and clear announced once across processors.
//!
//! Every processor that holds a session checks its alerts (they see the same
//! frames), so each finds the same raise and the same clear, a tick apart. The
//! `<bucket>_alerts` bucket keeps each session's last announced state per kind
//! under `<id>.<kind>`; a processor announces a change only when it moves that
//! key to the new state (a KV `create`, or an `update` at the revision it read),
//! so the first to get there announces and the others find the state already
//! there. A restarted processor reads the raised ones back into its board, so it
//! neither raises them again nor forgets to clear them.

use async_nats::Client;
use async_nats::jetstream::kv;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::protocol::documents::AlertEvent;
use crate::protocol::subjects;

/// Events waiting for the writer. Alerts change at most once a second per
/// session and kind; past this (storage stalled with thousands of sessions
/// changing at once) an event is announced directly, without the check: at
/// worst once per processor, never lost.
pub(super) const ALERT_QUEUE: usize = 4096;

/// The alerts bucket's size: the last event (about 300 bytes) per session and
/// kind, so 16 MiB holds 7 kinds of about 8,000 sessions; past that the oldest
/// entries go (an old session's settled alert).
pub(super) const ALERTS_BUCKET_BYTES: usize = 16 * 1024 * 1024;

/// Tries at a key other processors are changing at the same moment.
const ATTEMPTS: usize = 3;

pub(super) struct AlertWriter {
    pub(super) bucket: kv::Store,
    pub(super) client: Client,
}

/// The key of a session's alert of one kind.
fn key(event: &AlertEvent) -> String {
    format!("{}.{}", event.session_id, event.reading.kind)
}

impl AlertWriter {
    pub(super) async fn run(self, mut events: mpsc::Receiver<AlertEvent>) {
        while let Some(event) = events.recv().await {
            // Serialized once: the stored value is the announced body.
            let body = body(&event);
            let announce = match self.claim(&event, &body).await {
                Ok(announce) => announce,
                Err(e) => {
                    // Storage down: announcing twice beats not announcing.
                    tracing::warn!(session_id = %event.session_id, kind = event.reading.kind,
                        error = %e, "could not record an alert; announcing it anyway");
                    true
                }
            };
            if !announce {
                tracing::debug!(session_id = %event.session_id, kind = event.reading.kind,
                    state = event.state, "alert already announced by another processor");
                continue;
            }
            publish_body(&self.client, &event, body).await;
        }
    }

    /// Moves the key to the event's state; false when it is there already
    /// (another processor announced this change).
    async fn claim(&self, event: &AlertEvent, value: &Bytes) -> Result<bool, async_nats::Error> {
        let key = key(event);
        for _ in 0..ATTEMPTS {
            let entry = self.bucket.entry(key.as_str()).await?;
            let written = match entry {
                Some(entry) if entry.operation == kv::Operation::Put => {
                    if state_of(&entry.value).as_deref() == Some(event.state.as_str()) {
                        return Ok(false);
                    }
                    match self
                        .bucket
                        .update(&key, value.clone(), entry.revision)
                        .await
                    {
                        Ok(_) => true,
                        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => false,
                        Err(e) => return Err(e.into()),
                    }
                }
                _ => match self.bucket.create(&key, value.clone()).await {
                    Ok(_) => true,
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => false,
                    Err(e) => return Err(e.into()),
                },
            };
            if written {
                return Ok(true);
            }
            // Another processor wrote between the read and the write: read again.
        }
        // Still contended: announce rather than risk nobody doing it.
        Ok(true)
    }
}

/// The `state` of a stored event.
fn state_of(value: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct State {
        state: String,
    }
    serde_json::from_slice::<State>(value).ok().map(|s| s.state)
}

/// Announces an alert event on `session.<id>.alerts`.
pub(crate) async fn publish(client: &Client, event: &AlertEvent) {
    publish_body(client, event, body(event)).await;
}

fn body(event: &AlertEvent) -> Bytes {
    serde_json::to_vec(event).expect("serializes").into()
}

async fn publish_body(client: &Client, event: &AlertEvent, body: Bytes) {
    if let Err(e) = client
        .publish(subjects::session_alerts(&event.session_id), body)
        .await
    {
        tracing::warn!(session_id = %event.session_id, error = %e, "could not announce an alert");
    }
}
