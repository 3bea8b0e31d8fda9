//! One session as the map holds it ([`Session`], private to the map), the copy
//! taken of it under the lock ([`Snapshot`]), its counters, and what is kept of
//! it once it ends ([`Ended`]).

use chrono::{DateTime, Utc};

use super::budget::{Allowance, Budgets};
use super::frame::{Frame, frame_len};
use super::rate::RateWindow;
use crate::protocol::documents::{EndReason, Label};
use crate::protocol::id::SessionId;
use crate::server::laps;

/// An ended session, kept for the archive retention.
#[derive(Debug, Clone)]
pub struct Ended {
    pub at: DateTime<Utc>,
    pub reason: EndReason,
    /// Its final state.
    pub last: Snapshot,
    /// Its lap history, archived with it.
    pub laps: laps::History,
}

impl Ended {
    /// Bytes of frames it holds, as the memory budget counts them.
    pub(super) fn frame_bytes(&self) -> usize {
        self.last.frame_bytes()
    }
}

/// Per-session counters, reported in the session document.
#[derive(Debug, Clone, Default)]
pub struct SessionStats {
    /// Telemetry frames accepted: tells an engineer the monitor is really sending.
    pub telemetry_count: u64,
    /// Setups accepted: a change of setup mid-race shows up here.
    pub setup_count: u64,
    /// Frames for this session that failed validation: a broken monitor shows up
    /// here while the last good state stays intact.
    pub rejected_count: u64,
    /// When the first telemetry frame arrived, to tell when the car went out.
    pub first_frame_at: Option<DateTime<Utc>>,
    /// Frames refused for coming faster than `--max-frame-rate`: a monitor
    /// flooding (a bug, or hostile) shows up here.
    pub rate_limited_count: u64,
    /// Laps completed faster than `--max-lap-rate`, whose records were not kept:
    /// a lap field that changes on every frame shows up here.
    pub laps_dropped: u64,
    /// Frames dropped unread because the processor's ingest queue was full
    /// (`--ingest-buffer-bytes`): the processor, not the monitor, fell behind.
    pub dropped_count: u64,
    /// Fields accepted (`session.<id>.field`): the monitor sends every car.
    pub field_count: u64,
}

#[derive(Debug)]
pub(super) struct Session {
    /// When the session was created (by request, or on demand by its first frame).
    pub(super) created_at: DateTime<Utc>,
    /// Its team and car, as given at create.
    pub(super) label: Label,
    /// When `sessions.label` last changed them (`None`: as created): which of
    /// two processors' copies is newer (see [`Sessions::follow`](super::Sessions::follow)).
    pub(super) labelled_at: Option<DateTime<Utc>>,
    /// The latest setup; kept apart from telemetry so neither clobbers the other.
    pub(super) setup: Option<Frame>,
    /// The latest telemetry frame: what a late-joining dashboard sees first.
    pub(super) telemetry: Option<Frame>,
    /// The latest field (every car on track), kept apart like the setup.
    pub(super) field: Option<Frame>,
    /// Last time setup or telemetry arrived (creation time until then).
    pub(super) last_update: DateTime<Utc>,
    /// The same moment on the monotonic clock, which idle expiry measures from: it
    /// does not jump with the wall clock, and tests can pause and advance it.
    pub(super) last_activity: tokio::time::Instant,
    /// Counters for the session document.
    pub(super) stats: SessionStats,
    /// Changed since it was last persisted (see [`Sessions::take_dirty`](super::Sessions::take_dirty)).
    pub(super) dirty: bool,
    /// The telemetry rate, for the document's `rate_hz`.
    pub(super) rate: RateWindow,
    /// The lap running now (persisted with the document, so a restart goes on).
    pub(super) lap: laps::Running,
    /// Completed laps, oldest first, within the history limits.
    pub(super) laps: laps::History,
    /// The `--max-frame-rate` allowance: checked before a frame is validated.
    pub(super) frame_allowance: Allowance,
    /// The `--max-lap-rate` allowance: a completed lap's record is kept only
    /// while there is one.
    pub(super) lap_allowance: Allowance,
    /// The `--max-field-rate` allowance: the field has a rate of its own, so a
    /// monitor's 60 Hz telemetry never starves its 2 Hz field, nor the reverse.
    pub(super) field_allowance: Allowance,
}

/// A copy of one session's state, taken under the lock and rendered after it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub session_id: SessionId,
    pub created_at: DateTime<Utc>,
    pub label: Label,
    pub labelled_at: Option<DateTime<Utc>>,
    pub setup: Option<Frame>,
    pub telemetry: Option<Frame>,
    /// The latest field (protocol/field.rs), as sent.
    pub field: Option<Frame>,
    pub last_update: DateTime<Utc>,
    pub stats: SessionStats,
    /// Telemetry frames per second recently (0 for a recovered or idle session).
    pub rate_hz: f32,
    /// The lap running now.
    pub lap: laps::Running,
    /// How many completed laps the session keeps.
    pub laps: usize,
}

impl Session {
    /// A session as stored elsewhere (a restart, another processor).
    pub(super) fn from_snapshot(snapshot: Snapshot, budgets: &Budgets) -> Self {
        let now = tokio::time::Instant::now();
        Session {
            frame_allowance: Allowance::full(budgets.frame_burst, now),
            lap_allowance: Allowance::full(budgets.laps_per_minute, now),
            field_allowance: Allowance::full(budgets.field_burst, now),
            created_at: snapshot.created_at,
            label: snapshot.label,
            labelled_at: snapshot.labelled_at,
            setup: snapshot.setup,
            telemetry: snapshot.telemetry,
            field: snapshot.field,
            last_update: snapshot.last_update,
            stats: snapshot.stats,
            dirty: false,
            rate: RateWindow::new(tokio::time::Instant::now()),
            // Idle time counts from now: how long the session was idle before this
            // processor had it is not known here.
            last_activity: tokio::time::Instant::now(),
            lap: snapshot.lap,
            // The records themselves come from their own bucket (restore_lap).
            laps: laps::History::default(),
        }
    }

    pub(super) fn new(now: DateTime<Utc>, budgets: &Budgets) -> Self {
        let instant = tokio::time::Instant::now();
        Session {
            frame_allowance: Allowance::full(budgets.frame_burst, instant),
            lap_allowance: Allowance::full(budgets.laps_per_minute, instant),
            field_allowance: Allowance::full(budgets.field_burst, instant),
            created_at: now,
            label: Label::default(),
            labelled_at: None,
            setup: None,
            telemetry: None,
            field: None,
            last_update: now,
            stats: SessionStats::default(),
            dirty: false,
            last_activity: tokio::time::Instant::now(),
            rate: RateWindow::new(tokio::time::Instant::now()),
            lap: laps::Running::default(),
            laps: laps::History::default(),
        }
    }

    /// Bytes of frames it holds, as the memory budget counts them.
    pub(super) fn frame_bytes(&self) -> usize {
        frame_len(&self.setup) + frame_len(&self.telemetry) + frame_len(&self.field)
    }

    pub(super) fn snapshot(&self, id: SessionId) -> Snapshot {
        Snapshot {
            session_id: id,
            created_at: self.created_at,
            label: self.label.clone(),
            labelled_at: self.labelled_at,
            setup: self.setup.clone(),
            telemetry: self.telemetry.clone(),
            field: self.field.clone(),
            last_update: self.last_update,
            stats: self.stats.clone(),
            rate_hz: self.rate.current(tokio::time::Instant::now()),
            lap: self.lap.clone(),
            laps: self.laps.len(),
        }
    }
}

impl Snapshot {
    /// Bytes of frames it holds, as the memory budget counts them.
    pub(super) fn frame_bytes(&self) -> usize {
        frame_len(&self.setup) + frame_len(&self.telemetry) + frame_len(&self.field)
    }
}
