//! The processor's state and limits, shared by the control plane (`control.rs`) and
//! the data path (`ingest.rs`). Neither knows about NATS: they take bytes and return
//! replies, so they are unit-tested without a broker, and `processor.rs` only wires
//! them to subscriptions.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::protocol::documents;
use crate::protocol::id::SessionId;
use crate::protocol::subjects::Event;
use crate::server::metrics::Metrics;
use crate::server::sessions::{Sessions, Snapshot};

/// Limits the operator sets (see `paddock serve --help`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request or frame accepted, in bytes. Kept below the broker's
    /// max_payload so paddock, not the broker, answers with a clear 413.
    pub max_payload: usize,
    /// Most live sessions; past it, creation answers 503.
    pub max_sessions: usize,
    /// Bytes of frames waiting for the processor (`--ingest-buffer-bytes`,
    /// server/intake.rs); past it, frames are dropped and counted.
    pub ingest_buffer_bytes: usize,
    /// Sessions one client may create per minute (0: no limit); past it, 429.
    pub creates_per_minute: u32,
    /// The telemetry field whose change completes a lap (`None`: no lap history).
    pub lap_field: Option<crate::protocol::payload::Pointer>,
    /// What each session, and all of them together, may cost: frame and lap
    /// rates, each lap history's laps and bytes, and `--max-memory`.
    pub budgets: crate::server::sessions::Budgets,
    /// What frames to unknown ids may create.
    pub on_demand: crate::server::sessions::OnDemand,
    /// How long issued per-session credentials work unless renewed: the bound on
    /// how long an ended session's credentials keep working.
    pub credentials_ttl: std::time::Duration,
    /// Laps of fuel the strategy keeps in hand at the finish (`fuel_to_add`);
    /// fewer in the tank is the `pit_overdue` alert.
    pub fuel_reserve_laps: f64,
    /// s a stop costs until a car has stopped once (`--pit-loss`).
    pub pit_loss: f64,
    /// When alerts are raised (`--alert-*`).
    pub alerts: crate::server::alerts::Thresholds,
    /// A team's own thresholds (`--team-alerts`), for sessions labelled with it.
    pub team_alerts: std::collections::HashMap<String, crate::server::alerts::Thresholds>,
    /// Shared links held at most (`--max-links`); past it a new one is refused.
    pub max_links: usize,
}

impl Limits {
    /// The thresholds a session of `team` is held to.
    pub fn alerts_for(&self, team: Option<&str>) -> &crate::server::alerts::Thresholds {
        team.and_then(|t| self.team_alerts.get(t))
            .unwrap_or(&self.alerts)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload: 64 * 1024,
            max_sessions: 10_000,
            ingest_buffer_bytes: DEFAULT_INGEST_BUFFER_BYTES,
            creates_per_minute: 600,
            lap_field: Some(
                crate::protocol::payload::Pointer::parse("/lap").expect("a valid pointer"),
            ),
            budgets: Default::default(),
            on_demand: crate::server::sessions::OnDemand {
                per_minute: DEFAULT_ON_DEMAND_PER_MINUTE,
                max_live: 10_000 * DEFAULT_ON_DEMAND_SHARE_PERCENT / 100,
            },
            credentials_ttl: DEFAULT_CREDENTIALS_TTL,
            fuel_reserve_laps: 1.0,
            pit_loss: crate::server::rejoin::DEFAULT_PIT_LOSS_S,
            alerts: Default::default(),
            team_alerts: Default::default(),
            max_links: crate::server::links::DEFAULT_MAX_LINKS,
        }
    }
}

/// `--ingest-buffer-bytes` at the default `--max-memory` (a quarter of it).
pub const DEFAULT_INGEST_BUFFER_BYTES: usize = 256 * 1024 * 1024;

/// `--ingest-buffer-bytes` unless given: a quarter of `--max-memory`.
pub fn default_ingest_buffer_bytes(max_memory: usize) -> usize {
    max_memory / 4
}

/// How long per-session credentials work unless renewed, by default.
pub const DEFAULT_CREDENTIALS_TTL: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Sessions frames may create per minute by default: a restarted processor that
/// lost its state (memory store) gets 600 monitors back within a minute.
pub const DEFAULT_ON_DEMAND_PER_MINUTE: u32 = 600;
/// Of `--max-sessions`, the share (percent) frames may fill by default; the rest is
/// kept for `sessions.create`.
pub const DEFAULT_ON_DEMAND_SHARE_PERCENT: usize = 50;

/// Everything a handler needs. Shared as `Arc<App>`.
#[derive(Debug)]
pub struct App {
    pub sessions: Sessions,
    pub metrics: Metrics,
    pub limits: Limits,
    /// Issues each new session's credentials, when the broker runs in operator
    /// mode and the processor was given a signing key (`--issuer-*`).
    pub issuer: Option<crate::server::credentials::Issuer>,
    /// The partitions this processor owns (`--partitions`, `--owns`): only their
    /// sessions are held here.
    pub partitions: crate::server::partitions::Partitions,
    /// Each session's active alerts, checked once a second by the processor.
    pub alerts: std::sync::Mutex<crate::server::alerts::Board>,
    /// The shared links and which are withdrawn (server/links.rs).
    pub links: crate::server::links::Links,
}

impl App {
    pub fn new(limits: Limits) -> Self {
        App {
            sessions: Sessions::with_limits(
                limits.max_sessions,
                crate::server::sessions::Budgets {
                    // A session's two frames, each up to --max-payload.
                    session_reserve: 3 * limits.max_payload,
                    ..limits.budgets
                },
                limits.on_demand,
            ),
            metrics: Metrics::default(),
            issuer: None,
            partitions: Default::default(),
            alerts: Default::default(),
            links: crate::server::links::Links::new(limits.max_links),
            limits,
        }
    }

    /// The alerts board (one lock; a panic elsewhere never takes it down).
    pub fn alert_board(&self) -> std::sync::MutexGuard<'_, crate::server::alerts::Board> {
        self.alerts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn with_issuer(limits: Limits, issuer: Option<crate::server::credentials::Issuer>) -> Self {
        App {
            issuer,
            ..App::new(limits)
        }
    }
}

/// Something the processor announces after a change: published on the session's own
/// prefix and on the service-wide lifecycle feed.
#[derive(Debug, Clone)]
pub struct Announcement {
    pub session_id: SessionId,
    pub event: Event,
    pub body: Bytes,
}

impl Announcement {
    /// `via` says what caused it: `request` (sessions.create / delete) or `data` (a
    /// frame for a well-formed unknown id created the session on demand).
    pub fn new(
        session_id: SessionId,
        event: Event,
        at: DateTime<Utc>,
        via: &str,
        session: Option<&Snapshot>,
    ) -> Self {
        let body = documents::Announcement {
            event: event.as_str().to_string(),
            session_id,
            at,
            via: via.to_string(),
            session: session.map(Snapshot::document),
        };
        Announcement {
            session_id,
            event,
            body: serde_json::to_vec(&body).expect("serializes").into(),
        }
    }
}
