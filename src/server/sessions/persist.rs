//! The write-behind's side of the map: which sessions changed since they were
//! last written, taken in turn, and marked again when a write fails.

use super::map::Sessions;
use super::session::Snapshot;
use crate::protocol::id::SessionId;

impl Sessions {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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
}
