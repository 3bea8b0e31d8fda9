//! What a race engineer's view knows about one session, fed by the snapshot and the
//! live frames. Pure: no NATS and no terminal, so it is tested on its own.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::protocol::documents::{
    AlertEvent, AlertReading, LapRecord, Rejoin, SessionDocument, Strategy,
};
use crate::protocol::subjects;
use crate::protocol::trace::LiveReference;

/// Laps of fuel history used for the burn-rate estimate.
const BURN_WINDOW: usize = 5;

/// What the live delta says before the session has a best lap's trace.
pub const NO_REFERENCE: &str = "no reference lap yet";

/// Completed laps the view keeps (the table shows the last that fit).
pub const LAPS_KEPT: usize = 60;

/// One completed lap as the view shows it, from a lap record (`sessions.laps`,
/// `session.<id>.lap`).
#[derive(Debug, Clone, PartialEq)]
pub struct LapRow {
    /// The lap's value at the lap field, as text.
    pub lap: String,
    /// Seconds: the sim's `last_lap_time` in the next lap's first frame, else the
    /// `lap_time` of its last frame, else the time between its first and last frame.
    pub time: Option<f64>,
    /// Litres from the start of this lap to the start of the next; `None` for the
    /// first lap seen or across a refuel.
    pub fuel_used: Option<f64>,
    /// The car was in the pits during the lap (or was refuelled).
    pub pit: bool,
    /// Fuel at the start of the next lap: the next row's start.
    fuel_at_end: Option<f64>,
    /// Identifies the record, so a lap from the snapshot and live is kept once.
    ended_at: chrono::DateTime<chrono::Utc>,
}

/// The link to the broker, as the view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Live,
    /// Lost; reconnecting. A fresh snapshot follows when the link is back.
    Reconnecting,
}

#[derive(Debug)]
pub struct WatchState {
    pub session_id: String,
    /// The latest setup, from the snapshot or live.
    pub setup: Option<Value>,
    /// The latest telemetry frame.
    pub telemetry: Option<Value>,
    /// When the latest frame arrived here (snapshot or live), to show its age.
    pub last_frame_at: Option<Instant>,
    /// No frame for this long counts as stale.
    pub stale_after: Duration,
    pub link: Link,
    /// Why the session cannot be shown (unknown, deleted), if so.
    pub problem: Option<String>,
    /// Frames received live since the view started.
    pub frames_seen: u64,
    /// Fuel at the first frame seen of each recent lap: (lap, litres).
    fuel_at_lap: VecDeque<(u64, f64)>,
    /// The oldest entry was taken mid-lap (the view joined during that lap), so
    /// the burn from it to the next lap is only part of a lap's.
    first_lap_partial: bool,
    /// Completed laps, oldest first, at most [`LAPS_KEPT`].
    pub laps: Vec<LapRow>,
    /// Fuel to the finish, as the processor last computed it.
    pub strategy: Option<Strategy>,
    /// Where a stop now rejoins (the document's `rejoin`, from the session's
    /// field): asked for again as fields arrive, at most once a second.
    pub rejoin: Option<Rejoin>,
    /// The active alerts by kind, from the document and `session.<id>.alerts`.
    pub alerts: std::collections::BTreeMap<String, AlertReading>,
    /// The best lap's trace, for the live delta: fetched once per new best
    /// lap (`sessions.trace`), never per frame.
    pub reference: Option<LiveReference>,
    /// Why there is no reference ("no reference lap yet", no recording).
    pub reference_note: String,
    /// The best lap time when the reference was last asked for: a faster lap
    /// asks again.
    reference_asked_for: Option<f64>,
    /// The latest frame's time against the reference at its distance, + =
    /// slower.
    pub delta: Option<f64>,
}

impl WatchState {
    pub fn new(session_id: impl Into<String>, stale_after: Duration) -> Self {
        WatchState {
            session_id: session_id.into(),
            setup: None,
            telemetry: None,
            last_frame_at: None,
            stale_after,
            link: Link::Connecting,
            problem: None,
            frames_seen: 0,
            fuel_at_lap: VecDeque::new(),
            first_lap_partial: true,
            laps: Vec::new(),
            strategy: None,
            rejoin: None,
            alerts: Default::default(),
            reference: None,
            reference_note: NO_REFERENCE.into(),
            reference_asked_for: None,
            delta: None,
        }
    }

    /// The best lap time to ask a reference for, when it is not the one
    /// already asked for (the view has no lap yet, or the best is unchanged:
    /// `None`). Marks it asked.
    pub fn reference_wanted(&mut self) -> Option<f64> {
        let best = self.best_lap()?;
        if self.reference_asked_for == Some(best) {
            return None;
        }
        self.reference_asked_for = Some(best);
        Some(best)
    }

    /// The best lap's trace arrived (`None`: there is none to read, and why).
    pub fn apply_reference(&mut self, reference: Result<LiveReference, String>) {
        match reference {
            Ok(reference) => {
                self.delta = self.telemetry.as_ref().and_then(|t| reference.delta_of(t));
                self.reference = Some(reference);
            }
            Err(note) => {
                self.reference = None;
                self.reference_note = note;
                self.delta = None;
            }
        }
    }

    /// Applies lap records (`sessions.laps`), oldest first: they replace what the
    /// view had, as after a reconnect.
    pub fn apply_laps(&mut self, records: &[LapRecord<Value>]) {
        self.laps.clear();
        for record in records {
            self.push_lap(record);
        }
    }

    /// The best lap time among the laps kept.
    pub fn best_lap(&self) -> Option<f64> {
        self.laps
            .iter()
            .filter_map(|l| l.time)
            .min_by(|a, b| a.total_cmp(b))
    }

    fn push_lap(&mut self, record: &LapRecord<Value>) {
        let ended_at = record.ended_at;
        if self.laps.iter().any(|l| l.ended_at == ended_at) {
            return;
        }
        let (last, next) = (&record.last_frame, &record.next_frame);
        let elapsed = (record.ended_at - record.started_at).num_milliseconds() as f64 / 1000.0;
        let time = next["last_lap_time"]
            .as_f64()
            .or_else(|| last["lap_time"].as_f64())
            .or(Some(elapsed));
        let fuel_at_end = next["fuel"].as_f64();
        let fuel_used = match (self.laps.last().and_then(|l| l.fuel_at_end), fuel_at_end) {
            (Some(start), Some(end)) => Some(start - end),
            _ => None,
        };
        let refuelled = fuel_used.is_some_and(|used| used < 0.0);
        let lap = match &record.lap {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        self.laps.push(LapRow {
            lap,
            time,
            fuel_used: fuel_used.filter(|_| !refuelled),
            pit: refuelled || last["in_pits"] == true || next["in_pits"] == true,
            fuel_at_end,
            ended_at,
        });
        if self.laps.len() > LAPS_KEPT {
            self.laps.remove(0);
        }
    }

    /// Applies a `sessions.get` document. The frame's age counts from `now`: the
    /// document's own times are the processor's clock, not this machine's.
    pub fn apply_snapshot(&mut self, doc: &SessionDocument<Value>, now: Instant) {
        self.apply_numbers(doc);
        self.problem = None;
        self.link = Link::Live;
        if let Some(setup) = &doc.setup {
            self.setup = Some(setup.clone());
        }
        if let Some(telemetry) = &doc.telemetry {
            self.track_fuel(telemetry);
            self.telemetry = Some(telemetry.clone());
            self.last_frame_at = Some(snapshot_frame_seen(doc, now, chrono::Utc::now()));
        }
    }

    /// Takes the engineer's numbers of a `sessions.get` document: the
    /// strategy and the active alerts (refreshed every few seconds).
    pub fn apply_numbers(&mut self, doc: &SessionDocument<Value>) {
        self.strategy = doc.strategy.clone();
        self.rejoin = doc.rejoin.clone();
        if let Some(alerts) = &doc.alerts {
            self.alerts = alerts
                .iter()
                .map(|a| (a.reading.kind.clone(), a.reading.clone()))
                .collect();
        }
    }

    /// Applies a live message published under `session.<id>.`; `rest` is the rest of
    /// its subject (`telemetry`, `telemetry.3` under partitions, `setup`,
    /// `events.deleted`, …), read by `subjects::session_message`. Frames that do
    /// not parse are skipped: they come straight from the broker, unvalidated.
    pub fn apply_message(&mut self, rest: &str, payload: &[u8], now: Instant) {
        use subjects::{DataKind, Event, SessionMessage};
        let Some(message) = subjects::session_message(rest) else {
            return;
        };
        match message {
            SessionMessage::Data(DataKind::Telemetry) => {
                let Ok(frame) = serde_json::from_slice::<Value>(payload) else {
                    return;
                };
                if !frame.is_object() {
                    return;
                }
                self.track_fuel(&frame);
                self.delta = self.reference.as_ref().and_then(|r| r.delta_of(&frame));
                self.telemetry = Some(frame);
                self.last_frame_at = Some(now);
                self.frames_seen += 1;
            }
            SessionMessage::Data(DataKind::Setup) => {
                if let Ok(setup @ Value::Object(_)) = serde_json::from_slice::<Value>(payload) {
                    self.setup = Some(setup);
                }
            }
            // The field (every car): `watch` shows the driver's own car and
            // where a stop rejoins, which the loop asks the processor for
            // again when a field comes (`rejoin`).
            SessionMessage::Data(DataKind::Field) => {}
            SessionMessage::Lap => {
                if let Ok(record) = serde_json::from_slice::<LapRecord<Value>>(payload) {
                    self.push_lap(&record);
                }
            }
            SessionMessage::Event(Event::Deleted) => {
                self.problem = Some("this session was deleted".into())
            }
            SessionMessage::Event(Event::Expired) => {
                self.problem = Some("this session expired (no data for too long)".into())
            }
            SessionMessage::Alerts => {
                if let Ok(event) = serde_json::from_slice::<AlertEvent>(payload) {
                    match event.state.as_str() {
                        "raised" => {
                            self.alerts
                                .insert(event.reading.kind.clone(), event.reading);
                        }
                        _ => {
                            self.alerts.remove(&event.reading.kind);
                        }
                    }
                }
            }
            SessionMessage::Event(Event::Created) => {}
        }
    }

    /// Whether the data is stale: no frame for `stale_after`, or none at all yet.
    pub fn is_stale(&self, now: Instant) -> bool {
        self.last_frame_at
            .is_none_or(|t| now.duration_since(t) >= self.stale_after)
    }

    /// How long since the latest frame arrived.
    pub fn frame_age(&self, now: Instant) -> Option<Duration> {
        self.last_frame_at.map(|t| now.duration_since(t))
    }

    /// Litres burned per lap over recent laps, ignoring laps with a refuel.
    pub fn fuel_per_lap(&self) -> Option<f64> {
        let burns: Vec<f64> = self
            .fuel_at_lap
            .iter()
            .zip(self.fuel_at_lap.iter().skip(1))
            .skip(usize::from(self.first_lap_partial))
            .filter(|((lap_a, _), (lap_b, _))| lap_b == &(lap_a + 1))
            .map(|((_, a), (_, b))| a - b)
            .filter(|burn| *burn > 0.0)
            .collect();
        // A view that joined mid-lap has no full lap of its own yet: the lap
        // history has the burn of the last laps (refuels left out).
        let burns = if burns.is_empty() {
            self.laps
                .iter()
                .rev()
                .filter_map(|l| l.fuel_used.filter(|used| *used > 0.0))
                .take(BURN_WINDOW)
                .collect()
        } else {
            burns
        };
        (!burns.is_empty()).then(|| burns.iter().sum::<f64>() / burns.len() as f64)
    }

    /// Laps the fuel on board lasts at the recent burn rate.
    pub fn laps_remaining(&self) -> Option<f64> {
        let fuel = self.telemetry.as_ref()?["fuel"].as_f64()?;
        let per_lap = self.fuel_per_lap()?;
        Some(fuel / per_lap)
    }

    fn track_fuel(&mut self, frame: &Value) {
        let (Some(lap), Some(fuel)) = (frame["lap"].as_u64(), frame["fuel"].as_f64()) else {
            return;
        };
        if self
            .fuel_at_lap
            .back()
            .is_some_and(|(last, _)| *last == lap)
        {
            return;
        }
        if self.fuel_at_lap.back().is_some_and(|(last, _)| *last > lap) {
            // Laps went backwards: a different stint or a replay. Start over.
            self.fuel_at_lap.clear();
        }
        if self.fuel_at_lap.is_empty() {
            self.first_lap_partial = true;
        }
        self.fuel_at_lap.push_back((lap, fuel));
        while self.fuel_at_lap.len() > BURN_WINDOW + 2 {
            self.fuel_at_lap.pop_front();
            self.first_lap_partial = false;
        }
    }
}

/// A session document with these frames, for the view's tests.
/// When a snapshot's frame arrived, on this machine's clock: `now` less the
/// frame's age when the processor stored it (`stats.last_frame_at`, else the
/// document's `last_update`), so a quiet session shows as stale at once rather
/// than from when the snapshot arrived. A clock ahead of this one counts as age 0.
pub fn snapshot_frame_seen(
    doc: &SessionDocument<Value>,
    now: Instant,
    wall_now: chrono::DateTime<chrono::Utc>,
) -> Instant {
    let at = doc.stats.last_frame_at.unwrap_or(doc.last_update);
    let age = (wall_now - at).to_std().unwrap_or_default();
    now.checked_sub(age).unwrap_or(now)
}

/// A document whose frame has just arrived (its `last_frame_at` is now).
#[cfg(test)]
pub(crate) fn test_document(setup: Value, telemetry: Value) -> SessionDocument<Value> {
    let mut doc: SessionDocument<Value> = serde_json::from_value(serde_json::json!({
        "session_id": "3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b",
        "created_at": "2026-11-24T10:00:00Z",
        "setup": setup,
        "setup_timestamp": null,
        "telemetry": telemetry,
        "last_update": "2026-11-24T10:00:00Z",
        "stats": {"telemetry_count": 1, "setup_count": 0, "rejected_count": 0,
                  "first_frame_at": null, "last_frame_at": null, "duration_s": 0.0, "rate_hz": 0.0}
    }))
    .expect("a well-formed document");
    doc.stats.last_frame_at = Some(chrono::Utc::now());
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(lap: u64, fuel: f64) -> Vec<u8> {
        json!({"lap": lap, "fuel": fuel}).to_string().into_bytes()
    }

    #[test]
    fn fuel_estimate_uses_the_burn_per_lap_and_ignores_refuels() {
        let now = Instant::now();
        let mut s = WatchState::new("x", Duration::from_secs(5));
        assert_eq!(s.laps_remaining(), None);
        for (lap, fuel) in [
            (1, 75.0),
            (1, 74.0),
            (2, 70.0),
            (3, 65.0),
            (4, 60.0),
            (5, 75.0),
            (6, 70.0),
        ] {
            s.apply_message("telemetry", &frame(lap, fuel), now);
        }
        // Burns: 5, 5, 5, (refuel skipped), 5.
        assert_eq!(s.fuel_per_lap(), Some(5.0));
        assert_eq!(s.laps_remaining(), Some(14.0));
    }

    fn record(lap: u64, ended: u64, fuel_next: f64, pit: bool) -> Value {
        json!({
            "lap": lap,
            "started_at": format!("2026-11-24T10:00:{:02}Z", ended - 5),
            "ended_at": format!("2026-11-24T10:00:{ended:02}Z"),
            "frames": 10,
            "last_frame": {"lap": lap, "lap_time": 99.5, "in_pits": pit},
            "next_frame": {"lap": lap + 1, "last_lap_time": 100.0 + lap as f64, "fuel": fuel_next},
        })
    }

    #[test]
    fn laps_show_time_fuel_used_and_pit_stops_once_each() {
        let now = Instant::now();
        let mut s = WatchState::new("x", Duration::from_secs(5));
        let typed = |v: Value| serde_json::from_value::<LapRecord<Value>>(v).unwrap();
        s.apply_laps(&[
            typed(record(1, 10, 70.0, false)),
            typed(record(2, 20, 65.0, false)),
        ]);
        // Live: a refuel in lap 3, and lap 2 again (snapshot and live overlap).
        s.apply_message(
            "lap",
            record(2, 20, 65.0, false).to_string().as_bytes(),
            now,
        );
        s.apply_message("lap", record(3, 30, 75.0, true).to_string().as_bytes(), now);
        s.apply_message("lap", b"not json", now);
        let rows: Vec<(&str, Option<f64>, Option<f64>, bool)> = s
            .laps
            .iter()
            .map(|l| (l.lap.as_str(), l.time, l.fuel_used, l.pit))
            .collect();
        assert_eq!(
            rows,
            [
                ("1", Some(101.0), None, false),
                ("2", Some(102.0), Some(5.0), false),
                ("3", Some(103.0), None, true),
            ]
        );
        assert_eq!(s.best_lap(), Some(101.0));
        // Joined mid-lap: the burn per lap comes from the laps (lap 2's 5 L;
        // lap 3 was refuelled), before the view has seen a full lap itself.
        assert_eq!(s.fuel_per_lap(), Some(5.0));
    }

    #[test]
    fn the_live_delta_follows_each_frame_and_asks_once_per_new_best_lap() {
        use crate::protocol::trace::{Axis, Trace};
        let now = Instant::now();
        let mut s = WatchState::new("x", Duration::from_secs(5));
        assert_eq!(s.reference_wanted(), None, "no lap, nothing to ask");
        assert_eq!(s.reference_note, NO_REFERENCE);
        let typed = |v: Value| serde_json::from_value::<LapRecord<Value>>(v).unwrap();
        s.apply_laps(&[typed(record(1, 10, 70.0, false))]);
        assert_eq!(s.reference_wanted(), Some(101.0));
        assert_eq!(s.reference_wanted(), None, "asked once");
        // The best lap: 100 m in 10 s, a point every 50 m.
        let trace = Trace {
            session_id: crate::protocol::id::SessionId::parse(
                "3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b",
            )
            .unwrap(),
            lap: 1.into(),
            axis: Axis::Distance,
            step: Some(50.0),
            frames: 3,
            distance_m: vec![Some(0.0), Some(50.0), Some(100.0)],
            elapsed_s: vec![Some(0.0), Some(5.0), Some(10.0)],
            channels: Default::default(),
            gaps: vec![],
        };
        s.apply_reference(Ok(LiveReference::of(&trace).unwrap()));
        let frame =
            |d: f64, t: f64| json!({"lap": 2, "lap_distance": d, "lap_time": t}).to_string();
        s.apply_message("telemetry", frame(25.0, 2.266).as_bytes(), now);
        assert_eq!(s.delta, Some(-0.234));
        s.apply_message("telemetry", frame(75.0, 8.0).as_bytes(), now);
        assert_eq!(s.delta, Some(0.5));
        // A lap slower than the best asks nothing; a faster one asks again.
        s.apply_message(
            "lap",
            record(2, 20, 65.0, false).to_string().as_bytes(),
            now,
        );
        assert_eq!(s.reference_wanted(), None);
        let mut faster = record(3, 30, 60.0, false);
        faster["next_frame"]["last_lap_time"] = json!(99.5);
        s.apply_message("lap", faster.to_string().as_bytes(), now);
        assert_eq!(s.reference_wanted(), Some(99.5));
        s.apply_reference(Err("no trace recording".into()));
        assert_eq!((s.delta, s.reference.is_none()), (None, true));
    }

    #[test]
    fn stale_after_five_seconds_without_frames() {
        let start = Instant::now();
        let mut s = WatchState::new("x", Duration::from_secs(5));
        assert!(s.is_stale(start), "no frame yet");
        s.apply_message("telemetry", &frame(1, 50.0), start);
        assert!(!s.is_stale(start + Duration::from_secs(4)));
        assert!(s.is_stale(start + Duration::from_secs(5)));
    }

    #[test]
    fn unparseable_frames_are_skipped() {
        let now = Instant::now();
        let mut s = WatchState::new("x", Duration::from_secs(5));
        s.apply_message("telemetry", &frame(3, 40.0), now);
        s.apply_message("telemetry", b"{\"lap\": ", now);
        s.apply_message("telemetry", b"[1]", now);
        s.apply_message("setup", b"nope", now);
        assert_eq!(s.telemetry.as_ref().unwrap()["lap"], 3);
        assert_eq!(s.frames_seen, 1);
        assert!(s.setup.is_none());
    }

    #[test]
    fn a_snapshot_fills_the_view_and_a_deletion_is_shown() {
        let now = Instant::now();
        let mut s = WatchState::new("x", Duration::from_secs(5));
        s.apply_snapshot(
            &test_document(json!({"wing": 5}), json!({"lap": 9, "fuel": 30.0})),
            now,
        );
        assert_eq!(s.link, Link::Live);
        assert_eq!(s.setup, Some(json!({"wing": 5})));
        assert!(!s.is_stale(now));
        s.apply_message("events.deleted", b"{}", now);
        assert!(s.problem.is_some());
    }
}
