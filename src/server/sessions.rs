//! The session map: the one owner of every live session's state.
//!
//! The NATS handlers call this small API — `create`, `get`, `update_setup`,
//! `update_telemetry`, `delete`, `list`, and `laps` for lap history — and never
//! reach into the map. What lifecycle and storage need besides (expiry, the
//! archive, recovery, peers, the write-behind's dirty list) is `pub(crate)`: the
//! server's own business.
//!
//! One `std::sync::Mutex` guards it: every operation is a few hash-map steps and
//! refcount bumps, it is never held across an `.await`, and documents are rendered
//! from a [`Snapshot`] after the lock is released.
//!
//! Frames are stored as `Bytes` holding exactly the bytes the monitor sent (the
//! data path copies them out of the client's read buffer once): a snapshot is a
//! refcount bump per frame, and returns each frame byte for byte.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use crate::protocol::documents::{Label, SessionDocument, SessionStats as DocumentStats};
use crate::protocol::id::SessionId;
use crate::server::laps::{self, LapRecord};

/// Why a session operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("unknown session {0}")]
    NotFound(SessionId),
    #[error(
        "session {0} has ended ({1}); its final state is in the archive (sessions.archive.get); \
         to send data, ask sessions.create for a new id"
    )]
    Ended(SessionId, EndReason),
    #[error("no archived session {0}: it never ended, or its archive retention passed")]
    NotArchived(SessionId),
    #[error("at capacity: {limit} live sessions; delete ended sessions or raise --max-sessions")]
    AtCapacity { limit: usize },
    /// A frame for an unknown id, past what may be created on demand
    /// ([`OnDemand`]): a flood of made-up ids must not crowd out real sessions.
    #[error(
        "unknown session {id}, and not created on demand now: {why}; ask sessions.create for a session"
    )]
    OnDemandLimited { id: SessionId, why: OnDemandLimit },
    /// More frames for one session than `--max-frame-rate` (with its burst).
    #[error(
        "session {id} sends more than {rate} frames/s (--max-frame-rate); its frames are refused \
         until it slows down (retry in {:.2} s)", retry.as_secs_f64()
    )]
    FrameRate {
        id: SessionId,
        rate: u32,
        retry: std::time::Duration,
    },
    /// The processor holds `--max-memory` of frames already: no new session, and
    /// no frame larger than the one it replaces, until memory is freed.
    #[error(
        "over the memory budget: {held} of {limit} bytes of frames held (--max-memory); {what} \
         refused until sessions end"
    )]
    OverBudget {
        held: usize,
        limit: usize,
        what: &'static str,
    },
    /// A team or car label that breaks the rules (`Label::check`).
    #[error("{0}")]
    BadLabel(String),
}

/// Why a session was not created on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDemandLimit {
    /// The per-minute budget is spent; the next one is there after this long.
    Rate(std::time::Duration),
    /// This many sessions are live: the rest of `--max-sessions` is kept for
    /// `sessions.create`.
    Share(usize),
}

impl std::fmt::Display for OnDemandLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OnDemandLimit::Rate(retry) => write!(
                f,
                "too many sessions created by frames in the last minute (retry in {:.1} s)",
                retry.as_secs_f64()
            ),
            OnDemandLimit::Share(live) => write!(
                f,
                "{live} sessions are live, the most that frames may fill (--on-demand-share)"
            ),
        }
    }
}

/// How many sessions frames to unknown ids may create (`serve --on-demand-limit`,
/// `--on-demand-share`). Creating on demand keeps a monitor served when the
/// processor lost its state; unbounded, it lets anyone who can publish fill the
/// session table with random ids until real creates get 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnDemand {
    /// Sessions created on demand per minute, all clients together (0: no limit).
    pub per_minute: u32,
    /// No session is created on demand while this many are live.
    pub max_live: usize,
}

impl OnDemand {
    /// No bound beyond `--max-sessions` (unit tests, benchmarks' fill).
    pub const UNLIMITED: OnDemand = OnDemand {
        per_minute: 0,
        max_live: usize::MAX,
    };
}

impl SessionError {
    /// A short stable label for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            SessionError::NotFound(_) => "unknown_session",
            SessionError::Ended(..) => "ended_session",
            SessionError::NotArchived(_) => "unknown_session",
            SessionError::AtCapacity { .. } => "at_capacity",
            SessionError::OnDemandLimited { .. } => "on_demand_limited",
            SessionError::FrameRate { .. } => "rate_limited",
            SessionError::OverBudget { .. } => "over_budget",
            SessionError::BadLabel(_) => "bad_request",
        }
    }
}

pub use crate::protocol::documents::EndReason;

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
    fn frame_bytes(&self) -> usize {
        self.last.frame_bytes()
    }
}

/// A stored frame and when it arrived.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The payload exactly as the monitor sent it, already validated as a JSON object.
    pub body: Bytes,
    /// When the processor stored it.
    pub at: DateTime<Utc>,
}

/// Length of the window the current frame rate is measured over.
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

/// A session's telemetry rate: frames counted in a tumbling window. One increment
/// per frame on the hot path; the division happens when the rate is read.
#[derive(Debug, Clone, Copy)]
struct RateWindow {
    start: tokio::time::Instant,
    count: u32,
    /// Frames per second over the last complete window.
    previous: f32,
}

impl RateWindow {
    fn new(now: tokio::time::Instant) -> Self {
        RateWindow {
            start: now,
            count: 0,
            previous: 0.0,
        }
    }

    fn record(&mut self, now: tokio::time::Instant) {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed >= RATE_WINDOW {
            self.previous = self.count as f32 / elapsed.as_secs_f32();
            self.start = now;
            self.count = 0;
        }
        self.count += 1;
    }

    /// Frames per second recently: the last complete window's rate, the current
    /// window's once it is complete, and 0 after two windows without a frame.
    fn current(&self, now: tokio::time::Instant) -> f32 {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed >= 2 * RATE_WINDOW {
            0.0
        } else if elapsed >= RATE_WINDOW || (self.previous == 0.0 && elapsed.as_secs_f32() >= 1.0) {
            self.count as f32 / elapsed.as_secs_f32()
        } else {
            self.previous
        }
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
}

#[derive(Debug)]
struct Session {
    /// When the session was created (by request, or on demand by its first frame).
    created_at: DateTime<Utc>,
    /// Its team and car, as given at create.
    label: Label,
    /// When `sessions.label` last changed them (`None`: as created): which of
    /// two processors' copies is newer (see [`Sessions::follow`]).
    labelled_at: Option<DateTime<Utc>>,
    /// The latest setup; kept apart from telemetry so neither clobbers the other.
    setup: Option<Frame>,
    /// The latest telemetry frame: what a late-joining dashboard sees first.
    telemetry: Option<Frame>,
    /// Last time setup or telemetry arrived (creation time until then).
    last_update: DateTime<Utc>,
    /// The same moment on the monotonic clock, which idle expiry measures from: it
    /// does not jump with the wall clock, and tests can pause and advance it.
    last_activity: tokio::time::Instant,
    /// Counters for the session document.
    stats: SessionStats,
    /// Changed since it was last persisted (see [`Sessions::take_dirty`]).
    dirty: bool,
    /// The telemetry rate, for the document's `rate_hz`.
    rate: RateWindow,
    /// The lap running now (persisted with the document, so a restart goes on).
    lap: laps::Running,
    /// Completed laps, oldest first, within the history limits.
    laps: laps::History,
    /// The `--max-frame-rate` allowance: checked before a frame is validated.
    frame_allowance: Allowance,
    /// The `--max-lap-rate` allowance: a completed lap's record is kept only
    /// while there is one.
    lap_allowance: Allowance,
}

/// A token bucket small enough for every session (8 + 4 bytes): `take` refills
/// at `per_second` up to `burst`, then spends one. On the monotonic clock, so
/// tests can pause it.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    tokens: f32,
    last: tokio::time::Instant,
}

impl Allowance {
    fn full(burst: f32, now: tokio::time::Instant) -> Self {
        Allowance {
            tokens: burst,
            last: now,
        }
    }

    /// Spends one token, or says how long until one is there.
    fn take(
        &mut self,
        per_second: f32,
        burst: f32,
        now: tokio::time::Instant,
    ) -> Result<(), std::time::Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f32();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(std::time::Duration::from_secs_f32(
                (1.0 - self.tokens) / per_second,
            ))
        }
    }
}

/// What each session may cost (`paddock serve --max-frame-rate`, `--max-lap-rate`,
/// `--max-lap-bytes`, `--max-laps`) and what all of them together may hold
/// (`--max-memory`). docs/SECURITY.md says what these bound, in numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budgets {
    /// Frames (setup and telemetry) per second per session; 0: no limit.
    pub frame_rate: f32,
    /// Frames a session may send at once: the rate's bucket size (it starts
    /// full and refills at `frame_rate`), so a reconnect's backlog of this many
    /// is taken whole.
    pub frame_burst: f32,
    /// Lap records kept per minute per session (the burst is as many); 0: no limit.
    pub laps_per_minute: f32,
    /// Each session's lap history.
    pub history: laps::HistoryLimits,
    /// Bytes of frames and lap records all sessions together may hold.
    pub max_memory: usize,
    /// Bytes of frames that must stay free for a session to be created: what one
    /// session's setup and telemetry can hold (two frames of `--max-payload`).
    pub session_reserve: usize,
}

/// Defaults of [`Budgets`] (and of serve's flags).
pub const DEFAULT_FRAME_RATE: f32 = 100.0;
pub const DEFAULT_FRAME_BURST: f32 = 300.0;
pub const DEFAULT_LAPS_PER_MINUTE: f32 = 30.0;
pub const DEFAULT_MAX_LAP_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_MAX_MEMORY: usize = 1024 * 1024 * 1024;

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            frame_rate: DEFAULT_FRAME_RATE,
            frame_burst: DEFAULT_FRAME_BURST,
            laps_per_minute: DEFAULT_LAPS_PER_MINUTE,
            history: laps::HistoryLimits {
                max_laps: laps::DEFAULT_MAX_LAPS,
                max_bytes: DEFAULT_MAX_LAP_BYTES,
            },
            max_memory: DEFAULT_MAX_MEMORY,
            session_reserve: 2 * 64 * 1024,
        }
    }
}

impl Budgets {
    /// No limit but the history's (unit tests, benchmarks' fill).
    pub const UNLIMITED: Budgets = Budgets {
        frame_rate: 0.0,
        frame_burst: 0.0,
        laps_per_minute: 0.0,
        history: laps::HistoryLimits {
            max_laps: laps::DEFAULT_MAX_LAPS,
            max_bytes: usize::MAX,
        },
        max_memory: usize::MAX,
        session_reserve: 0,
    };
}

/// The session map's load, as `sessions.stats` and `/metrics` report it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub live: usize,
    /// Telemetry frames per second across live sessions, recently.
    pub rate_hz: f32,
    /// Lap records live sessions keep.
    pub lap_records: usize,
    pub held: Held,
    /// `--max-memory`.
    pub budget: usize,
    /// New sessions are refused for want of memory.
    pub over_budget: bool,
}

/// What the sessions hold, in bytes, as the memory budget counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Setups and latest frames of live and ended sessions.
    pub frames: usize,
    /// Lap records of live and ended sessions.
    pub laps: usize,
    /// Lap records kept, and dropped to stay within `--max-memory`.
    pub lap_records: usize,
    pub laps_trimmed: u64,
}

impl Held {
    pub fn total(&self) -> usize {
        self.frames + self.laps
    }

    /// A live session leaves the map (its entries in the lap order are skipped).
    fn forget_live(&mut self, session: &Session) {
        self.frames -= session.frame_bytes();
        self.laps -= session.laps.bytes();
        self.lap_records -= session.laps.len();
    }

    /// An ended session leaves the archive.
    fn forget_ended(&mut self, ended: &Ended) {
        self.frames -= ended.frame_bytes();
        self.laps -= ended.laps.bytes();
        self.lap_records -= ended.laps.len();
    }
}

#[derive(Debug, Default)]
struct State {
    /// Live sessions by id.
    live: HashMap<SessionId, Session>,
    /// Ids of sessions changed since they were last persisted, each listed once:
    /// the write-behind flush takes them all at once instead of scanning the map.
    dirty: std::collections::VecDeque<SessionId>,
    /// Sessions that ended (deleted or expired), kept for the archive retention.
    /// Data still arriving for them is refused, so a monitor left running cannot
    /// silently resurrect a session that ended.
    ended: HashMap<SessionId, Ended>,
    /// The per-minute budget of sessions created on demand (`None`: no limit).
    on_demand_budget: Option<crate::server::ratelimit::TokenBucket>,
    /// What every session holds together, kept as frames and laps come and go.
    held: Held,
    /// Every lap record kept, live or ended, in the order they were kept: the
    /// oldest across sessions go first when `--max-memory` is reached. Entries
    /// whose record left already (its history's own limits) are skipped, and
    /// compacted away when they outnumber the records.
    lap_order: std::collections::VecDeque<(SessionId, u64)>,
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
    pub last_update: DateTime<Utc>,
    pub stats: SessionStats,
    /// Telemetry frames per second recently (0 for a recovered or idle session).
    pub rate_hz: f32,
    /// The lap running now.
    pub lap: laps::Running,
    /// How many completed laps the session keeps.
    pub laps: usize,
}

/// What following a peer's copy of a session did (see [`Sessions::follow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followed {
    /// Unknown here: now held.
    Adopted,
    /// Its setup or labels were newer, and are now this processor's.
    Taken,
    /// Nothing to take.
    Same,
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

pub use crate::protocol::documents::SessionSummary as Summary;

/// What an accepted update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// When the update was stored (the new `last_update`).
    pub at: DateTime<Utc>,
    /// The update created the session on demand (its id was well-formed but unknown).
    pub created: bool,
    /// The lap this frame completed, if it did and its record is kept.
    pub lap: Option<std::sync::Arc<LapRecord>>,
    /// The frame completed a lap whose record was not kept (`--max-lap-rate`).
    pub lap_dropped: bool,
}

/// The session map. Share it as `Arc<Sessions>`.
#[derive(Debug)]
pub struct Sessions {
    state: Mutex<State>,
    /// Cap on live sessions: past it, creation answers 503 instead of growing memory.
    max_sessions: usize,
    /// What each session, and all of them, may cost.
    budgets: Budgets,
    /// What frames to unknown ids may create.
    on_demand: OnDemand,
}

impl Sessions {
    pub fn new(max_sessions: usize) -> Self {
        Self::with_limits(max_sessions, Budgets::UNLIMITED, OnDemand::UNLIMITED)
    }

    pub fn with_limits(max_sessions: usize, budgets: Budgets, on_demand: OnDemand) -> Self {
        let budget = (on_demand.per_minute > 0).then(|| {
            crate::server::ratelimit::TokenBucket::new(
                on_demand.per_minute,
                std::time::Instant::now(),
            )
        });
        Sessions {
            state: Mutex::new(State {
                on_demand_budget: budget,
                ..State::default()
            }),
            max_sessions,
            budgets,
            on_demand,
        }
    }

    /// The budgets this map enforces.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// What the sessions hold now, in bytes.
    pub fn held(&self) -> Held {
        self.lock().held
    }

    /// Takes one of the session's `--max-frame-rate` frames, before the frame is
    /// validated: the cheapest check first, so a flood is shed at the cost of a
    /// lookup. Unknown ids pass (creating on demand has limits of its own).
    pub fn admit(&self, id: SessionId, now: tokio::time::Instant) -> Result<(), SessionError> {
        let Budgets {
            frame_rate,
            frame_burst,
            ..
        } = self.budgets;
        if frame_rate <= 0.0 {
            return Ok(());
        }
        let mut state = self.lock();
        let Some(session) = state.live.get_mut(&id) else {
            return Ok(());
        };
        session
            .frame_allowance
            .take(frame_rate, frame_burst.max(1.0), now)
            .map_err(|retry| {
                session.stats.rate_limited_count += 1;
                SessionError::FrameRate {
                    id,
                    rate: frame_rate.round() as u32,
                    retry,
                }
            })
    }

    /// Creates a session with a fresh id.
    pub fn create(&self) -> Result<Snapshot, SessionError> {
        self.create_where(|_| true, Label::default())
    }

    /// Creates a session with a fresh id that `accept` takes: with partitioned
    /// ownership, one in a partition this processor owns (drawn again until it is;
    /// N / owned draws on average).
    pub fn create_where(
        &self,
        accept: impl Fn(&SessionId) -> bool,
        label: Label,
    ) -> Result<Snapshot, SessionError> {
        let mut state = self.lock();
        self.check_capacity(&state)?;
        let now = Utc::now();
        // A v4 collision is astronomically unlikely; looping keeps "never collide"
        // a guarantee rather than a probability.
        let id = loop {
            let id = SessionId::new_v4();
            if accept(&id) && !state.live.contains_key(&id) && !state.ended.contains_key(&id) {
                break id;
            }
        };
        let mut session = Session::new(now, &self.budgets);
        session.label = label;
        let snapshot = session.snapshot(id);
        state.live.insert(id, session);
        state.mark_dirty(id);
        Ok(snapshot)
    }

    /// Changes a live session's labels with `change`, which says whether the
    /// result is valid (else nothing changes): `sessions.label`.
    pub fn relabel(
        &self,
        id: SessionId,
        change: impl FnOnce(&mut Label) -> Result<(), String>,
    ) -> Result<Snapshot, SessionError> {
        let mut state = self.lock();
        let Some(session) = state.live.get_mut(&id) else {
            return Err(Self::missing(&state, id));
        };
        let mut label = session.label.clone();
        change(&mut label).map_err(SessionError::BadLabel)?;
        session.label = label;
        session.labelled_at = Some(Utc::now());
        let snapshot = session.snapshot(id);
        state.mark_dirty(id);
        Ok(snapshot)
    }

    /// The current state of one session.
    pub fn get(&self, id: SessionId) -> Result<Snapshot, SessionError> {
        let state = self.lock();
        match state.live.get(&id) {
            Some(session) => Ok(session.snapshot(id)),
            None => Err(Self::missing(&state, id)),
        }
    }

    /// Stores a new setup. A well-formed unknown id is created on demand (see
    /// [`Sessions::update_telemetry`]).
    pub fn update_setup(&self, id: SessionId, body: Bytes) -> Result<Applied, SessionError> {
        self.update_setup_at(id, body, Now::read())
    }

    /// [`Sessions::update_setup`], at `now` (see [`Now`]).
    pub fn update_setup_at(
        &self,
        id: SessionId,
        body: Bytes,
        now: Now,
    ) -> Result<Applied, SessionError> {
        let size = body.len();
        self.update(id, now, (size, Slot::Setup), |session, now| {
            session.setup = Some(Frame { body, at: now });
            session.stats.setup_count += 1;
            (None, false)
        })
    }

    /// Stores the latest telemetry frame. `lap` is where the frame's value at the
    /// lap field (`--lap-field`) is in `body`, if it has one: a change completes
    /// the running lap, which is kept and returned in [`Applied::lap`].
    ///
    /// An id that is well-formed but unknown is created on demand: a monitor that
    /// keeps publishing after the processor lost its state (or that started before
    /// it) is served, never orphaned. An id whose session ended is refused.
    pub fn update_telemetry(
        &self,
        id: SessionId,
        body: Bytes,
        lap: Option<std::ops::Range<usize>>,
    ) -> Result<Applied, SessionError> {
        self.update_telemetry_at(id, body, lap, Now::read())
    }

    /// [`Sessions::update_telemetry`], at `now` (see [`Now`]).
    pub fn update_telemetry_at(
        &self,
        id: SessionId,
        body: Bytes,
        lap: Option<std::ops::Range<usize>>,
        now: Now,
    ) -> Result<Applied, SessionError> {
        let budgets = self.budgets;
        let size = body.len();
        self.update(id, now, (size, Slot::Telemetry), |session, at| {
            session.rate.record(session.last_activity);
            session.stats.first_frame_at.get_or_insert(at);
            let previous = session.telemetry.as_ref().map(|f| &f.body);
            let completed = session.lap.advance(id, lap, &body, previous, at);
            session.telemetry = Some(Frame { body, at });
            session.stats.telemetry_count += 1;
            let Some(record) = completed else {
                return (None, false);
            };
            if budgets.laps_per_minute > 0.0
                && session
                    .lap_allowance
                    .take(
                        budgets.laps_per_minute / 60.0,
                        budgets.laps_per_minute,
                        now.instant,
                    )
                    .is_err()
            {
                session.stats.laps_dropped += 1;
                return (None, true);
            }
            let record = std::sync::Arc::new(record);
            session.laps.insert(record.clone(), budgets.history);
            (Some(record), false)
        })
    }

    /// How many lap records a live session keeps.
    pub fn laps_kept(&self, id: SessionId) -> Option<usize> {
        self.lock().live.get(&id).map(|s| s.laps.len())
    }

    /// A session's completed laps, oldest first.
    pub fn laps(&self, id: SessionId) -> Result<Vec<std::sync::Arc<LapRecord>>, SessionError> {
        let state = self.lock();
        match state.live.get(&id) {
            Some(session) => Ok(session.laps.records()),
            None => Err(Self::missing(&state, id)),
        }
    }

    /// Puts back a lap record read from storage at start-up into its live or
    /// archived session. The running lap's count follows it: the session's
    /// document, written behind, may be older than the laps written through.
    pub(crate) fn restore_lap(&self, record: LapRecord) -> bool {
        self.keep_stored_lap(record, true)
    }

    /// Keeps the stored copy of a lap another processor wrote (or won the create
    /// for): a record with the same number is replaced, so every processor serves
    /// the one copy storage holds. The running lap's count is left alone: this
    /// processor completes the same laps from the same frames, and a peer's write
    /// can arrive before the frame that completes the lap here (counting it then
    /// would number that lap twice). Returns whether the lap was new here.
    pub(crate) fn adopt_lap(&self, record: LapRecord) -> bool {
        self.keep_stored_lap(record, false)
    }

    fn keep_stored_lap(&self, record: LapRecord, recovering: bool) -> bool {
        let mut guard = self.lock();
        let state = &mut *guard;
        let id = record.session_id;
        let record = std::sync::Arc::new(record);
        if let Some(session) = state.live.get_mut(&id)
            && recovering
            && record.n > session.lap.completed
        {
            // The document predates this lap's end: its running lap is the one
            // that ended. What runs now is not known until the next frame, which
            // starts it (rather than closing the stored lap again).
            session.lap = laps::Running {
                completed: record.n,
                ..laps::Running::default()
            };
        }
        let n = record.n;
        let history = match state.live.get_mut(&id) {
            Some(session) => &mut session.laps,
            None => match state.ended.get_mut(&id) {
                Some(ended) => &mut ended.laps,
                None => return false,
            },
        };
        let before = (history.bytes(), history.len());
        let new = history.insert(record, self.budgets.history);
        let after = (history.bytes(), history.len());
        state.held.laps = state.held.laps + after.0 - before.0;
        state.held.lap_records = state.held.lap_records + after.1 - before.1;
        if new {
            state.lap_order.push_back((id, n));
        }
        self.budgets_enforced(state);
        new
    }

    /// Counts a rejected frame against a live session; unknown ids are ignored.
    /// Counts frames of `id` dropped unread, the ingest queue being full
    /// (server/intake.rs).
    pub fn note_dropped(&self, id: SessionId, frames: u64) {
        if let Some(session) = self.lock().live.get_mut(&id) {
            session.stats.dropped_count += frames;
        }
    }

    pub(crate) fn note_rejected(&self, id: SessionId) {
        if let Some(session) = self.lock().live.get_mut(&id) {
            session.stats.rejected_count += 1;
        }
    }

    /// Ends a session, returning its final state. Later data for the id is refused.
    pub fn delete(&self, id: SessionId) -> Result<Ended, SessionError> {
        let mut state = self.lock();
        match state.live.remove(&id) {
            // What it holds moves to the archive with it: the budget's count stays.
            Some(session) => {
                let last = session.snapshot(id);
                let ended = Ended {
                    at: Utc::now(),
                    reason: EndReason::Deleted,
                    last,
                    laps: session.laps.clone(),
                };
                state.ended.insert(id, ended.clone());
                Ok(ended)
            }
            None => Err(Self::missing(&state, id)),
        }
    }

    /// Ends every session idle for `max_idle` or longer (as of `now`), returning
    /// them. Later data for their ids is refused.
    pub(crate) fn expire_idle(
        &self,
        now: tokio::time::Instant,
        max_idle: std::time::Duration,
    ) -> Vec<Ended> {
        let mut state = self.lock();
        let idle: Vec<SessionId> = state
            .live
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.last_activity) >= max_idle)
            .map(|(id, _)| *id)
            .collect();
        let at = Utc::now();
        idle.into_iter()
            .filter_map(|id| {
                let session = state.live.remove(&id)?;
                let ended = Ended {
                    at,
                    reason: EndReason::Expired,
                    last: session.snapshot(id),
                    laps: session.laps.clone(),
                };
                state.ended.insert(id, ended.clone());
                Some(ended)
            })
            .collect()
    }

    /// Forgets ended sessions that ended before `before` (the archive retention).
    pub(crate) fn prune_ended(&self, before: DateTime<Utc>) -> usize {
        let mut guard = self.lock();
        let state = &mut *guard;
        let n = state.ended.len();
        let held = &mut state.held;
        state.ended.retain(|_, e| {
            let keep = e.at >= before;
            if !keep {
                held.forget_ended(e);
            }
            keep
        });
        n - state.ended.len()
    }

    /// One ended session from the archive.
    pub(crate) fn ended(&self, id: SessionId) -> Option<Ended> {
        self.lock().ended.get(&id).cloned()
    }

    /// Every ended session still kept, most recently ended first.
    pub(crate) fn list_ended(&self) -> Vec<Ended> {
        let mut rows: Vec<Ended> = self.lock().ended.values().cloned().collect();
        rows.sort_by_key(|e| std::cmp::Reverse((e.at, e.last.session_id)));
        rows
    }

    /// All live sessions, oldest first.
    pub fn list(&self) -> Vec<Summary> {
        let mut rows: Vec<Summary> = {
            let state = self.lock();
            state
                .live
                .iter()
                .map(|(id, s)| Summary {
                    session_id: *id,
                    team: s.label.team.clone(),
                    car: s.label.car.clone(),
                    created_at: s.created_at,
                    last_update: s.last_update,
                    has_setup: s.setup.is_some(),
                    telemetry_count: s.stats.telemetry_count,
                })
                .collect()
        };
        rows.sort_by_key(|row| (row.created_at, row.session_id));
        rows
    }

    /// Every live session with a team label, as the pit wall's feed reads it
    /// (`server::tower`): refcounts of its latest frame and last few laps.
    pub fn team_cars(&self) -> Vec<crate::server::tower::TeamCar> {
        let state = self.lock();
        state
            .live
            .iter()
            .filter_map(|(id, s)| {
                Some(crate::server::tower::TeamCar {
                    session_id: *id,
                    team: s.label.team.clone()?,
                    car: s.label.car.clone(),
                    created_at: s.created_at,
                    telemetry: s.telemetry.clone(),
                    laps: s.laps.latest(crate::server::tower::PACE_LAPS),
                })
            })
            .collect()
    }

    /// Every live session's team label, latest telemetry frame (a refcount)
    /// and count of completed laps, for the alerts (`server::alerts`).
    pub fn alert_inputs(&self) -> Vec<(SessionId, Option<String>, Option<Frame>, u64)> {
        let state = self.lock();
        state
            .live
            .iter()
            .map(|(id, s)| {
                (
                    *id,
                    s.label.team.clone(),
                    s.telemetry.clone(),
                    s.lap.completed,
                )
            })
            .collect()
    }

    /// How many live sessions `which` picks, without building their rows.
    pub fn count_where(&self, mut which: impl FnMut(&SessionId) -> bool) -> usize {
        self.lock().live.keys().filter(|id| which(id)).count()
    }

    /// Puts back a session recovered from storage, as it was (capacity is not
    /// checked: these sessions existed before the restart).
    pub(crate) fn restore(&self, snapshot: Snapshot) {
        let id = snapshot.session_id;
        let mut guard = self.lock();
        let state = &mut *guard;
        let session = Session::from_snapshot(snapshot, &self.budgets);
        state.held.frames += session.frame_bytes();
        if let Some(old) = state.live.insert(id, session) {
            state.held.forget_live(&old);
        }
    }

    /// Records a session that ended before the restart: kept in the archive, and its
    /// data stays refused. An ended session wins over a live copy of it (a peer's
    /// write-behind may have stored one after the end).
    pub(crate) fn restore_ended(&self, ended: Ended) {
        let mut guard = self.lock();
        let state = &mut *guard;
        if let Some(old) = state.live.remove(&ended.last.session_id) {
            state.held.forget_live(&old);
        }
        state.held.frames += ended.frame_bytes();
        if let Some(old) = state.ended.insert(ended.last.session_id, ended) {
            state.held.forget_ended(&old);
        }
    }

    /// A session another processor stored: added unless this processor knows the id
    /// already, live or ended (its own replica is at least as fresh). Returns
    /// whether it was added.
    pub(crate) fn adopt(&self, snapshot: Snapshot) -> bool {
        let id = snapshot.session_id;
        let mut state = self.lock();
        if state.live.contains_key(&id) || state.ended.contains_key(&id) {
            return false;
        }
        let session = Session::from_snapshot(snapshot, &self.budgets);
        state.held.frames += session.frame_bytes();
        state.live.insert(id, session);
        true
    }

    /// A copy of a session another processor (or this one) stored: adopted if
    /// unknown here; if live here, its setup and labels are taken when they are
    /// newer than this processor's, so a setup or label this processor missed
    /// (restarting, recovering, or a frame dropped) is served here all the same.
    /// When this processor's are newer, it writes its copy again: the bucket
    /// must not keep an older setup than one acknowledged. Telemetry is left
    /// alone: the next frame replaces it anyway.
    pub(crate) fn follow(&self, peer: Snapshot) -> Followed {
        let id = peer.session_id;
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.ended.contains_key(&id) {
            return Followed::Same;
        }
        let Some(session) = state.live.get_mut(&id) else {
            drop(guard);
            return if self.adopt(peer) {
                Followed::Adopted
            } else {
                Followed::Same
            };
        };
        let mut taken = false;
        let mut ours_newer = false;
        // Which setup is newer: the one more setups in (each processor counts
        // every setup it applies, so one that missed some counts fewer, whatever
        // the clocks say), then the later, then the larger body, so two
        // processors always agree.
        let setup_rank =
            |count: u64, f: &Option<Frame>| (count, f.as_ref().map(|f| (f.at, f.body.clone())));
        let theirs = setup_rank(peer.stats.setup_count, &peer.setup);
        let ours = setup_rank(session.stats.setup_count, &session.setup);
        let same_body = |a: &Option<Frame>, b: &Option<Frame>| {
            a.as_ref().map(|f| &f.body) == b.as_ref().map(|f| &f.body)
        };
        if !same_body(&peer.setup, &session.setup) {
            if theirs > ours {
                let before = frame_len(&session.setup);
                session.setup = peer.setup;
                session.stats.setup_count = peer.stats.setup_count;
                state.held.frames = state.held.frames - before + frame_len(&session.setup);
                taken = true;
            } else {
                ours_newer = true;
            }
        }
        // Labels change by request only, one processor answering: the time
        // it answered orders them (then the text, for a tie).
        let label_rank = |at: Option<DateTime<Utc>>, l: &Label| (at, l.team.clone(), l.car.clone());
        if peer.label != session.label {
            if label_rank(peer.labelled_at, &peer.label)
                > label_rank(session.labelled_at, &session.label)
            {
                session.label = peer.label;
                session.labelled_at = peer.labelled_at;
                taken = true;
            } else {
                ours_newer = true;
            }
        }
        if ours_newer {
            state.mark_dirty(id);
        }
        if taken {
            Followed::Taken
        } else {
            Followed::Same
        }
    }

    /// A session another processor ended: ended here too. Returns whether it was
    /// live here (false when this processor had ended it already).
    pub(crate) fn adopt_end(&self, ended: Ended) -> bool {
        let mut guard = self.lock();
        let state = &mut *guard;
        let id = ended.last.session_id;
        if state.ended.contains_key(&id) {
            return false;
        }
        // The peer's final state replaces this processor's copy; the laps this
        // processor kept go with it (the archive's laps come from their bucket).
        let was_live = match state.live.remove(&id) {
            Some(old) => {
                state.held.forget_live(&old);
                true
            }
            None => false,
        };
        state.held.frames += ended.frame_bytes();
        state.held.laps += ended.laps.bytes();
        state.held.lap_records += ended.laps.len();
        state.ended.insert(id, ended);
        was_live
    }

    /// Snapshots of at most `at_most` sessions changed since they were last
    /// taken, those changed longest ago first, marked clean: the write-behind
    /// flush persists these. The rest wait their turn, in order. A write that
    /// fails is retried by [`Sessions::mark_dirty`].
    pub(crate) fn take_dirty(&self, at_most: usize) -> Vec<Snapshot> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut taken = Vec::new();
        while taken.len() < at_most {
            let Some(id) = state.dirty.pop_front() else {
                break;
            };
            // Ended, or written since it was listed (a write-through): nothing
            // to write, and no turn of the rate spent on it.
            if let Some(session) = state.live.get_mut(&id)
                && session.dirty
            {
                session.dirty = false;
                taken.push(session.snapshot(id));
            }
        }
        taken
    }

    /// The current state of one session, marked clean: for a write-through.
    pub(crate) fn take_for_persist(&self, id: SessionId) -> Option<Snapshot> {
        let mut state = self.lock();
        let session = state.live.get_mut(&id)?;
        session.dirty = false;
        Some(session.snapshot(id))
    }

    /// Marks a session changed again (its write failed), if it is still live.
    pub(crate) fn mark_dirty(&self, id: SessionId) {
        self.lock().mark_dirty(id);
    }

    /// How many sessions are live, their telemetry rate together, and what all
    /// sessions hold against the budget: what `sessions.stats` reports.
    pub fn load(&self) -> Load {
        let state = self.lock();
        let now = tokio::time::Instant::now();
        Load {
            live: state.live.len(),
            rate_hz: state.live.values().map(|s| s.rate.current(now)).sum(),
            lap_records: state.live.values().map(|s| s.laps.len()).sum(),
            held: state.held,
            budget: self.budgets.max_memory,
            over_budget: state.held.frames + self.budgets.session_reserve > self.budgets.max_memory,
        }
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies a frame of `size` bytes to a session (created on demand if need
    /// be); `slot` is the frame it takes the place of, for the memory budget. `apply` returns the lap record it kept, and whether it dropped one.
    fn update(
        &self,
        id: SessionId,
        Now { utc: now, instant }: Now,
        (size, slot): (usize, Slot),
        apply: impl FnOnce(&mut Session, DateTime<Utc>) -> (Option<std::sync::Arc<LapRecord>>, bool),
    ) -> Result<Applied, SessionError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let live = state.live.len();
        let frames_held = state.held.frames;
        // One hash lookup per frame (this is the hot path): the entry, then fields.
        let (session, created) = match state.live.entry(id) {
            Entry::Occupied(entry) => (entry.into_mut(), false),
            Entry::Vacant(entry) => {
                if let Some(ended) = state.ended.get(&id) {
                    return Err(SessionError::Ended(id, ended.reason));
                }
                if live >= self.max_sessions {
                    return Err(SessionError::AtCapacity {
                        limit: self.max_sessions,
                    });
                }
                if frames_held + self.budgets.session_reserve > self.budgets.max_memory {
                    return Err(SessionError::OverBudget {
                        held: frames_held,
                        limit: self.budgets.max_memory,
                        what: "new sessions are",
                    });
                }
                let limited = |why| SessionError::OnDemandLimited { id, why };
                if live >= self.on_demand.max_live {
                    return Err(limited(OnDemandLimit::Share(live)));
                }
                if let Some(budget) = &mut state.on_demand_budget {
                    budget
                        .take(std::time::Instant::now())
                        .map_err(|retry| limited(OnDemandLimit::Rate(retry)))?;
                }
                (entry.insert(Session::new(now, &self.budgets)), true)
            }
        };
        let replaced = frame_len(match slot {
            Slot::Setup => &session.setup,
            Slot::Telemetry => &session.telemetry,
        });
        let grows = size.saturating_sub(replaced);
        // Frames cannot be trimmed: past the budget, a frame may not hold more than
        // the one it replaces (laps are trimmed first to make room, below).
        if grows > 0 && frames_held + grows > self.budgets.max_memory {
            return Err(SessionError::OverBudget {
                held: frames_held,
                limit: self.budgets.max_memory,
                what: "frames larger than the ones they replace are",
            });
        }
        let laps_before = (session.laps.bytes(), session.laps.len());
        // Set before `apply`, which may read it (the telemetry rate).
        session.last_activity = instant;
        let (lap, lap_dropped) = apply(session, now);
        session.last_update = now;
        if !session.dirty {
            session.dirty = true;
            state.dirty.push_back(id);
        }
        let laps_after = (session.laps.bytes(), session.laps.len());
        state.held.frames = state.held.frames + size - replaced;
        state.held.laps = state.held.laps + laps_after.0 - laps_before.0;
        state.held.lap_records = state.held.lap_records + laps_after.1 - laps_before.1;
        if let Some(record) = &lap {
            state.lap_order.push_back((id, record.n));
        }
        if lap.is_some() || grows > 0 {
            self.budgets_enforced(state);
        }
        Ok(Applied {
            at: now,
            created,
            lap,
            lap_dropped,
        })
    }

    /// Brings what the sessions hold back within `--max-memory` by dropping lap
    /// records, oldest first across sessions (live and ended). Frames are never
    /// dropped here: their growth is refused instead (see `update`).
    fn budgets_enforced(&self, state: &mut State) {
        while state.held.total() > self.budgets.max_memory {
            let Some((id, n)) = state.lap_order.pop_front() else {
                break;
            };
            let history = match state.live.get_mut(&id) {
                Some(session) => &mut session.laps,
                None => match state.ended.get_mut(&id) {
                    Some(ended) => &mut ended.laps,
                    None => continue,
                },
            };
            // The entry's record, or an older one of the same session; none when
            // the history's own limits dropped it already.
            if history.oldest().is_some_and(|oldest| oldest <= n)
                && let Some(record) = history.pop_oldest()
            {
                state.held.laps -= record.bytes();
                state.held.lap_records -= 1;
                state.held.laps_trimmed += 1;
            }
        }
        // Entries of records that left by their history's own limits: compacted
        // once they are half the queue, so it stays within twice the records.
        if state.lap_order.len() > 2 * state.held.lap_records + 1024 {
            let State {
                live,
                ended,
                lap_order,
                ..
            } = state;
            lap_order.retain(|(id, n)| {
                let oldest = live
                    .get(id)
                    .map(|s| &s.laps)
                    .or_else(|| ended.get(id).map(|e| &e.laps))
                    .and_then(laps::History::oldest);
                oldest.is_some_and(|oldest| oldest <= *n)
            });
        }
    }

    fn check_capacity(&self, state: &State) -> Result<(), SessionError> {
        if state.live.len() >= self.max_sessions {
            return Err(SessionError::AtCapacity {
                limit: self.max_sessions,
            });
        }
        // Lap records can be trimmed to make room; frames cannot.
        if state.held.frames + self.budgets.session_reserve > self.budgets.max_memory {
            return Err(SessionError::OverBudget {
                held: state.held.frames,
                limit: self.budgets.max_memory,
                what: "new sessions are",
            });
        }
        Ok(())
    }

    fn missing(state: &State, id: SessionId) -> SessionError {
        if let Some(ended) = state.ended.get(&id) {
            SessionError::Ended(id, ended.reason)
        } else {
            SessionError::NotFound(id)
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated (every
        // mutation is a single insert or field store), so a poisoned lock is still
        // safe to use; refusing service for the rest of a race would be worse.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn mark_dirty(&mut self, id: SessionId) {
        if let Some(session) = self.live.get_mut(&id)
            && !session.dirty
        {
            session.dirty = true;
            self.dirty.push_back(id);
        }
    }
}

impl Session {
    /// A session as stored elsewhere (a restart, another processor).
    fn from_snapshot(snapshot: Snapshot, budgets: &Budgets) -> Self {
        let now = tokio::time::Instant::now();
        Session {
            frame_allowance: Allowance::full(budgets.frame_burst, now),
            lap_allowance: Allowance::full(budgets.laps_per_minute, now),
            created_at: snapshot.created_at,
            label: snapshot.label,
            labelled_at: snapshot.labelled_at,
            setup: snapshot.setup,
            telemetry: snapshot.telemetry,
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

    fn new(now: DateTime<Utc>, budgets: &Budgets) -> Self {
        let instant = tokio::time::Instant::now();
        Session {
            frame_allowance: Allowance::full(budgets.frame_burst, instant),
            lap_allowance: Allowance::full(budgets.laps_per_minute, instant),
            created_at: now,
            label: Label::default(),
            labelled_at: None,
            setup: None,
            telemetry: None,
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
    fn frame_bytes(&self) -> usize {
        frame_len(&self.setup) + frame_len(&self.telemetry)
    }

    fn snapshot(&self, id: SessionId) -> Snapshot {
        Snapshot {
            session_id: id,
            created_at: self.created_at,
            label: self.label.clone(),
            labelled_at: self.labelled_at,
            setup: self.setup.clone(),
            telemetry: self.telemetry.clone(),
            last_update: self.last_update,
            stats: self.stats.clone(),
            rate_hz: self.rate.current(tokio::time::Instant::now()),
            lap: self.lap.clone(),
            laps: self.laps.len(),
        }
    }
}

/// Which of a session's frames an update replaces.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Setup,
    Telemetry,
}

fn frame_len(frame: &Option<Frame>) -> usize {
    frame.as_ref().map_or(0, |f| f.body.len())
}

impl Snapshot {
    /// Bytes of frames it holds, as the memory budget counts them.
    fn frame_bytes(&self) -> usize {
        frame_len(&self.setup) + frame_len(&self.telemetry)
    }

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
            last_update: self.last_update,
            stats: DocumentStats {
                telemetry_count: self.stats.telemetry_count,
                setup_count: self.stats.setup_count,
                rejected_count: self.stats.rejected_count,
                rate_limited_count: self.stats.rate_limited_count,
                dropped_count: self.stats.dropped_count,
                laps_dropped: self.stats.laps_dropped,
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
            last_update: doc.last_update,
            stats: SessionStats {
                telemetry_count: doc.stats.telemetry_count,
                setup_count: doc.stats.setup_count,
                rejected_count: doc.stats.rejected_count,
                first_frame_at: doc.stats.first_frame_at,
                rate_limited_count: doc.stats.rate_limited_count,
                dropped_count: doc.stats.dropped_count,
                laps_dropped: doc.stats.laps_dropped,
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

/// Borrows a stored frame as raw JSON, so the document carries it verbatim.
fn raw(body: &Bytes) -> &RawValue {
    // Every stored frame passed `payload::validate_object`, so this cannot fail.
    serde_json::from_slice(body).expect("stored frames are validated JSON objects")
}

pub use crate::protocol::documents::time::format as format_time;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A session with a setup and one telemetry frame.
    fn session_with(sessions: &Sessions, setup: &'static [u8], frame: &'static [u8]) -> SessionId {
        let id = sessions.create().unwrap().session_id;
        sessions
            .update_setup(id, Bytes::from_static(setup))
            .unwrap();
        sessions
            .update_telemetry(id, Bytes::from_static(frame), None)
            .unwrap();
        id
    }

    fn doc(s: &Snapshot) -> Value {
        serde_json::from_slice(&s.to_json()).unwrap()
    }

    fn lap_frame(lap: u64) -> (Bytes, Option<std::ops::Range<usize>>) {
        // `{"lap": ` is 8 bytes: the value starts there.
        let body = Bytes::from(format!(r#"{{"lap": {lap}}}"#));
        let range = 8..8 + lap.to_string().len();
        (body, Some(range))
    }

    /// Lap 1 of session `id`, ending with `last` and `next`, as storage holds it.
    fn lap_one(id: SessionId, last: Bytes, next: Bytes) -> LapRecord {
        LapRecord {
            session_id: id,
            n: 1,
            lap: Bytes::from_static(b"1"),
            started_at: Utc::now(),
            ended_at: Utc::now(),
            frames: 1,
            last_frame: last,
            next_frame: next,
            pitted: false,
        }
    }

    #[test]
    fn a_setup_or_label_this_processor_missed_is_taken_from_a_peers_copy() {
        // Two processors, `here` and `peer`, hold the same session (adopted
        // from one stored copy). `here` misses setup B (restarting, say).
        let (here, peer) = (Sessions::new(10), Sessions::new(10));
        let id = session_with(&peer, br#"{"rev":1}"#, b"{}");
        here.adopt(Snapshot::from_json(&peer.get(id).unwrap().to_json()).unwrap());
        peer.update_setup(id, Bytes::from_static(br#"{"rev":2}"#))
            .unwrap();
        peer.relabel(id, |l| {
            l.team = Some("Red".into());
            Ok(())
        })
        .unwrap();
        let stored = peer.get(id).unwrap().to_json();
        assert_eq!(
            here.follow(Snapshot::from_json(&stored).unwrap()),
            Followed::Taken
        );
        let now = doc(&here.get(id).unwrap());
        assert_eq!(now["setup"], json!({"rev": 2}));
        assert_eq!(now["team"], "Red");
        assert_eq!(now["stats"]["setup_count"], 2);
        // The same copy again, or one with both: nothing more to take.
        assert_eq!(
            here.follow(Snapshot::from_json(&stored).unwrap()),
            Followed::Same
        );
        // An older copy (here's own earlier write, or a stale peer's) does not
        // win: here writes its newer copy again instead.
        here.take_dirty(usize::MAX);
        // Its clock a minute ahead: the count, not the clock, decides.
        let mut stale = Snapshot::from_json(&stored).unwrap();
        stale.setup = Some(Frame {
            body: Bytes::from_static(br#"{"rev":1}"#),
            at: Utc::now() + chrono::Duration::seconds(60),
        });
        stale.stats.setup_count = 1;
        assert_eq!(here.follow(stale), Followed::Same);
        assert_eq!(doc(&here.get(id).unwrap())["setup"], json!({"rev": 2}));
        assert_eq!(
            here.take_dirty(usize::MAX).len(),
            1,
            "the newer copy is written again"
        );
    }

    #[test]
    fn a_peers_lap_arriving_before_the_closing_frame_is_not_counted_twice() {
        let sessions = Sessions::new(10);
        let id = sessions.create().unwrap().session_id;
        let (f1, at1) = lap_frame(1);
        sessions
            .update_telemetry(id, f1.clone(), at1.clone())
            .unwrap();
        // The peer completed lap 1 first; its stored record reaches us early.
        let (f2, at2) = lap_frame(2);
        let peers = lap_one(id, f1, f2.clone());
        assert!(sessions.adopt_lap(peers));
        let applied = sessions.update_telemetry(id, f2, at2).unwrap();
        assert_eq!(
            applied.lap.map(|l| l.n),
            Some(1),
            "the same lap, the same number"
        );
        assert_eq!(sessions.laps(id).unwrap().len(), 1);
    }

    #[test]
    fn recovered_laps_newer_than_the_document_restart_the_running_lap() {
        let sessions = Sessions::new(10);
        let id = sessions.create().unwrap().session_id;
        let (f1, at1) = lap_frame(1);
        sessions.update_telemetry(id, f1.clone(), at1).unwrap();
        let (f2, at2) = lap_frame(2);
        let stored = lap_one(id, f1, f2.clone());
        // As after a kill -9: the document says lap 1 runs, storage has it done.
        sessions.restore_lap(stored);
        assert!(
            sessions
                .update_telemetry(id, f2, at2)
                .unwrap()
                .lap
                .is_none()
        );
        let (f3, at3) = lap_frame(3);
        let next = sessions.update_telemetry(id, f3, at3).unwrap().lap.unwrap();
        assert_eq!((next.n, &next.lap[..]), (2, &b"2"[..]));
    }

    #[test]
    fn a_new_session_has_no_setup_or_telemetry() {
        let sessions = Sessions::new(10);
        let d = doc(&sessions.create().unwrap());
        assert_eq!(d["setup"], Value::Null);
        assert_eq!(d["setup_timestamp"], Value::Null);
        assert_eq!(d["telemetry"], Value::Null);
        assert_eq!(d["created_at"], d["last_update"]);
        assert!(d["created_at"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn setup_and_telemetry_never_clobber_each_other() {
        let sessions = Sessions::new(10);
        let id = session_with(&sessions, br#"{"wing": 5}"#, br#"{"lap": 1}"#);
        sessions
            .update_telemetry(id, Bytes::from_static(br#"{"lap": 2}"#), None)
            .unwrap();
        let d = doc(&sessions.get(id).unwrap());
        assert_eq!(d["setup"], json!({"wing": 5}));
        assert_eq!(d["telemetry"], json!({"lap": 2}));
        assert_eq!(d["stats"]["telemetry_count"], 2);
        assert_eq!(d["stats"]["setup_count"], 1);
        assert!(d["setup_timestamp"].is_string());
        assert!(d["last_update"].as_str() >= d["setup_timestamp"].as_str());
    }

    #[test]
    fn unknown_ids_are_created_on_demand_but_deleted_ones_stay_deleted() {
        let sessions = Sessions::new(10);
        let id = SessionId::new_v4();
        let applied = sessions
            .update_telemetry(id, Bytes::from_static(b"{}"), None)
            .unwrap();
        assert!(applied.created);
        sessions.delete(id).unwrap();
        assert_eq!(
            sessions.update_telemetry(id, Bytes::from_static(b"{}"), None),
            Err(SessionError::Ended(id, EndReason::Deleted))
        );
        assert_eq!(
            sessions.get(id).unwrap_err(),
            SessionError::Ended(id, EndReason::Deleted)
        );
        assert_eq!(
            sessions.delete(id).unwrap_err(),
            SessionError::Ended(id, EndReason::Deleted)
        );
    }

    #[test]
    fn capacity_is_enforced_for_creates_and_on_demand_sessions() {
        let sessions = Sessions::new(2);
        sessions.create().unwrap();
        sessions.create().unwrap();
        assert_eq!(
            sessions.create().unwrap_err(),
            SessionError::AtCapacity { limit: 2 }
        );
        let err = sessions.update_telemetry(SessionId::new_v4(), Bytes::from_static(b"{}"), None);
        assert_eq!(err.unwrap_err(), SessionError::AtCapacity { limit: 2 });
        assert_eq!(sessions.len(), 2);
    }

    #[test]
    fn a_document_reads_back_as_the_same_session() {
        let sessions = Sessions::new(10);
        let id = session_with(&sessions, br#"{"wing": 5}"#, br#"{ "lap":3 }"#);
        let before = sessions.get(id).unwrap();
        let after = Snapshot::from_json(&before.to_json()).unwrap();
        assert_eq!(after.to_json(), before.to_json());
        assert_eq!(&after.telemetry.unwrap().body[..], br#"{ "lap":3 }"#);
    }

    #[test]
    fn changes_are_taken_once_for_persisting() {
        let sessions = Sessions::new(10);
        let a = sessions.create().unwrap().session_id;
        let b = sessions.create().unwrap().session_id;
        assert_eq!(sessions.take_dirty(usize::MAX).len(), 2);
        assert!(sessions.take_dirty(usize::MAX).is_empty());
        for lap in 0..3 {
            sessions
                .update_telemetry(a, Bytes::from(format!(r#"{{"lap": {lap}}}"#)), None)
                .unwrap();
        }
        let dirty = sessions.take_dirty(usize::MAX);
        assert_eq!(dirty.len(), 1, "coalesced per session");
        assert_eq!(
            &dirty[0].telemetry.as_ref().unwrap().body[..],
            br#"{"lap": 2}"#
        );
        sessions.mark_dirty(b);
        sessions.delete(b).unwrap();
        assert!(
            sessions.take_dirty(usize::MAX).is_empty(),
            "a deleted session is not written back"
        );
    }

    #[test]
    fn past_the_write_rate_sessions_wait_their_turn_longest_waiting_first() {
        let sessions = Sessions::new(10);
        let ids: Vec<SessionId> = (0..3)
            .map(|_| sessions.create().unwrap().session_id)
            .collect();
        let taken = |n| -> Vec<SessionId> {
            sessions
                .take_dirty(n)
                .iter()
                .map(|s| s.session_id)
                .collect()
        };
        assert_eq!(taken(2), ids[..2]);
        // The first changes again while the third still waits: the third goes first.
        sessions
            .update_telemetry(ids[0], Bytes::from_static(br#"{"lap": 1}"#), None)
            .unwrap();
        assert_eq!(taken(1), [ids[2]]);
        assert_eq!(taken(5), [ids[0]]);
        assert!(taken(5).is_empty());
        // Written through since it changed: no turn spent on it.
        for id in &ids {
            sessions
                .update_telemetry(*id, Bytes::from_static(br#"{"lap": 2}"#), None)
                .unwrap();
        }
        sessions.take_for_persist(ids[0]);
        assert_eq!(taken(2), ids[1..]);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_sessions_expire_and_stay_ended() {
        use std::time::Duration;
        let hour = Duration::from_secs(3600);
        let sessions = Sessions::new(10);
        let quiet = sessions.create().unwrap().session_id;
        let busy = sessions.create().unwrap().session_id;
        tokio::time::advance(Duration::from_secs(59 * 60)).await;
        assert!(
            sessions
                .expire_idle(tokio::time::Instant::now(), hour)
                .is_empty()
        );
        sessions
            .update_telemetry(busy, Bytes::from_static(b"{}"), None)
            .unwrap();
        tokio::time::advance(Duration::from_secs(2 * 60)).await;

        let expired = sessions.expire_idle(tokio::time::Instant::now(), hour);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].last.session_id, quiet);
        assert_eq!(expired[0].reason, EndReason::Expired);
        assert!(sessions.get(busy).is_ok(), "activity resets the idle clock");
        let refused = sessions.update_telemetry(quiet, Bytes::from_static(b"{}"), None);
        assert_eq!(refused, Err(SessionError::Ended(quiet, EndReason::Expired)));
        assert_eq!(sessions.ended(quiet).unwrap().reason, EndReason::Expired);

        tokio::time::advance(hour).await;
        assert_eq!(
            sessions
                .expire_idle(tokio::time::Instant::now(), hour)
                .len(),
            1
        );
        assert!(sessions.is_empty());
        assert_eq!(sessions.list_ended().len(), 2);
        assert_eq!(
            sessions.prune_ended(Utc::now() + chrono::Duration::seconds(1)),
            2
        );
        assert!(sessions.ended(quiet).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_follows_the_frames() {
        use std::time::Duration;
        let sessions = Sessions::new(10);
        let id = sessions.create().unwrap().session_id;
        for _ in 0..60 {
            sessions
                .update_telemetry(id, Bytes::from_static(b"{}"), None)
                .unwrap();
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        let rate = sessions.get(id).unwrap().rate_hz;
        assert!((9.0..=11.0).contains(&rate), "10 Hz: {rate}");
        assert!((9.0..=11.0).contains(&sessions.load().rate_hz));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(
            sessions.get(id).unwrap().rate_hz,
            0.0,
            "silent for two windows"
        );
        let d = doc(&sessions.get(id).unwrap());
        assert!(d["stats"]["duration_s"].as_f64().unwrap() >= 0.0);
    }

    #[test]
    fn list_is_oldest_first() {
        let sessions = Sessions::new(10);
        let ids: Vec<_> = (0..5)
            .map(|_| sessions.create().unwrap().session_id)
            .collect();
        let listed: Vec<_> = sessions.list().iter().map(|s| s.session_id).collect();
        let mut expected = ids.clone();
        expected.sort_by_key(|id| (sessions.get(*id).unwrap().created_at, *id));
        assert_eq!(listed, expected);
        assert_eq!(sessions.count_where(|_| true), 5);
        assert_eq!(sessions.count_where(|id| *id == ids[2]), 1);
    }

    #[test]
    fn frames_create_sessions_within_the_on_demand_budget_and_share_only() {
        let frame = || Bytes::from_static(b"{}");
        // The share: at most 3 live sessions come from frames; creates go on.
        let sessions = Sessions::with_limits(
            10,
            Budgets::UNLIMITED,
            OnDemand {
                per_minute: 0,
                max_live: 3,
            },
        );
        for _ in 0..3 {
            assert!(
                sessions
                    .update_telemetry(SessionId::new_v4(), frame(), None)
                    .unwrap()
                    .created
            );
        }
        let refused = sessions.update_telemetry(SessionId::new_v4(), frame(), None);
        assert!(
            matches!(
                refused,
                Err(SessionError::OnDemandLimited {
                    why: OnDemandLimit::Share(3),
                    ..
                })
            ),
            "{refused:?}"
        );
        sessions.create().unwrap();
        assert_eq!(sessions.len(), 4);

        // The budget: 2 a minute, then refused with when to retry.
        let sessions = Sessions::with_limits(
            10,
            Budgets::UNLIMITED,
            OnDemand {
                per_minute: 2,
                max_live: 10,
            },
        );
        for _ in 0..2 {
            sessions
                .update_telemetry(SessionId::new_v4(), frame(), None)
                .unwrap();
        }
        match sessions.update_telemetry(SessionId::new_v4(), frame(), None) {
            Err(SessionError::OnDemandLimited {
                why: OnDemandLimit::Rate(retry),
                ..
            }) => {
                assert!(retry > std::time::Duration::from_secs(20), "{retry:?}")
            }
            other => panic!("{other:?}"),
        }
        // Sessions that exist take frames whatever the budget.
        let id = sessions.create().unwrap().session_id;
        sessions.update_telemetry(id, frame(), None).unwrap();
    }

    /// `n` telemetry frames of `size` bytes (padding), each with a new lap.
    fn flood(sessions: &Sessions, id: SessionId, laps: std::ops::Range<u64>, size: usize) {
        for lap in laps {
            let head = format!(r#"{{"lap": {lap}, "pad": ""#);
            let body = format!(
                "{head}{}\"}}",
                "x".repeat(size.saturating_sub(head.len() + 2))
            );
            let range = 8..8 + lap.to_string().len();
            let _ = sessions.update_telemetry(id, Bytes::from(body), Some(range));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_past_its_frame_rate_is_refused_until_it_slows_down() {
        let sessions = Sessions::with_limits(
            10,
            Budgets {
                frame_rate: 10.0,
                frame_burst: 20.0,
                ..Budgets::UNLIMITED
            },
            OnDemand::UNLIMITED,
        );
        let id = sessions.create().unwrap().session_id;
        let now = tokio::time::Instant::now();
        let admitted = (0..100).filter(|_| sessions.admit(id, now).is_ok()).count();
        assert_eq!(admitted, 20, "the burst");
        let err = sessions.admit(id, now).unwrap_err();
        assert_eq!(err.reason(), "rate_limited");
        // A second later, ten more (the rate), not a burst again.
        let later = now + std::time::Duration::from_secs(1);
        let admitted = (0..100)
            .filter(|_| sessions.admit(id, later).is_ok())
            .count();
        assert_eq!(admitted, 10);
        assert_eq!(
            sessions.get(id).unwrap().stats.rate_limited_count,
            80 + 1 + 90
        );
        // Other sessions and unknown ids are not affected.
        let other = sessions.create().unwrap().session_id;
        assert!(sessions.admit(other, now).is_ok());
        assert!(sessions.admit(SessionId::new_v4(), now).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lap_field_that_flaps_keeps_records_at_the_lap_rate_only() {
        let sessions = Sessions::with_limits(
            10,
            Budgets {
                laps_per_minute: 6.0,
                ..Budgets::UNLIMITED
            },
            OnDemand::UNLIMITED,
        );
        let id = sessions.create().unwrap().session_id;
        flood(&sessions, id, 1..101, 100);
        let snapshot = sessions.get(id).unwrap();
        assert_eq!(snapshot.lap.completed, 99, "every lap still counts");
        assert_eq!(snapshot.laps, 6, "a minute's worth of records");
        assert_eq!(snapshot.stats.laps_dropped, 93);
        tokio::time::advance(std::time::Duration::from_secs(10)).await;
        flood(&sessions, id, 101..111, 100);
        assert_eq!(sessions.get(id).unwrap().laps, 7, "one more after 10 s");
    }

    #[test]
    fn a_history_stays_within_its_bytes_and_huge_edge_frames_are_summarised() {
        let max_bytes = 200 * 1024;
        let sessions = Sessions::with_limits(
            10,
            Budgets {
                history: laps::HistoryLimits {
                    max_laps: 1_000,
                    max_bytes,
                },
                ..Budgets::UNLIMITED
            },
            OnDemand::UNLIMITED,
        );
        let id = sessions.create().unwrap().session_id;
        flood(&sessions, id, 1..200, 60 * 1024);
        let records = sessions.laps(id).unwrap();
        let bytes: usize = records.iter().map(|r| r.bytes()).sum();
        assert!(bytes <= max_bytes, "{bytes}");
        assert!(records.len() > 5, "{}", records.len());
        let last = records.last().unwrap();
        assert!(last.last_frame.len() <= laps::LAP_FRAME_MAX);
        let summary: Value = serde_json::from_slice(&last.next_frame).unwrap();
        assert_eq!(summary["lap"], json!(199));
        assert!(summary[laps::TRIMMED_KEY].as_u64().unwrap() >= 60 * 1024);
        assert!(summary.get("pad").is_none());
        assert_eq!(sessions.held().laps, bytes);
    }

    #[test]
    fn memory_past_the_budget_trims_laps_across_sessions_then_refuses_new_sessions() {
        let max_memory = 2 * 1024 * 1024;
        let sessions = Sessions::with_limits(
            1_000,
            Budgets {
                max_memory,
                session_reserve: 2 * 64 * 1024,
                ..Budgets::UNLIMITED
            },
            OnDemand::UNLIMITED,
        );
        let first = sessions.create().unwrap().session_id;
        // Frames small enough to be kept whole in its records: about 1.2 MB of laps.
        flood(&sessions, first, 1..100, 6 * 1024);
        let mut ids = vec![first];
        // Sessions with big frames until the frames alone fill the budget.
        let refused = loop {
            match sessions.create() {
                Ok(s) => {
                    flood(&sessions, s.session_id, 1..4, 60 * 1024);
                    ids.push(s.session_id);
                }
                Err(e) => break e,
            }
            assert!(ids.len() < 100, "never refused");
        };
        assert_eq!(refused.reason(), "over_budget");
        let held = sessions.held();
        assert!(held.total() <= max_memory, "{held:?}");
        assert!(held.laps_trimmed > 0, "{held:?}");
        // The first session's laps went first: it is the oldest.
        assert!(sessions.laps(first).unwrap().len() < 90);
        // A frame no larger than the one it replaces is still taken; a larger one not.
        let id = ids[1];
        let small = Bytes::from_static(b"{\"lap\": 3}");
        assert!(sessions.update_telemetry(id, small.clone(), None).is_ok());
        let before = sessions.get(ids[2]).unwrap().telemetry.unwrap().body;
        let larger = Bytes::from(format!(
            "{{\"lap\": 3, \"pad\": \"{}\"}}",
            "x".repeat(before.len() + 256 * 1024)
        ));
        let refused = sessions
            .update_telemetry(ids[2], larger, None)
            .expect_err("a larger frame past the budget");
        assert_eq!(refused.reason(), "over_budget", "{refused}");
        assert_eq!(
            sessions.get(ids[2]).unwrap().telemetry.unwrap().body,
            before
        );
        let load = sessions.load();
        assert!(load.held.total() <= max_memory);
        // Ending and forgetting sessions gives the memory back.
        for id in &ids {
            sessions.delete(*id).unwrap();
        }
        assert!(sessions.held().total() > 0, "the archive holds them");
        sessions.prune_ended(Utc::now() + chrono::Duration::seconds(1));
        assert_eq!(
            sessions.held(),
            Held {
                laps_trimmed: held.laps_trimmed.max(sessions.held().laps_trimmed),
                ..Held::default()
            }
        );
        assert!(sessions.create().is_ok());
    }
}
