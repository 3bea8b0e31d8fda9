//! Every document on the wire, typed. The processor serializes these and the
//! clients (`paddock sessions`, `watch`, `monitor`) deserialize them, so both
//! sides agree by construction; docs/PROTOCOL.md shows them as JSON.
//!
//! Documents that carry monitor frames are generic over the frame's type `F`: the
//! processor writes frames it holds as bytes (`&RawValue`, exactly as sent, no
//! re-serialisation), storage reads them back as `Box<RawValue>`, and a client that
//! looks inside a frame reads it as a `serde_json::Value`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::id::SessionId;

/// A frame exactly as the monitor sent it, owned.
pub type RawFrame = Box<RawValue>;

/// Times on the wire: RFC 3339 in UTC with microseconds and `Z` — precise enough
/// to order frames, and parsed by every client we know of (JavaScript's `Date`,
/// Python's `fromisoformat`).
pub mod time {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn format(t: &DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(d)
    }

    /// The same for an optional time (`null` when absent).
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<DateTime<Utc>>::deserialize(d)
        }
    }
}

/// Counts held as `f64` (a lap, a position, laps in a stint: read from frames,
/// where any number may come): written as JSON integers when they are whole,
/// so `17` stays `17` on the wire, not `17.0`, and as numbers otherwise.
pub mod integral {
    use serde::Serializer;

    /// Whole numbers up to 2^53 (exact in an `f64`, and in JavaScript).
    const EXACT: f64 = 9_007_199_254_740_992.0;

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match *v {
            Some(v) if v.fract() == 0.0 && v.abs() <= EXACT => s.serialize_i64(v as i64),
            Some(v) => s.serialize_f64(v),
            None => s.serialize_none(),
        }
    }
}

/// One session: what `sessions.get` and `sessions.create` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionDocument<F = RawFrame> {
    pub session_id: SessionId,
    /// The team and car labels given at create (absent in documents stored
    /// before labels, hence the defaults).
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub car: Option<String>,
    /// When `sessions.label` last changed them; absent while they are as created.
    #[serde(
        default,
        with = "time::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub labelled_at: Option<DateTime<Utc>>,
    #[serde(with = "time")]
    pub created_at: DateTime<Utc>,
    /// The latest setup exactly as sent.
    pub setup: Option<F>,
    #[serde(with = "time::option")]
    pub setup_timestamp: Option<DateTime<Utc>>,
    /// The latest telemetry frame exactly as sent.
    pub telemetry: Option<F>,
    /// The latest field (every car on track, protocol/field.rs) exactly as
    /// sent. Absent until a monitor sent one (most sims send no field), so a
    /// session without one reads as it did before there were fields.
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub field: Option<F>,
    #[serde(
        default,
        with = "time::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub field_timestamp: Option<DateTime<Utc>>,
    /// When setup or telemetry last arrived (`created_at` until then).
    #[serde(with = "time")]
    pub last_update: DateTime<Utc>,
    pub stats: SessionStats<F>,
    /// A new session's credentials, when the processor issues them (create only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
    /// Fuel to the finish (`sessions.get` of a live session with laps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// The active alerts (`sessions.get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Vec<Alert>>,
    /// Where a stop now rejoins (`sessions.get` of a session with a field
    /// that names its own car).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejoin: Option<Rejoin>,
}

/// Where a stop now rejoins, from the field and the car's pit loss
/// (docs/PROTOCOL.md "Where a stop rejoins").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejoin {
    /// s a stop costs: the mean of the car's measured stops, else the default.
    pub pit_loss: f64,
    /// `stops` (measured) or `default` (`serve --pit-loss`).
    pub pit_loss_from: String,
    /// Stops the loss was measured from.
    pub stops_measured: u32,
    /// The position a stop now comes out in.
    pub position: u16,
    /// The car it comes out behind, and by how much (s).
    pub ahead: Option<RejoinCar>,
    /// The car it comes out ahead of, and by how much (s).
    pub behind: Option<RejoinCar>,
    /// The car behind now, and its gap (s).
    pub gap_behind_now: Option<RejoinCar>,
    /// The gap to the car behind is more than a stop costs: a stop now keeps
    /// the place (the `undercut_window` alert).
    pub undercut_window: Option<bool>,
    /// `stop now: rejoin P7, 2.1 s behind #44`.
    pub message: String,
}

/// A car beside the rejoin, from the field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejoinCar {
    pub index: u16,
    pub race_number: Option<u32>,
    pub driver: Option<String>,
    /// s between it and the car.
    pub gap: f64,
}

/// A session's counters and its running lap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStats<F = RawFrame> {
    pub telemetry_count: u64,
    pub setup_count: u64,
    /// Frames refused as invalid (the last good state was kept).
    pub rejected_count: u64,
    /// Frames refused for coming faster than the processor's `--max-frame-rate`.
    #[serde(default)]
    pub rate_limited_count: u64,
    /// Frames dropped unread because the processor's ingest queue was full
    /// (`--ingest-buffer-bytes`).
    #[serde(default)]
    pub dropped_count: u64,
    /// Laps completed faster than `--max-lap-rate`, whose records were not kept.
    #[serde(default)]
    pub laps_dropped: u64,
    /// Fields accepted (`session.<id>.field`); absent while none was.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub field_count: u64,
    #[serde(with = "time::option")]
    pub first_frame_at: Option<DateTime<Utc>>,
    #[serde(with = "time::option")]
    pub last_frame_at: Option<DateTime<Utc>>,
    /// From creation to the last setup or frame, in seconds.
    pub duration_s: f64,
    /// Telemetry frames per second recently.
    pub rate_hz: f32,
    // Lap history; absent in documents stored before it, hence the defaults.
    /// Completed laps kept (`sessions.laps`).
    #[serde(default)]
    pub laps: usize,
    /// Laps completed in all (more than `laps` once the oldest were dropped).
    #[serde(default)]
    pub laps_completed: u64,
    /// The running lap's value at the lap field.
    #[serde(default = "none")]
    pub current_lap: Option<F>,
    #[serde(default, with = "time::option")]
    pub current_lap_started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub current_lap_frames: u64,
    /// Whether a frame of the running lap said `"in_pits": true`.
    #[serde(default)]
    pub current_lap_pitted: bool,
}

fn none<F>() -> Option<F> {
    None
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// Fresh credentials for one role of a session: the reply of
/// `sessions.renew.monitor.<id>` and `sessions.renew.dashboard.<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewed {
    pub session_id: SessionId,
    /// `monitor` or `dashboard`.
    pub role: String,
    /// The `.creds` document.
    pub creds: String,
    pub inbox_prefix: String,
    /// When these credentials stop working unless renewed again.
    #[serde(with = "time")]
    pub expires_at: DateTime<Utc>,
}

/// A team link's request: `sessions.team {"team": …}` (ops), or
/// `sessions.team.<team token>` with `{}` or `{"session_id": …}` (the link's
/// holder; the processor reads the team from the subject).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamRequest {
    pub team: String,
    /// One of the team's cars: its page's credentials instead of the team's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
}

/// A team link's credentials (per-session mode), the reply of `sessions.team`:
/// the team's (the tower, and asking again), or, with `session_id`, those of
/// the car page opened from it (the team's and that car's session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamAccess {
    pub team: String,
    /// The link these credentials belong to (`sessions.renew.link.<link>`);
    /// absent from a processor older than links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<crate::protocol::id::LinkId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// The `.creds` document.
    pub creds: String,
    pub inbox_prefix: String,
    /// When these credentials stop working unless asked for again.
    #[serde(with = "time")]
    pub expires_at: DateTime<Utc>,
}

/// What a shared link opens: a team's page (and its cars' pages), or one
/// session's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    Team,
    Session,
}

/// A shared link (docs/SECURITY.md, "Taking a link back"), as the processors
/// keep it in the links bucket and `sessions.links` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub link: crate::protocol::id::LinkId,
    pub kind: LinkKind,
    /// A team link's team.
    #[serde(default)]
    pub team: Option<String>,
    /// A session link's session.
    #[serde(default)]
    pub session_id: Option<SessionId>,
    #[serde(with = "time")]
    pub created_at: DateTime<Utc>,
    /// When its holder last renewed it (`null`: never yet).
    #[serde(default, with = "time::option")]
    pub renewed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub renewals: u64,
    /// When the latest credentials issued for it stop working: past this the
    /// link is dead whether withdrawn or not, and is forgotten.
    #[serde(with = "time")]
    pub expires_at: DateTime<Utc>,
    /// When it was withdrawn (`sessions.revoke`); renewals are refused from then.
    #[serde(default, with = "time::option")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A link's credentials: the reply of `sessions.share` (a new session link)
/// and `sessions.renew.link` (any link, renewed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkAccess {
    pub link: crate::protocol::id::LinkId,
    pub kind: LinkKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// The session these credentials read: a session link's, or the car of a
    /// team link's car page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// The `.creds` document.
    pub creds: String,
    pub inbox_prefix: String,
    #[serde(with = "time")]
    pub expires_at: DateTime<Utc>,
}

/// Which links `sessions.links` lists and `sessions.revoke` withdraws: one
/// link, a team's, a session's (at most one of the three; `sessions.links`
/// with none lists them all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinksRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<crate::protocol::id::LinkId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
}

/// The reply of `sessions.links`: the links held, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkList {
    pub count: usize,
    pub links: Vec<Link>,
}

/// The reply of `sessions.revoke`: the links withdrawn by this request (those
/// withdrawn before are not counted again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub revoked: usize,
    pub links: Vec<Link>,
}

/// A session's credentials, issued at `sessions.create` in per-session mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// `.creds` for the monitor: publish into the session only.
    pub monitor: String,
    /// `.creds` for a dashboard: read the session only.
    pub dashboard: String,
    /// The inbox prefix both must use (`_INBOX_<id>`).
    pub inbox_prefix: String,
}

/// Rows in one `sessions.list` reply when the request names no `limit`.
pub const LIST_DEFAULT_LIMIT: usize = 1_000;
/// Most rows in one reply: about 200 bytes each, so a page stays well inside the
/// broker's 1 MB default max_payload.
pub const LIST_MAX_LIMIT: usize = 5_000;

/// The body of `sessions.list` and `sessions.archive.list`: a page, and
/// optionally one team's sessions only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(default)]
    pub offset: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

impl ListRequest {
    /// Where the page starts, and its most rows: `limit` (default
    /// [`LIST_DEFAULT_LIMIT`]) capped at [`LIST_MAX_LIMIT`].
    pub fn bounds(&self) -> (usize, usize) {
        let limit = self
            .limit
            .unwrap_or(LIST_DEFAULT_LIMIT)
            .clamp(1, LIST_MAX_LIMIT);
        (self.offset, limit)
    }

    /// Whether a row of `team` belongs in the reply.
    pub fn wants(&self, team: Option<&str>) -> bool {
        self.team
            .as_deref()
            .is_none_or(|wanted| team == Some(wanted))
    }
}

/// A session's `team` and `car`: short labels for the pit wall, set at create
/// (`sessions.create {"team": "Blue", "car": "#7"}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub car: Option<String>,
}

/// Most characters in a team or car label.
pub const LABEL_MAX_CHARS: usize = 32;

impl Label {
    /// Each label present is 1 to [`LABEL_MAX_CHARS`] characters of letters,
    /// digits, spaces and `# - _ . + & '`, not blank: what a timing tower shows,
    /// and nothing a terminal or a page could take for markup or control.
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in [("team", &self.team), ("car", &self.car)] {
            let Some(value) = value else { continue };
            let chars = value.chars().count();
            if chars == 0 || chars > LABEL_MAX_CHARS || value.trim().is_empty() {
                return Err(format!(
                    "{name} must be 1 to {LABEL_MAX_CHARS} characters, not blank"
                ));
            }
            if let Some(c) = value
                .chars()
                .find(|c| !(c.is_alphanumeric() || " #-_.+&'".contains(*c)))
            {
                return Err(format!(
                    "{name} may hold letters, digits, spaces and # - _ . + & ' only, not {c:?}"
                ));
            }
        }
        Ok(())
    }
}

/// One row of `sessions.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub session_id: SessionId,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub car: Option<String>,
    #[serde(with = "time")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time")]
    pub last_update: DateTime<Utc>,
    pub has_setup: bool,
    pub telemetry_count: u64,
}

/// One page of `sessions.list` or `sessions.archive.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// Rows in all.
    pub total: usize,
    /// Rows in this page.
    pub count: usize,
    /// Where this page starts.
    pub offset: usize,
    /// Where the next page starts; `None` on the last.
    pub next_offset: Option<usize>,
    pub sessions: Vec<T>,
}

impl<T> Page<T> {
    /// The page at `offset` of at most `limit` rows, from `rows` in order (rows
    /// before `offset` included), of `total` rows in all.
    pub fn slice(rows: Vec<T>, total: usize, offset: usize, limit: usize) -> Self {
        let sessions: Vec<T> = rows.into_iter().skip(offset).take(limit).collect();
        let end = offset.saturating_add(sessions.len());
        Page {
            total,
            count: sessions.len(),
            offset,
            next_offset: (end < total).then_some(end),
            sessions,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndReason {
    /// Ops ended it with `sessions.delete`.
    Deleted,
    /// Nothing arrived for `--expire-after`.
    Expired,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Deleted => "deleted",
            EndReason::Expired => "expired",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `sessions.archive.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedSummary {
    pub session_id: SessionId,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub car: Option<String>,
    #[serde(with = "time")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time")]
    pub last_update: DateTime<Utc>,
    #[serde(with = "time")]
    pub ended_at: DateTime<Utc>,
    pub reason: EndReason,
    pub telemetry_count: u64,
}

/// `sessions.archive.get`: when and why a session ended, and its final state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchivedSession<F = RawFrame> {
    pub session_id: SessionId,
    #[serde(with = "time")]
    pub ended_at: DateTime<Utc>,
    pub reason: EndReason,
    pub session: SessionDocument<F>,
}

/// `sessions.delete`'s reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deleted<F = RawFrame> {
    pub deleted: bool,
    pub session_id: SessionId,
    #[serde(with = "time")]
    pub deleted_at: DateTime<Utc>,
    /// The final state.
    pub session: SessionDocument<F>,
}

/// The acknowledgement of a frame sent as a request (a setup, usually).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub ok: bool,
    pub session_id: SessionId,
    /// `setup` or `telemetry`.
    pub kind: String,
    #[serde(with = "time")]
    pub stored_at: DateTime<Utc>,
    /// The frame created the session on demand.
    pub created: bool,
}

/// A lifecycle announcement on `session.<id>.events.<kind>` and
/// `sessions.events.<kind>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announcement<F = RawFrame> {
    /// `created`, `deleted` or `expired`.
    pub event: String,
    pub session_id: SessionId,
    #[serde(with = "time")]
    pub at: DateTime<Utc>,
    /// What caused it: `request`, `data` (created on demand) or `expiry`.
    pub via: String,
    /// The final state, for an end.
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionDocument<F>>,
}

/// `sessions.stats`: service-wide counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub live_sessions: usize,
    /// Telemetry frames per second across live sessions, recently.
    pub ingest_rate_hz: f32,
    pub sessions_created: u64,
    pub sessions_deleted: u64,
    pub sessions_expired: u64,
    pub telemetry_frames: u64,
    pub setup_frames: u64,
    /// Fields stored (`session.<id>.field`); absent while none was.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub field_frames: u64,
    /// Laps completed since this processor started.
    #[serde(default)]
    pub laps_completed: u64,
    /// Lap records the live sessions keep.
    #[serde(default)]
    pub lap_records: usize,
    /// Lap records not kept: completed faster than `--max-lap-rate` (`dropped`),
    /// or trimmed oldest-first to stay within `--max-memory` (`trimmed`).
    #[serde(default)]
    pub laps_dropped: u64,
    #[serde(default)]
    pub laps_trimmed: u64,
    /// Laps dropped from the lap writer's queue before they were stored (the
    /// queue is bounded: storage refused writes for long); kept in memory.
    #[serde(default)]
    pub laps_unstored: u64,
    /// Alert events announced without the once-across-processors check, the
    /// alert writer's queue being full (storage slow for long).
    #[serde(default)]
    pub alerts_unqueued: u64,
    /// Accepted telemetry frames written to the trace stream, and those left
    /// out of it (the trace writer's queue full after a long burst, or the
    /// stream refusing a chunk): a trace shows them as a gap.
    #[serde(default)]
    pub trace_frames_recorded: u64,
    #[serde(default)]
    pub trace_frames_unrecorded: u64,
    /// What the budgets count (docs/SECURITY.md): bytes of frames and lap
    /// records held, and the most they may be (`--max-memory`).
    #[serde(default)]
    pub memory: MemoryStats,
    /// The queue frames wait in for the processor (`--ingest-buffer-bytes`).
    #[serde(default)]
    pub ingest: IngestStats,
    pub rejected_total: u64,
    /// Rejected input by reason (`malformed_json`, `too_large`, …).
    pub rejected: BTreeMap<String, u64>,
}

/// The memory budget's figures, in `sessions.stats` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// Bytes of setups and latest frames (live and archived sessions).
    pub frame_bytes: usize,
    /// Bytes of lap records (live and archived sessions).
    pub lap_bytes: usize,
    /// `--max-memory`.
    pub budget_bytes: usize,
    /// Frames the budget held at the budget: new sessions are refused (503
    /// `over_budget`) while this is true.
    pub over_budget: bool,
}

/// The ingest queue's figures, in `sessions.stats` and `/metrics`: frames wait
/// there between the broker and the processor, bounded in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestStats {
    /// Bytes queued now (payload, subject and a fixed cost per frame).
    pub held_bytes: usize,
    /// The most queued at once since the processor started.
    pub peak_bytes: usize,
    /// `--ingest-buffer-bytes`.
    pub buffer_bytes: usize,
    /// Frames dropped unread because the queue was full.
    pub dropped: u64,
}

/// One completed lap: on `session.<id>.lap` and in `sessions.laps` pages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LapRecord<F = RawFrame> {
    /// The finished lap's value at the lap field.
    pub lap: F,
    /// When the lap's first frame arrived.
    #[serde(with = "time")]
    pub started_at: DateTime<Utc>,
    /// When the next lap's first frame arrived.
    #[serde(with = "time")]
    pub ended_at: DateTime<Utc>,
    pub frames: u64,
    /// The lap's last frame, exactly as sent.
    pub last_frame: F,
    /// The next lap's first frame, exactly as sent.
    pub next_frame: F,
    /// Whether a frame of the lap said `"in_pits": true`.
    #[serde(default)]
    pub pitted: bool,
}

/// One stint of a car: laps between pit stops or driver changes
/// (`sessions.stints.<id>`, docs/PROTOCOL.md "Stints and strategy"). Times
/// are the sim's own (`last_lap_time`, `session_time`), never arrival times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stint {
    /// From 1.
    pub n: u32,
    /// The driver (`player_name`) at the stint's first lap line.
    pub driver: Option<String>,
    /// Lap values at the lap field (numbers where the lap field holds numbers).
    #[serde(serialize_with = "integral::serialize")]
    pub first_lap: Option<f64>,
    #[serde(serialize_with = "integral::serialize")]
    pub last_lap: Option<f64>,
    /// Completed laps in the stint.
    pub laps: u32,
    /// The sim's `session_time` (s) at the line before its first lap and at
    /// its last lap's line, when frames carry it.
    pub start_time_s: Option<f64>,
    pub end_time_s: Option<f64>,
    /// Sum of its laps' times (s).
    pub duration_s: Option<f64>,
    /// Over green laps (no pit in the lap, a time given).
    pub best_lap_time: Option<f64>,
    pub mean_lap_time: Option<f64>,
    pub green_laps: u32,
    /// Fuel burned over its laps that burned fuel (L), and per such lap.
    pub fuel_used: Option<f64>,
    pub fuel_per_lap: Option<f64>,
    /// `pit_stop` (a frame said `in_pits`), `refuel` (fuel went up without
    /// one), `driver_change`, `session_end` (the last stint of an ended
    /// session), or null: the stint runs on.
    pub ended_by: Option<String>,
}

/// `sessions.stints.<id>`: a session's stints, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stints {
    pub session_id: SessionId,
    pub stints: Vec<Stint>,
}

/// Fuel to the finish, in the session document (`strategy`), from the lap
/// history and the latest frame (docs/PROTOCOL.md "Stints and strategy").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Strategy {
    /// L per lap: the mean of this stint's last (up to 5) green laps that
    /// burned fuel, else the session's.
    pub fuel_per_lap: Option<f64>,
    /// Where `fuel_per_lap` came from: `stint` or `session`.
    pub fuel_per_lap_from: Option<String>,
    /// s: the mean of the same laps' times (the race clock's laps).
    pub lap_time: Option<f64>,
    /// `fuel / fuel_per_lap`.
    pub laps_in_tank: Option<f64>,
    /// The frame's `laps_left`, else `ceil(session_time_left / lap_time)`.
    #[serde(serialize_with = "integral::serialize")]
    pub race_laps_left: Option<f64>,
    /// `race_laps_left * fuel_per_lap`.
    pub fuel_to_finish: Option<f64>,
    /// `max(0, fuel_to_finish + reserve_laps * fuel_per_lap - fuel)`.
    pub fuel_to_add: Option<f64>,
    /// What the next stop adds, when the frame has `fuel_capacity`:
    /// `min(fuel_to_add, fuel_capacity - reserve_laps * fuel_per_lap)` (a stop
    /// on the last lap to stop has about the reserve left in the tank).
    #[serde(default)]
    pub next_stop_fuel: Option<f64>,
    /// Stops `fuel_to_add` takes at that fill each:
    /// `ceil(fuel_to_add / (fuel_capacity - reserve_laps * fuel_per_lap))`.
    pub stops_needed: Option<u32>,
    pub reserve_laps: f64,
    /// The last lap the car can stop on keeping the reserve:
    /// `lap + max(0, floor(laps_in_tank - reserve_laps))`, never before the
    /// current lap (inside the reserve: stop now).
    #[serde(serialize_with = "integral::serialize")]
    pub last_lap_to_stop: Option<f64>,
}

/// What an alert says (in [`Alert`] and [`AlertEvent`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertReading {
    /// `fuel_low`, `pit_overdue`, `tyre_hot`, `tyre_cold`, `brake_hot`,
    /// `tyre_worn`, `stale`, `undercut_window`.
    pub kind: String,
    /// `warning` or `critical`.
    pub level: String,
    /// The reading now (laps of fuel, °C, fraction worn, s without a frame).
    pub value: f64,
    pub threshold: f64,
    pub message: String,
}

/// An active alert (the session document's `alerts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    #[serde(flatten)]
    pub reading: AlertReading,
    /// When it was raised.
    #[serde(with = "time")]
    pub since: DateTime<Utc>,
}

/// An alert raised or cleared, on `session.<id>.alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub session_id: SessionId,
    /// `raised` or `cleared`.
    pub state: String,
    #[serde(flatten)]
    pub reading: AlertReading,
    #[serde(with = "time")]
    pub at: DateTime<Utc>,
}

/// One page of `sessions.laps[.<id>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LapPage<F = RawFrame> {
    pub session_id: SessionId,
    pub laps: Vec<LapRecord<F>>,
    pub count: usize,
    /// The lap to ask for next (`from_lap`); `None` on the last page.
    #[serde(default = "none")]
    pub next_from_lap: Option<F>,
}

/// The body of every error reply, beside the micro error headers
/// (`Nats-Service-Error-Code`, `Nats-Service-Error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub code: u16,
    /// A stable label for programs (`unknown_session`, `ended_session`,
    /// `malformed_json`, …); absent from replies of processors before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_are_short_and_plain() {
        let label = |team: &str| Label {
            team: Some(team.into()),
            car: Some("#7".into()),
        };
        for good in [
            "Blue",
            "Team Rosso 2",
            "A&B Racing",
            "O'Neil #7",
            "Équipe-1",
        ] {
            assert_eq!(label(good).check(), Ok(()), "{good}");
        }
        for bad in ["", "  ", "<b>", "a\u{1b}[31m", "x\ny", &"x".repeat(33)] {
            assert!(label(bad).check().is_err(), "{bad:?}");
        }
        assert_eq!(Label::default().check(), Ok(()));
        let wants = |team: Option<&str>| {
            ListRequest {
                team: Some("Blue".into()),
                ..Default::default()
            }
            .wants(team)
        };
        assert!(wants(Some("Blue")) && !wants(Some("Red")) && !wants(None));
        assert!(ListRequest::default().wants(None));
    }

    #[test]
    fn a_document_reads_back_as_written_with_frames_verbatim() {
        let frame: RawFrame = serde_json::from_str(r#"{"lap":14, "fuel" :41.20}"#).unwrap();
        let doc = SessionDocument {
            session_id: SessionId::new_v4(),
            team: Some("Blue".into()),
            car: None,
            labelled_at: None,
            created_at: Utc::now(),
            setup: None,
            setup_timestamp: None,
            telemetry: Some(frame),
            field: None,
            field_timestamp: None,
            last_update: Utc::now(),
            stats: SessionStats {
                telemetry_count: 1,
                setup_count: 0,
                rejected_count: 0,
                rate_limited_count: 0,
                dropped_count: 0,
                laps_dropped: 0,
                field_count: 0,
                first_frame_at: Some(Utc::now()),
                last_frame_at: Some(Utc::now()),
                duration_s: 0.5,
                rate_hz: 0.0,
                laps: 0,
                laps_completed: 0,
                current_lap: None,
                current_lap_started_at: None,
                current_lap_frames: 0,
                current_lap_pitted: false,
            },
            credentials: None,
            strategy: None,
            alerts: None,
            rejoin: None,
        };
        let json = serde_json::to_string(&doc).unwrap();
        assert!(
            json.contains(r#""telemetry":{"lap":14, "fuel" :41.20}"#),
            "{json}"
        );
        assert!(!json.contains("credentials"));
        let back: SessionDocument = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        let as_value: SessionDocument<serde_json::Value> = serde_json::from_str(&json).unwrap();
        assert_eq!(as_value.telemetry, Some(json!({"lap": 14, "fuel": 41.2})));
    }

    #[test]
    fn times_are_rfc3339_utc_with_microseconds() {
        let t = DateTime::parse_from_rfc3339("2026-11-24T05:30:47.280515Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(time::format(&t), "2026-11-24T05:30:47.280515Z");
    }
}

/// One message of a team's tower feed (`team.<token>.tower`): the cars of
/// `team` that `processor` holds, as of `at`. Under partitions several
/// processors publish on one team's subject, each its own cars; a car missing
/// from its processor's next message has ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tower {
    pub team: String,
    /// The publishing processor's micro service instance id.
    pub processor: String,
    #[serde(with = "time")]
    pub at: DateTime<Utc>,
    pub cars: Vec<TowerCar>,
    /// Cars of the team left out of this message (past its car limit).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One car of a team's tower. Readings the car's frames do not carry are left
/// out; units as in the telemetry schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TowerCar {
    pub session_id: SessionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub car: Option<String>,
    /// The frame's `player_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "integral::serialize"
    )]
    pub position: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "integral::serialize"
    )]
    pub lap: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_lap_time: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_lap_time: Option<f64>,
    /// Seconds behind the car ahead on track position, where the frames carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_ahead: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<f64>,
    /// Litres per lap over the last few completed laps that used fuel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_per_lap: Option<f64>,
    /// `fuel / fuel_per_lap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_laps: Option<f64>,
    /// The strategy's race laps left, fuel to add at the next stop and last
    /// lap to stop on (docs/PROTOCOL.md "Stints and strategy"), as in the
    /// session document.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "integral::serialize"
    )]
    pub race_laps_left: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_to_add: Option<f64>,
    /// The strategy's `next_stop_fuel` and `stops_needed` (when the frame
    /// has `fuel_capacity`): in a long race `fuel_to_add` is the total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_stop_fuel: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stops_needed: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "integral::serialize"
    )]
    pub last_lap_to_stop: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_pits: Option<bool>,
    /// The frame's `pit_stops`, else the pit entries this processor saw.
    pub pit_stops: u32,
    /// Laps since the stint began (the last pit exit, or when this processor
    /// first saw the car).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "integral::serialize"
    )]
    pub stint_laps: Option<f64>,
    /// Seconds since the stint began: on the sim's clock (`session_time`) when
    /// the frames carry it, else the processor's.
    pub stint_s: f64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "integral::serialize"
    )]
    pub tyre_age_laps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tyre_compound: Option<String>,
    /// Seconds since the car's latest frame arrived, as of the message's `at`;
    /// absent before its first frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_age_s: Option<f64>,
    /// The car's active alerts (docs/PROTOCOL.md "Alerts"), when it has any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertReading>,
    /// From the session's field (docs/PROTOCOL.md "The field"), when it has
    /// one that names the car: the car nearest ahead on the road order and
    /// the gap to it (s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ahead: Option<RejoinCar>,
    /// The car nearest behind and its gap (s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind: Option<RejoinCar>,
    /// Where a stop now rejoins: the session document's `rejoin.message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejoin: Option<String>,
}
