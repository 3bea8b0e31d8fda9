//! The session document (docs/PROTOCOL.md): a [`Snapshot`] rendered with its
//! frames borrowed verbatim, and read back from storage.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use super::frame::Frame;
use super::session::{SessionStats, Snapshot};
use crate::protocol::documents::{Label, SessionDocument, SessionStats as DocumentStats};
use crate::server::laps;

/// Borrows a stored frame as raw JSON, so the document carries it verbatim.
fn raw(body: &Bytes) -> &RawValue {
    // Every stored frame passed `payload::validate_object`, so this cannot fail.
    serde_json::from_slice(body).expect("stored frames are validated JSON objects")
}

impl Snapshot {
    /// The session document as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.document()).expect("a session document always serializes")
    }

    /// The session document, borrowing its frames: they go out exactly as sent.
    pub fn document(&self) -> SessionDocument<&RawValue> {
        SessionDocument {
            session_id: self.session_id,
            team: self.label.team.clone(),
            car: self.label.car.clone(),
            labelled_at: self.labelled_at,
            created_at: self.created_at,
            setup: self.setup.as_ref().map(|f| raw(&f.body)),
            setup_timestamp: self.setup.as_ref().map(|f| f.at),
            telemetry: self.telemetry.as_ref().map(|f| raw(&f.body)),
            field: self.field.as_ref().map(|f| raw(&f.body)),
            field_timestamp: self.field.as_ref().map(|f| f.at),
            last_update: self.last_update,
            stats: DocumentStats {
                telemetry_count: self.stats.telemetry_count,
                setup_count: self.stats.setup_count,
                rejected_count: self.stats.rejected_count,
                rate_limited_count: self.stats.rate_limited_count,
                dropped_count: self.stats.dropped_count,
                laps_dropped: self.stats.laps_dropped,
                field_count: self.stats.field_count,
                first_frame_at: self.stats.first_frame_at,
                last_frame_at: self.telemetry.as_ref().map(|f| f.at),
                duration_s: (self.last_update - self.created_at).num_milliseconds() as f64 / 1000.0,
                rate_hz: (self.rate_hz * 10.0).round() / 10.0,
                laps: self.laps,
                laps_completed: self.lap.completed,
                current_lap: self.lap.value.as_ref().map(raw),
                current_lap_started_at: self.lap.started_at,
                current_lap_frames: self.lap.frames,
                current_lap_pitted: self.lap.pitted,
            },
            credentials: None,
            strategy: None,
            alerts: None,
            rejoin: None,
        }
    }

    /// Reads back a document written by [`Snapshot::to_json`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let doc: SessionDocument = serde_json::from_slice(bytes)?;
        let frame = |raw: Option<Box<RawValue>>, at: Option<DateTime<Utc>>| {
            raw.map(|r| Frame {
                body: Bytes::from(r.get().to_owned()),
                at: at.unwrap_or(doc.last_update),
            })
        };
        Ok(Snapshot {
            session_id: doc.session_id,
            created_at: doc.created_at,
            label: Label {
                team: doc.team,
                car: doc.car,
            },
            labelled_at: doc.labelled_at,
            setup: frame(doc.setup, doc.setup_timestamp),
            telemetry: frame(doc.telemetry, doc.stats.last_frame_at),
            field: frame(doc.field, doc.field_timestamp),
            last_update: doc.last_update,
            stats: SessionStats {
                telemetry_count: doc.stats.telemetry_count,
                setup_count: doc.stats.setup_count,
                rejected_count: doc.stats.rejected_count,
                first_frame_at: doc.stats.first_frame_at,
                rate_limited_count: doc.stats.rate_limited_count,
                dropped_count: doc.stats.dropped_count,
                laps_dropped: doc.stats.laps_dropped,
                field_count: doc.stats.field_count,
            },
            rate_hz: 0.0,
            lap: laps::Running {
                value: doc
                    .stats
                    .current_lap
                    .map(|r| Bytes::from(r.get().to_owned())),
                started_at: doc.stats.current_lap_started_at,
                frames: doc.stats.current_lap_frames,
                completed: doc.stats.laps_completed,
                pitted: doc.stats.current_lap_pitted,
            },
            laps: doc.stats.laps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::sessions::Sessions;
    use crate::server::sessions::test_support::session_with;

    #[test]
    fn a_document_reads_back_as_the_same_session() {
        let sessions = Sessions::new(10);
        let id = session_with(&sessions, br#"{"wing": 5}"#, br#"{ "lap":3 }"#);
        let before = sessions.get(id).unwrap();
        let after = Snapshot::from_json(&before.to_json()).unwrap();
        assert_eq!(after.to_json(), before.to_json());
        assert_eq!(&after.telemetry.unwrap().body[..], br#"{ "lap":3 }"#);
    }
}
