//! The data path: setup and telemetry frames from monitors. This is the hot path.
//!
//! Per frame: split the subject (no allocation), parse the id (16 bytes, no
//! allocation), validate the payload without building a DOM, then store the payload's
//! `Bytes` under the map's lock (a refcount bump, no copy). Anything that fails is
//! counted and logged rate-limited, and never touches the session's last good state.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use serde_json::json;

use crate::app::{Announcement, App};
use crate::error::ServiceError;
use crate::id::SessionId;
use crate::payload::validate_object;
use crate::sessions::{Applied, format_time};
use crate::subjects::{self, DataKind, Event};

/// A frame that was stored.
#[derive(Debug)]
pub struct Ingested {
    pub session_id: SessionId,
    pub kind: DataKind,
    pub applied: Applied,
}

impl Ingested {
    /// The acknowledgement sent when the frame came as a request.
    pub fn ack(&self) -> Bytes {
        serde_json::to_vec(&json!({
            "ok": true,
            "session_id": self.session_id,
            "kind": self.kind.as_str(),
            "stored_at": format_time(&self.applied.at),
            "created": self.applied.created,
        }))
        .expect("serializes")
        .into()
    }

    /// The announcement to make when the frame created its session on demand.
    pub fn announcement(&self) -> Option<Announcement> {
        self.applied.created.then(|| {
            Announcement::new(
                self.session_id,
                Event::Created,
                self.applied.at,
                "data",
                None,
            )
        })
    }
}

impl App {
    /// Validates and stores one frame published on `subject`.
    pub fn ingest(&self, subject: &str, payload: &Bytes) -> Result<Ingested, ServiceError> {
        let result = self.try_ingest(subject, payload);
        if let Err(e) = &result {
            self.metrics.reject(e.reason(), subject, e);
        }
        result
    }

    fn try_ingest(&self, subject: &str, payload: &Bytes) -> Result<Ingested, ServiceError> {
        // The processor subscribes only to `session.*.setup|telemetry`, so this split
        // succeeds for everything it receives; the id token is still untrusted.
        let (raw_id, kind) = subjects::parse_data(subject)
            .ok_or_else(|| ServiceError::BadRequest(format!("not a data subject: {subject}")))?;
        let session_id = SessionId::parse(raw_id)?;
        if let Err(e) = validate_object(payload, self.limits.max_payload) {
            self.sessions.note_rejected(session_id);
            return Err(e.into());
        }
        // A copy of exactly the frame, not `payload.clone()`: the client's payload is
        // a slice of a 64 KiB read buffer, and a stored slice would keep the whole
        // buffer alive for as long as the session keeps the frame (a setup: hours).
        // At 100k sessions that is gigabytes; the copy is one allocation per frame.
        let body = Bytes::copy_from_slice(payload);
        let applied = match kind {
            DataKind::Setup => self.sessions.update_setup(session_id, body)?,
            DataKind::Telemetry => self.sessions.update_telemetry(session_id, body)?,
        };
        match kind {
            DataKind::Setup => self.metrics.setup_frames.fetch_add(1, Relaxed),
            DataKind::Telemetry => self.metrics.telemetry_frames.fetch_add(1, Relaxed),
        };
        if applied.created {
            self.metrics.sessions_created.fetch_add(1, Relaxed);
            tracing::info!(%session_id, via = "data", "session created on demand");
        }
        Ok(Ingested {
            session_id,
            kind,
            applied,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Limits;
    use serde_json::Value;

    fn app() -> App {
        App::new(Limits {
            max_payload: 256,
            max_sessions: 10,
        })
    }

    fn telemetry(app: &App, id: &SessionId, body: &'static [u8]) -> Result<Ingested, ServiceError> {
        app.ingest(
            &subjects::data(id, DataKind::Telemetry),
            &Bytes::from_static(body),
        )
    }

    fn document(app: &App, id: SessionId) -> Value {
        serde_json::from_slice(&app.sessions.get(id).unwrap().to_json()).unwrap()
    }

    #[test]
    fn bad_frames_never_overwrite_the_last_good_one() {
        let app = app();
        let id = SessionId::new_v4();
        assert!(
            telemetry(&app, &id, br#"{"lap": 7}"#)
                .unwrap()
                .applied
                .created
        );
        let bad: [&'static [u8]; 6] = [b"", b"{", b"[1]", b"\xff", b"null", &[b' '; 300]];
        for frame in bad {
            assert!(telemetry(&app, &id, frame).is_err());
        }
        let d = document(&app, id);
        assert_eq!(d["telemetry"], serde_json::json!({"lap": 7}));
        assert_eq!(d["stats"]["rejected_count"], 6);
        assert_eq!(d["stats"]["telemetry_count"], 1);
        assert_eq!(app.metrics.snapshot((1, 0.0)).rejected_total, 6);
    }

    #[test]
    fn malformed_ids_never_become_sessions() {
        let app = app();
        for subject in [
            "session.nope.telemetry",
            "session.ABC.setup",
            "session..telemetry",
        ] {
            let err = app.ingest(subject, &Bytes::from_static(b"{}")).unwrap_err();
            assert_eq!(err.code(), 400);
        }
        assert!(app.sessions.is_empty());
    }

    #[test]
    fn the_frame_is_stored_byte_for_byte() {
        let app = app();
        let id = SessionId::new_v4();
        let frame = br#"{ "lap":1 ,"x" : 1.50 }"#;
        telemetry(&app, &id, frame).unwrap();
        let snapshot = app.sessions.get(id).unwrap();
        assert_eq!(&snapshot.telemetry.unwrap().body[..], &frame[..]);
    }
}
