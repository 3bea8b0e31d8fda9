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

/// The endpoints of the `sessions` service, typed: parsed once where a request
/// arrives and dispatched in one place (server/control.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Create,
    Get,
    List,
    Delete,
    Stats,
    ArchiveList,
    ArchiveGet,
    Laps,
    ArchiveLaps,
    RenewMonitor,
    RenewDashboard,
    Label,
    Team,
    Stints,
    /// A new link to one session's page (ops).
    Share,
    /// Fresh credentials for a link that is not withdrawn.
    RenewLink,
    /// The links of a team or a session, or all of them (ops).
    Links,
    /// Withdraw links (ops).
    Revoke,
    /// One lap's recorded frames on a distance grid (docs/PROTOCOL.md "Traces").
    Trace,
    /// One lap against another along the distance: the time delta.
    Compare,
}

impl Endpoint {
    /// Every endpoint, in the order `$SRV.INFO` lists them.
    pub const ALL: [Endpoint; 20] = [
        Endpoint::Create,
        Endpoint::Get,
        Endpoint::List,
        Endpoint::Delete,
        Endpoint::Stats,
        Endpoint::ArchiveList,
        Endpoint::ArchiveGet,
        Endpoint::Laps,
        Endpoint::ArchiveLaps,
        Endpoint::RenewMonitor,
        Endpoint::RenewDashboard,
        Endpoint::Label,
        Endpoint::Team,
        Endpoint::Stints,
        Endpoint::Share,
        Endpoint::RenewLink,
        Endpoint::Links,
        Endpoint::Revoke,
        Endpoint::Trace,
        Endpoint::Compare,
    ];

    /// The endpoint's name in the `sessions` group: `sessions.<name>`.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Create => CREATE,
            Endpoint::Get => GET,
            Endpoint::List => LIST,
            Endpoint::Delete => DELETE,
            Endpoint::Stats => STATS,
            Endpoint::ArchiveList => ARCHIVE_LIST,
            Endpoint::ArchiveGet => ARCHIVE_GET,
            Endpoint::Laps => LAPS,
            Endpoint::ArchiveLaps => ARCHIVE_LAPS,
            Endpoint::RenewMonitor => RENEW_MONITOR,
            Endpoint::RenewDashboard => RENEW_DASHBOARD,
            Endpoint::Label => LABEL,
            Endpoint::Team => TEAM,
            Endpoint::Stints => STINTS,
            Endpoint::Share => SHARE,
            Endpoint::RenewLink => RENEW_LINK,
            Endpoint::Links => LINKS,
            Endpoint::Revoke => REVOKE,
            Endpoint::Trace => TRACE,
            Endpoint::Compare => COMPARE,
        }
    }

    /// The endpoint with this name, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Endpoint::ALL.into_iter().find(|e| e.name() == name)
    }

    /// For the endpoints that also take the session id as the subject's last token
    /// (`sessions.get.<id>`, so broker permissions can allow one session and no
    /// other): the micro endpoint's name and its pattern in the group.
    pub fn one_session(self) -> Option<(&'static str, &'static str)> {
        match self {
            Endpoint::Get => Some(("get-one", GET_ONE)),
            Endpoint::Laps => Some(("laps-one", LAPS_ONE)),
            Endpoint::Stints => Some(("stints-one", STINTS_ONE)),
            Endpoint::Trace => Some(("trace-one", TRACE_ONE)),
            Endpoint::Compare => Some(("compare-one", COMPARE_ONE)),
            Endpoint::ArchiveLaps => Some(("archive-laps-one", ARCHIVE_LAPS_ONE)),
            Endpoint::RenewMonitor => Some(("renew-monitor-one", RENEW_MONITOR_ONE)),
            Endpoint::RenewDashboard => Some(("renew-dashboard-one", RENEW_DASHBOARD_ONE)),
            _ => None,
        }
    }

    /// `sessions.<name>`.
    pub fn subject(self) -> String {
        control(self.name())
    }
}

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
/// Fresh per-session credentials for a session's monitor or dashboard.
pub const RENEW_MONITOR: &str = "renew.monitor";
pub const RENEW_DASHBOARD: &str = "renew.dashboard";
/// A session's team and car labels, changed by ops.
pub const LABEL: &str = "label";
/// A team link's credentials (per-session mode): the team's, or one of its
/// cars' for the car page opened from the pit wall.
pub const TEAM: &str = "team";
/// `sessions.team.<team token>`: the same, with the team in the subject, so
/// that a team link's credentials may ask for their own team and no other.
/// Never mapped into partitions: a team is not a session.
pub const TEAM_ONE: &str = "team.*";

/// Shared links (docs/SECURITY.md, "Taking a link back"): a new link to one
/// session's page; fresh credentials for a link; the links held; withdrawing them.
pub const SHARE: &str = "share";
pub const RENEW_LINK: &str = "renew.link";
pub const LINKS: &str = "links";
pub const REVOKE: &str = "revoke";
/// `sessions.renew.link.<link id>`: what a link's credentials may ask, and no
/// other link's, so the broker vouches for the link id the processor checks.
/// Never mapped into partitions: the id names a link, not a session.
pub const RENEW_LINK_ONE: &str = "renew.link.*";

/// `sessions.get.<id>`: the same as `sessions.get`, with the id in the subject, so
/// that broker permissions can allow one session's snapshot and no other.
pub const GET_ONE: &str = "get.*";
/// `sessions.laps.<id>` and `sessions.archive.laps.<id>`, likewise.
pub const LAPS_ONE: &str = "laps.*";
pub const ARCHIVE_LAPS_ONE: &str = "archive.laps.*";
/// A session's stints (live or ended), and `sessions.stints.<id>`.
pub const STINTS: &str = "stints";
pub const STINTS_ONE: &str = "stints.*";
/// A lap's trace and a comparison of two laps, from the broker's recording.
pub const TRACE: &str = "trace";
pub const TRACE_ONE: &str = "trace.*";
pub const COMPARE: &str = "compare";
pub const COMPARE_ONE: &str = "compare.*";
/// `sessions.renew.monitor.<id>`, `sessions.renew.dashboard.<id>`: what a holder
/// of the session's credentials may ask, to keep them fresh.
pub const RENEW_MONITOR_ONE: &str = "renew.monitor.*";
pub const RENEW_DASHBOARD_ONE: &str = "renew.dashboard.*";

/// `sessions.get.<id>`.
pub fn get_one(id: &SessionId) -> String {
    format!("{CONTROL_PREFIX}.{GET}.{id}")
}

/// `sessions.renew.<monitor|dashboard>.<id>`.
pub fn renew_one(endpoint: Endpoint, id: &SessionId) -> String {
    format!("{CONTROL_PREFIX}.{}.{id}", endpoint.name())
}

/// `sessions.team.<team token>`: what a team link's holder asks.
pub fn team_one(team: &str) -> String {
    format!("{CONTROL_PREFIX}.{TEAM}.{}", team_token(team))
}

/// `sessions.renew.link.<link id>`: a link's renewal.
pub fn renew_link_one(link: &crate::protocol::id::LinkId) -> String {
    format!("{CONTROL_PREFIX}.{RENEW_LINK}.{link}")
}

/// `sessions.stints.<id>`.
pub fn stints_one(id: &SessionId) -> String {
    format!("{CONTROL_PREFIX}.{STINTS}.{id}")
}

/// `sessions.trace.<id>`.
pub fn trace_one(id: &SessionId) -> String {
    format!("{CONTROL_PREFIX}.{TRACE}.{id}")
}

/// `sessions.compare.<id>`.
pub fn compare_one(id: &SessionId) -> String {
    format!("{CONTROL_PREFIX}.{COMPARE}.{id}")
}

/// `sessions.laps.<id>`.
pub fn laps_one(id: &SessionId) -> String {
    format!("{CONTROL_PREFIX}.{LAPS}.{id}")
}

/// `sessions.archive.laps.<id>`.
pub fn archive_laps_one(id: &SessionId) -> String {
    format!("{CONTROL_PREFIX}.{ARCHIVE_LAPS}.{id}")
}

/// Every session's data and announcements: what a team dashboard (or ops) follows.
pub const ALL_SESSIONS: &str = "session.*.>";
/// The service-wide lifecycle feed, every kind.
pub const ALL_SERVICE_EVENTS: &str = "sessions.events.>";
/// NATS micro discovery, every verb.
pub const ALL_DISCOVERY: &str = "$SRV.>";

/// `$SRV.INFO.sessions`: every processor's description (endpoints, metadata).
pub const SERVICE_INFO: &str = "$SRV.INFO.sessions";

/// The key of the service metadata that holds the dashboard page's address
/// (`paddock serve --public-url`), for clients that print share links.
pub const DASHBOARD_URL_METADATA: &str = "dashboard_url";

/// The key of the service metadata that says whether the processor issues
/// per-session credentials ("true" or "false"): clients ask for fresh ones
/// (`sessions.renew.…`) only where they are issued.
pub const ISSUES_CREDENTIALS_METADATA: &str = "issues_credentials";

/// A session's dashboard link on the page served at `base`. With per-session
/// credentials the link carries the dashboard's JWT and seed and the inbox
/// prefix in its fragment, which browsers never send to the server.
pub fn dashboard_link(base: &str, id: &SessionId, access: Option<(&str, &str, &str)>) -> String {
    let base = base.trim_end_matches('/');
    match access {
        None => format!("{base}/session/{id}"),
        Some((jwt, seed, inbox)) => {
            format!("{base}/session/{id}#jwt={jwt}&seed={seed}&inbox={inbox}")
        }
    }
}

/// A page link ([`dashboard_link`], [`team_link`]) made by `sessions share`,
/// with the link's id added to its fragment (`&link=<id>`): the page renews on
/// `sessions.renew.link.<link>`, so the link can be withdrawn.
pub fn with_link_id(link: String, id: &crate::protocol::id::LinkId) -> String {
    if link.contains('#') {
        format!("{link}&link={id}")
    } else {
        link
    }
}

/// A team's page on the page served at `base` (`/team/<team>`). With a team
/// link's credentials (per-session mode) the fragment carries them, their
/// inbox prefix and the team, so a car page opened from it can ask for the
/// car's. The team is percent-encoded as in [`team_token`], which a URL's path
/// and fragment read back as the label.
pub fn team_link(base: &str, team: &str, access: Option<(&str, &str, &str)>) -> String {
    let base = base.trim_end_matches('/');
    let team = team_token(team);
    match access {
        None => format!("{base}/team/{team}"),
        Some((jwt, seed, inbox)) => {
            // The fragment is read as form values: the inbox's `%` is itself encoded.
            let inbox = inbox.replace('%', "%25");
            format!("{base}/team/{team}#jwt={jwt}&seed={seed}&inbox={inbox}&team={team}")
        }
    }
}

/// Whether a request came from credentials scoped to one session or one team
/// (per-session mode), read from its reply subject: `_INBOX_<id>.…` (a
/// session's monitor, dashboard or shared link) or `_INBOX_team_<team>.…` (a
/// team link), the only inboxes those credentials may read. A role's inbox
/// (`_INBOX_ops`) or the default `_INBOX` is not.
pub fn scoped_inbox(reply: &str) -> bool {
    let Some(rest) = reply
        .strip_prefix(DEFAULT_INBOX_PREFIX)
        .and_then(|r| r.strip_prefix('_'))
    else {
        return false;
    };
    rest.starts_with("team_")
        || rest
            .split('.')
            .next()
            .is_some_and(|token| SessionId::parse(token).is_ok())
}

/// `$SRV.PING.<service>.<instance id>`: one service instance's PING.
pub fn discovery_ping(instance: &str) -> String {
    format!("$SRV.PING.{SERVICE_NAME}.{instance}")
}

/// The inbox prefix clients use unless told otherwise.
pub const DEFAULT_INBOX_PREFIX: &str = "_INBOX";

/// `_INBOX_<name>`: the inbox prefix of a role (`ops`, `creator`, …) or of one
/// session's credentials (`_INBOX_<id>`); holders may read only under it.
pub fn inbox_prefix(name: &impl std::fmt::Display) -> String {
    format!("{DEFAULT_INBOX_PREFIX}_{name}")
}

/// `<inbox prefix>.>`: every reply under an inbox prefix.
pub fn inbox_wildcard(prefix: &str) -> String {
    format!("{prefix}.>")
}

/// The stream a JetStream KV bucket is made of, and its subjects.
pub fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// `$JS.<domain>.API`: the JetStream API of another domain (a track's broker,
/// a leaf node of the hub), as a mirror's external source names it.
pub fn js_domain_api(domain: &str) -> String {
    format!("$JS.{domain}.API")
}

/// `$JS.<domain>.API.INFO`: another domain's JetStream account information;
/// answered whenever that domain's broker is reachable (the hub asks it to
/// know whether the leaf link is up).
pub fn js_domain_info(domain: &str) -> String {
    format!("{}.INFO", js_domain_api(domain))
}

/// `$JS.<domain>.API.CONSUMER.CREATE.>`: the consumer requests a mirror of
/// another domain's stream sends to set itself up (with or without a
/// consumer name and filter in the subject).
pub fn js_domain_consumer_creates(domain: &str) -> String {
    format!("{}.CONSUMER.CREATE.>", js_domain_api(domain))
}

/// `$SRV.PING.sessions`: every processor of the service answers it (micro).
pub fn service_ping() -> String {
    format!("$SRV.PING.{SERVICE_NAME}")
}

/// `$JS.API.INFO`: JetStream's account information (its storage limits).
pub const JS_ACCOUNT_INFO: &str = "$JS.API.INFO";

/// `$JS.API.STREAM.INFO.<stream>`: JetStream's API for a stream's state.
pub fn stream_info(stream: &str) -> String {
    format!("$JS.API.STREAM.INFO.{stream}")
}

/// `$KV.<bucket>.>`: every key of a bucket.
pub fn kv_subjects(bucket: &str) -> String {
    format!("$KV.{bucket}.>")
}

/// `$KV.<bucket>.<key>`: one key of a bucket.
pub fn kv_key(bucket: &str, key: &impl std::fmt::Display) -> String {
    format!("$KV.{bucket}.{key}")
}

/// Wildcards the processor subscribes to for monitor data. Two explicit patterns
/// rather than `session.*.>` so the processor never receives its own announcements.
pub const ALL_SETUP: &str = "session.*.setup";
pub const ALL_TELEMETRY: &str = "session.*.telemetry";
/// Every session's field (`session.<id>.field`), published by its monitor.
pub const ALL_FIELD: &str = "session.*.field";

/// What the trace stream records: the chunks of accepted telemetry frames the
/// processor writes (server/store/trace_writer.rs), one subject per session.
/// Outside `session.<id>.>`, so no dashboard receives them, and not under any
/// subject a monitor may publish, so only the processor's frames are recorded.
pub const TRACE_SUBJECTS: [&str; 1] = ["paddock.trace.*"];

/// The trace stream's name beside the buckets of `bucket` (`<bucket>_traces`).
pub fn trace_stream(bucket: &str) -> String {
    format!("{bucket}_traces")
}

/// The subject one session's frames are recorded under: `paddock.trace.<id>`
/// (the same whatever the partitions: the processor publishes it).
pub fn trace_record(id: &SessionId) -> String {
    format!("paddock.trace.{id}")
}

/// What the best-lap stream holds: a copy of each session's fastest lap's
/// frames (server/traces.rs, "the best lap kept"), one subject per session,
/// written by the processor like the trace stream's.
pub const BEST_SUBJECTS: [&str; 1] = ["paddock.best.*"];

/// The best-lap stream's name beside the buckets of `bucket` (`<bucket>_best`).
pub fn best_stream(bucket: &str) -> String {
    format!("{bucket}_best")
}

/// The subject one session's best lap is kept under: `paddock.best.<id>`.
pub fn best_record(id: &SessionId) -> String {
    format!("paddock.best.{id}")
}

/// What every subject of one session starts with: `session.<id>.…`.
pub const DATA_PREFIX: &str = "session.";

/// The kind of monitor data a subject carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    Setup,
    Telemetry,
    /// Every car on track (protocol/field.rs), a few times a second.
    Field,
}

impl DataKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DataKind::Setup => "setup",
            DataKind::Telemetry => "telemetry",
            DataKind::Field => "field",
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

/// `session.<id>.setup`, `session.<id>.telemetry` or `session.<id>.field`.
pub fn data(id: &SessionId, kind: DataKind) -> String {
    format!("{DATA_PREFIX}{id}.{}", kind.as_str())
}

/// The partition of a session among `partitions`, as the broker computes it for
/// a subject mapping `{{partition(n,1)}}` on the session id token: FNV-1a (32 bit)
/// of the id as written in subjects, modulo `n` (nats-server's
/// `subject_transform.go`; tests/it/partitions.rs holds this to the broker). The
/// building block of partitioned ownership (docs/ARCHITECTURE.md): a processor
/// that owns some partitions must know which ids are its own.
pub fn partition(id: &SessionId, partitions: u32) -> u32 {
    let mut text = [0u8; 36];
    let hash = id
        .encode(&mut text)
        .bytes()
        .fold(0x811c_9dc5_u32, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        });
    hash % partitions.max(1)
}

/// The subject mappings that partition the subject space into `partitions`
/// (docs/ARCHITECTURE.md, "Past one processor"): for each subject that carries a
/// session id, `from` gets the partition of that id appended as a last token.
/// What `paddock broker mappings` prints for a nats.conf and `auth init
/// --partitions` writes into the account; the processor subscribes to the
/// mapped forms ([`partitioned`]).
pub fn mappings(partitions: u32) -> Vec<(String, String)> {
    let data = [DataKind::Setup, DataKind::Telemetry, DataKind::Field]
        .into_iter()
        .map(|kind| format!("{DATA_PREFIX}*.{}", kind.as_str()));
    let requests = Endpoint::ALL
        .into_iter()
        .filter_map(Endpoint::one_session)
        .map(|(_, pattern)| control(pattern));
    let check = std::iter::once(format!("{PARTITION_CHECK}.*"));
    data.chain(requests)
        .chain(check)
        .map(|from| {
            // The id is the subject's only wildcard in each of these.
            let to = from.replacen('*', "{{wildcard(1)}}", 1);
            let to = format!("{to}.{{{{partition({partitions},1)}}}}");
            (from, to)
        })
        .collect()
}

/// `<subject>` and `<subject>.*`: a subject a partition mapping rewrites, in
/// both forms, for permissions. The broker checks a publish against the subject
/// after mapping it (seen on 2.9.10 and 2.15.1), so a user allowed
/// `sessions.get.<id>` must also be allowed `sessions.get.<id>.*` where sessions
/// are partitioned; elsewhere no one subscribes to the longer form.
pub fn with_mapped(subject: String) -> [String; 2] {
    let mapped = format!("{subject}.*");
    [subject, mapped]
}

/// `sessions.partition.check.<id>`: mapped like the session subjects but read by
/// no processor's endpoint, so a starting processor can see whether (and into
/// how many partitions) the broker maps, at no one's expense.
pub const PARTITION_CHECK: &str = "sessions.partition.check";

/// `<pattern>.<partition>`: a subject pattern as the broker's mappings deliver it
/// in one partition (`session.*.telemetry.3`, `get.*.3` in the `sessions` group).
pub fn partitioned(pattern: &str, partition: u32) -> String {
    format!("{pattern}.{partition}")
}

/// `partition.<p>.>` in the `sessions` group: requests forwarded to the owners of
/// one partition by the processor that took them (list and stats gathered from
/// every partition, body-form requests for a session of another partition).
/// Internal between processors; clients use the public endpoints.
pub fn partition_requests(partition: u32) -> String {
    format!("partition.{partition}.>")
}

/// `sessions.partition.<p>.<endpoint>`: one forwarded request.
pub fn partition_request(partition: u32, endpoint: Endpoint) -> String {
    format!("{CONTROL_PREFIX}.partition.{partition}.{}", endpoint.name())
}

/// The partition and endpoint of a `sessions.partition.<p>.<endpoint>` subject.
pub fn parse_partition_request(subject: &str) -> Option<(u32, Endpoint)> {
    let rest = subject
        .strip_prefix(CONTROL_PREFIX)?
        .strip_prefix(".partition.")?;
    let (partition, name) = rest.split_once('.')?;
    Some((partition.parse().ok()?, Endpoint::from_name(name)?))
}

/// The session id token of an id-form request subject (`sessions.get.<id>`, or
/// `sessions.get.<id>.<p>` as a partition mapping delivers it), unvalidated.
pub fn id_token(subject: &str, endpoint: Endpoint) -> &str {
    let rest = subject
        .strip_prefix(CONTROL_PREFIX)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.strip_prefix(endpoint.name()))
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or("");
    rest.split_once('.').map_or(rest, |(id, _)| id)
}

/// `session.<id>.`: what every subject of one session starts with; the rest is
/// the kind (`telemetry`, `setup`, `lap`, `events.<kind>`).
pub fn session_prefix(id: &SessionId) -> String {
    format!("{DATA_PREFIX}{id}.")
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

/// `team.`: what every subject of a team starts with (the pit wall's feed).
pub const TEAM_PREFIX: &str = "team.";

/// Every team's tower feed, for tools that watch them all.
pub const ALL_TEAM_TOWERS: &str = "team.*.tower";

/// A team label as one subject token: bytes other than ASCII letters, digits,
/// `-` and `_` written `%XX` (upper-case hex), so `Blue` is `Blue` and
/// `Red Bull.2` is `Red%20Bull%2E2`. A label may hold spaces and dots, which a
/// subject token may not; the page encodes the same way (src/web/page/app.js).
pub fn team_token(team: &str) -> String {
    use std::fmt::Write;
    let mut token = String::with_capacity(team.len());
    for byte in team.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            token.push(byte as char);
        } else {
            let _ = write!(token, "%{byte:02X}");
        }
    }
    token
}

/// The team label a [`team_token`] stands for, if `token` is one as
/// `team_token` writes it (upper-case hex, only where needed, UTF-8).
pub fn team_of_token(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut label = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            label.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            label.push(bytes[i]);
            i += 1;
        }
    }
    let label = String::from_utf8(label).ok()?;
    // One token per label: `%41` for `A`, or lower-case hex, is not one.
    (team_token(&label) == token).then_some(label)
}

/// The team token of a team link's reply inbox (`_INBOX_team_<token>.…`), or
/// `None` for any other inbox.
pub fn team_of_inbox(reply: &str) -> Option<&str> {
    let rest = reply
        .strip_prefix(DEFAULT_INBOX_PREFIX)?
        .strip_prefix("_team_")?;
    rest.split('.').next().filter(|token| !token.is_empty())
}

/// `_INBOX_team_<token>`: the inbox prefix of a team link's credentials.
pub fn team_inbox_prefix(team: &str) -> String {
    inbox_prefix(&format!("team_{}", team_token(team)))
}

/// `team.<token>.tower`: the team's cars as the pit wall shows them, published
/// by the processors holding them a few times a second (docs/PROTOCOL.md).
pub fn team_tower(team: &str) -> String {
    format!("{TEAM_PREFIX}{}.tower", team_token(team))
}

/// `team.<token>.>`: everything of one team (what a team link may read).
pub fn team_wildcard(team: &str) -> String {
    format!("{TEAM_PREFIX}{}.>", team_token(team))
}

/// `session.<id>.lap`: each completed lap of the session, announced once stored.
/// Under the session's prefix, so a dashboard subscribed to `session.<id>.>` gets
/// it; never a monitor data kind.
pub fn session_lap(id: &SessionId) -> String {
    format!("{DATA_PREFIX}{id}.lap")
}

/// `session.<id>.alerts`: an alert raised or cleared (docs/PROTOCOL.md
/// "Alerts"); under the session's prefix, never a monitor data kind.
pub fn session_alerts(id: &SessionId) -> String {
    format!("{DATA_PREFIX}{id}.alerts")
}

/// `sessions.events.<kind>`: the service-wide lifecycle feed (a session list follows it).
pub fn service_event(event: Event) -> String {
    format!("{CONTROL_PREFIX}.events.{}", event.as_str())
}

/// The event of a `sessions.events.<kind>` subject, if it is one.
pub fn event_of(subject: &str) -> Option<Event> {
    let kind = subject
        .strip_prefix(CONTROL_PREFIX)?
        .strip_prefix(".events.")?;
    [Event::Created, Event::Deleted, Event::Expired]
        .into_iter()
        .find(|e| e.as_str() == kind)
}

/// `sessions.<endpoint>`: a control endpoint's full subject.
pub fn control(endpoint: &str) -> String {
    format!("{CONTROL_PREFIX}.{endpoint}")
}

/// What a message under `session.<id>.` is: monitor data, a completed lap, or a
/// lifecycle announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMessage {
    Data(DataKind),
    Lap,
    /// An alert raised or cleared (`session.<id>.alerts`).
    Alerts,
    Event(Event),
}

/// The one rule every consumer of a session's subjects reads them by (the
/// processor, `watch`, the monitor, the page's `kindOf` in src/web/page/app.js,
/// which mirrors it): `rest` is the subject after `session.<id>.`. A data kind may
/// carry one more token, the partition a broker mapping appends
/// (`telemetry.3`, see [`mappings`]); announcements are the processor's own and
/// never mapped. Anything else is `None`: not something paddock publishes.
pub fn session_message(rest: &str) -> Option<SessionMessage> {
    let rest = rest.as_bytes();
    if let Some(kind) = data_kind(rest) {
        return Some(SessionMessage::Data(kind));
    }
    match rest {
        b"lap" => Some(SessionMessage::Lap),
        b"alerts" => Some(SessionMessage::Alerts),
        _ => {
            let event = rest.strip_prefix(b"events.")?;
            [Event::Created, Event::Deleted, Event::Expired]
                .into_iter()
                .find(|e| e.as_str().as_bytes() == event)
                .map(SessionMessage::Event)
        }
    }
}

/// `telemetry`, `setup` or `field`, alone or followed by one partition token.
fn data_kind(kind: &[u8]) -> Option<DataKind> {
    let is = |name: &str| {
        kind.strip_prefix(name.as_bytes()).is_some_and(|after| {
            after.is_empty()
                || (after.len() > 1
                    && after[0] == b'.'
                    && after[1..].iter().all(u8::is_ascii_digit))
        })
    };
    if is("telemetry") {
        Some(DataKind::Telemetry)
    } else if is("setup") {
        Some(DataKind::Setup)
    } else if is("field") {
        Some(DataKind::Field)
    } else {
        None
    }
}

/// Splits `session.<id>.<kind>` into its raw id token and kind, without allocating.
/// The id token is returned unvalidated: the caller decides how to treat a bad one.
/// The kind is the token after the id; a partition token after it is tolerated (a
/// subject mapping appends one when processors scale out; [`session_message`]).
pub fn parse_data(subject: &str) -> Option<(&str, DataKind)> {
    // On bytes, with a plain loop for the dot: per frame, `str::split_once`'s
    // searcher cost more than the rest of the split (callgrind).
    let rest = subject.strip_prefix(DATA_PREFIX)?;
    let dot = rest.bytes().position(|b| b == b'.')?;
    let (id, kind) = (&rest[..dot], &rest.as_bytes()[dot + 1..]);
    data_kind(kind).map(|kind| (id, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_fnv1a_of_the_id() {
        // FNV-1a of the empty input is its offset basis; these ids' values were
        // computed independently (Python) and match the broker's mapping.
        let id = SessionId::parse("697461d2-91c5-4bad-b190-06cd9e07cf04").unwrap();
        assert_eq!(partition(&id, 4), 2);
        assert_eq!(partition(&id, 1), 0);
        let spread =
            (0..4_000)
                .map(|_| partition(&SessionId::new_v4(), 4))
                .fold([0u32; 4], |mut n, p| {
                    n[p as usize] += 1;
                    n
                });
        assert!(spread.iter().all(|&n| n > 800), "{spread:?}");
    }

    #[test]
    fn a_session_s_or_team_s_inbox_is_scoped_and_a_role_s_is_not() {
        let id = SessionId::new_v4();
        assert!(scoped_inbox(&format!("{}.abc.1", inbox_prefix(&id))));
        assert!(scoped_inbox(&format!(
            "{}.abc",
            team_inbox_prefix("Red Bull")
        )));
        assert_eq!(
            team_of_inbox(&format!("{}.abc.1", team_inbox_prefix("Red Bull"))),
            Some("Red%20Bull")
        );
        assert_eq!(team_of_inbox(&format!("{}.abc", inbox_prefix(&id))), None);
        assert_eq!(team_of_inbox("_INBOX.abc"), None);
        assert!(!scoped_inbox("_INBOX_ops.abc"));
        assert!(!scoped_inbox("_INBOX.abc"));
    }

    #[test]
    fn mappings_append_the_partition_of_the_id() {
        let mappings = mappings(4);
        assert!(mappings.contains(&(
            "session.*.telemetry".to_string(),
            "session.{{wildcard(1)}}.telemetry.{{partition(4,1)}}".to_string()
        )));
        assert!(mappings.contains(&(
            "sessions.renew.monitor.*".to_string(),
            "sessions.renew.monitor.{{wildcard(1)}}.{{partition(4,1)}}".to_string()
        )));
        // Setup, telemetry, field, every id-form endpoint and the start-up check.
        assert_eq!(mappings.len(), 3 + 8 + 1);
    }

    #[test]
    fn id_and_partition_tokens_are_read_from_request_subjects() {
        let id = SessionId::new_v4();
        let text = id.to_string();
        assert_eq!(id_token(&get_one(&id), Endpoint::Get), text);
        assert_eq!(
            id_token(&format!("{}.3", get_one(&id)), Endpoint::Get),
            text
        );
        let laps = format!("{}.0", archive_laps_one(&id));
        assert_eq!(id_token(&laps, Endpoint::ArchiveLaps), text);
        assert_eq!(id_token("sessions.get", Endpoint::Get), "");
        assert_eq!(team_tower("Blue"), "team.Blue.tower");
        assert_eq!(team_token("Red Bull.2"), "Red%20Bull%2E2");
        assert_eq!(team_token("Équipe #7"), "%C3%89quipe%20%237");
        for team in ["Blue", "Red Bull.2", "Équipe #7", "a%b"] {
            assert_eq!(team_of_token(&team_token(team)).as_deref(), Some(team));
        }
        // One token per label, and nothing that does not decode.
        for token in ["%42lue", "Red%2e2", "%", "%4", "%zz", "%FF", "a.b", "a b"] {
            assert_eq!(team_of_token(token), None, "{token}");
        }
        assert_eq!(team_one("Red Bull"), "sessions.team.Red%20Bull");
        assert_eq!(
            id_token("sessions.team.Red%20Bull", Endpoint::Team),
            "Red%20Bull"
        );
        assert_eq!(team_inbox_prefix("Red Bull"), "_INBOX_team_Red%20Bull");
        let subject = partition_request(3, Endpoint::ArchiveList);
        assert_eq!(subject, "sessions.partition.3.archive.list");
        assert_eq!(
            parse_partition_request(&subject),
            Some((3, Endpoint::ArchiveList))
        );
        assert_eq!(parse_partition_request("sessions.partition.x.list"), None);
        assert_eq!(parse_partition_request("sessions.partition.1.nope"), None);
    }

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
    fn a_trailing_token_after_the_kind_is_tolerated() {
        let id = SessionId::new_v4();
        let subject = format!("{}.7", data(&id, DataKind::Telemetry));
        assert_eq!(
            parse_data(&subject),
            Some((id.to_string().as_str(), DataKind::Telemetry))
        );
        assert_eq!(parse_data("session.x"), None);
        assert_eq!(parse_data(&format!("session.{id}.events.created")), None);
    }

    #[test]
    fn session_messages_are_read_with_or_without_a_partition_token() {
        use SessionMessage::*;
        let read = session_message;
        assert_eq!(read("telemetry"), Some(Data(DataKind::Telemetry)));
        assert_eq!(read("telemetry.0"), Some(Data(DataKind::Telemetry)));
        assert_eq!(read("setup.12"), Some(Data(DataKind::Setup)));
        assert_eq!(read("field"), Some(Data(DataKind::Field)));
        assert_eq!(read("field.2"), Some(Data(DataKind::Field)));
        assert_eq!(read("lap"), Some(Lap));
        assert_eq!(read("events.deleted"), Some(Event(super::Event::Deleted)));
        assert_eq!(read("events.expired"), Some(Event(super::Event::Expired)));
        for other in [
            "telemetryx",
            "telemetry.",
            "telemetry.a",
            "telemetry.1.2",
            "lap.1",
            "events.nope",
            "events",
            "",
        ] {
            assert_eq!(read(other), None, "{other}");
        }
        // Every data subject a broker mapping delivers reads as its kind.
        let id = SessionId::new_v4();
        for (from, _) in mappings(4)
            .iter()
            .filter(|(from, _)| from.starts_with(DATA_PREFIX))
        {
            let kind = from.rsplit('.').next().unwrap();
            let subject = partitioned(&format!("session.{id}.{kind}"), 3);
            let rest = subject.strip_prefix(&session_prefix(&id)).unwrap();
            assert!(matches!(read(rest), Some(Data(_))), "{subject}");
        }
    }

    #[test]
    fn endpoints_round_trip_by_name() {
        for endpoint in Endpoint::ALL {
            assert_eq!(Endpoint::from_name(endpoint.name()), Some(endpoint));
        }
        assert_eq!(Endpoint::from_name("nope"), None);
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
