//! `paddock watch <id>`: a race engineer's live view of one session.
//!
//! Joins the documented way (subscribe to `session.<id>.>`, then `sessions.get`),
//! so the view is complete at once and stays current. When the link to the broker
//! comes back after an outage it takes a fresh snapshot. The full-screen view
//! redraws in place; `--plain` prints one line a second for pipes and logs.

pub mod state;
pub mod team;
pub mod ui;

use std::future::Future;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

use clap::Args;

use super::args::{ConnectArgs, parse_duration};
use crate::client::connect::{Link, connect_observed};
use crate::client::{ClientError, SessionsClient};
use crate::protocol::id::SessionId;
use crate::protocol::subjects::{self, DataKind, SessionMessage};
use crate::protocol::trace::{Best, LapRef, LiveReference};
use state::{Link as ViewLink, WatchState};

/// How often the view redraws (ages and the STALE banner move with the clock).
const REDRAW: Duration = Duration::from_millis(250);
/// How often a missing snapshot (no processor yet, unknown session) is retried.
const SNAPSHOT_RETRY: Duration = Duration::from_secs(3);
/// How often the view asks again for the strategy and the alerts (the
/// processor computes them from the latest frame; alerts also arrive live).
const NUMBERS_EVERY: Duration = Duration::from_secs(5);
/// How often at most the rejoin line is asked for again while fields come
/// (a monitor sends 2 a second by default; the line moves with the gaps).
const REJOIN_EVERY: Duration = Duration::from_secs(1);

/// What the keyboard asks for.
enum Key {
    Quit,
    ToggleSetup,
}

#[derive(Debug, Clone, Args)]
// One of the two: clap's error without either names both
// (`<SESSION_ID|--team <TEAM>>`), so --team is found from the message.
#[command(group(clap::ArgGroup::new("what").required(true).args(["session_id", "team"])))]
pub struct WatchArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The session to watch (or --team).
    pub session_id: Option<String>,
    /// Every car of this team instead (sessions labelled with --team): one row
    /// per car by position, with its state (LIVE, STALE, ENDED).
    #[arg(long, env = "PADDOCK_TEAM")]
    pub team: Option<String>,
    /// One line per second instead of the full-screen view, for pipes and logs.
    #[arg(long, env = "PADDOCK_PLAIN")]
    pub plain: bool,
    /// Show STALE when no frame arrived for this long.
    #[arg(long, env = "PADDOCK_STALE_AFTER", default_value = "5s", value_parser = parse_duration)]
    pub stale_after: Duration,
}

pub async fn run(args: &WatchArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let (Some(session_id), None) = (&args.session_id, &args.team) else {
        let team = args.team.as_deref().unwrap_or_default();
        return team::run(args, team, shutdown).await;
    };
    let id = SessionId::parse(session_id)?;
    let url = &args.connect.nats_url;
    let config = args.connect.config();
    let (nats, mut links) = connect_observed(&config, "paddock-watch").await?;
    // A session's own (dashboard) credentials are short-lived: keep them fresh
    // while it lives. When it ends, the view says so from the session's events.
    let _renewal = super::args::keep_credentials_fresh(
        &config,
        &nats,
        id,
        subjects::Endpoint::RenewDashboard,
        Default::default(),
    );
    let client = SessionsClient::new(nats.clone(), url.clone(), Duration::from_secs(5));
    // Subscribe before the snapshot: nothing published in between is missed.
    let mut live = nats.subscribe(subjects::session_wildcard(&id)).await?;
    let prefix = subjects::session_prefix(&id);

    let mut state = WatchState::new(id.to_string(), args.stale_after);
    if !args.plain && !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "watch draws a full-screen view and needs a terminal; use --plain for pipes and logs"
        );
    }
    let mut screen = if args.plain {
        None
    } else {
        Some(Screen::open())
    };
    let mut show_setup = false;
    let mut snapshot_due = Some(tokio::time::Instant::now());
    // The screen draws at once ("connecting"); plain output starts with the
    // snapshot's line instead, then prints once a second.
    let period = if args.plain {
        Duration::from_secs(1)
    } else {
        REDRAW
    };
    let start = tokio::time::Instant::now();
    let mut ticker =
        tokio::time::interval_at(if args.plain { start + period } else { start }, period);
    let mut numbers = tokio::time::interval_at(start + NUMBERS_EVERY, NUMBERS_EVERY);
    numbers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut numbers_at = tokio::time::Instant::now();
    let mut shutdown = std::pin::pin!(shutdown);
    let (keys_tx, mut keys) = mpsc::unbounded_channel();
    // The live delta's reference, read off the loop: frames keep coming while
    // the best lap's trace is read.
    let (reference_tx, mut references) = mpsc::channel(2);
    if let Some(screen) = &screen {
        screen.read_keys(keys_tx);
    }

    let result = loop {
        let snapshot_at =
            snapshot_due.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            Some(key) = keys.recv() => match key {
                Key::Quit => break Ok(()),
                Key::ToggleSetup => {
                    show_setup = !show_setup;
                    // A key press shows its effect at once, not at the next tick.
                    if let Some(screen) = &mut screen {
                        screen.draw(&state, show_setup, Instant::now())?;
                    }
                }
            },
            message = live.next() => match message {
                Some(m) => {
                    let rest = m.subject.as_str().strip_prefix(&prefix).unwrap_or("");
                    state.apply_message(rest, &m.payload, Instant::now());
                    let kind = subjects::session_message(rest);
                    if kind == Some(SessionMessage::Lap) {
                        ask_reference(&mut state, &client, id, &reference_tx);
                    }
                    // A new field moves the rejoin line: the numbers (which
                    // carry it) again, a second after they were last asked
                    // for (now, if that is past).
                    if kind == Some(SessionMessage::Data(DataKind::Field)) {
                        numbers.reset_at(numbers_at + REJOIN_EVERY);
                    }
                    if matches!(kind, Some(SessionMessage::Event(subjects::Event::Deleted | subjects::Event::Expired))) {
                        let problem = state.problem.clone().unwrap_or_default();
                        break Err(anyhow::anyhow!("session {id}: {problem}"));
                    }
                    let telemetry = kind == Some(SessionMessage::Data(DataKind::Telemetry));
                    if state.problem.is_some() && telemetry && snapshot_due.is_some() {
                        // Frames arrive, so the session exists now: fetch it whole.
                        snapshot_due = Some(tokio::time::Instant::now());
                    }
                }
                None => break Err(anyhow::anyhow!("the subscription ended")),
            },
            Some(reference) = references.recv() => state.apply_reference(reference),
            Some(link) = links.recv() => match link {
                Link::Down => state.link = ViewLink::Reconnecting,
                Link::Up => snapshot_due = Some(tokio::time::Instant::now()),
            },
            () = tokio::time::sleep_until(snapshot_at), if snapshot_due.is_some() => {
                snapshot_due = match client.get(session_id).await {
                    Ok(doc) => {
                        state.apply_snapshot(&doc, Instant::now());
                        // The recent laps, for the table and the chart (live ones
                        // arrive on the subscription). A processor without lap
                        // history, or credentials without it, leave the view as is.
                        let from = doc
                            .stats
                            .current_lap
                            .as_ref()
                            .and_then(serde_json::Value::as_f64)
                            .map(|lap| lap - state::LAPS_KEPT as f64);
                        match client.laps(&id, from, false).await {
                            Ok(records) => state.apply_laps(&records),
                            Err(e) => tracing::debug!(error = %e, "no lap history"),
                        }
                        ask_reference(&mut state, &client, id, &reference_tx);
                        if screen.is_none() && !print_line(&ui::plain_line(&state, Instant::now())) {
                            break Ok(());
                        }
                        None
                    }
                    // Both are 404; an ended session never comes back (its reason
                    // says so): the view ends, once, with the reason. An unknown one
                    // may still be created by its monitor.
                    Err(ClientError::Service { code: 404, reason, kind }) if kind.as_deref() == Some("ended_session") => {
                        break Err(anyhow::anyhow!(reason));
                    }
                    Err(ClientError::Service { code: 404, reason, .. }) => {
                        state.problem = Some(format!("{reason}; waiting for it to appear"));
                        Some(tokio::time::Instant::now() + SNAPSHOT_RETRY)
                    }
                    // With the connection down the broker, not a processor, is
                    // missing (connected, the error says no processor answers).
                    Err(_) if nats.connection_state() != async_nats::connection::State::Connected => {
                        state.problem = Some(format!("the broker at {url} is unreachable; reconnecting"));
                        Some(tokio::time::Instant::now() + SNAPSHOT_RETRY)
                    }
                    Err(e) => {
                        state.problem = Some(format!("{e}; retrying"));
                        Some(tokio::time::Instant::now() + SNAPSHOT_RETRY)
                    }
                };
            }
            // Fuel to the finish and the alerts follow the tank between laps.
            _ = numbers.tick(), if snapshot_due.is_none() => {
                numbers_at = tokio::time::Instant::now();
                if let Ok(doc) = client.get(session_id).await {
                    state.apply_numbers(&doc);
                }
            }
            _ = ticker.tick() => {
                // Redraw (or print a line) on the clock only: the age and the STALE
                // banner move with time, and at 60 Hz a frame-driven redraw would
                // be wasted work a person cannot read anyway.
                let now = Instant::now();
                match &mut screen {
                    Some(screen) => screen.draw(&state, show_setup, now)?,
                    None => {
                        if !print_line(&ui::plain_line(&state, now)) {
                            break Ok(());
                        }
                    }
                }
            }
        }
    };
    if let Some(screen) = screen {
        screen.close();
    }
    result
}

/// Asks for the best lap's trace when the view's best lap is new: once per
/// new best, on a task, the answer coming back on `results`.
fn ask_reference(
    state: &mut WatchState,
    client: &SessionsClient,
    id: SessionId,
    results: &mpsc::Sender<Result<LiveReference, String>>,
) {
    if state.reference_wanted().is_none() {
        return;
    }
    let (client, results) = (client.clone(), results.clone());
    tokio::spawn(async move {
        let _ = results.send(best_reference(&client, &id).await).await;
    });
}

/// The session's best lap as a live delta's reference, or what the view says
/// instead.
pub async fn best_reference(
    client: &SessionsClient,
    id: &SessionId,
) -> Result<LiveReference, String> {
    // One channel: the delta needs the grid and the elapsed time only.
    match client
        .lap_trace(
            id,
            LapRef::Named(Best::Best),
            &["speed"],
            Some(crate::protocol::trace::DEFAULT_STEP_M),
        )
        .await
    {
        Ok(trace) => LiveReference::of(&trace)
            .ok_or_else(|| "no live delta: this source sends no lap_distance".to_string()),
        Err(ClientError::Service { code: 404, .. }) => Err(state::NO_REFERENCE.into()),
        Err(ClientError::Service { code: 503, .. }) => {
            Err("no live delta: the processor records no traces".into())
        }
        Err(e) => Err(format!("no reference lap: {e}")),
    }
}

/// Prints one line of the plain view; false when stdout is gone (a closed pipe,
/// as in `watch --plain | head -1`): the view then ends quietly.
fn print_line(line: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

/// The full-screen terminal, restored on close (and on panic, by ratatui's hook).
struct Screen {
    terminal: ratatui::DefaultTerminal,
    /// Tells the key-reading thread to stop.
    stop: Arc<AtomicBool>,
}

impl Screen {
    fn open() -> Self {
        Screen {
            terminal: ratatui::init(),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    fn draw(&mut self, state: &WatchState, show_setup: bool, now: Instant) -> anyhow::Result<()> {
        self.terminal
            .draw(|f| ui::draw(f, state, show_setup, now))
            .context("cannot draw")?;
        Ok(())
    }

    /// Draws `text` as it is (the team's tower, `watch --team`).
    fn draw_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.terminal
            .draw(|f| f.render_widget(ratatui::widgets::Paragraph::new(text), f.area()))
            .context("cannot draw")?;
        Ok(())
    }

    /// Reads keys on a thread of its own: crossterm's reader blocks.
    fn read_keys(&self, keys: mpsc::UnboundedSender<Key>) {
        let stop = Arc::clone(&self.stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if !event::poll(Duration::from_millis(100)).unwrap_or(false) {
                    continue;
                }
                let Ok(Event::Key(key)) = event::read() else {
                    continue;
                };
                if key.kind != KeyEventKind::Press {
                    continue;
                }
                let sent = match key.code {
                    KeyCode::Char('q') | KeyCode::Esc => keys.send(Key::Quit),
                    KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                        keys.send(Key::Quit)
                    }
                    KeyCode::Char('s') => keys.send(Key::ToggleSetup),
                    _ => Ok(()),
                };
                if sent.is_err() {
                    return;
                }
            }
        });
    }

    fn close(self) {
        self.stop.store(true, Ordering::Relaxed);
        ratatui::restore();
    }
}
