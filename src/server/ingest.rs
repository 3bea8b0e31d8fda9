//! The data path: setup and telemetry frames from monitors. This is the hot path.
//!
//! Per frame: split the subject (no allocation), parse the id (16 bytes, no
//! allocation), validate the payload in one pass that builds nothing
//! (payload/syntax.rs), copy it once into a `Bytes` of its own (see `try_ingest`
//! for why), and store that under the map's lock with one hash lookup. Anything that
//! fails is counted and logged rate-limited, and never touches the session's last
//! good state. `paddock bench --only callgrind` counts the instructions this takes.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use crate::protocol::documents::Ack;
use crate::protocol::field::Field;
use crate::protocol::id::SessionId;
use crate::protocol::payload::validate_object_finding;
use crate::protocol::subjects::{self, DataKind, Event};
use crate::server::app::{Announcement, App};
use crate::server::error::ServiceError;
use crate::server::sessions::{Applied, Now};

/// A frame that was stored.
#[derive(Debug)]
pub struct Ingested {
    pub session_id: SessionId,
    pub kind: DataKind,
    pub applied: Applied,
    /// The telemetry frame as stored (a refcount of the session's copy), for
    /// the trace writer; `None` for a setup or a field.
    pub frame: Option<Bytes>,
}

impl Ingested {
    /// The acknowledgement sent when the frame came as a request.
    pub fn ack(&self) -> Bytes {
        serde_json::to_vec(&Ack {
            ok: true,
            session_id: self.session_id,
            kind: self.kind.as_str().to_string(),
            stored_at: self.applied.at,
            created: self.applied.created,
        })
        .expect("an ack serializes")
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
        self.ingest_at(subject, payload, Now::read())
    }

    /// [`App::ingest`], with the clocks read by the caller (once per batch).
    pub fn ingest_at(
        &self,
        subject: &str,
        payload: &Bytes,
        now: Now,
    ) -> Result<Ingested, ServiceError> {
        let result = self.try_ingest(subject, payload, now);
        if let Err(e) = &result {
            self.metrics.reject(e.reason(), subject, e);
        }
        result
    }

    fn try_ingest(
        &self,
        subject: &str,
        payload: &Bytes,
        now: Now,
    ) -> Result<Ingested, ServiceError> {
        // The processor subscribes only to `session.*.setup|telemetry`, so this split
        // succeeds for everything it receives; the id token is still untrusted.
        let (raw_id, kind) = subjects::parse_data(subject)
            .ok_or_else(|| ServiceError::BadRequest(format!("not a data subject: {subject}")))?;
        let session_id = SessionId::parse(raw_id)?;
        // The cheapest check first: a session over its --max-frame-rate costs a
        // lookup per frame, not a validation or lap work, so a flood is shed at
        // the speed frames arrive. The field has a rate of its own.
        if kind == DataKind::Field {
            return self.ingest_field(session_id, payload, now);
        }
        self.sessions.admit(session_id, now.instant)?;
        // A top-level lap field is found by the validation pass itself; a nested
        // one by a walk after it (payload/pointer.rs).
        let lap_field = self.limits.lap_field.as_ref();
        let top_level = match kind {
            DataKind::Telemetry => lap_field.and_then(|p| p.top_level_key()),
            DataKind::Setup | DataKind::Field => None,
        };
        let lap_at = match validate_object_finding(payload, self.limits.max_payload, top_level) {
            Ok(at) => at,
            Err(e) => {
                self.sessions.note_rejected(session_id);
                return Err(e.into());
            }
        };
        // A copy of exactly the frame, not `payload.clone()`: the client's payload is
        // a slice of a 64 KiB read buffer, and a stored slice would keep the whole
        // buffer alive for as long as the session keeps the frame (a setup: hours).
        // At 100k sessions that is gigabytes; the copy is one allocation per frame.
        let body = Bytes::copy_from_slice(payload);
        let frame = (kind == DataKind::Telemetry).then(|| body.clone());
        let applied = match kind {
            DataKind::Setup => self.sessions.update_setup_at(session_id, body, now)?,
            // Taken by `ingest_field` above; stored as a field all the same.
            DataKind::Field => self.sessions.update_field_at(session_id, body, now)?,
            DataKind::Telemetry => {
                // Where the lap field's bytes are in the frame, found without a DOM;
                // they are copied only when the lap changes.
                let lap = match (top_level, lap_field) {
                    (Some(_), _) => lap_at,
                    (None, Some(nested)) => nested.find(&body),
                    (None, None) => None,
                };
                self.sessions
                    .update_telemetry_at(session_id, body, lap, now)?
            }
        };
        match kind {
            DataKind::Setup => self.metrics.setup_frames.fetch_add(1, Relaxed),
            DataKind::Field => self.metrics.field_frames.fetch_add(1, Relaxed),
            DataKind::Telemetry => self.metrics.telemetry_frames.fetch_add(1, Relaxed),
        };
        if applied.created {
            self.metrics.session_created();
            tracing::info!(%session_id, via = "data", "session created on demand");
        }
        if applied.lap_dropped {
            self.metrics.laps_dropped.fetch_add(1, Relaxed);
        }
        if let Some(lap) = &applied.lap {
            self.metrics.laps_completed.fetch_add(1, Relaxed);
            tracing::debug!(%session_id, n = lap.n, frames = lap.frames, "lap completed");
        }
        Ok(Ingested {
            session_id,
            kind,
            applied,
            frame,
        })
    }

    /// A field (`session.<id>.field`): its own rate, the frames' byte bound,
    /// then its schema (protocol/field.rs), which readers index into. At 2 Hz
    /// a serde read costs nothing the hot path would notice. Kept byte for
    /// byte, and counted in the memory budget like a frame.
    fn ingest_field(
        &self,
        session_id: SessionId,
        payload: &Bytes,
        now: Now,
    ) -> Result<Ingested, ServiceError> {
        self.sessions.admit_field(session_id, now.instant)?;
        let checked = validate_object_finding(payload, self.limits.max_payload, None)
            .map_err(ServiceError::from)
            .and_then(|_| {
                Field::parse(payload).map_err(|e| ServiceError::BadRequest(e.to_string()))
            });
        if let Err(e) = checked {
            self.sessions.note_rejected(session_id);
            return Err(e);
        }
        let body = Bytes::copy_from_slice(payload);
        let applied = self.sessions.update_field_at(session_id, body, now)?;
        self.metrics.field_frames.fetch_add(1, Relaxed);
        if applied.created {
            self.metrics.session_created();
            tracing::info!(%session_id, via = "field", "session created on demand");
        }
        Ok(Ingested {
            session_id,
            kind: DataKind::Field,
            applied,
            frame: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::app::Limits;
    use serde_json::Value;

    fn app() -> App {
        App::new(Limits {
            max_payload: 256,
            max_sessions: 10,
            budgets: crate::server::sessions::Budgets::UNLIMITED,
            ..Default::default()
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
        assert_eq!(app.metrics.snapshot(Default::default()).rejected_total, 6);
    }

    /// A property over random sequences: whatever mix of good and bad frames
    /// arrives, for setup and telemetry alike, each session serves exactly its last
    /// good frame of each kind, and every bad one is counted. The bad frames are
    /// good ones mutated (a byte flipped to JSON punctuation, a cut, invalid UTF-8,
    /// wrapped in an array, oversized), and any mutation that happens to stay a
    /// valid object counts as good: the model asks the validator's reference,
    /// serde_json, which one it is.
    #[test]
    fn no_sequence_of_bad_frames_changes_the_last_good_state() {
        let app = App::new(Limits {
            max_payload: 512,
            max_sessions: 10,
            budgets: crate::server::sessions::Budgets::UNLIMITED,
            ..Default::default()
        });
        let ids: Vec<SessionId> = (0..3).map(|_| SessionId::new_v4()).collect();
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // The model: the last good frame per (session, kind), and bad counts.
        let mut last: std::collections::HashMap<(usize, bool), Vec<u8>> = Default::default();
        let mut rejected = [0u64; 3];
        for step in 0..20_000u64 {
            let who = (next() % 3) as usize;
            let setup = next() % 5 == 0;
            let good = format!(
                r#"{{"lap":{step},"s":"x{}","v":[1.5,-2e3,null,true]}}"#,
                next() % 100
            );
            let mut frame = good.clone().into_bytes();
            match next() % 6 {
                0 => {
                    let at = (next() as usize) % frame.len();
                    frame[at] = b"{}[]:,\"\\"[(next() % 8) as usize];
                }
                1 => frame.truncate((next() as usize) % frame.len()),
                2 => frame.insert((next() as usize) % frame.len(), 0xff),
                3 => frame = format!("[{good}]").into_bytes(),
                4 => frame = format!(r#"{{"pad":"{}"}}"#, "x".repeat(600)).into_bytes(),
                _ => {}
            }
            let valid = frame.len() <= 512
                && std::str::from_utf8(&frame).is_ok()
                && serde_json::from_slice::<serde_json::Map<String, Value>>(&frame).is_ok();
            let kind = if setup {
                DataKind::Setup
            } else {
                DataKind::Telemetry
            };
            let result = app.ingest(
                &subjects::data(&ids[who], kind),
                &Bytes::from(frame.clone()),
            );
            assert_eq!(
                result.is_ok(),
                valid,
                "{:?}",
                String::from_utf8_lossy(&frame)
            );
            if valid {
                last.insert((who, setup), frame);
            } else if app.sessions.get(ids[who]).is_ok() {
                rejected[who] += 1;
            }
            if let Ok(snapshot) = app.sessions.get(ids[who]) {
                let served = |f: &Option<crate::server::sessions::Frame>| {
                    f.as_ref().map(|f| f.body.to_vec())
                };
                assert_eq!(served(&snapshot.setup), last.get(&(who, true)).cloned());
                assert_eq!(
                    served(&snapshot.telemetry),
                    last.get(&(who, false)).cloned()
                );
                assert_eq!(snapshot.stats.rejected_count, rejected[who]);
            }
        }
        assert!(rejected.iter().sum::<u64>() > 5_000, "{rejected:?}");
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
