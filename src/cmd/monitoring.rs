//! What every source of `paddock monitor` shares: its flags ([`MonitorArgs`]) and
//! the steps of writing to a session (create it, announce it, send its setup,
//! stamp its frames). The simulation and replays (cmd/monitor.rs), F1's UDP
//! (cmd/f1.rs) and the watch for endings (cmd/endings.rs) all build on this
//! module, and it on none of them, so adding a source adds no circle.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use chrono::Utc;
use clap::Args;
use serde_json::Value;

use super::args::{ConnectArgs, parse_duration};
use crate::client::SessionsClient;
use crate::protocol::documents::Ack;
use crate::protocol::id::SessionId;
use crate::protocol::subjects::{self, DataKind};

/// The frame with `timestamp`: when the monitor read it (the schema's meaning).
pub(super) fn stamped(mut frame: Value) -> Value {
    if let Value::Object(map) = &mut frame {
        map.insert(
            "timestamp".into(),
            Value::String(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
    }
    frame
}

/// The fields a source sent (`session.<id>.field`), those it did not because
/// the processor would refuse them (the source's bug, counted, never sent), and
/// those skipped while disconnected.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct FieldSends {
    pub sent: u64,
    pub refused: u64,
    pub skipped: u64,
    /// The field changed since it last went.
    changed: bool,
}

impl FieldSends {
    /// The pace fields go at: `--field-hz`, ticks missed while busy skipped.
    pub(super) fn ticker(field_hz: f64) -> tokio::time::Interval {
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / field_hz));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticker
    }

    /// What the decoder read changed the field (or not).
    pub(super) fn changed(&mut self, changed: bool) {
        self.changed |= changed;
    }

    /// On a tick (and at the end): the latest field, if it changed since the last.
    pub(super) async fn tick(
        &mut self,
        nats: &async_nats::Client,
        subject: &str,
        field: impl FnOnce() -> Option<Value>,
    ) -> anyhow::Result<()> {
        if !self.changed {
            return Ok(());
        }
        match field() {
            Some(field) => {
                self.changed = false;
                self.send(nats, subject, field).await
            }
            None => Ok(()),
        }
    }

    /// Publishes the field, stamped, if it holds to its schema (protocol/field.rs).
    pub(super) async fn send(
        &mut self,
        nats: &async_nats::Client,
        subject: &str,
        field: Value,
    ) -> anyhow::Result<()> {
        if nats.connection_state() != async_nats::connection::State::Connected {
            self.skipped += 1;
            return Ok(());
        }
        let body = stamped(field).to_string();
        if let Err(e) = crate::protocol::field::Field::parse(body.as_bytes()) {
            self.refused += 1;
            tracing::debug!(error = %e, "field not sent");
            return Ok(());
        }
        nats.publish(subject.to_string(), Bytes::from(body)).await?;
        self.sent += 1;
        Ok(())
    }
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
    /// With a source that sees every car (--source f1, acc-broadcast, and the
    /// simulated race: the monitor's cars and rivals, 12 in all): the field
    /// (every car on track, `session.<id>.field`) per second. It changes
    /// slower than the car; the processor takes at most --max-field-rate.
    #[arg(long, env = "PADDOCK_FIELD_HZ", default_value_t = 2.0)]
    pub field_hz: f64,
    /// Monitors to run in this process, each with its own session (load generation).
    #[arg(long, env = "PADDOCK_SESSIONS", default_value_t = 1)]
    pub sessions: usize,
    /// Where frames come from: the simulated car, a game's UDP telemetry
    /// (the player's car; see --listen): EA F1 24/25, Forza's Data Out, Gran
    /// Turismo 7 (see --console), or, on Windows beside the game, its shared
    /// memory read --hz times a second: ACC, AC, iRacing, LMU.
    #[arg(long, env = "PADDOCK_SOURCE", value_enum, default_value_t = SourceArg::Sim)]
    pub source: SourceArg,
    /// With --source f1, forza or gt7: the address and port to receive the
    /// game's UDP telemetry on (the game's IP address is this machine's, its
    /// port this port). By default 0.0.0.0 and the game's usual port: 20777
    /// (f1), 5300 (forza), 33740 (gt7).
    #[arg(long, env = "PADDOCK_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// With --source f1, forza or gt7: when the game starts another session
    /// (F1: its session UID changes, practice to qualifying, the next race;
    /// Forza and GT7: another car, or a race restarted or the next one begun),
    /// ask for a new paddock session and print its id. Without it the car
    /// stays in one session.
    #[arg(long, env = "PADDOCK_NEW_SESSION_PER_RACE")]
    pub new_session_per_race: bool,
    /// Replay a recording at its recorded pace instead of simulating: a
    /// JSON-lines file (one frame per line; a line {"setup": {…}} is sent as
    /// the setup) or an iRacing telemetry file (.ibt: its rows as frames, its
    /// car setup as the setup). Exits when the last frame is sent.
    #[arg(long, env = "PADDOCK_REPLAY")]
    pub replay: Option<PathBuf>,
    /// What --replay holds; by default its extension says (.ibt, else JSON lines).
    #[arg(long, env = "PADDOCK_FORMAT", value_enum)]
    pub format: Option<ReplayFormat>,
    /// Race time per real second (1 is real time; 20 makes a Le Mans lap ~10 s).
    #[arg(long, env = "PADDOCK_TIME_SCALE", default_value_t = 1.0)]
    pub time_scale: f64,
    /// Stop after this long (e.g. 30s, 2m); runs until ctrl-c when not given.
    #[arg(long, env = "PADDOCK_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// How often to report rate and totals on stderr (0 to turn off).
    #[arg(long, env = "PADDOCK_PROGRESS", default_value = "5s", value_parser = parse_duration)]
    pub progress: Duration,
    /// How often one frame per session goes as a request rather than a publish,
    /// so that a session deleted or expired meanwhile is noticed whatever the
    /// credentials may subscribe to (its frames would only be refused); 0: never.
    #[arg(long, env = "PADDOCK_CHECK_EVERY", default_value = "10s", value_parser = parse_duration)]
    pub check_every: Duration,
    #[command(flatten)]
    pub dashboard: super::sessions::DashboardArgs,
    /// The labels of the session it creates (not with --session).
    #[command(flatten)]
    pub label: super::sessions::LabelArgs,
    #[command(flatten)]
    pub gt7: Gt7Args,
    #[command(flatten)]
    pub acc: AccBroadcastArgs,
}

/// Where ACC's broadcasting API is (`--source acc-broadcast`).
#[derive(Debug, Clone, Args)]
pub struct AccBroadcastArgs {
    /// With --source acc-broadcast: the game's broadcasting address, HOST:PORT
    /// (its broadcasting.json `updListenerPort`, 9000 by default; the game's
    /// machine, or 127.0.0.1 beside it).
    #[arg(long, env = "PADDOCK_ACC_HOST", default_value = "127.0.0.1:9000")]
    pub acc_host: String,
    /// With --source acc-broadcast: broadcasting.json's `connectionPassword`.
    #[arg(long, env = "PADDOCK_ACC_PASSWORD", default_value = "asd")]
    pub acc_password: String,
    /// With --source acc-broadcast: how often the game sends every car's update.
    #[arg(long, env = "PADDOCK_ACC_UPDATE_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub acc_update_interval: Duration,
}

impl Default for AccBroadcastArgs {
    fn default() -> Self {
        AccBroadcastArgs {
            acc_host: "127.0.0.1:9000".into(),
            acc_password: "asd".into(),
            acc_update_interval: Duration::from_millis(250),
        }
    }
}

impl MonitorArgs {
    /// `--listen`, or every address on the game's usual `port`.
    pub(super) fn listen_on(&self, port: u16) -> std::net::SocketAddr {
        self.listen
            .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], port)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceArg {
    /// The simulated car (src/cmd/sim.rs).
    Sim,
    /// EA F1 24 and F1 25 UDP telemetry.
    F1,
    /// Forza's Data Out: Forza Motorsport (2023) and 7, Forza Horizon 4 and 5.
    Forza,
    /// Gran Turismo 7's Simulator Interface (needs --console).
    Gt7,
    /// Assetto Corsa Competizione's shared memory (Windows, beside the game).
    Acc,
    /// Assetto Corsa Competizione's broadcasting API (UDP, any OS; see
    /// --acc-host): every car on track as the field, the focused car as frames.
    AccBroadcast,
    /// Assetto Corsa's shared memory (Windows, beside the game): ACC's layout.
    Ac,
    /// iRacing's live telemetry, its shared memory (Windows, beside the sim);
    /// elsewhere, --replay a .ibt file.
    Iracing,
    /// Le Mans Ultimate (or rFactor 2): the rF2 shared memory plugin's buffers
    /// (Windows, beside the game; the game's "Enable Plugins" on).
    Lmu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayFormat {
    /// One JSON frame per line.
    Jsonl,
    /// An iRacing telemetry file.
    Ibt,
}

/// How a race engineer reads a session this monitor writes: the flags its printed
/// `watch` command needs, and the credentials its page link carries.
enum DashboardAccess {
    /// No broker auth: nothing to add.
    Open,
    /// The shared-secret roles (deploy/security/roles.conf): the dashboard
    /// role's user, its password from the environment the broker reads it from.
    Roles,
    /// Per-session credentials: the session's dashboard `.creds` beside the
    /// monitor's (as `sessions create --credentials-dir` wrote them), when there.
    Session {
        creds: Option<(std::path::PathBuf, String, String)>,
        inbox: String,
    },
}

impl DashboardAccess {
    fn of(connect: &super::args::ConnectArgs, id: &SessionId) -> Self {
        if let Some(monitor_creds) = &connect.creds {
            let path = monitor_creds
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join(format!("{id}-dashboard.creds"));
            let creds = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| crate::client::creds::parts(&text))
                .map(|(jwt, seed)| (path, jwt, seed));
            DashboardAccess::Session {
                creds,
                inbox: subjects::inbox_prefix(id),
            }
        } else if connect.user.is_some() {
            DashboardAccess::Roles
        } else {
            DashboardAccess::Open
        }
    }

    fn watch_flags(&self) -> String {
        match self {
            DashboardAccess::Open => String::new(),
            DashboardAccess::Roles => {
                " --user dashboard --password \"$PADDOCK_DASHBOARD_PASSWORD\" \
                 --inbox-prefix _INBOX_dashboard"
                    .into()
            }
            DashboardAccess::Session { creds, inbox } => {
                let path = creds.as_ref().map_or_else(
                    || "<id>-dashboard.creds".to_string(),
                    |(path, _, _)| path.display().to_string(),
                );
                format!(" --creds {path} --inbox-prefix {inbox}")
            }
        }
    }

    fn link(&self) -> Option<(&str, &str, &str)> {
        match self {
            DashboardAccess::Session {
                creds: Some((_, jwt, seed)),
                inbox,
            } => Some((jwt, seed, inbox)),
            _ => None,
        }
    }
}

/// Prints a session's id, the command to watch it and its page link (with a
/// QR code for one car), on stdout where a script or a person reads them.
pub(super) fn announce(
    args: &MonitorArgs,
    dashboard: Option<&str>,
    id: &str,
) -> anyhow::Result<()> {
    out!("session {id}");
    let parsed = SessionId::parse(id)?;
    let access = DashboardAccess::of(&args.connect, &parsed);
    out!(
        "  watch it: {} watch {id}{}{}",
        crate::cmd::self_command(),
        args.connect.as_flags(),
        access.watch_flags()
    );
    if let Some(base) = dashboard {
        let link = subjects::dashboard_link(base, &parsed, access.link());
        out!("  open it: {link}");
        // One car: its code to scan with a phone. Several: links only.
        if args.sessions == 1 {
            let hint =
                format!("`paddock sessions share {id} --qr-file qr.svg` writes it as an image");
            let code = super::format::qr(&link, super::format::terminal_columns(), &hint);
            out!("{}", code.trim_end());
        }
    }
    Ok(())
}

/// Completes `duration` from now (`--duration`), or never when there is none.
pub(super) async fn after(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Asks for a new session, waiting (and saying so) while no processor answers or
/// its storage is briefly unavailable.
pub(super) async fn create_session(
    client: &SessionsClient,
    label: &crate::protocol::documents::Label,
) -> anyhow::Result<String> {
    let mut told = false;
    loop {
        match client.create_labelled(label).await {
            Ok(doc) => return Ok(doc.session_id.to_string()),
            Err(e) if e.is_transient() => {
                if !told {
                    say!("monitor: {e}; waiting for one");
                    told = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).context("cannot create a session"),
        }
    }
}

/// Sends `setup` for session `id` as a request; waits for a processor.
pub(super) async fn send_setup_of(
    client: &SessionsClient,
    id: &str,
    setup: &Value,
) -> anyhow::Result<()> {
    let car_id = id;
    let id = SessionId::parse(id)?;
    let body = Bytes::from(setup.to_string());
    loop {
        match client
            .request_as::<Ack>(subjects::data(&id, DataKind::Setup), body.clone())
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_secs(1)).await,
            Err(e) => {
                return Err(e).with_context(|| format!("the setup for {car_id} was refused"));
            }
        }
    }
}

/// `paddock monitor`'s flags for `--source gt7`.
#[derive(Debug, Clone, Default, Args)]
pub struct Gt7Args {
    /// With --source gt7: the PlayStation's IP address (its Settings → Network
    /// → View Connection Status), where the heartbeat goes.
    #[arg(long, env = "PADDOCK_CONSOLE")]
    pub console: Option<std::net::IpAddr>,
    /// With --source gt7: the console's heartbeat port. GT7 listens on 33739;
    /// another port is for a stand-in console (tests) or a relay.
    #[arg(long, env = "PADDOCK_CONSOLE_PORT", default_value_t = crate::sources::gt7::CONSOLE_PORT)]
    pub console_port: u16,
    /// With --source gt7: the packet format to ask for: a (296 bytes, every GT7
    /// version), b (316, newer versions: adds the steering wheel's angle) or
    /// tilde ("~", 344, newer still).
    #[arg(long, env = "PADDOCK_GT7_FORMAT", value_enum, default_value_t = Gt7Format::A)]
    pub gt7_format: Gt7Format,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Gt7Format {
    /// Heartbeat "A", 296-byte packets.
    #[default]
    A,
    /// Heartbeat "B", 316-byte packets.
    B,
    /// Heartbeat "~", 344-byte packets.
    Tilde,
}

impl From<Gt7Format> for crate::sources::gt7::Format {
    fn from(format: Gt7Format) -> Self {
        match format {
            Gt7Format::A => Self::A,
            Gt7Format::B => Self::B,
            Gt7Format::Tilde => Self::Tilde,
        }
    }
}
