//! Every NATS subject paddock uses, in one place.
//!
//! Nothing else in the crate formats subject strings by hand: when a subject changes,
//! it changes here, and the README's contract table is checked against this file.
//!
//! Two namespaces that never overlap:
//! - `session.<id>.…` carries one session's data. Monitors publish `setup` and
//!   `telemetry`; the processor announces lifecycle events on `events.<kind>`. A
//!   dashboard subscribes to `session.<id>.>` and sees exactly that session.
//! - `sessions.…` is the control plane: the micro service's endpoints and the
//!   service-wide lifecycle feed. A dashboard's `session.<id>.>` never matches it, so
//!   no dashboard sees other clients' requests.

use crate::protocol::id::SessionId;

/// Name of the NATS micro service (discoverable via `$SRV.PING.sessions`).
pub const SERVICE_NAME: &str = "sessions";
/// First token of every control subject; the micro service's endpoint group.
pub const CONTROL_PREFIX: &str = "sessions";

/// Endpoint names inside the `sessions` group: `sessions.create` and so on.
pub const CREATE: &str = "create";
pub const GET: &str = "get";
pub const LIST: &str = "list";
pub const DELETE: &str = "delete";
pub const STATS: &str = "stats";
pub const ARCHIVE_LIST: &str = "archive.list";
pub const ARCHIVE_GET: &str = "archive.get";
pub const LAPS: &str = "laps";
pub const ARCHIVE_LAPS: &str = "archive.laps";

/// `sessions.get.<id>`: the same as `sessions.get`, with the id in the subject, so
/// that broker permissions can allow one session's snapshot and no other.
pub const GET_ONE: &str = "get.*";

/// `sessions.get.<id>`.
pub fn get_one(id: &SessionId) -> String {
    format!("{CONTROL_PREFIX}.{GET}.{id}")
}

/// `sessions.laps.<id>` and `sessions.archive.laps.<id>`: lap history with the id
/// in the subject (the body pages), for the same reason as [`GET_ONE`].
pub const LAPS_ONE: &str = "laps.*";
pub const ARCHIVE_LAPS_ONE: &str = "archive.laps.*";

/// `sessions.laps.<id>`.
pub fn laps_one(id: &SessionId) -> String {
    format!("{CONTROL_PREFIX}.{LAPS}.{id}")
}

/// `sessions.archive.laps.<id>`.
pub fn archive_laps_one(id: &SessionId) -> String {
    format!("{CONTROL_PREFIX}.{ARCHIVE_LAPS}.{id}")
}

/// Endpoints with the session id as the subject's last token: (micro endpoint
/// name, subject pattern in the group, the endpoint it stands for).
pub const ONE_SESSION_ENDPOINTS: [(&str, &str, &str); 3] = [
    ("get-one", GET_ONE, GET),
    ("laps-one", LAPS_ONE, LAPS),
    ("archive-laps-one", ARCHIVE_LAPS_ONE, ARCHIVE_LAPS),
];

/// Every endpoint, in the order `$SRV.INFO` lists them.
pub const ENDPOINTS: [&str; 9] = [
    CREATE,
    GET,
    LIST,
    DELETE,
    STATS,
    ARCHIVE_LIST,
    ARCHIVE_GET,
    LAPS,
    ARCHIVE_LAPS,
];

/// Wildcards the processor subscribes to for monitor data. Two explicit patterns
/// rather than `session.*.>` so the processor never receives its own announcements.
pub const ALL_SETUP: &str = "session.*.setup";
pub const ALL_TELEMETRY: &str = "session.*.telemetry";

const DATA_PREFIX: &str = "session.";

/// The kind of monitor data a subject carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    Setup,
    Telemetry,
}

impl DataKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DataKind::Setup => "setup",
            DataKind::Telemetry => "telemetry",
        }
    }
}

/// Lifecycle events the processor announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Created,
    Deleted,
    Expired,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Created => "created",
            Event::Deleted => "deleted",
            Event::Expired => "expired",
        }
    }
}

/// `session.<id>.setup` or `session.<id>.telemetry`.
pub fn data(id: &SessionId, kind: DataKind) -> String {
    format!("{DATA_PREFIX}{id}.{}", kind.as_str())
}

/// `session.<id>.>`: what a dashboard subscribes to for one session.
pub fn session_wildcard(id: &SessionId) -> String {
    format!("{DATA_PREFIX}{id}.>")
}

/// `session.<id>.events.<kind>`: the processor's announcement on the session's own
/// prefix. The `events` token is never a monitor data kind, so it cannot be mistaken
/// for setup or telemetry.
pub fn session_event(id: &SessionId, event: Event) -> String {
    format!("{DATA_PREFIX}{id}.events.{}", event.as_str())
}

/// `session.<id>.lap`: each completed lap of the session, announced once stored.
/// Under the session's prefix, so a dashboard subscribed to `session.<id>.>` gets
/// it; never a monitor data kind.
pub fn session_lap(id: &SessionId) -> String {
    format!("{DATA_PREFIX}{id}.lap")
}

/// `sessions.events.<kind>`: the service-wide lifecycle feed (a session list follows it).
pub fn service_event(event: Event) -> String {
    format!("{CONTROL_PREFIX}.events.{}", event.as_str())
}

/// `sessions.<endpoint>`: a control endpoint's full subject.
pub fn control(endpoint: &str) -> String {
    format!("{CONTROL_PREFIX}.{endpoint}")
}

/// Splits `session.<id>.<kind>` into its raw id token and kind, without allocating.
/// The id token is returned unvalidated: the caller decides how to treat a bad one.
pub fn parse_data(subject: &str) -> Option<(&str, DataKind)> {
    let rest = subject.strip_prefix(DATA_PREFIX)?;
    let (id, kind) = rest.rsplit_once('.')?;
    let kind = match kind {
        "setup" => DataKind::Setup,
        "telemetry" => DataKind::Telemetry,
        _ => return None,
    };
    Some((id, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_subjects_round_trip() {
        let id = SessionId::new_v4();
        let subject = data(&id, DataKind::Telemetry);
        assert_eq!(
            parse_data(&subject),
            Some((id.to_string().as_str(), DataKind::Telemetry))
        );
        let subject = data(&id, DataKind::Setup);
        assert_eq!(parse_data(&subject).map(|(_, k)| k), Some(DataKind::Setup));
    }

    #[test]
    fn announcements_are_not_data() {
        let id = SessionId::new_v4();
        assert_eq!(parse_data(&session_event(&id, Event::Deleted)), None);
        assert!(session_event(&id, Event::Deleted).starts_with(&format!("session.{id}.")));
        assert_eq!(parse_data("sessions.get"), None);
        assert_eq!(parse_data(&session_lap(&id)), None);
        assert!(session_lap(&id).starts_with(&format!("session.{id}.")));
    }

    #[test]
    fn control_subjects_never_match_a_session_prefix() {
        assert!(!control(GET).starts_with(DATA_PREFIX));
        assert!(!service_event(Event::Created).starts_with(DATA_PREFIX));
    }
}
