//! `paddock watch --team <team>`: every car of one team in one table, sorted by
//! position, redrawn once a second — the timing tower in a terminal.
//!
//! The team's sessions come from `sessions.list {"team"}`, asked again every few
//! seconds (a car that joins shows up) and whenever a session is created or ends.
//! Frames arrive on one subscription to `session.*.>`, filtered by id before any
//! parsing, so other teams' frames cost a subject comparison; each new car starts
//! from its snapshot (`sessions.get`), as the page and the one-car view do.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use super::state::snapshot_frame_seen;
use super::{Key, Screen, WatchArgs};
use crate::client::SessionsClient;
use crate::client::connect::connect_observed;
use crate::cmd::format;
use crate::protocol::id::SessionId;
use crate::protocol::subjects::{self, DataKind, SessionMessage};

/// How often the team's list of sessions is asked again.
const RELIST: Duration = Duration::from_secs(5);

/// One car of the tower.
#[derive(Debug, Clone, Default)]
pub struct Car {
    pub car: Option<String>,
    /// The latest telemetry frame, as sent.
    pub frame: Option<Value>,
    /// When that frame arrived.
    pub seen: Option<Instant>,
    pub ended: bool,
}

/// The tower as text: a header line, then one row per car, by position (cars
/// without one last).
pub fn tower(team: &str, cars: &BTreeMap<SessionId, Car>, now: Instant, stale: Duration) -> String {
    let num = |c: &Car, k: &str| {
        c.frame
            .as_ref()
            .and_then(|f| f.get(k))
            .and_then(Value::as_f64)
    };
    let text = |c: &Car, k: &str| {
        c.frame
            .as_ref()
            .and_then(|f| f.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let mut order: Vec<(&SessionId, &Car)> = cars.iter().collect();
    order.sort_by(|a, b| {
        let pos = |c: &Car| num(c, "position").filter(|p| *p > 0.0).unwrap_or(f64::MAX);
        pos(a.1).total_cmp(&pos(b.1))
    });
    let dash = || "—".to_string();
    let mut rows = vec![
        [
            "POS", "CAR", "DRIVER", "LAP", "LAST LAP", "BEST LAP", "FUEL", "PIT", "STATE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for (_, c) in order {
        let state = if c.ended {
            "ENDED"
        } else if c.seen.is_none_or(|seen| now.duration_since(seen) > stale) {
            "STALE"
        } else {
            "LIVE"
        };
        rows.push(vec![
            num(c, "position")
                .filter(|p| *p > 0.0)
                .map_or_else(dash, |p| format!("P{p:.0}")),
            c.car.clone().unwrap_or_else(dash),
            text(c, "player_name").unwrap_or_else(dash),
            num(c, "lap").map_or_else(dash, |l| format!("{l:.0}")),
            format::lap_time(num(c, "last_lap_time")),
            format::lap_time(num(c, "best_lap_time")),
            num(c, "fuel").map_or_else(dash, |f| format!("{f:.1} L")),
            match c.frame.as_ref().and_then(|f| f.get("in_pits")) {
                Some(Value::Bool(true)) => "IN".into(),
                // On track: "out" read as an out-lap (found by the README walk).
                Some(Value::Bool(false)) => "track".into(),
                _ => dash(),
            },
            state.to_string(),
        ]);
    }
    format!(
        "team {team}: {} car{}\n{}",
        cars.len(),
        if cars.len() == 1 { "" } else { "s" },
        format::columns(&rows)
    )
}

/// What the view shows before the team's first listing has answered: not a
/// table of "0 cars", which would be wrong.
pub fn loading(team: &str) -> String {
    format!("team {team}: loading the team's cars…")
}

pub async fn run(
    args: &WatchArgs,
    team: &str,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    if !args.plain && !std::io::stdout().is_terminal() {
        anyhow::bail!("watch redraws the tower in place and needs a terminal; use --plain");
    }
    let url = &args.connect.nats_url;
    let (nats, _links) = connect_observed(&args.connect.config(), "paddock-watch").await?;
    let client = SessionsClient::new(nats.clone(), url.clone(), Duration::from_secs(5));
    // Subscribed before any snapshot: nothing published in between is missed.
    let mut live = nats.subscribe(subjects::ALL_SESSIONS).await?;
    let mut cars: BTreeMap<SessionId, Car> = BTreeMap::new();
    // Until the first listing answers the tower is unknown, not empty.
    let mut listed = false;
    let mut relist = tokio::time::interval(RELIST);
    let mut redraw = tokio::time::interval(Duration::from_secs(1));
    let mut shutdown = std::pin::pin!(shutdown);
    // Full screen, as the one-car view: q, Esc or Ctrl-C ends it (in raw mode
    // the terminal sends no SIGINT, so the keys are read).
    let mut screen = (!args.plain).then(Screen::open);
    let (keys_tx, mut keys) = tokio::sync::mpsc::unbounded_channel();
    if let Some(screen) = &screen {
        screen.read_keys(keys_tx);
    }
    let result = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            Some(key) = keys.recv() => match key {
                Key::Quit => break Ok(()),
                Key::ToggleSetup => {}
            },
            _ = relist.tick() => {
                let rows = match client.list_all(Some(team)).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        say!("watch: {e}; retrying");
                        continue;
                    }
                };
                for row in rows {
                    if cars.contains_key(&row.session_id) {
                        cars.get_mut(&row.session_id).expect("present").car = row.car;
                        continue;
                    }
                    let mut car = Car { car: row.car, ..Car::default() };
                    if let Ok(doc) = client.get(&row.session_id.to_string()).await {
                        // The frame's real age: a car that has gone quiet is STALE at once.
                        car.seen = doc.telemetry.as_ref().map(|_| {
                            snapshot_frame_seen(&doc, Instant::now(), chrono::Utc::now())
                        });
                        car.frame = doc.telemetry;
                    }
                    cars.insert(row.session_id, car);
                }
                listed = true;
            }
            message = live.next() => {
                let Some(message) = message else {
                    break Err(anyhow::anyhow!("the subscription ended"));
                };
                let Some((id, rest)) = message
                    .subject
                    .strip_prefix(subjects::DATA_PREFIX)
                    .and_then(|s| s.split_once('.'))
                else {
                    continue;
                };
                let Some(car) = SessionId::parse(id).ok().and_then(|id| cars.get_mut(&id)) else {
                    // Not this team's: a new session is found at the next listing.
                    if rest.starts_with("events.created") {
                        relist.reset_immediately();
                    }
                    continue;
                };
                match subjects::session_message(rest) {
                    Some(SessionMessage::Data(DataKind::Telemetry)) => {
                        if let Ok(frame @ Value::Object(_)) = serde_json::from_slice(&message.payload) {
                            car.frame = Some(frame);
                            car.seen = Some(Instant::now());
                        }
                    }
                    Some(SessionMessage::Event(subjects::Event::Deleted | subjects::Event::Expired)) => {
                        car.ended = true;
                    }
                    _ => {}
                }
            }
            _ = redraw.tick() => {
                let text = if listed {
                    tower(team, &cars, Instant::now(), args.stale_after)
                } else {
                    loading(team)
                };
                match &mut screen {
                    Some(screen) => {
                        if let Err(e) = screen.draw_text(text.trim_end()) {
                            break Err(e);
                        }
                    }
                    None => {
                        if !super::print_line(text.trim_end()) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_tower_sorts_by_position_and_tells_live_from_stale_and_ended() {
        let now = Instant::now();
        let car = |label: &str, frame: Value, age_s: u64, ended: bool| Car {
            car: Some(label.into()),
            frame: Some(frame),
            seen: now.checked_sub(Duration::from_secs(age_s)),
            ended,
        };
        let mut cars = BTreeMap::new();
        let f = |pos: u32, name: &str| {
            json!({"position": pos, "player_name": name, "lap": 12, "last_lap_time": 213.5,
                   "fuel": 40.25, "in_pits": false})
        };
        cars.insert(SessionId::new_v4(), car("#8", f(3, "B. Second"), 10, false));
        cars.insert(SessionId::new_v4(), car("#7", f(1, "A. First"), 0, false));
        cars.insert(SessionId::new_v4(), car("#9", f(0, "C. Nopos"), 0, true));
        let text = tower("Blue", &cars, now, Duration::from_secs(5));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "team Blue: 3 cars");
        assert!(lines[1].starts_with("POS"), "{text}");
        assert!(
            lines[2].starts_with("P1") && lines[2].ends_with("LIVE"),
            "{text}"
        );
        assert!(
            lines[2].contains("3:33.500") && lines[2].contains("40.2 L"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("P3") && lines[3].ends_with("STALE"),
            "{text}"
        );
        assert!(
            lines[4].contains("#9") && lines[4].ends_with("ENDED"),
            "{text}"
        );
    }

    #[test]
    fn a_car_silent_before_the_view_started_is_stale_at_once() {
        let now = Instant::now();
        let wall = chrono::Utc::now();
        let doc = |silent_for: i64| {
            let mut doc = crate::cmd::watch::state::test_document(json!({}), json!({"lap": 3}));
            doc.session_id = SessionId::new_v4();
            doc.stats.last_frame_at = Some(wall - chrono::Duration::seconds(silent_for));
            doc.last_update = wall - chrono::Duration::seconds(silent_for);
            doc
        };
        let mut cars = BTreeMap::new();
        for (label, silent_for) in [("#7", 0), ("#8", 60)] {
            let doc = doc(silent_for);
            cars.insert(
                doc.session_id,
                Car {
                    car: Some(label.into()),
                    frame: Some(json!({"lap": 3})),
                    seen: Some(snapshot_frame_seen(&doc, now, wall)),
                    ended: false,
                },
            );
        }
        let text = tower("Blue", &cars, now, Duration::from_secs(5));
        let row = |car: &str| text.lines().find(|l| l.contains(car)).unwrap().to_string();
        assert!(row("#7").ends_with("LIVE"), "{text}");
        assert!(row("#8").ends_with("STALE"), "{text}");
    }

    #[test]
    fn before_the_first_listing_the_view_says_loading_not_zero_cars() {
        let text = loading("Blue");
        assert!(text.contains("loading"), "{text}");
        assert!(!text.contains("0 cars"), "{text}");
    }
}
