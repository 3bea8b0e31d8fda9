//! What is checked before a frame or a create is taken: the session's
//! `--max-frame-rate` allowance (before the frame is even validated) and the
//! capacity and memory left for a new session.

use super::budget::{Allowance, Budgets};
use super::error::SessionError;
use super::map::{Sessions, State};
use super::session::Session;
use crate::protocol::id::SessionId;

impl Sessions {
    /// Takes one of the session's `--max-frame-rate` frames, before the frame is
    /// validated: the cheapest check first, so a flood is shed at the cost of a
    /// lookup. Unknown ids pass (creating on demand has limits of its own).
    pub fn admit(&self, id: SessionId, now: tokio::time::Instant) -> Result<(), SessionError> {
        let Budgets {
            frame_rate,
            frame_burst,
            ..
        } = self.budgets;
        self.take_allowance(id, now, (frame_rate, frame_burst), |s| {
            &mut s.frame_allowance
        })
    }

    /// Takes one of the session's `--max-field-rate` fields: a rate of its own,
    /// so the field neither spends the frames' allowance nor floods under it.
    pub fn admit_field(
        &self,
        id: SessionId,
        now: tokio::time::Instant,
    ) -> Result<(), SessionError> {
        let Budgets {
            field_rate,
            field_burst,
            ..
        } = self.budgets;
        self.take_allowance(id, now, (field_rate, field_burst), |s| {
            &mut s.field_allowance
        })
    }

    /// Spends one token of the allowance `which` picks, at `rate` a second up
    /// to `burst` (no limit at a rate of 0); a refusal is counted.
    fn take_allowance(
        &self,
        id: SessionId,
        now: tokio::time::Instant,
        (rate, burst): (f32, f32),
        which: impl FnOnce(&mut Session) -> &mut Allowance,
    ) -> Result<(), SessionError> {
        if rate <= 0.0 {
            return Ok(());
        }
        let mut state = self.lock();
        let Some(session) = state.live.get_mut(&id) else {
            return Ok(());
        };
        which(session)
            .take(rate, burst.max(1.0), now)
            .map_err(|retry| {
                session.stats.rate_limited_count += 1;
                SessionError::FrameRate {
                    id,
                    rate: rate.round() as u32,
                    retry,
                }
            })
    }

    pub(super) fn check_capacity(&self, state: &State) -> Result<(), SessionError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    use crate::server::sessions::{OnDemand, OnDemandLimit};

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
    async fn the_field_has_a_rate_of_its_own() {
        let sessions = Sessions::with_limits(
            10,
            Budgets {
                frame_rate: 10.0,
                frame_burst: 1.0,
                field_rate: 2.0,
                field_burst: 4.0,
                ..Budgets::UNLIMITED
            },
            OnDemand::UNLIMITED,
        );
        let id = sessions.create().unwrap().session_id;
        let now = tokio::time::Instant::now();
        // Frames spent to the last one leave the field's allowance whole.
        assert!(sessions.admit(id, now).is_ok());
        assert!(sessions.admit(id, now).is_err());
        let fields = (0..10).filter(|_| sessions.admit_field(id, now).is_ok());
        assert_eq!(fields.count(), 4, "the field's burst");
        let later = now + std::time::Duration::from_secs(1);
        let fields = (0..10).filter(|_| sessions.admit_field(id, later).is_ok());
        assert_eq!(fields.count(), 2, "the field's rate");
        assert_eq!(
            sessions.get(id).unwrap().stats.rate_limited_count,
            1 + 6 + 8
        );
    }
}
