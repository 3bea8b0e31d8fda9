//! The map itself: the live and ended sessions under one lock, and the owner
//! API the NATS handlers call (`create`, `get`, `update_setup`,
//! `update_telemetry`, `delete`, `list`, ...). The hot path is `update`: one
//! hash lookup per frame.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::budget::{Budgets, OnDemand};
use super::error::{OnDemandLimit, SessionError};
use super::frame::{Frame, Now, Slot, frame_len};
use super::session::{Ended, Session, Snapshot};
use crate::protocol::documents::{EndReason, Label, SessionSummary as Summary};
use crate::protocol::id::SessionId;
use crate::server::laps::LapRecord;

/// The session map's load, as `sessions.stats` and `/metrics` report it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub live: usize,
    /// Telemetry frames per second across sessions, recently.
    pub rate_hz: f32,
    /// Lap records held, live and ended sessions' ([`Held::lap_records`]).
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
    pub(super) fn forget_live(&mut self, session: &Session) {
        self.frames -= session.frame_bytes();
        self.laps -= session.laps.bytes();
        self.lap_records -= session.laps.len();
    }

    /// An ended session leaves the archive.
    pub(super) fn forget_ended(&mut self, ended: &Ended) {
        self.frames -= ended.frame_bytes();
        self.laps -= ended.laps.bytes();
        self.lap_records -= ended.laps.len();
    }
}

#[derive(Debug, Default)]
pub(super) struct State {
    /// Live sessions by id.
    pub(super) live: HashMap<SessionId, Session>,
    /// Ids of sessions changed since they were last persisted, each listed once:
    /// the write-behind flush takes them all at once instead of scanning the map.
    pub(super) dirty: std::collections::VecDeque<SessionId>,
    /// Sessions that ended (deleted or expired), kept for the archive retention.
    /// Data still arriving for them is refused, so a monitor left running cannot
    /// silently resurrect a session that ended.
    pub(super) ended: HashMap<SessionId, Ended>,
    /// The per-minute budget of sessions created on demand (`None`: no limit).
    pub(super) on_demand_budget: Option<crate::server::ratelimit::TokenBucket>,
    /// What every session holds together, kept as frames and laps come and go.
    pub(super) held: Held,
    /// Every lap record kept, live or ended, in the order they were kept: the
    /// oldest across sessions go first when `--max-memory` is reached. Entries
    /// whose record left already (its history's own limits) are skipped, and
    /// compacted away when they outnumber the records.
    pub(super) lap_order: std::collections::VecDeque<(SessionId, u64)>,
    /// Telemetry frames a second over every session, kept as they come, so
    /// `sessions.stats` and `/metrics` read it without visiting each session
    /// under the map's lock (at 100,000 sessions a poll every few
    /// milliseconds held ingest up).
    pub(super) telemetry_rate: Option<super::rate::RateWindow>,
}

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
    pub(super) state: Mutex<State>,
    /// Cap on live sessions: past it, creation answers 503 instead of growing memory.
    pub(super) max_sessions: usize,
    /// What each session, and all of them, may cost.
    pub(super) budgets: Budgets,
    /// What frames to unknown ids may create.
    pub(super) on_demand: OnDemand,
}

impl State {
    pub(super) fn mark_dirty(&mut self, id: SessionId) {
        if let Some(session) = self.live.get_mut(&id)
            && !session.dirty
        {
            session.dirty = true;
            self.dirty.push_back(id);
        }
    }
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
        self.replace_at(id, body, now, Slot::Setup)
    }

    /// Stores a setup or a field: the latest replaces the one before, and
    /// nothing else of the session changes but its counters.
    fn replace_at(
        &self,
        id: SessionId,
        body: Bytes,
        now: Now,
        slot: Slot,
    ) -> Result<Applied, SessionError> {
        let size = body.len();
        self.update(id, now, (size, slot), |session, at| {
            let (kept, count) = match slot {
                Slot::Setup => (&mut session.setup, &mut session.stats.setup_count),
                Slot::Field => (&mut session.field, &mut session.stats.field_count),
                Slot::Telemetry => (&mut session.telemetry, &mut session.stats.telemetry_count),
            };
            *kept = Some(Frame { body, at });
            *count += 1;
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

    /// Stores the latest field (every car on track), already checked against
    /// its schema (protocol/field.rs). Like telemetry, a well-formed unknown id
    /// is created on demand and an ended one refused.
    pub fn update_field_at(
        &self,
        id: SessionId,
        body: Bytes,
        now: Now,
    ) -> Result<Applied, SessionError> {
        self.replace_at(id, body, now, Slot::Field)
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

    /// How many live sessions `which` picks, without building their rows.
    pub fn count_where(&self, mut which: impl FnMut(&SessionId) -> bool) -> usize {
        self.lock().live.keys().filter(|id| which(id)).count()
    }

    /// How many sessions are live, their telemetry rate together, and what all
    /// sessions hold against the budget: what `sessions.stats` reports.
    pub fn load(&self) -> Load {
        let state = self.lock();
        let now = tokio::time::Instant::now();
        Load {
            live: state.live.len(),
            rate_hz: state.telemetry_rate.map_or(0.0, |r| r.current(now)),
            lap_records: state.held.lap_records,
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
            Slot::Field => &session.field,
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
        if matches!(slot, Slot::Telemetry) {
            state
                .telemetry_rate
                .get_or_insert_with(|| super::rate::RateWindow::new(instant))
                .record(instant);
        }
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

    pub(super) fn missing(state: &State, id: SessionId) -> SessionError {
        if let Some(ended) = state.ended.get(&id) {
            SessionError::Ended(id, ended.reason)
        } else {
            SessionError::NotFound(id)
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated (every
        // mutation is a single insert or field store), so a poisoned lock is still
        // safe to use; refusing service for the rest of a race would be worse.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    use crate::server::sessions::test_support::{doc, session_with};

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
}
