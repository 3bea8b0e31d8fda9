//! The lap records each session keeps: read back, restored from storage and
//! adopted from peers, and trimmed across sessions, oldest first, when what the
//! sessions hold passes `--max-memory`.

use super::error::SessionError;
use super::map::{Sessions, State};
use crate::protocol::id::SessionId;
use crate::server::laps::{self, LapRecord};

impl Sessions {
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

    /// Brings what the sessions hold back within `--max-memory` by dropping lap
    /// records, oldest first across sessions (live and ended). Frames are never
    /// dropped here: their growth is refused instead (see `update`).
    pub(super) fn budgets_enforced(&self, state: &mut State) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chrono::Utc;

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
}
