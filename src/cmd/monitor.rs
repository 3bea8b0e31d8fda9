//! `paddock monitor`: simulated monitors for demos, tests and load.
//!
//! Each monitor asks for a session (or reuses `--session`), prints its id and the
//! command to watch it, sends the setup as an acknowledged request, then streams
//! telemetry from the race simulation (or a recording). Across broker restarts it
//! keeps its session id: frames are skipped while the link is down (telemetry is
//! the latest state, so a backlog of stale frames is worth nothing) and the setup
//! is sent again once the link is back, in case the processor lost it.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::connection::State;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::Value;

use std::path::PathBuf;

use clap::Args;

use super::args::{ConnectArgs, parse_duration};
use crate::client::connect::{Link, connect_observed};
use crate::client::creds::Stopped;
use crate::client::{ClientError, SessionsClient};
use crate::cmd::sim::Race;
use crate::protocol::documents::Ack;
use crate::protocol::id::SessionId;
use crate::protocol::subjects::{self, DataKind, Endpoint, Event};

/// One simulated car and where its frames go.
struct Car {
    id: String,
    telemetry_subject: String,
    race: Race,
    setup: Option<Value>,
    /// When this car's next frame goes as a request (see `--check-every`).
    check_at: tokio::time::Instant,
}

/// What to stream: the simulation, or a recording's frames with their delays.
enum Source {
    Simulated,
    Replay {
        setup: Option<Value>,
        frames: Vec<(Duration, Bytes)>,
    },
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

pub async fn run(args: &MonitorArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    if !(args.hz > 0.0 && args.hz <= 1000.0) {
        bail!(
            "--hz must be more than 0 and at most 1000 frames per second (got {})",
            args.hz
        );
    }
    if args.sessions == 0 || (args.session.is_some() && args.sessions != 1) {
        bail!(
            "--sessions must be at least 1, and --session reuses one id, so only with --sessions 1"
        );
    }
    if let Some(id) = &args.session {
        SessionId::parse(id)?;
    }
    let source = match &args.replay {
        Some(path) => read_recording(path, args.hz, args.time_scale)?,
        None => Source::Simulated,
    };

    let url = &args.connect.nats_url;
    let config = args.connect.config();
    let (nats, mut links) = connect_observed(&config, "paddock-monitor").await?;
    // A session's own credentials are short-lived: keep them fresh while it lives.
    let renewing = Arc::new(AtomicBool::new(false));
    let mut renewal = match &args.session {
        Some(id) => super::args::keep_credentials_fresh(
            &config,
            &nats,
            SessionId::parse(id)?,
            Endpoint::RenewMonitor,
            Arc::clone(&renewing),
        ),
        None => tokio::sync::mpsc::channel(1).1,
    };
    let client = SessionsClient::new(nats.clone(), url.clone(), Duration::from_secs(5));

    let mut shutdown = std::pin::pin!(shutdown);
    // Where the page is: --dashboard-url, else the processor's discovery info,
    // which every monitor may ask (roles.conf's monitor and per-session
    // monitors may publish $SRV.INFO.sessions).
    let open_broker = args.connect.creds.is_none() && args.connect.user.is_none();
    let dashboard = tokio::select! {
        url = args.dashboard.resolve(&client) => url,
        () = &mut shutdown => return Ok(()),
    };
    let label = args.label.label();
    let mut cars = Vec::with_capacity(args.sessions);
    for index in 0..args.sessions {
        let id = match &args.session {
            Some(id) => id.clone(),
            None => tokio::select! {
                id = create_session(&client, &label) => id?,
                () = &mut shutdown => return Ok(()),
            },
        };
        out!("session {id}");
        let parsed = SessionId::parse(&id)?;
        let access = DashboardAccess::of(&args.connect, &parsed);
        out!(
            "  watch it: {} watch {id}{}{}",
            crate::cmd::self_command(),
            args.connect.as_flags(),
            access.watch_flags()
        );
        if let Some(base) = &dashboard {
            let link = subjects::dashboard_link(base, &parsed, access.link());
            out!("  open it: {link}");
            // One car: its code to scan with a phone. Several: links only.
            if args.sessions == 1 {
                out!("{}", super::format::qr(&link).trim_end());
            }
        }
        let parsed = SessionId::parse(&id)?;
        let race = Race::new(seed(&id) ^ index as u64);
        let setup = match &source {
            Source::Simulated => Some(race.setup()),
            Source::Replay { setup, .. } => setup.clone(),
        };
        cars.push(Car {
            telemetry_subject: subjects::data(&parsed, DataKind::Telemetry),
            id,
            race,
            setup,
            check_at: tokio::time::Instant::now() + args.check_every,
        });
    }
    for car in &cars {
        tokio::select! {
            sent = send_setup(&client, car) => sent?,
            () = &mut shutdown => return Ok(()),
        }
    }

    // On an open broker the monitor hears when its sessions end (deleted, or
    // expired): frames to them would only be refused, so it says so and stops.
    // (Per-session credentials may not subscribe there; renewal tells them.)
    let mut endings = match open_broker {
        true => Some(nats.subscribe(subjects::ALL_SERVICE_EVENTS).await?),
        false => None,
    };
    let ours: std::collections::HashSet<String> = cars.iter().map(|c| c.id.clone()).collect();
    // Answers to the frames sent as requests that say the session has ended.
    let (ended_tx, mut ended) = tokio::sync::mpsc::channel::<(String, String)>(cars.len());
    // Sends `body` for `car`: published, or, when its check is due, as a request
    // whose answer comes back on `ended` if the session is gone. The request is
    // awaited on a task of its own, so a slow processor never holds the stream.
    let send = |car: &mut Car, body: Bytes| {
        let now = tokio::time::Instant::now();
        if args.check_every.is_zero() || now < car.check_at {
            return false;
        }
        car.check_at = now + args.check_every;
        let (client, ended_tx) = (client.clone(), ended_tx.clone());
        let (id, subject) = (car.id.clone(), car.telemetry_subject.clone());
        tokio::spawn(async move {
            if let Err(ClientError::Service {
                code: 404, reason, ..
            }) = client.request_as::<Ack>(subject, body).await
            {
                let _ = ended_tx.send((id, reason)).await;
            }
        });
        true
    };

    let started = Instant::now();
    let mut progress = Progress::new(args.sessions, args.progress);
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let until_deadline = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    let mut until_deadline = std::pin::pin!(until_deadline);
    let period = Duration::from_secs_f64(1.0 / args.hz);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut was_down = false;
    let mut replay_position = 0usize;
    let mut next_replay_at = tokio::time::Instant::now();

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut until_deadline => break,
            Some(event) = async {
                match endings.as_mut() {
                    Some(sub) => futures::StreamExt::next(sub).await,
                    None => std::future::pending().await,
                }
            } => {
                let ended = subjects::event_of(&event.subject)
                    .filter(|kind| matches!(kind, Event::Deleted | Event::Expired));
                let session = serde_json::from_slice::<Value>(&event.payload)
                    .ok()
                    .and_then(|v| v["session_id"].as_str().map(str::to_string));
                if let (Some(kind), Some(id)) = (ended, session)
                    && ours.contains(&id)
                {
                    bail!(
                        "session {id} was {} (sessions.events.{}): its frames would be \
                         refused, so the monitor stops",
                        if kind == Event::Deleted { "deleted" } else { "ended after being idle" },
                        kind.as_str()
                    );
                }
            }
            Some((id, reason)) = ended.recv() => {
                // The processor's reason names the session and why already
                // ("session <id> has ended (deleted); ask sessions.create …").
                let reason = reason.split("; ").next().unwrap_or(&reason);
                if reason.contains(&id) {
                    bail!("{reason}: its frames are refused, so the monitor stops");
                }
                bail!("session {id} has ended ({reason}): its frames are refused, so the monitor stops");
            }
            Some(stopped) = renewal.recv() => {
                if let Stopped::SessionEnded(e) = stopped {
                    bail!(
                        "session {} has ended ({e}); its credentials are not renewed, so it \
                         cannot be written to any more",
                        cars[0].id
                    );
                }
            }
            Some(link) = links.recv() => match link {
                Link::Down => was_down = true,
                Link::Up if was_down => {
                    was_down = false;
                    // A reconnect with renewed credentials is planned: no news.
                    if !renewing.swap(false, Ordering::Relaxed) {
                        say!("monitor: link back; re-sending setup{}", if cars.len() > 1 { "s" } else { "" });
                    }
                    for car in &cars {
                        if let Err(e) = send_setup(&client, car).await {
                            say!("monitor: setup for {} not re-sent: {e:#}", car.id);
                        }
                    }
                }
                Link::Up => {}
            },
            _ = ticker.tick(), if matches!(source, Source::Simulated) => {
                let connected = nats.connection_state() == State::Connected;
                for car in &mut cars {
                    // The race goes on while disconnected; only sending pauses.
                    let frame = car.race.step(period.as_secs_f64() * args.time_scale);
                    if connected {
                        let body = Bytes::from(frame.to_string());
                        if !send(car, body.clone()) {
                            nats.publish(car.telemetry_subject.clone(), body).await?;
                        }
                        progress.sent += 1;
                    } else {
                        progress.skipped += 1;
                    }
                }
            }
            () = tokio::time::sleep_until(next_replay_at), if matches!(source, Source::Replay { .. }) => {
                let Source::Replay { frames, .. } = &source else { unreachable!() };
                let Some((_, body)) = frames.get(replay_position) else {
                    say!("monitor: replay finished ({} frames per session)", frames.len());
                    break;
                };
                let connected = nats.connection_state() == State::Connected;
                for car in &mut cars {
                    if connected {
                        if !send(car, body.clone()) {
                            nats.publish(car.telemetry_subject.clone(), body.clone()).await?;
                        }
                        progress.sent += 1;
                    } else {
                        progress.skipped += 1;
                    }
                }
                replay_position += 1;
                let delay = frames.get(replay_position).map_or(Duration::ZERO, |(d, _)| *d);
                next_replay_at += delay;
            }
        }
        progress.maybe_report();
    }
    // Frames already handed to the client still go out before we exit.
    let _ = tokio::time::timeout(Duration::from_secs(5), nats.flush()).await;
    say!(
        "monitor: stopped after {:.0}s: {} frames sent, {} skipped while disconnected",
        started.elapsed().as_secs_f64(),
        progress.sent,
        progress.skipped
    );
    Ok(())
}

/// Asks for a new session, waiting (and saying so) while no processor answers or
/// its storage is briefly unavailable.
async fn create_session(
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

/// Sends the setup as a request, so it is known to be stored; waits for a processor.
async fn send_setup(client: &SessionsClient, car: &Car) -> anyhow::Result<()> {
    let Some(setup) = &car.setup else {
        return Ok(());
    };
    let id = SessionId::parse(&car.id)?;
    let body = Bytes::from(setup.to_string());
    loop {
        match client
            .request_as::<Ack>(subjects::data(&id, DataKind::Setup), body.clone())
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_secs(1)).await,
            Err(e) => {
                return Err(e).with_context(|| format!("the setup for {} was refused", car.id));
            }
        }
    }
}

/// Reads a JSON-lines recording: each line a telemetry frame, or `{"setup": {…}}`.
/// Frames are paced by their `timestamp` fields where both neighbours have one, and
/// at `hz` otherwise; `time_scale` speeds the replay up.
fn read_recording(path: &Path, hz: f64, time_scale: f64) -> anyhow::Result<Source> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut setup = None;
    let mut frames = Vec::new();
    let mut previous: Option<DateTime<Utc>> = None;
    let fallback = Duration::from_secs_f64(1.0 / hz / time_scale.max(f64::MIN_POSITIVE));
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a JSON object", path.display(), n + 1))?;
        let Value::Object(map) = &value else {
            bail!("{}:{}: not a JSON object", path.display(), n + 1);
        };
        if map.len() == 1 && map.get("setup").is_some_and(Value::is_object) {
            setup = Some(map["setup"].clone());
            continue;
        }
        let at = map
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<DateTime<Utc>>().ok());
        let delay = match (previous, at) {
            _ if frames.is_empty() => Duration::ZERO,
            (Some(a), Some(b)) => (b - a)
                .to_std()
                .map_or(Duration::ZERO, |d| d.div_f64(time_scale)),
            _ => fallback,
        };
        previous = at;
        frames.push((delay, Bytes::from(line.trim().to_string())));
    }
    if frames.is_empty() {
        bail!("{}: no frames to replay", path.display());
    }
    Ok(Source::Replay { setup, frames })
}

/// A stable seed from the session id, so a session's race is the same on restart.
fn seed(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Rate and totals on stderr while the monitor runs.
struct Progress {
    sessions: usize,
    every: Duration,
    sent: u64,
    skipped: u64,
    last_at: Instant,
    last_sent: u64,
}

impl Progress {
    fn new(sessions: usize, every: Duration) -> Self {
        Progress {
            sessions,
            every,
            sent: 0,
            skipped: 0,
            last_at: Instant::now(),
            last_sent: 0,
        }
    }

    fn maybe_report(&mut self) {
        let elapsed = self.last_at.elapsed();
        if self.every.is_zero() || elapsed < self.every {
            return;
        }
        let rate = (self.sent - self.last_sent) as f64 / elapsed.as_secs_f64();
        say!(
            "monitor: {} session{}, {:.0} frames/s, {} sent, {} skipped while disconnected",
            self.sessions,
            if self.sessions == 1 { "" } else { "s" },
            rate,
            self.sent,
            self.skipped
        );
        self.last_at = Instant::now();
        self.last_sent = self.sent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recordings_are_paced_by_their_timestamps() {
        let dir = std::env::temp_dir().join(format!("paddock-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.jsonl");
        std::fs::write(
            &path,
            "{\"setup\": {\"wing\": 5}}\n\
             {\"timestamp\": \"2026-06-14T15:42:07.000Z\", \"lap\": 1}\n\
             {\"timestamp\": \"2026-06-14T15:42:07.500Z\", \"lap\": 1}\n\
             \n\
             {\"lap\": 2}\n",
        )
        .unwrap();
        let Source::Replay { setup, frames } = read_recording(&path, 10.0, 1.0).unwrap() else {
            panic!()
        };
        assert_eq!(setup, Some(serde_json::json!({"wing": 5})));
        let delays: Vec<Duration> = frames.iter().map(|(d, _)| *d).collect();
        assert_eq!(
            delays,
            [
                Duration::ZERO,
                Duration::from_millis(500),
                Duration::from_millis(100)
            ]
        );
        std::fs::write(&path, "{\"lap\": 1}\n[1]\n").unwrap();
        let err = read_recording(&path, 10.0, 1.0).err().unwrap().to_string();
        assert!(err.ends_with(":2: not a JSON object"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
