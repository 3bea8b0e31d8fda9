//! A stored frame and the moment frames are applied at: what the map keeps of
//! each setup and telemetry frame, byte for byte.

use bytes::Bytes;
use chrono::{DateTime, Utc};

/// A stored frame and when it arrived.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The payload exactly as the monitor sent it, already validated as a JSON object.
    pub body: Bytes,
    /// When the processor stored it.
    pub at: DateTime<Utc>,
}

/// When a frame is applied: its wall-clock time (`last_update`, the frame's
/// `at`) and the monotonic instant idle expiry and the rate count from. Read
/// once per batch of frames by the processor (`App::ingest_at`), not per frame:
/// the two clock reads were 7-9% of its CPU per frame (`perf`), and the frames
/// of a batch (at most 256, already delivered) are applied within a fraction of
/// a millisecond of it.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub utc: DateTime<Utc>,
    pub instant: tokio::time::Instant,
}

impl Now {
    pub fn read() -> Self {
        Now {
            utc: Utc::now(),
            instant: tokio::time::Instant::now(),
        }
    }
}

/// Which of a session's frames an update replaces.
#[derive(Debug, Clone, Copy)]
pub(super) enum Slot {
    Setup,
    Telemetry,
    Field,
}

pub(super) fn frame_len(frame: &Option<Frame>) -> usize {
    frame.as_ref().map_or(0, |f| f.body.len())
}
