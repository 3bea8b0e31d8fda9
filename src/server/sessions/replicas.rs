//! Copies of sessions held elsewhere: restored from storage at start, and
//! another processor's stored copies and ends adopted or followed, so every
//! replica converges on what was acknowledged (docs/ARCHITECTURE.md "Several
//! processors").

use chrono::{DateTime, Utc};

use super::frame::{Frame, frame_len};
use super::map::Sessions;
use super::session::{Ended, Session, Snapshot};
use crate::protocol::documents::Label;

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

impl Sessions {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    use crate::server::sessions::test_support::{doc, session_with};

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
}
