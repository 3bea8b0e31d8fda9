//! `paddock serve`: the processor, until SIGINT or SIGTERM.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::args::{
    ConnectArgs, LapField, parse_bytes, parse_count, parse_duration, parse_lap_field, parse_period,
    parse_reserve,
};
use crate::client::connect;
use crate::client::connect::ConnectConfig;
use crate::gateway::{self, GatewayConfig, GatewayMetrics};
use crate::server::app::Limits;
use crate::server::health::Health;
use crate::server::processor::Lifecycle;
use crate::server::sessions::OnDemand;
use crate::server::store::{StoreConfig, StoreKind};
use crate::server::{self, credentials::Issuer};
use crate::web::{self, WebConfig};
use socketioxide::layer::SocketIoLayer;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Largest frame or request accepted, in bytes; larger ones are refused with 413.
    /// Keep it below the broker's max_payload (1 MiB by default).
    #[arg(long, env = "PADDOCK_MAX_PAYLOAD", default_value_t = Limits::default().max_payload, value_parser = parse_count)]
    pub max_payload: usize,
    /// Messages the processor's client may hold per subscription before they
    /// reach the ingest queue (below) or the request loop. The queue's task takes
    /// them as they come, so this holds only a moment's worth; past it the
    /// client drops them ("slow consumer", /metrics).
    #[arg(long, env = "PADDOCK_INGEST_BUFFER", default_value_t = crate::server::processor::DEFAULT_INGEST_BUFFER, value_parser = parse_count)]
    pub ingest_buffer: usize,
    /// Bytes of frames waiting for the processor while it is busy (default: a
    /// quarter of --max-memory), counted as they are: payload, subject and
    /// about 250 bytes each. A burst of small frames fills it no faster than
    /// their bytes. Past it, frames are dropped and counted: in all
    /// (sessions.stats `ingest`, /metrics) and per session (`dropped_count`).
    #[arg(long, env = "PADDOCK_INGEST_BUFFER_BYTES", value_parser = parse_bytes)]
    pub ingest_buffer_bytes: Option<usize>,
    /// Frames (setup and telemetry) per second one session may send; beyond it
    /// (and its --max-frame-burst) frames are refused before they are even
    /// validated, counted (rate_limited, and in the session's stats) and
    /// answered 429 when sent as requests. Sims send 2-60 Hz. 0: no limit.
    #[arg(long, env = "PADDOCK_MAX_FRAME_RATE", default_value_t = crate::server::sessions::DEFAULT_FRAME_RATE)]
    pub max_frame_rate: f32,
    /// Frames a session may send at once: the size of its --max-frame-rate
    /// bucket, which starts full and refills at that rate. A burst of this many
    /// is taken whole (the backlog a monitor's connection delivers after a
    /// network stall), then frames are taken at the rate; not this many on top.
    #[arg(long, env = "PADDOCK_MAX_FRAME_BURST", default_value_t = crate::server::sessions::DEFAULT_FRAME_BURST)]
    pub max_frame_burst: f32,
    /// Fields (every car on track, `session.<id>.field`) per second one session
    /// may send, apart from --max-frame-rate: monitors send 2 a second
    /// (--field-hz). Beyond it (and a burst of twice as many), refused and
    /// counted like frames (rate_limited). 0: no limit.
    #[arg(long, env = "PADDOCK_MAX_FIELD_RATE", default_value_t = crate::server::sessions::DEFAULT_FIELD_RATE)]
    pub max_field_rate: f32,
    /// Lap records one session may keep per minute (as many at once); laps
    /// completed faster still count, but their records are not kept or stored
    /// (laps_dropped): a lap field that changes on every frame must not turn
    /// the lap history into a copy of the stream. 0: no limit.
    #[arg(long, env = "PADDOCK_MAX_LAP_RATE", default_value_t = crate::server::sessions::DEFAULT_LAPS_PER_MINUTE)]
    pub max_lap_rate: f32,
    /// Bytes of lap records one session keeps, in memory and in the laps bucket,
    /// beside --max-laps: the oldest go first. A record keeps its two edge frames
    /// whole up to 8 KiB each and summarised beyond (docs/PROTOCOL.md).
    #[arg(long, env = "PADDOCK_MAX_LAP_BYTES", default_value = "4MiB", value_parser = parse_bytes)]
    pub max_lap_bytes: usize,
    /// Bytes of frames, setups and lap records all sessions together may hold
    /// (live and archived). Past it, lap records are dropped oldest first across
    /// sessions. Frames cannot be dropped: a new session is refused (503
    /// over_budget) unless the setups and latest frames held plus room for its
    /// own two (2 × --max-payload) fit in it, and past it no frame may be
    /// larger than the one it replaces. /readyz, /metrics and sessions.stats
    /// report it.
    #[arg(long, env = "PADDOCK_MAX_MEMORY", default_value = "1GiB", value_parser = parse_bytes)]
    pub max_memory: usize,
    /// Bytes all of paddock's JetStream buckets together may hold (default
    /// --max-memory: what they hold is a copy of what memory holds), shared as
    /// live 3/8, the trace stream (accepted telemetry frames, for lap traces) 1/4,
    /// best laps (each session's fastest, kept after the trace stream lets it
    /// go) 1/8, laps 1/8, archive 1/8 after the alerts bucket's 16 MiB and the
    /// links bucket's 8 MiB. The
    /// broker sets this aside when the buckets are made, so it must fit its
    /// JetStream storage (nats.conf's max_file_store): a start that does not fit
    /// is refused, saying so. When full, the live bucket refuses writes (kept in
    /// memory and retried, /readyz says so); the others drop their oldest.
    #[arg(long, env = "PADDOCK_KV_MAX_BYTES", value_parser = parse_bytes)]
    pub kv_max_bytes: Option<usize>,
    /// Bytes of telemetry frames the trace stream keeps per session (its
    /// max_msgs_per_subject, in chunks of 64 KiB): a session's oldest go first
    /// past it, so one session's flood holds at most this much of the stream
    /// (whose bytes all sessions share, oldest first when full). The default
    /// is an hour of 0.9 KB frames at 20 Hz, 20 minutes at 60 Hz.
    #[arg(long, env = "PADDOCK_TRACE_SESSION_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub trace_session_bytes: usize,
    /// Sessions one client (one connection) may create per minute; past it,
    /// sessions.create answers 429 with how long to wait. 0: no limit.
    #[arg(long, env = "PADDOCK_CREATE_LIMIT", default_value_t = Limits::default().creates_per_minute)]
    pub create_limit: u32,
    /// Issue per-session credentials at sessions.create (broker in operator mode,
    /// docs/SECURITY.md): the public key (A…) of paddock's account ...
    #[arg(long, env = "PADDOCK_ISSUER_ACCOUNT", requires = "issuer_signing_seed")]
    pub issuer_account: Option<String>,
    /// ... and a file holding the seed (SA…) of one of that account's signing keys.
    #[arg(long, env = "PADDOCK_ISSUER_SIGNING_SEED", requires = "issuer_account")]
    pub issuer_signing_seed: Option<PathBuf>,
    /// Sessions that frames to unknown ids may create per minute, all clients
    /// together (0: no limit); past it such frames are refused and counted.
    #[arg(long, env = "PADDOCK_ON_DEMAND_LIMIT", default_value_t = crate::server::app::DEFAULT_ON_DEMAND_PER_MINUTE)]
    pub on_demand_limit: u32,
    /// The share of --max-sessions, in percent, that sessions created by frames
    /// may fill; the rest is kept for sessions.create.
    #[arg(long, env = "PADDOCK_ON_DEMAND_SHARE", default_value_t = crate::server::app::DEFAULT_ON_DEMAND_SHARE_PERCENT as u64, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub on_demand_share: u64,
    /// With --issuer-*: how long a session's credentials work unless renewed.
    /// Holders (monitor, watch, the dashboard page) renew them while the session
    /// lives, so a deleted or expired session's credentials stop working within
    /// this time.
    #[arg(long, env = "PADDOCK_CREDENTIALS_TTL", default_value = "5m", value_parser = parse_period)]
    pub credentials_ttl: Duration,
    /// With --issuer-*: shared links (`sessions share`) held at most, live or
    /// withdrawn; past it a new link is refused (503 too_many_links). A link
    /// no page renewed for --credentials-ttl is forgotten.
    #[arg(long, env = "PADDOCK_MAX_LINKS", default_value_t = crate::server::links::DEFAULT_MAX_LINKS)]
    pub max_links: usize,
    /// Laps of fuel the strategy keeps in hand at the finish: its fuel to add
    /// at the next stop is what reaches the flag plus this many laps' worth.
    #[arg(long, env = "PADDOCK_FUEL_RESERVE_LAPS", default_value_t = 1.0, value_parser = parse_reserve)]
    pub fuel_reserve_laps: f64,
    /// Seconds a pit stop costs (in-lap and out-lap against green laps) until
    /// a car has stopped once and its own stops say: where a stop now
    /// rejoins the field (docs/PROTOCOL.md "Where a stop rejoins").
    #[arg(long, env = "PADDOCK_PIT_LOSS", default_value_t = crate::server::rejoin::DEFAULT_PIT_LOSS_S, value_parser = parse_reserve)]
    pub pit_loss: f64,
    /// Alerts (docs/PROTOCOL.md "Alerts"): fuel for fewer laps than this is
    /// `fuel_low` (fewer than --fuel-reserve-laps is `pit_overdue`).
    #[arg(long, env = "PADDOCK_ALERT_FUEL_LAPS", default_value_t = 2.0)]
    pub alert_fuel_laps: f64,
    /// A tyre colder than this (°C) is `tyre_cold`.
    #[arg(long, env = "PADDOCK_ALERT_TYRE_MIN", default_value_t = 60.0)]
    pub alert_tyre_min: f64,
    /// A tyre hotter than this (°C) is `tyre_hot`.
    #[arg(long, env = "PADDOCK_ALERT_TYRE_MAX", default_value_t = 105.0)]
    pub alert_tyre_max: f64,
    /// A brake hotter than this (°C) is `brake_hot`.
    #[arg(long, env = "PADDOCK_ALERT_BRAKE_MAX", default_value_t = 700.0)]
    pub alert_brake_max: f64,
    /// A tyre worn past this fraction (0.8: 80 % worn) is `tyre_worn`.
    #[arg(long, env = "PADDOCK_ALERT_WEAR_MAX", default_value_t = 0.8)]
    pub alert_wear_max: f64,
    /// No frame for this long is `stale`.
    #[arg(long, env = "PADDOCK_ALERT_STALE", default_value = "10s", value_parser = parse_period)]
    pub alert_stale: Duration,
    /// A team's own alert thresholds, for its labelled sessions:
    /// `TEAM:key=value,…` (keys fuel_laps, tyre_min, tyre_max, brake_max,
    /// wear_max, stale in s; the rest stay the --alert-* values). Repeat the flag
    /// per team; in the environment, separate teams with `;`.
    #[arg(long, env = "PADDOCK_TEAM_ALERTS", value_delimiter = ';', value_parser = parse_team_alerts)]
    pub team_alerts: Vec<(String, String)>,
    /// Most live sessions; past it, sessions.create answers 503.
    #[arg(long, env = "PADDOCK_MAX_SESSIONS", default_value_t = Limits::default().max_sessions, value_parser = parse_count)]
    pub max_sessions: usize,
    /// The telemetry field (a JSON pointer, RFC 6901) whose change completes a lap
    /// and records it in the session's lap history; "none" turns lap history off.
    #[arg(long, env = "PADDOCK_LAP_FIELD", default_value = "/lap", value_parser = parse_lap_field)]
    pub lap_field: LapField,
    /// Completed laps kept per session (the oldest are dropped first); the default
    /// covers a 24-hour race at 1.5-minute laps.
    #[arg(long, env = "PADDOCK_MAX_LAPS", default_value_t = crate::server::laps::DEFAULT_MAX_LAPS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_laps: u64,
    /// Where sessions are kept: JetStream key-value buckets (they survive restarts),
    /// or memory only (lost when the processor stops).
    #[arg(long, env = "PADDOCK_STORE", value_enum, default_value_t = StoreArg::Jetstream)]
    pub store: StoreArg,
    /// The JetStream bucket for live sessions; ended ones go to `<bucket>_archive`,
    /// completed laps to `<bucket>_laps`, announced alerts to `<bucket>_alerts`.
    #[arg(long, env = "PADDOCK_KV_BUCKET", default_value = "paddock_sessions")]
    pub kv_bucket: String,
    /// Replicas for every bucket (3 on a 3-node cluster); each replica takes
    /// --kv-max-bytes on its node.
    #[arg(long, env = "PADDOCK_KV_REPLICAS", default_value_t = 1, value_parser = parse_count)]
    pub kv_replicas: usize,
    /// Write-behind window: telemetry is stored at least this often, so after a
    /// crash each session's stored frame is at most this old (in a burst, over
    /// 20,000 frames/s or 1 MiB waiting, up to 2 s older: the burst is applied
    /// first). Setups, creates and deletes are stored before they are
    /// acknowledged.
    #[arg(long, env = "PADDOCK_PERSIST_INTERVAL", default_value = "1s", value_parser = parse_period)]
    pub persist_interval: Duration,
    /// Sessions the write-behind writes per second at most; 0: no limit. With
    /// more sessions changed than this, each waits its turn (longest waiting
    /// first), so the stored frame is at most max(--persist-interval, changed
    /// sessions / this) old. Setups, creates and deletes are not delayed.
    #[arg(long, env = "PADDOCK_PERSIST_RATE", default_value_t = crate::server::store::DEFAULT_PERSIST_RATE)]
    pub persist_rate: usize,
    /// How long ended sessions (deleted or expired) are kept in the archive;
    /// their ids stay refused that long.
    #[arg(long, env = "PADDOCK_ARCHIVE_RETENTION", default_value = "168h", value_parser = parse_duration)]
    pub archive_retention: Duration,
    /// End a session when no setup or telemetry arrived for this long (it is
    /// archived and announced as expired); 0 keeps sessions forever.
    #[arg(long, env = "PADDOCK_EXPIRE_AFTER", default_value = "1h", value_parser = parse_duration)]
    pub expire_after: Duration,
    /// Publish each team's cars as one message this often, on
    /// team.<team>.tower (the team page reads it; `watch --team` reads the
    /// cars' own frames instead; PROTOCOL.md "The pit wall"); 0 turns the feed
    /// off.
    #[arg(long, env = "PADDOCK_TOWER_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub tower_interval: Duration,
    /// Runtime worker threads. One by default: the processor applies frames in one
    /// loop, and a second worker only moves the client's socket reading to another
    /// core, at the price of a cross-thread wake-up per batch: on 2 cores shared
    /// with the broker, one worker spent 2-3% less CPU per frame
    /// (docs/BENCHMARKS.md). With idle cores to spare, 2 may ingest more.
    #[arg(long, env = "PADDOCK_WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: u16,
    /// Partitioned ownership (docs/ARCHITECTURE.md, "Past one processor"): the
    /// broker splits sessions into this many partitions by their id, with the
    /// subject mappings `paddock broker mappings --partitions N` prints (or `auth
    /// init --partitions N` writes), and this processor holds only the sessions of
    /// the partitions it --owns. Every processor of a deployment must be given
    /// the same number; a processor refuses to start on a broker that does not
    /// map into that many. 1: no partitions, every processor holds every session.
    #[arg(long, env = "PADDOCK_PARTITIONS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::server::partitions::MAX_PARTITIONS)))]
    pub partitions: u32,
    /// With --partitions: the partitions this processor owns, e.g. 0,1 (default:
    /// all). Processors that own the same partition are its replicas.
    #[arg(
        long,
        env = "PADDOCK_OWNS",
        value_delimiter = ',',
        requires = "partitions"
    )]
    pub owns: Option<Vec<u32>>,
    #[command(flatten)]
    pub web: WebArgs,
}

/// The processor's HTTP side: the dashboard page and the ops endpoints.
#[derive(Debug, Clone, Args)]
pub struct WebArgs {
    /// Serve the dashboard page, /healthz, /readyz and /metrics on this address
    /// (e.g. 127.0.0.1:8081, or 0.0.0.0:8081 for the network); off when unset.
    #[arg(long, env = "PADDOCK_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// The broker's WebSocket listener as browsers reach it (ws://host:port, or
    /// wss:// behind TLS): the page connects there.
    #[arg(long, env = "PADDOCK_WS_URL", value_parser = parse_ws_url)]
    pub ws_url: Option<String>,
    /// The page's address as people open it, for the links `sessions share` and
    /// `monitor` print (default: http://<--http-addr> unless that is 0.0.0.0).
    #[arg(long, env = "PADDOCK_PUBLIC_URL", value_parser = parse_http_url)]
    pub public_url: Option<String>,
    /// The page shows STALE after this long without a frame (a link may set its
    /// own with ?stale=<seconds>).
    #[arg(long, env = "PADDOCK_STALE_AFTER", default_value = "5s", value_parser = parse_period)]
    pub stale_after: Duration,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// The Socket.IO gateway beside the page: the Race Dashboard's (1Lap) monitor
/// and pages, unchanged (src/gateway).
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Do not serve the Race Dashboard's Socket.IO protocol at /socket.io/
    /// (served with --http-addr otherwise).
    #[arg(long, env = "PADDOCK_NO_GATEWAY")]
    pub no_gateway: bool,
    /// Socket.IO clients must connect with ?token=<this> in their URL (in the
    /// origin monitor's config.json: "server_url": "http://host:port?token=…").
    #[arg(long, env = "PADDOCK_GATEWAY_TOKEN", hide_env_values = true)]
    pub gateway_token: Option<String>,
    /// The gateway's own NATS identity, a credentials file (default: the
    /// processor's connection settings). Needed where the processor issues
    /// per-session credentials: without it the gateway is off there.
    #[arg(long, env = "PADDOCK_GATEWAY_CREDS")]
    pub gateway_creds: Option<PathBuf>,
    /// The gateway's NATS user (the `gateway` role of deploy/security/roles.conf) ...
    #[arg(long, env = "PADDOCK_GATEWAY_USER", requires = "gateway_password")]
    pub gateway_user: Option<String>,
    /// ... and its password.
    #[arg(long, env = "PADDOCK_GATEWAY_PASSWORD", hide_env_values = true)]
    pub gateway_password: Option<String>,
    /// Where the gateway's replies arrive (default: _INBOX_gateway with
    /// --gateway-user or --gateway-creds, else the processor's prefix).
    #[arg(long, env = "PADDOCK_GATEWAY_INBOX_PREFIX")]
    pub gateway_inbox_prefix: Option<String>,
    /// Socket.IO clients connected at once; more are refused at connect.
    #[arg(long, env = "PADDOCK_GATEWAY_MAX_CONNECTIONS", default_value_t = GatewayConfig::default().max_connections, value_parser = parse_count)]
    pub gateway_max_connections: usize,
    /// Sessions followed for Socket.IO dashboards at once (one subscription
    /// each); joins past it are refused.
    #[arg(long, env = "PADDOCK_GATEWAY_MAX_ROOMS", default_value_t = GatewayConfig::default().max_rooms, value_parser = parse_count)]
    pub gateway_max_rooms: usize,
    /// Bytes of Socket.IO events waiting to be handled, all clients together;
    /// past it events are refused (busy).
    #[arg(long, env = "PADDOCK_GATEWAY_QUEUE_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub gateway_queue_bytes: usize,
}

impl GatewayArgs {
    /// The gateway's NATS connection settings: its own identity when given,
    /// else the processor's.
    pub fn connect_config(&self, processor: &ConnectConfig) -> ConnectConfig {
        let mut config = processor.clone();
        let own = self.gateway_creds.is_some() || self.gateway_user.is_some();
        if own {
            config.creds = self.gateway_creds.clone();
            config.user = self.gateway_user.clone();
            config.password = self.gateway_password.clone();
            config.inbox_prefix = "_INBOX_gateway".into();
        }
        if let Some(prefix) = &self.gateway_inbox_prefix {
            config.inbox_prefix = prefix.clone();
        }
        config
    }
}

impl WebArgs {
    /// Where people open the page: `--public-url`, else the address the page is
    /// served on (`bound`, what `--http-addr` resolved to) unless that is 0.0.0.0.
    pub fn public_url(&self, bound: Option<SocketAddr>) -> Option<String> {
        if let Some(url) = &self.public_url {
            return Some(url.trim_end_matches('/').to_string());
        }
        let addr = bound.or(self.http_addr)?;
        (!addr.ip().is_unspecified()).then(|| format!("http://{addr}"))
    }

    pub fn config(&self) -> WebConfig {
        WebConfig {
            ws_url: self.ws_url.clone(),
            stale_after: self.stale_after,
            gateway: None,
        }
    }

    /// Binds `--http-addr` (at once, so a taken port fails the start) and serves
    /// the page and ops endpoints until [`Web::stop`]. `None` without the flag.
    pub async fn start(
        &self,
        health: &Arc<Health>,
        gateway: Option<(SocketIoLayer, Arc<GatewayMetrics>)>,
    ) -> anyhow::Result<Option<Web>> {
        let Some(addr) = self.http_addr else {
            return Ok(None);
        };
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on --http-addr {addr} (is it taken? pass another)")
        })?;
        let bound = listener.local_addr()?;
        tracing::info!(http_addr = %bound, ws_url = self.ws_url, "serving the dashboard and /healthz, /readyz, /metrics");
        if self.ws_url.is_none() {
            tracing::warn!("no --ws-url: the dashboard page cannot reach the broker");
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut config = self.config();
        config.gateway = gateway;
        let health = Arc::clone(health);
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = web::serve(listener, config, health, shutdown).await {
                tracing::error!(error = %e, "the HTTP server stopped");
            }
        });
        Ok(Some(Web {
            addr: bound,
            stop,
            task,
        }))
    }
}

/// The HTTP side, running.
pub struct Web {
    /// The address it listens on (what `--http-addr` resolved to).
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Web {
    /// Stops it gracefully, once the processor has drained (`/readyz` says
    /// "shutting down" meanwhile).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// `TEAM:key=value,…` of --team-alerts, its keys checked against the defaults
/// (the values are checked again on top of --alert-* when serve starts).
fn parse_team_alerts(s: &str) -> Result<(String, String), String> {
    let (team, spec) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not TEAM:key=value,… (e.g. Blue:tyre_max=110)"))?;
    let team = team.trim();
    if team.is_empty() {
        return Err(format!("{s:?} names no team"));
    }
    crate::server::alerts::Thresholds::default().with(spec)?;
    Ok((team.to_string(), spec.to_string()))
}

pub(crate) fn parse_ws_url(s: &str) -> Result<String, String> {
    if (s.starts_with("ws://") || s.starts_with("wss://")) && s.len() > "wss://".len() {
        Ok(s.to_string())
    } else {
        Err("expected ws://HOST:PORT or wss://HOST:PORT (the broker's websocket listener)".into())
    }
}

fn parse_http_url(s: &str) -> Result<String, String> {
    if (s.starts_with("http://") || s.starts_with("https://")) && s.len() > "https://".len() {
        Ok(s.to_string())
    } else {
        Err("expected http://HOST:PORT or https://HOST (where people open the page)".into())
    }
}

impl ServeArgs {
    /// The HTTP side with the Socket.IO gateway (when it is served): what
    /// `serve` and `demo` start before the processor.
    pub async fn start_web(&self, health: &Arc<Health>) -> anyhow::Result<Option<Web>> {
        let gateway = match self.gateway()? {
            Some(config) => {
                let connect = self.web.gateway.connect_config(&self.connect.config());
                let nats = connect::connect_persistent(&connect, "paddock-gateway")
                    .await
                    .context("the Socket.IO gateway's NATS connection (--gateway-*)")?;
                Some(gateway::layer(nats, config))
            }
            None => None,
        };
        self.web.start(health, gateway).await
    }

    /// The gateway's settings, or `None` when it is not served: no
    /// --http-addr, --no-gateway, or per-session credentials without an
    /// identity of its own for the gateway (docs/SECURITY.md says why).
    pub fn gateway(&self) -> anyhow::Result<Option<GatewayConfig>> {
        let args = &self.web.gateway;
        if self.web.http_addr.is_none() || args.no_gateway {
            return Ok(None);
        }
        if self.issuer_account.is_some() && args.gateway_creds.is_none() {
            tracing::warn!(
                "the Socket.IO gateway is off: this processor issues per-session credentials, and \
                 the Race Dashboard's monitor has none; pass --gateway-creds to serve it anyway \
                 (docs/SECURITY.md)"
            );
            return Ok(None);
        }
        Ok(Some(GatewayConfig {
            token: args.gateway_token.clone(),
            max_payload: self.max_payload,
            max_connections: args.gateway_max_connections,
            max_rooms: args.gateway_max_rooms,
            queue_bytes: args.gateway_queue_bytes,
        }))
    }

    /// Messages each subscription of the processor's client may buffer
    /// (`--ingest-buffer`): the bound in bytes is the ingest queue's.
    pub fn ingest_capacity(&self) -> usize {
        self.ingest_buffer.max(16)
    }

    /// `--ingest-buffer-bytes`, or its default.
    pub fn ingest_buffer_bytes(&self) -> usize {
        self.ingest_buffer_bytes
            .unwrap_or_else(|| crate::server::app::default_ingest_buffer_bytes(self.max_memory))
    }

    pub fn limits(&self) -> anyhow::Result<Limits> {
        // Less could never queue a frame of the largest size accepted.
        anyhow::ensure!(
            self.ingest_buffer_bytes() >= 2 * self.max_payload,
            "--ingest-buffer-bytes ({}) must hold at least two frames of --max-payload ({} bytes)",
            self.ingest_buffer_bytes(),
            self.max_payload
        );
        let mut limits = Limits {
            max_payload: self.max_payload,
            max_sessions: self.max_sessions,
            ingest_buffer_bytes: self.ingest_buffer_bytes(),
            creates_per_minute: self.create_limit,
            lap_field: self.lap_field.0.clone(),
            budgets: crate::server::sessions::Budgets {
                frame_rate: self.max_frame_rate.max(0.0),
                frame_burst: self.max_frame_burst.max(1.0),
                field_rate: self.max_field_rate.max(0.0),
                field_burst: (2.0 * self.max_field_rate).max(1.0),
                laps_per_minute: self.max_lap_rate.max(0.0),
                history: crate::server::laps::HistoryLimits {
                    max_laps: usize::try_from(self.max_laps).unwrap_or(usize::MAX),
                    max_bytes: self.max_lap_bytes,
                },
                max_memory: self.max_memory,
                // Set from --max-payload by App::new.
                session_reserve: 0,
            },
            on_demand: OnDemand {
                per_minute: self.on_demand_limit,
                max_live: (self.max_sessions as u128 * u128::from(self.on_demand_share) / 100)
                    as usize,
            },
            credentials_ttl: self.credentials_ttl,
            fuel_reserve_laps: self.fuel_reserve_laps,
            pit_loss: self.pit_loss,
            alerts: crate::server::alerts::Thresholds {
                fuel_laps: self.alert_fuel_laps,
                tyre_min_c: self.alert_tyre_min,
                tyre_max_c: self.alert_tyre_max,
                brake_max_c: self.alert_brake_max,
                wear_max: self.alert_wear_max,
                stale_s: self.alert_stale.as_secs_f64(),
            },
            team_alerts: Default::default(),
            max_links: self.max_links,
        };
        // On top of the --alert-* values; a team named twice keeps the last.
        for (team, spec) in &self.team_alerts {
            let thresholds = limits
                .alerts
                .with(spec)
                .map_err(|e| anyhow::anyhow!("--team-alerts {team}: {e}"))?;
            limits.team_alerts.insert(team.clone(), thresholds);
        }
        Ok(limits)
    }

    /// The credentials issuer, when `--issuer-account` and `--issuer-signing-seed`
    /// are given.
    pub fn issuer(&self) -> anyhow::Result<Option<Issuer>> {
        use anyhow::Context;
        let (Some(account), Some(seed)) = (&self.issuer_account, &self.issuer_signing_seed) else {
            return Ok(None);
        };
        let seed = std::fs::read_to_string(seed)
            .with_context(|| format!("cannot read the signing seed {}", seed.display()))?;
        Ok(Some(Issuer::new(account, &seed)?))
    }

    pub fn lifecycle(&self) -> Lifecycle {
        Lifecycle {
            expire_after: (!self.expire_after.is_zero()).then_some(self.expire_after),
            archive_retention: self.archive_retention,
            tower_every: (!self.tower_interval.is_zero()).then_some(self.tower_interval),
        }
    }

    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            kind: self.store.into(),
            bucket: self.kv_bucket.clone(),
            persist_interval: self.persist_interval,
            persist_rate: self.persist_rate,
            archive_retention: self.archive_retention,
            replicas: self.kv_replicas,
            max_bytes: self.kv_max_bytes.unwrap_or(self.max_memory),
            progress: Default::default(),
            trace_session_bytes: self.trace_session_bytes,
            max_payload: self.max_payload,
        }
    }
}

impl ServeArgs {
    /// `serve`'s flags as parsed from `flags` (and `PADDOCK_*` variables), the
    /// rest at their defaults: how tests and tools get the processor users run.
    pub fn parse_flags(flags: &[&str]) -> Self {
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            args: ServeArgs,
        }
        <Serve as clap::Parser>::parse_from(std::iter::once("serve").chain(flags.iter().copied()))
            .args
    }

    /// The processor's configuration from these flags.
    pub fn config(&self) -> anyhow::Result<server::Config> {
        Ok(server::Config {
            limits: self.limits()?,
            store: self.store_config(),
            lifecycle: self.lifecycle(),
            issuer: self
                .issuer()
                .context("--issuer-account/--issuer-signing-seed")?,
            // Set once the page's address is bound (`WebArgs::start`).
            dashboard_url: None,
            partitions: crate::server::partitions::Partitions::new(
                self.partitions,
                self.owns.as_deref(),
            )?,
        })
    }
}

/// `--store`: where session state is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreArg {
    /// JetStream key-value buckets: sessions survive restarts.
    Jetstream,
    /// Memory only: every session is lost when the processor stops.
    Memory,
}

impl From<StoreArg> for StoreKind {
    fn from(arg: StoreArg) -> Self {
        match arg {
            StoreArg::Jetstream => StoreKind::Jetstream,
            StoreArg::Memory => StoreKind::Memory,
        }
    }
}

/// `paddock serve`: connects (waiting for a broker that is not up yet) and serves
/// until `shutdown`.
pub async fn run(args: &ServeArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut config = args.config()?;
    let health = Arc::new(Health::default());
    config.store.progress = health.progress();
    let web = args.start_web(&health).await?;
    config.dashboard_url = args.web.public_url(web.as_ref().map(|w| w.addr));
    let client = connect::processor(&args.connect.config(), args.ingest_capacity()).await?;
    let served = server::serve(client, config, &health, shutdown)
        .await
        .inspect_err(|e| health.failed(e))
        .context("cannot start the processor");
    if let Some(web) = web {
        web.stop().await;
    }
    served
}
