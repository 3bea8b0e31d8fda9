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
use clap::ValueEnum;
use serde_json::Value;

use super::monitoring::{FieldSends, after, announce, create_session, send_setup_of, stamped};
pub use super::monitoring::{MonitorArgs, ReplayFormat, SourceArg};
use crate::client::SessionsClient;
use crate::client::connect::{Link, connect_observed};
use crate::client::creds::Stopped;
use crate::cmd::sim::{self, Race};
use crate::protocol::id::SessionId;
use crate::protocol::subjects::{self, DataKind, Endpoint};

/// Cars in a simulated race's field: a monitor's own (`--sessions`) and
/// rivals up to this many.
const FIELD_CARS: usize = 12;

/// One simulated car and where its frames go.
struct Car {
    id: String,
    telemetry_subject: String,
    field_subject: String,
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
    /// An iRacing file: the rows to send, each after its delay, with the
    /// fastest the car had gone by then (rows between sent ones count too).
    Ibt {
        file: crate::sources::ibt::Ibt,
        plan: Vec<(Duration, usize, Option<f64>)>,
    },
}

impl Source {
    fn replays(&self) -> bool {
        !matches!(self, Source::Simulated)
    }

    fn len(&self) -> usize {
        match self {
            Source::Simulated => 0,
            Source::Replay { frames, .. } => frames.len(),
            Source::Ibt { plan, .. } => plan.len(),
        }
    }

    /// The replay's frame `n` and the delay before frame `n + 1`.
    fn frame(&self, n: usize) -> Option<(Bytes, Duration)> {
        match self {
            Source::Simulated => None,
            Source::Replay { frames, .. } => {
                let (_, body) = frames.get(n)?;
                let delay = frames.get(n + 1).map_or(Duration::ZERO, |(d, _)| *d);
                Some((body.clone(), delay))
            }
            Source::Ibt { file, plan } => {
                let (_, row, top) = plan.get(n)?;
                let frame = stamped(file.frame(*row, *top));
                let delay = plan.get(n + 1).map_or(Duration::ZERO, |(d, _, _)| *d);
                Some((Bytes::from(frame.to_string()), delay))
            }
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
    if !(args.field_hz > 0.0 && args.field_hz <= 100.0) {
        bail!(
            "--field-hz must be more than 0 and at most 100 fields per second (got {})",
            args.field_hz
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
    if !(args.time_scale > 0.0 && args.time_scale.is_finite()) {
        bail!("--time-scale must be more than 0 (got {})", args.time_scale);
    }
    if args.source != SourceArg::Sim && (args.sessions != 1 || args.replay.is_some()) {
        bail!(
            "--source {} reads one car (the player's): not with --sessions or --replay{}",
            args.source
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_string()),
            if args.source == SourceArg::Iracing {
                " (a .ibt file replays with --replay alone)"
            } else {
                ""
            },
        );
    }
    match args.source {
        SourceArg::Sim => {}
        SourceArg::F1 => return super::f1::run(args, shutdown).await,
        SourceArg::AccBroadcast => return super::acc_broadcast::run(args, shutdown).await,
        SourceArg::Forza => return super::forza::run(args, shutdown).await,
        SourceArg::Gt7 => return super::gt7::run(args, shutdown).await,
        SourceArg::Acc | SourceArg::Ac | SourceArg::Iracing | SourceArg::Lmu => {
            return super::shm::run(args, shutdown).await;
        }
    }
    let source = match &args.replay {
        Some(path) => {
            let ibt = args.format == Some(ReplayFormat::Ibt)
                || (args.format.is_none()
                    && path
                        .extension()
                        .is_some_and(|e| e.eq_ignore_ascii_case("ibt")));
            if ibt {
                read_ibt(path, args.hz, args.time_scale)?
            } else {
                read_recording(path, args.hz, args.time_scale)?
            }
        }
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
    let dashboard = tokio::select! {
        url = args.dashboard.resolve(&client) => url,
        () = &mut shutdown => return Ok(()),
    };
    let label = args.label.label();
    // On an open broker the monitor hears when its sessions end (deleted, or
    // expired); with any credentials a frame now and then goes as a request.
    let (checks, mut endings) = super::endings::watch(&nats, &client, args).await?;
    let mut cars = Vec::with_capacity(args.sessions);
    for index in 0..args.sessions {
        let car = car_label(&label, index, args.sessions);
        let id = match &args.session {
            Some(id) => id.clone(),
            None => tokio::select! {
                id = create_session(&client, &car) => id?,
                () = &mut shutdown => return Ok(()),
            },
        };
        announce(args, dashboard.as_deref(), &id)?;
        let parsed = SessionId::parse(&id)?;
        let race = Race::numbered(seed(&id) ^ index as u64, index);
        let setup = match &source {
            Source::Simulated => Some(race.setup()),
            Source::Replay { setup, .. } => setup.clone(),
            Source::Ibt { file, .. } => file.setup(),
        };
        cars.push(Car {
            telemetry_subject: subjects::data(&parsed, DataKind::Telemetry),
            field_subject: subjects::data(&parsed, DataKind::Field),
            id,
            race,
            setup,
            check_at: checks.first(),
        });
    }
    for car in &cars {
        tokio::select! {
            sent = send_setup(&client, car) => sent?,
            () = &mut shutdown => return Ok(()),
        }
    }

    let ours: std::collections::HashSet<String> = cars.iter().map(|c| c.id.clone()).collect();
    // Sends `body` for `car` as a request when its check is due; else false.
    let send = |car: &mut Car, body: Bytes| {
        checks.send(&mut car.check_at, &car.id, &car.telemetry_subject, body)
    };

    // The simulated race's other cars: the field each car's session gets
    // (the Timing view, where a stop rejoins) is the monitor's own cars and
    // these, FIELD_CARS in all.
    let mut rivals: Vec<Race> = match source {
        Source::Simulated => (cars.len()..FIELD_CARS)
            .map(|k| Race::numbered(seed(&cars[0].id) ^ (k as u64).wrapping_mul(7919), k))
            .collect(),
        _ => Vec::new(),
    };
    let mut field_ticker = FieldSends::ticker(args.field_hz);
    let mut fields = FieldSends::default();

    let started = Instant::now();
    let mut progress = Progress::new(args.sessions, args.progress);
    let mut until_deadline = std::pin::pin!(after(args.duration));
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
            ended = endings.next() => {
                if ours.contains(&ended.id) {
                    bail!("{}", ended.message);
                }
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
                let dt = period.as_secs_f64() * args.time_scale;
                for rival in &mut rivals {
                    rival.advance(dt);
                }
                for car in &mut cars {
                    // The race goes on while disconnected; only sending pauses.
                    let frame = car.race.step(dt);
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
            _ = field_ticker.tick(), if matches!(source, Source::Simulated) => {
                let all: Vec<&Race> = cars.iter().map(|c| &c.race).chain(&rivals).collect();
                let standings = sim::standings(&all);
                let own = cars.len();
                let sent: Vec<Value> = (0..own)
                    .map(|player| sim::field(&all, &standings, player, (own, label.team.as_deref())))
                    .collect();
                for standing in standings.iter().filter(|s| s.car < own) {
                    cars[standing.car].race.stand(standing);
                }
                for (car, field) in cars.iter().zip(sent) {
                    fields.send(&nats, &car.field_subject, field).await?;
                }
            }
            () = tokio::time::sleep_until(next_replay_at), if source.replays() => {
                let Some((body, delay)) = source.frame(replay_position) else {
                    say!("monitor: replay finished ({} frames per session)", source.len());
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
                next_replay_at += delay;
            }
        }
        progress.maybe_report();
    }
    // Frames already handed to the client still go out before we exit.
    let _ = tokio::time::timeout(Duration::from_secs(5), nats.flush()).await;
    let cars = match cars.len() {
        1 => String::new(),
        n => format!(" (its {n} cars together)"),
    };
    let fields = if fields.sent + fields.skipped > 0 {
        format!("; {} fields sent", fields.sent)
    } else {
        String::new()
    };
    say!(
        "monitor: stopped after {:.0}s: {} frames sent, {} skipped while disconnected{cars}{fields}",
        started.elapsed().as_secs_f64(),
        progress.sent,
        progress.skipped
    );
    Ok(())
}

/// The label of car `index` of `cars`: a team's cars sent by one monitor are told
/// apart on the pit wall by number (#1, #2, …) unless `--car` names them.
fn car_label(
    label: &crate::protocol::documents::Label,
    index: usize,
    cars: usize,
) -> crate::protocol::documents::Label {
    let mut label = label.clone();
    if cars > 1 && label.team.is_some() && label.car.is_none() {
        label.car = Some(format!("#{}", index + 1));
    }
    label
}

/// Sends the setup as a request, so it is known to be stored; waits for a processor.
async fn send_setup(client: &SessionsClient, car: &Car) -> anyhow::Result<()> {
    match &car.setup {
        Some(setup) => send_setup_of(client, &car.id, setup).await,
        None => Ok(()),
    }
}

/// Reads a JSON-lines recording: each line a telemetry frame, or `{"setup": {…}}`.
/// Frames are paced by their `timestamp` fields where both neighbours have one, and
/// at `hz` otherwise; `time_scale` speeds the replay up.
fn read_recording(path: &Path, hz: f64, time_scale: f64) -> anyhow::Result<Source> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        // Binary: most likely an iRacing file under another name (only `.ibt`
        // files are read as iRacing's by default).
        Err(e) => {
            let what = if crate::sources::ibt::Ibt::parse(e.into_bytes()).is_ok() {
                "is an iRacing telemetry file"
            } else {
                "is not a JSON-lines recording (not UTF-8 text)"
            };
            bail!(
                "{} {what}: to replay an iRacing telemetry file whose name does not end \
                 in .ibt, pass --format ibt",
                path.display()
            );
        }
    };
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

/// Reads an iRacing telemetry file and plans its replay: rows at their
/// recorded pace (`SessionTime`) sped up by `time_scale`, at most `hz` a second
/// (a row is sent when at least `time_scale / hz` of sim time has passed since
/// the last one sent), the last row always. The file is held in memory.
fn read_ibt(path: &Path, hz: f64, time_scale: f64) -> anyhow::Result<Source> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = crate::sources::ibt::Ibt::parse(bytes)
        .with_context(|| format!("{}: cannot replay it", path.display()))?;
    let gap = time_scale / hz;
    let tick = 1.0 / f64::from(file.tick_rate);
    let mut plan = Vec::new();
    let mut top: Option<f64> = None;
    let mut last_sent: Option<f64> = None;
    let rows = file.rows();
    for row in 0..rows {
        let at = file.time(row).unwrap_or(row as f64 * tick);
        if let Some(speed) = file.speed_kmh(row) {
            top = Some(top.map_or(speed, |t| t.max(speed)));
        }
        let due = last_sent.is_none_or(|sent| at - sent >= gap - 1e-9 || at < sent);
        if due || row + 1 == rows {
            let delay = last_sent.map_or(0.0, |sent| ((at - sent) / time_scale).max(0.0));
            plan.push((Duration::from_secs_f64(delay), row, top));
            last_sent = Some(at);
        }
    }
    let names = file.names();
    say!(
        "monitor: {}: {} rows at {} Hz ({:.1} s), {} to send{}",
        path.display(),
        rows,
        file.tick_rate,
        plan.iter().map(|(d, _, _)| d.as_secs_f64()).sum::<f64>() * time_scale,
        plan.len(),
        names
            .get("player_name")
            .and_then(Value::as_str)
            .map(|n| format!(", driver {n}"))
            .unwrap_or_default()
    );
    Ok(Source::Ibt { file, plan })
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
        // Binary under another name: the message says how to read it as iRacing's.
        std::fs::write(&path, [0x02, 0x00, 0xff, 0xfe, 0x80]).unwrap();
        let err = read_recording(&path, 10.0, 1.0).err().unwrap().to_string();
        assert!(
            err.contains("not UTF-8") && err.contains("--format ibt"),
            "{err}"
        );
        let ibt = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/ibt/valid_test_file.ibt"
        );
        std::fs::copy(ibt, &path).unwrap();
        let err = read_recording(&path, 10.0, 1.0).err().unwrap().to_string();
        assert!(
            err.contains("is an iRacing telemetry file") && err.contains("pass --format ibt"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
