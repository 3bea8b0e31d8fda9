//! The errors a client can cause, and how each one is answered.
//!
//! Every refusal maps to a micro error code and a one-line reason, sent both as the
//! `Nats-Service-Error-Code` / `Nats-Service-Error` headers (what `nats req` and the
//! micro clients read) and as a JSON body `{"error": …, "code": …, "reason": …}`
//! (what a plain client reads; `reason` is a stable label for programs).

use async_nats::HeaderMap;
use async_nats::service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use bytes::Bytes;

use crate::protocol::documents::ErrorBody;
use crate::protocol::id::MalformedId;
use crate::protocol::payload::PayloadError;
use crate::server::sessions::SessionError;

/// A request the service refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The request body is JSON but not the shape the endpoint takes.
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Id(#[from] MalformedId),
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Storage could not record the change, so it is not acknowledged.
    #[error("{0}; retry shortly")]
    Unavailable(String),
    /// With partitions: the partition the request needs has no processor that
    /// answers (none owns it, or its owner did not answer in time).
    #[error("{0}; retry shortly")]
    PartitionUnavailable(String),
    /// A team link asked for a car of another team (`sessions.team`).
    #[error("no live session {id} in team {team}")]
    NotInTeam {
        id: crate::protocol::id::SessionId,
        team: String,
    },
    /// A shared link's request refused: withdrawn, unknown, too many, or an
    /// old team link without an id (server/links.rs).
    #[error(transparent)]
    Link(#[from] crate::server::links::LinkError),
    /// A lap the session does not have, or whose frames are not recorded.
    #[error("{0}")]
    UnknownLap(String),
    /// No trace recording to read (`--store memory`, or the stream unreadable).
    #[error("{0}")]
    NoRecording(String),
    /// What these credentials may not read (another session's laps).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// An answer larger than the endpoint gives (a trace of too many points).
    #[error("too large: {0}")]
    TooLarge(String),
    /// This client asked for too much of something in the last minute.
    #[error("too many {what} by this client; retry in {:.1} s", retry_after.as_secs_f64())]
    RateLimited {
        what: &'static str,
        retry_after: std::time::Duration,
    },
}

impl ServiceError {
    /// The micro error code.
    pub fn code(&self) -> u16 {
        match self {
            ServiceError::BadRequest(_)
            | ServiceError::Id(_)
            | ServiceError::Session(SessionError::BadLabel(_)) => 400,
            ServiceError::Payload(PayloadError::TooLarge { .. }) => 413,
            ServiceError::Payload(_) => 400,
            ServiceError::Session(
                SessionError::NotFound(_) | SessionError::Ended(..) | SessionError::NotArchived(_),
            ) => 404,
            ServiceError::NotInTeam { .. } | ServiceError::UnknownLap(_) => 404,
            ServiceError::NoRecording(_) => 503,
            ServiceError::TooLarge(_) => 413,
            ServiceError::Forbidden(_) => 403,
            ServiceError::Session(SessionError::AtCapacity { .. }) => 503,
            ServiceError::Session(SessionError::OnDemandLimited { .. }) => 429,
            ServiceError::Session(SessionError::FrameRate { .. }) => 429,
            ServiceError::Session(SessionError::OverBudget { .. }) => 503,
            ServiceError::Unavailable(_) | ServiceError::PartitionUnavailable(_) => 503,
            ServiceError::RateLimited { .. } => 429,
            ServiceError::Link(e) => e.code(),
        }
    }

    /// A short stable label for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            ServiceError::BadRequest(_) => "bad_request",
            ServiceError::Payload(e) => e.reason(),
            ServiceError::Id(_) => "malformed_id",
            ServiceError::Session(e) => e.reason(),
            ServiceError::Unavailable(_) => "storage_unavailable",
            ServiceError::PartitionUnavailable(_) => "partition_unavailable",
            ServiceError::RateLimited { .. } => "rate_limited",
            ServiceError::NotInTeam { .. } => "not_in_team",
            ServiceError::UnknownLap(_) => "unknown_lap",
            ServiceError::NoRecording(_) => "no_recording",
            ServiceError::TooLarge(_) => "too_large",
            ServiceError::Forbidden(_) => "forbidden",
            ServiceError::Link(e) => e.reason(),
        }
    }

    /// The micro error headers.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        // Header values must be one line; reasons are built to be, but a serde
        // message quoting hostile input could carry a newline, so fold it.
        let status = self.to_string().replace(['\r', '\n'], " ");
        headers.insert(NATS_SERVICE_ERROR, status.as_str());
        headers.insert(NATS_SERVICE_ERROR_CODE, self.code().to_string().as_str());
        headers
    }

    /// The JSON error body.
    pub fn body(&self) -> Bytes {
        serde_json::to_vec(&ErrorBody {
            error: self.to_string(),
            code: self.code(),
            reason: Some(self.reason().to_string()),
        })
        .expect("an error body always serializes")
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::id::SessionId;

    #[test]
    fn codes_follow_the_contract() {
        let id = SessionId::new_v4();
        assert_eq!(
            ServiceError::from(SessionId::parse("x").unwrap_err()).code(),
            400
        );
        assert_eq!(ServiceError::from(PayloadError::Empty).code(), 400);
        assert_eq!(
            ServiceError::from(PayloadError::TooLarge { size: 2, limit: 1 }).code(),
            413
        );
        assert_eq!(ServiceError::from(SessionError::NotFound(id)).code(), 404);
        assert_eq!(
            ServiceError::from(SessionError::Ended(
                id,
                crate::server::sessions::EndReason::Expired
            ))
            .code(),
            404
        );
        assert_eq!(
            ServiceError::from(SessionError::AtCapacity { limit: 1 }).code(),
            503
        );
    }

    #[test]
    fn headers_are_single_line() {
        let err = ServiceError::BadRequest("a\nb\r\nc".into());
        let headers = err.headers();
        let status = headers.get(NATS_SERVICE_ERROR).unwrap().as_str();
        assert!(
            !status.contains('\n') && !status.contains('\r'),
            "{status:?}"
        );
        assert_eq!(
            headers.get(NATS_SERVICE_ERROR_CODE).unwrap().as_str(),
            "400"
        );
    }
}
