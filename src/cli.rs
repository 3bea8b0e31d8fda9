//! Command-line interface. Every flag can also come from the environment, so the
//! same binary is configured by a shell, a systemd unit or a compose file alike.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::app::Limits;
use crate::processor::Lifecycle;
use crate::store::{StoreConfig, StoreKind};
use crate::telemetry::LogFormat;

/// paddock: live sim-racing sessions on NATS.
#[derive(Debug, Parser)]
#[command(name = "paddock", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format (filter with RUST_LOG, e.g. RUST_LOG=paddock=debug).
    #[arg(long, env = "PADDOCK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the session processor until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Run a local stack: a broker from nats.conf (unless one is reachable), the
    /// processor and a few simulated monitors.
    Demo(DemoArgs),
    /// List, inspect and delete sessions through the broker (ops).
    Sessions(SessionsArgs),
    /// Simulate a monitor (or many): create a session, send a setup, stream telemetry.
    Monitor(MonitorArgs),
    /// Watch one session live: a race engineer's view in the terminal.
    Watch(WatchArgs),
    /// Measure paddock beside raw NATS and a JetStream KV bucket, in one run,
    /// against a broker and a processor it starts itself (docs/BENCHMARKS.md).
    Bench(BenchArgs),
    /// Set up per-session access (docs/SECURITY.md): `paddock auth init --out DIR`
    /// writes a broker configuration in operator mode and paddock's credentials.
    Auth(AuthArgs),
    /// The local nats-server that demo, bench and the tests start when no broker
    /// is at hand.
    #[command(subcommand)]
    Broker(BrokerCommand),
    /// The fixed workload `bench` counts instructions of, under callgrind.
    #[command(hide = true)]
    BenchHotpath(HotpathArgs),
}

impl Command {
    /// The log level when RUST_LOG is not set: long-running services log their
    /// life at info; commands a person runs stay quiet unless something is wrong.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Serve(_) | Command::Demo(_) => "info",
            Command::Sessions(_)
            | Command::Monitor(_)
            | Command::Watch(_)
            | Command::Bench(_)
            | Command::Auth(_)
            | Command::Broker(_)
            | Command::BenchHotpath(_) => "warn",
        }
    }

    /// Whether logs may be written to the terminal. Not under the full-screen watch
    /// view: a log line would be drawn over it (the view shows the link state itself).
    pub fn logs_to_terminal(&self) -> bool {
        !matches!(self, Command::Watch(args) if !args.plain)
    }
}

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// NATS server URL.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    pub nats_url: String,
    /// A NATS credentials file (JWT and NKey seed), for brokers using
    /// decentralized auth; see deploy/security/.
    #[arg(long, env = "NATS_CREDS", global = true)]
    pub creds: Option<PathBuf>,
    /// User name, for brokers with users and passwords in their configuration
    /// (the shared-secret mode in deploy/security/).
    #[arg(long, env = "NATS_USER", global = true, requires = "password")]
    pub user: Option<String>,
    /// Password for --user.
    #[arg(long, env = "NATS_PASSWORD", global = true, hide_env_values = true)]
    pub password: Option<String>,
    /// CA certificate (PEM) to verify the broker with; makes TLS required.
    #[arg(long, env = "NATS_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), for brokers that verify clients (`verify: true`).
    #[arg(long, env = "NATS_TLS_CERT", global = true, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "NATS_TLS_KEY", global = true, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where this client receives replies: `<prefix>.<connection>.<n>`. With the
    /// roles in deploy/security/, each role may only read its own prefix
    /// (`_INBOX_monitor`, `_INBOX_dashboard`, `_INBOX_ops`).
    #[arg(
        long,
        env = "NATS_INBOX_PREFIX",
        global = true,
        default_value = "_INBOX"
    )]
    pub inbox_prefix: String,
}

impl ConnectArgs {
    /// A broker at `url` with no credentials and no TLS (tests, benchmarks).
    pub fn plain(url: &str) -> Self {
        ConnectArgs {
            nats_url: url.to_string(),
            creds: None,
            user: None,
            password: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            inbox_prefix: "_INBOX".into(),
        }
    }
}

/// `--lap-field`: a pointer, or `None` for "none".
#[derive(Debug, Clone)]
pub struct LapField(pub Option<crate::payload::Pointer>);

fn parse_lap_field(text: &str) -> Result<LapField, String> {
    if text == "none" {
        return Ok(LapField(None));
    }
    crate::payload::Pointer::parse(text).map(|p| LapField(Some(p)))
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Largest frame or request accepted, in bytes; larger ones are refused with 413.
    /// Keep it below the broker's max_payload (1 MiB by default).
    #[arg(long, env = "PADDOCK_MAX_PAYLOAD", default_value_t = Limits::default().max_payload)]
    pub max_payload: usize,
    /// Frames (and requests) the processor buffers while it is busy, per
    /// subscription: a burst beyond this is dropped by the client and logged as
    /// "slow consumer". At worst this many frames sit in memory.
    #[arg(long, env = "PADDOCK_INGEST_BUFFER", default_value_t = crate::processor::DEFAULT_INGEST_BUFFER)]
    pub ingest_buffer: usize,
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
    /// Most live sessions; past it, sessions.create answers 503.
    #[arg(long, env = "PADDOCK_MAX_SESSIONS", default_value_t = Limits::default().max_sessions)]
    pub max_sessions: usize,
    /// The telemetry field (a JSON pointer, RFC 6901) whose change completes a lap
    /// and records it in the session's lap history; "none" turns lap history off.
    #[arg(long, env = "PADDOCK_LAP_FIELD", default_value = "/lap", value_parser = parse_lap_field)]
    pub lap_field: LapField,
    /// Completed laps kept per session (the oldest are dropped first); the default
    /// covers a 24-hour race at 1.5-minute laps.
    #[arg(long, env = "PADDOCK_MAX_LAPS", default_value_t = crate::laps::DEFAULT_MAX_LAPS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_laps: u64,
    /// Where sessions are kept: JetStream key-value buckets (they survive restarts),
    /// or memory only (lost when the processor stops).
    #[arg(long, env = "PADDOCK_STORE", value_enum, default_value_t = StoreKind::Jetstream)]
    pub store: StoreKind,
    /// The JetStream bucket for live sessions; ended ones go to `<bucket>_archive`,
    /// completed laps to `<bucket>_laps`.
    #[arg(long, env = "PADDOCK_KV_BUCKET", default_value = "paddock_sessions")]
    pub kv_bucket: String,
    /// Replicas for both buckets (3 on a 3-node cluster).
    #[arg(long, env = "PADDOCK_KV_REPLICAS", default_value_t = 1)]
    pub kv_replicas: usize,
    /// Write-behind window: telemetry is stored at least this often, so after a
    /// crash each session's stored frame is at most this old. Setups, creates and
    /// deletes are stored before they are acknowledged.
    #[arg(long, env = "PADDOCK_PERSIST_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub persist_interval: Duration,
    /// How long ended (deleted) sessions are kept in the archive; their ids stay
    /// refused that long.
    #[arg(long, env = "PADDOCK_ARCHIVE_RETENTION", default_value = "168h", value_parser = parse_duration)]
    pub archive_retention: Duration,
    /// End a session when no setup or telemetry arrived for this long (it is
    /// archived and announced as expired); 0 keeps sessions forever.
    #[arg(long, env = "PADDOCK_EXPIRE_AFTER", default_value = "1h", value_parser = parse_duration)]
    pub expire_after: Duration,
}

impl ServeArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_payload: self.max_payload,
            max_sessions: self.max_sessions,
            creates_per_minute: self.create_limit,
            lap_field: self.lap_field.0.clone(),
            max_laps: usize::try_from(self.max_laps).unwrap_or(usize::MAX),
        }
    }

    /// The credentials issuer, when `--issuer-account` and `--issuer-signing-seed`
    /// are given.
    pub fn issuer(&self) -> anyhow::Result<Option<crate::credentials::Issuer>> {
        use anyhow::Context;
        let (Some(account), Some(seed)) = (&self.issuer_account, &self.issuer_signing_seed) else {
            return Ok(None);
        };
        let seed = std::fs::read_to_string(seed)
            .with_context(|| format!("cannot read the signing seed {}", seed.display()))?;
        crate::credentials::Issuer::new(account, &seed).map(Some)
    }

    pub fn lifecycle(&self) -> Lifecycle {
        Lifecycle {
            expire_after: (!self.expire_after.is_zero()).then_some(self.expire_after),
            archive_retention: self.archive_retention,
        }
    }

    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            kind: self.store,
            bucket: self.kv_bucket.clone(),
            persist_interval: self.persist_interval,
            archive_retention: self.archive_retention,
            replicas: self.kv_replicas,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Broker configuration used when no broker is reachable at --nats-url.
    #[arg(long, env = "PADDOCK_NATS_CONF", default_value = "nats.conf")]
    pub nats_conf: PathBuf,
    /// nats-server binary used to start that broker (default: `nats-server` on
    /// PATH, else the pinned release, fetched into the cache).
    #[arg(long, env = "NATS_SERVER_BIN")]
    pub nats_server_bin: Option<PathBuf>,
    /// Simulated monitors to run.
    #[arg(long, env = "PADDOCK_DEMO_MONITORS", default_value_t = 3)]
    pub monitors: usize,
    /// Race time per real second for the demo's monitors (20 makes a lap about 10 s).
    #[arg(long, env = "PADDOCK_DEMO_TIME_SCALE", default_value_t = 20.0)]
    pub time_scale: f64,
}

#[derive(Debug, Clone, Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print the processor's JSON instead of tables, for scripts.
    #[arg(long, env = "PADDOCK_JSON", global = true)]
    pub json: bool,
    /// How long to wait for a reply (e.g. 5s, 500ms).
    #[arg(long, env = "PADDOCK_TIMEOUT", default_value = "5s", value_parser = parse_duration, global = true)]
    pub timeout: Duration,
    #[command(subcommand)]
    pub command: SessionsCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum SessionsCommand {
    /// A new session; prints its id. When the processor issues per-session
    /// credentials, they are written into --credentials-dir as
    /// <id>-monitor.creds and <id>-dashboard.creds.
    Create {
        #[arg(long, env = "PADDOCK_CREDENTIALS_DIR", default_value = ".")]
        credentials_dir: PathBuf,
    },
    /// Every live session, oldest first.
    List,
    /// One session: setup, latest telemetry, statistics.
    Get { session_id: String },
    /// End a session (its monitor's later data is refused).
    Delete { session_id: String },
    /// A session's completed laps, oldest first: lap, lap time, frames, fuel.
    Laps {
        session_id: String,
        /// Only laps numbered at least this.
        #[arg(long)]
        from_lap: Option<f64>,
        /// From the archive (a deleted or expired session).
        #[arg(long)]
        archived: bool,
    },
    /// Service-wide counters.
    Stats,
}

#[derive(Debug, Clone, Args)]
pub struct MonitorArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Reuse this session id instead of asking for a new one (one monitor only).
    #[arg(long, env = "PADDOCK_SESSION")]
    pub session: Option<String>,
    /// Telemetry frames per second, per session.
    #[arg(long, env = "PADDOCK_HZ", default_value_t = 10.0)]
    pub hz: f64,
    /// Monitors to run in this process, each with its own session (load generation).
    #[arg(long, env = "PADDOCK_SESSIONS", default_value_t = 1)]
    pub sessions: usize,
    /// Replay a JSON-lines recording (one frame per line) at its recorded pace
    /// instead of simulating. A line {"setup": {…}} is sent as the setup.
    #[arg(long, env = "PADDOCK_REPLAY")]
    pub replay: Option<PathBuf>,
    /// Race time per real second (1 is real time; 20 makes a Le Mans lap ~10 s).
    #[arg(long, env = "PADDOCK_TIME_SCALE", default_value_t = 1.0)]
    pub time_scale: f64,
    /// Stop after this long (e.g. 30s, 2m); runs until ctrl-c when not given.
    #[arg(long, env = "PADDOCK_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// How often to report rate and totals on stderr (0 to turn off).
    #[arg(long, env = "PADDOCK_PROGRESS", default_value = "5s", value_parser = parse_duration)]
    pub progress: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The session to watch.
    pub session_id: String,
    /// One line per second instead of the full-screen view, for pipes and logs.
    #[arg(long, env = "PADDOCK_PLAIN")]
    pub plain: bool,
    /// Show STALE when no frame arrived for this long.
    #[arg(long, env = "PADDOCK_STALE_AFTER", default_value = "5s", value_parser = parse_duration)]
    pub stale_after: Duration,
}

/// How to run this binary again, for commands printed to the user: the path of the
/// running executable, relative to the working directory when it is below it (so
/// after `cargo run` it reads `target/release/paddock`), else `paddock`.
pub fn self_command() -> String {
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().ok();
    match (exe, cwd) {
        (Some(exe), Some(cwd)) => match exe.strip_prefix(&cwd) {
            Ok(relative) => relative.display().to_string(),
            Err(_) if exe.file_name().is_some_and(|n| n == "paddock") && on_path(&exe) => {
                "paddock".into()
            }
            Err(_) => exe.display().to_string(),
        },
        _ => "paddock".into(),
    }
}

fn on_path(exe: &std::path::Path) -> bool {
    let Some(dir) = exe.parent() else {
        return false;
    };
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d == dir))
}

/// "5s", "500ms", "2m", "1h", or a plain number of seconds.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let input = input.trim();
    let split = input
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(input.len());
    let (number, unit) = input.split_at(split);
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {input:?} (try 5s, 500ms, 2m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {input:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("not a duration: {input:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// nats-server binary to start the benchmark's own broker with (default:
    /// `nats-server` on PATH, else the pinned release, fetched into the cache).
    #[arg(long, env = "NATS_SERVER_BIN")]
    pub nats_server_bin: Option<PathBuf>,
    /// Frames per ingest measurement.
    #[arg(long, env = "PADDOCK_BENCH_FRAMES", default_value_t = 300_000)]
    pub frames: usize,
    /// Turns of raw NATS and paddock per ingest measurement (medians are reported).
    #[arg(long, env = "PADDOCK_BENCH_ROUNDS", default_value_t = 5)]
    pub rounds: usize,
    /// Sessions the frames are spread over.
    #[arg(long, env = "PADDOCK_BENCH_SESSIONS", default_value_t = 100)]
    pub sessions: usize,
    /// Ingest rate (frames/s) while `sessions.get` latency is measured.
    #[arg(long, env = "PADDOCK_BENCH_GET_RATE", default_value_t = 50_000)]
    pub get_rate: u64,
    /// Seconds of `sessions.get` under load.
    #[arg(long, env = "PADDOCK_BENCH_GET_SECONDS", default_value_t = 10)]
    pub get_seconds: u64,
    /// Stored sessions to recover.
    #[arg(
        long,
        env = "PADDOCK_BENCH_RECOVERY_SESSIONS",
        default_value_t = 100_000
    )]
    pub recovery_sessions: usize,
    /// Only these parts: ingest, get, latency, memory, recovery, callgrind.
    #[arg(long, env = "PADDOCK_BENCH_ONLY", value_delimiter = ',')]
    pub only: Vec<String>,
    /// A smoke test: every part, on small figures, in seconds.
    #[arg(long, env = "PADDOCK_BENCH_QUICK")]
    pub quick: bool,
}

#[derive(Debug, Clone, Args)]
pub struct HotpathArgs {
    #[arg(long, default_value_t = 10_000)]
    pub frames: usize,
    /// small (0.5 KB) or rich (1.5 KB).
    #[arg(long, default_value = "small")]
    pub frame: String,
    /// As `serve --lap-field` ("none": lap history off, to measure its cost).
    #[arg(long, default_value = "/lap", value_parser = parse_lap_field)]
    pub lap_field: LapField,
}

#[derive(Debug, Clone, Subcommand)]
pub enum BrokerCommand {
    /// Fetch the pinned NATS Server release into paddock's cache (checked against
    /// its pinned SHA-256; a damaged copy is fetched again) and print its path.
    /// The cache is $XDG_CACHE_HOME/paddock, else ~/.cache/paddock.
    Fetch,
    /// Print the nats-server that demo, bench and the tests would start:
    /// NATS_SERVER_BIN, else `nats-server` on PATH, else the pinned release
    /// (fetched if missing).
    Which,
}

#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    #[command(subcommand)]
    pub command: AuthCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AuthCommand {
    /// Make a new operator, system account and paddock account, and write into
    /// DIR: nats-operator.conf (include it from the broker's configuration),
    /// issuer.account and issuer.seed (the processor's --issuer-account and
    /// --issuer-signing-seed), processor.creds, ops.creds and creator.creds.
    Init {
        /// Where to write; created if missing. Keep it private: it holds seeds.
        #[arg(long, env = "PADDOCK_AUTH_DIR")]
        out: PathBuf,
    },
}
