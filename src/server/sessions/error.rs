//! Why a session operation was refused: one enum for the map's callers, each
//! variant with a `reason` label that counters and clients match on.

use crate::protocol::documents::EndReason;
use crate::protocol::id::SessionId;

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
    /// ([`OnDemand`](super::OnDemand)): a flood of made-up ids must not crowd out real sessions.
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
