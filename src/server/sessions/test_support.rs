//! Helpers the map's unit tests share.

use bytes::Bytes;
use serde_json::Value;

use super::map::Sessions;
use super::session::Snapshot;
use crate::protocol::id::SessionId;

/// A session with a setup and one telemetry frame.
pub(super) fn session_with(
    sessions: &Sessions,
    setup: &'static [u8],
    frame: &'static [u8],
) -> SessionId {
    let id = sessions.create().unwrap().session_id;
    sessions
        .update_setup(id, Bytes::from_static(setup))
        .unwrap();
    sessions
        .update_telemetry(id, Bytes::from_static(frame), None)
        .unwrap();
    id
}

/// The session document as JSON values.
pub(super) fn doc(s: &Snapshot) -> Value {
    serde_json::from_slice(&s.to_json()).unwrap()
}
