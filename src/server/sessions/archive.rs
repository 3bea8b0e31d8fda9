//! Sessions that ended: idle expiry, and the archive kept for the retention
//! (`sessions.archive.*`). Deletes are the owner API's (map.rs).

use chrono::{DateTime, Utc};

use super::map::Sessions;
use super::session::Ended;
use crate::protocol::documents::EndReason;
use crate::protocol::id::SessionId;

impl Sessions {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    use crate::server::sessions::SessionError;

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
}
