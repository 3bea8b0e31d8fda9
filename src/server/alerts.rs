//! Alerts: what an engineer must not miss, raised and cleared by the processor
//! at most once a second per session (not per frame), announced on
//! `session.<id>.alerts` and listed in the session document (docs/PROTOCOL.md
//! "Alerts").
//!
//! Pure: the latest frame, its age and the fuel use in, conditions and their
//! changes out; the caller passes the time, so tests run on a clock of their own.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::protocol::documents::{Alert, AlertEvent, AlertReading};
use crate::protocol::id::SessionId;

/// When an alert is raised (serve's `--alert-*` flags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Fuel for fewer laps than this: `fuel_low`.
    pub fuel_laps: f64,
    /// A tyre below or above this window (°C): `tyre_cold`, `tyre_hot`.
    pub tyre_min_c: f64,
    pub tyre_max_c: f64,
    /// A brake above this (°C): `brake_hot`.
    pub brake_max_c: f64,
    /// A tyre worn past this fraction (0.8: 80 % worn, 20 % left): `tyre_worn`.
    pub wear_max: f64,
    /// No frame for this long: `stale`.
    pub stale_s: f64,
}

impl Thresholds {
    /// These thresholds with some replaced, from `key=value,key=value` (keys
    /// `fuel_laps`, `tyre_min`, `tyre_max`, `brake_max`, `wear_max`, `stale`
    /// in seconds): what `serve --team-alerts TEAM:…` gives one team.
    pub fn with(&self, spec: &str) -> Result<Self, String> {
        let mut out = *self;
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not key=value"))?;
            let value: f64 = value
                .trim()
                .trim_end_matches('s')
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("`{pair}`: not a number of 0 or more"))?;
            let field = match key.trim() {
                "fuel_laps" => &mut out.fuel_laps,
                "tyre_min" => &mut out.tyre_min_c,
                "tyre_max" => &mut out.tyre_max_c,
                "brake_max" => &mut out.brake_max_c,
                "wear_max" => &mut out.wear_max,
                "stale" => &mut out.stale_s,
                other => {
                    return Err(format!(
                        "unknown threshold `{other}` (fuel_laps, tyre_min, tyre_max, brake_max, \
                         wear_max, stale)"
                    ));
                }
            };
            *field = value;
        }
        if out.tyre_min_c >= out.tyre_max_c {
            return Err("tyre_min must be below tyre_max".into());
        }
        Ok(out)
    }
}

impl Default for Thresholds {
    /// The Race Dashboard's plan where it fits a race car: fuel under 2 laps,
    /// brakes over 700 °C, wear past 80 %. Its tyres-over-90 °C is inside a
    /// slick's working range (80-100 °C), so the window is 60-105 °C.
    fn default() -> Self {
        Thresholds {
            fuel_laps: 2.0,
            tyre_min_c: 60.0,
            tyre_max_c: 105.0,
            brake_max_c: 700.0,
            wear_max: 0.8,
            stale_s: 10.0,
        }
    }
}

/// A value must come back this far inside its threshold (a share of it) to
/// clear: a tyre hovering at the limit does not raise and clear every second.
const HYSTERESIS: f64 = 0.02;

/// The kind raised when no frame came for `stale_s`; while it holds, the
/// other kinds are held as they were.
const STALE: &str = "stale";

/// What the alerts look at in one frame: [`read`] once per check, away from
/// the board and the processor's loop (it is the check's only costly part).
#[derive(Debug, Default)]
pub struct Readings {
    fuel: Option<f64>,
    tire_temps: Option<serde_json::Value>,
    brake_temps: Option<serde_json::Value>,
    tire_wear: Option<serde_json::Value>,
    /// The session's field, for the undercut window (set by the caller).
    pub field: Option<crate::protocol::field::Field>,
}

/// The readings of a frame as the monitor sent it.
pub fn read(frame: &[u8]) -> Readings {
    // An object's members (ingest lets only objects in; serde would read an
    // array's items as the fields in order).
    let r: Fields = match frame.trim_ascii_start().first() {
        Some(b'{') => serde_json::from_slice(frame).unwrap_or_default(),
        _ => Fields::default(),
    };
    Readings {
        fuel: r
            .fuel
            .as_ref()
            .and_then(|f| f.as_f64())
            .filter(|f| f.is_finite()),
        tire_temps: r.tire_temps,
        brake_temps: r.brake_temps,
        tire_wear: r.tire_wear,
        field: None,
    }
}

/// The frame's members the alerts look at, as sent.
#[derive(Debug, Default, Deserialize)]
struct Fields {
    #[serde(default)]
    fuel: Option<serde_json::Value>,
    #[serde(default)]
    tire_temps: Option<serde_json::Value>,
    #[serde(default)]
    brake_temps: Option<serde_json::Value>,
    #[serde(default)]
    tire_wear: Option<serde_json::Value>,
}

const CORNERS: [&str; 4] = ["fl", "fr", "rl", "rr"];

/// The corner with the highest (or, `low`, lowest) finite reading.
fn worst(value: &Option<serde_json::Value>, low: bool) -> Option<(&'static str, f64)> {
    let value = value.as_ref()?;
    CORNERS
        .into_iter()
        .filter_map(|c| Some((c, value.get(c)?.as_f64().filter(|v| v.is_finite())?)))
        .reduce(|a, b| if (b.1 < a.1) == low { b } else { a })
}

/// What one session's latest frame says now.
pub struct Input<'a> {
    pub readings: &'a Readings,
    /// Seconds since the frame arrived.
    pub frame_age_s: f64,
    /// L per lap (the strategy's), when known.
    pub fuel_per_lap: Option<f64>,
    /// Laps of fuel kept in hand (`--fuel-reserve-laps`): fewer is `pit_overdue`.
    pub reserve_laps: f64,
    /// Where a stop now rejoins (server/rejoin.rs), when the session has a field.
    pub rejoin: Option<crate::protocol::documents::Rejoin>,
}

/// A condition that holds now: (kind, level, value, threshold, message).
type Condition = (&'static str, &'static str, f64, f64, String);

/// The conditions that hold for `input`. `active` says which hold already, so
/// they clear only past the hysteresis.
fn conditions(t: &Thresholds, input: &Input<'_>, active: &[Alert]) -> Vec<Condition> {
    let held = |kind: &str| active.iter().any(|a| a.reading.kind == kind);
    // Past `limit` upwards (or downwards, `below`), or still within the
    // hysteresis of it when already raised.
    let past = |kind: &str, value: f64, limit: f64, below: bool| {
        let margin = limit.abs() * HYSTERESIS * if held(kind) { 1.0 } else { 0.0 };
        if below {
            value < limit + margin
        } else {
            value > limit - margin
        }
    };
    let mut out: Vec<Condition> = Vec::new();
    if input.frame_age_s > t.stale_s {
        out.push((
            STALE,
            "warning",
            (input.frame_age_s * 10.0).round() / 10.0,
            t.stale_s,
            format!("no frame for {:.0} s", input.frame_age_s),
        ));
        // The rest would describe a car that is not reporting.
        return out;
    }
    let r = input.readings;
    if let Some(laps) = r
        .fuel
        .zip(input.fuel_per_lap.filter(|p| *p > 0.0))
        .map(|(fuel, per)| fuel / per)
    {
        let laps = (laps * 100.0).round() / 100.0;
        if past("pit_overdue", laps, input.reserve_laps, true) {
            out.push((
                "pit_overdue",
                "critical",
                laps,
                input.reserve_laps,
                format!("{laps:.1} laps of fuel: the reserve is gone, pit now"),
            ));
        } else if past("fuel_low", laps, t.fuel_laps, true) {
            out.push((
                "fuel_low",
                "warning",
                laps,
                t.fuel_laps,
                format!("{laps:.1} laps of fuel left"),
            ));
        }
    }
    // Temperatures per corner: the hottest above a limit, the coldest below one.
    let temperatures = [
        ("tyre_hot", &r.tire_temps, t.tyre_max_c, false, "tyre"),
        ("tyre_cold", &r.tire_temps, t.tyre_min_c, true, "tyre"),
        ("brake_hot", &r.brake_temps, t.brake_max_c, false, "brake"),
    ];
    for (kind, readings, limit, below, what) in temperatures {
        if let Some((corner, temp)) = worst(readings, below)
            && past(kind, temp, limit, below)
        {
            let corner = corner.to_uppercase();
            let message = format!("{corner} {what} at {temp:.0} °C");
            out.push((kind, "warning", temp, limit, message));
        }
    }
    // The undercut window: the car behind is further back than a stop costs,
    // so a stop now keeps the place.
    if let Some(rejoin) = &input.rejoin
        && let Some(behind) = &rejoin.gap_behind_now
        && past("undercut_window", behind.gap, rejoin.pit_loss, false)
    {
        let who = behind
            .race_number
            .map_or_else(|| format!("car {}", behind.index), |n| format!("#{n}"));
        out.push((
            "undercut_window",
            "warning",
            behind.gap,
            rejoin.pit_loss,
            format!(
                "undercut window: {who} is {:.1} s behind, a stop costs {:.1} s",
                behind.gap, rejoin.pit_loss
            ),
        ));
    }
    // The schema's wear is the fraction left: worn = 1 - left.
    if let Some((corner, left)) = worst(&r.tire_wear, true) {
        let worn = ((1.0 - left) * 1000.0).round() / 1000.0;
        if past("tyre_worn", worn, t.wear_max, false) {
            out.push((
                "tyre_worn",
                "warning",
                worn,
                t.wear_max,
                format!("{} tyre {:.0} % worn", corner.to_uppercase(), worn * 100.0),
            ));
        }
    }
    out
}

/// Every session's active alerts, and what the fuel alerts read.
#[derive(Debug, Default)]
pub struct Board {
    active: HashMap<SessionId, Vec<Alert>>,
}

impl Board {
    /// One session's check at `now`: the alerts raised and cleared since its
    /// last check. A kind already raised stays raised (its value is updated,
    /// not announced again).
    pub fn check(
        &mut self,
        id: SessionId,
        thresholds: &Thresholds,
        input: &Input<'_>,
        now: DateTime<Utc>,
    ) -> Vec<AlertEvent> {
        let active = self.active.entry(id).or_default();
        let holding = conditions(thresholds, input, active);
        let mut events = Vec::new();
        let event = |state: &str, alert: &Alert| AlertEvent {
            session_id: id,
            state: state.to_string(),
            reading: alert.reading.clone(),
            at: now,
        };
        // A car that is not reporting says nothing new about its fuel, tyres or
        // brakes: what was raised before it went quiet is held (not cleared,
        // not raised) until a frame comes again and says otherwise.
        let stale = holding.iter().any(|(kind, ..)| *kind == STALE);
        active.retain(|alert| {
            let still = (stale && alert.reading.kind != STALE)
                || holding.iter().any(|(kind, ..)| *kind == alert.reading.kind);
            if !still {
                events.push(event("cleared", alert));
            }
            still
        });
        for (kind, level, value, threshold, message) in holding {
            match active.iter_mut().find(|a| a.reading.kind == kind) {
                Some(alert) => {
                    alert.reading.value = value;
                    alert.reading.message = message;
                }
                None => {
                    let alert = Alert {
                        reading: AlertReading {
                            kind: kind.to_string(),
                            level: level.to_string(),
                            value,
                            threshold,
                            message,
                        },
                        since: now,
                    };
                    events.push(event("raised", &alert));
                    active.push(alert);
                }
            }
        }
        events
    }

    /// A session's active alerts.
    pub fn active(&self, id: &SessionId) -> Vec<Alert> {
        self.active.get(id).cloned().unwrap_or_default()
    }

    /// An alert raised before a restart (the stored alerts, server/store/):
    /// held, so it is not raised again, and cleared when it no longer holds.
    pub fn restore(&mut self, id: SessionId, alert: Alert) {
        let active = self.active.entry(id).or_default();
        active.retain(|a| a.reading.kind != alert.reading.kind);
        active.push(alert);
    }

    /// Forgets sessions that are no longer live (their alerts end with them).
    pub fn retain(&mut self, live: impl Fn(&SessionId) -> bool) {
        self.active.retain(|id, _| live(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn check(
        board: &mut Board,
        id: SessionId,
        frame: serde_json::Value,
        age: f64,
        now: i64,
    ) -> Vec<(String, String)> {
        let readings = read(frame.to_string().as_bytes());
        let input = Input {
            readings: &readings,
            frame_age_s: age,
            fuel_per_lap: Some(3.0),
            reserve_laps: 1.0,
            rejoin: None,
        };
        board
            .check(id, &Thresholds::default(), &input, at(now))
            .into_iter()
            .map(|e| (e.state, e.reading.kind))
            .collect()
    }

    #[test]
    fn the_undercut_window_opens_when_the_car_behind_is_further_back_than_a_stop_costs() {
        let mut board = Board::default();
        let id = SessionId::new_v4();
        let readings = read(br#"{"lap": 3}"#);
        let rejoin = |gap: f64| crate::protocol::documents::Rejoin {
            pit_loss: 25.0,
            pit_loss_from: "default".into(),
            stops_measured: 0,
            position: 4,
            ahead: None,
            behind: None,
            gap_behind_now: Some(crate::protocol::documents::RejoinCar {
                index: 2,
                race_number: Some(44),
                driver: None,
                gap,
            }),
            undercut_window: Some(gap > 25.0),
            message: String::new(),
        };
        let mut events = |gap: f64, now: i64| {
            let input = Input {
                readings: &readings,
                frame_age_s: 0.0,
                fuel_per_lap: None,
                reserve_laps: 1.0,
                rejoin: Some(rejoin(gap)),
            };
            board
                .check(id, &Thresholds::default(), &input, at(now))
                .into_iter()
                .map(|e| (e.state, e.reading.kind, e.reading.message))
                .collect::<Vec<_>>()
        };
        assert_eq!(events(20.0, 0), vec![]);
        assert_eq!(
            events(26.0, 1),
            vec![(
                "raised".into(),
                "undercut_window".into(),
                "undercut window: #44 is 26.0 s behind, a stop costs 25.0 s".into()
            )]
        );
        // Within the hysteresis (2 % of 25 s) it holds; closer, it clears.
        assert_eq!(events(24.8, 2), vec![]);
        assert_eq!(events(24.0, 3)[0].0, "cleared");
    }

    fn pair(state: &str, kind: &str) -> (String, String) {
        (state.to_string(), kind.to_string())
    }

    #[test]
    fn a_teams_thresholds_replace_some_and_keep_the_rest() {
        let base = Thresholds::default();
        let blue = base.with("tyre_max=110, stale=20s,brake_max=750").unwrap();
        assert_eq!(
            (blue.tyre_max_c, blue.stale_s, blue.brake_max_c),
            (110.0, 20.0, 750.0)
        );
        assert_eq!((blue.tyre_min_c, blue.fuel_laps), (60.0, 2.0));
        assert!(
            base.with("tyre_hot=3")
                .unwrap_err()
                .contains("unknown threshold")
        );
        assert!(base.with("tyre_max").is_err() && base.with("stale=-1").is_err());
        assert!(base.with("tyre_min=120").unwrap_err().contains("below"));
    }

    #[test]
    fn each_alert_is_raised_once_and_cleared_once() {
        let mut board = Board::default();
        let id = SessionId::new_v4();
        let good = json!({"fuel": 30.0, "tire_temps": {"fl": 85, "fr": 86, "rl": 84, "rr": 85},
            "brake_temps": {"fl": 500, "fr": 510, "rl": 400, "rr": 410},
            "tire_wear": {"fl": 0.9, "fr": 0.9, "rl": 0.95, "rr": 0.95}});
        assert!(check(&mut board, id, good.clone(), 0.1, 0).is_empty());
        // Each threshold crossed in turn; raised once, however many checks.
        let cases = [
            ("fuel", json!(5.0), "fuel_low"),
            ("fuel", json!(2.0), "pit_overdue"),
            (
                "tire_temps",
                json!({"fl": 85, "fr": 110, "rl": 84, "rr": 85}),
                "tyre_hot",
            ),
            (
                "tire_temps",
                json!({"fl": 55, "fr": 86, "rl": 84, "rr": 85}),
                "tyre_cold",
            ),
            (
                "brake_temps",
                json!({"fl": 500, "fr": 510, "rl": 720, "rr": 410}),
                "brake_hot",
            ),
            (
                "tire_wear",
                json!({"fl": 0.9, "fr": 0.1, "rl": 0.95, "rr": 0.95}),
                "tyre_worn",
            ),
        ];
        for (n, (key, value, kind)) in cases.into_iter().enumerate() {
            let mut bad = good.clone();
            bad[key] = value;
            let now = 10 * n as i64;
            assert_eq!(
                check(&mut board, id, bad.clone(), 0.1, now + 1),
                [pair("raised", kind)],
                "{kind}"
            );
            assert!(
                check(&mut board, id, bad, 0.1, now + 2).is_empty(),
                "{kind} again"
            );
            assert_eq!(
                check(&mut board, id, good.clone(), 0.1, now + 3),
                [pair("cleared", kind)],
                "{kind}"
            );
        }
        // Silence past the stale window, then a frame again.
        assert_eq!(
            check(&mut board, id, good.clone(), 10.5, 100),
            [pair("raised", "stale")]
        );
        assert!(check(&mut board, id, good.clone(), 11.5, 101).is_empty());
        assert_eq!(
            check(&mut board, id, good, 0.2, 102),
            [pair("cleared", "stale")]
        );
        assert!(board.active(&id).is_empty());
    }

    #[test]
    fn a_stale_car_keeps_its_other_alerts_without_announcing_them() {
        let mut board = Board::default();
        let id = SessionId::new_v4();
        let low = json!({"fuel": 2.0});
        assert_eq!(
            check(&mut board, id, low.clone(), 0.1, 0),
            [pair("raised", "pit_overdue")]
        );
        // The car goes quiet: stale is raised, pit_overdue is neither cleared
        // nor raised again, and stays active.
        assert_eq!(
            check(&mut board, id, low.clone(), 10.5, 11),
            [pair("raised", "stale")]
        );
        assert!(check(&mut board, id, low.clone(), 20.0, 20).is_empty());
        let kinds = |board: &Board| {
            let mut kinds: Vec<String> = board
                .active(&id)
                .into_iter()
                .map(|a| a.reading.kind)
                .collect();
            kinds.sort();
            kinds
        };
        assert_eq!(kinds(&board), ["pit_overdue", "stale"]);
        // Frames again, still low on fuel: only stale clears.
        assert_eq!(
            check(&mut board, id, low, 0.1, 21),
            [pair("cleared", "stale")]
        );
        assert_eq!(kinds(&board), ["pit_overdue"]);
        // Quiet again, then back refuelled: pit_overdue clears only then.
        assert_eq!(
            check(&mut board, id, json!({"fuel": 2.0}), 11.0, 40),
            [pair("raised", "stale")]
        );
        let mut back = check(&mut board, id, json!({"fuel": 60.0}), 0.1, 41);
        back.sort();
        assert_eq!(
            back,
            [pair("cleared", "pit_overdue"), pair("cleared", "stale")]
        );
        assert!(board.active(&id).is_empty());
    }

    #[test]
    fn every_kind_clears_only_past_its_hysteresis() {
        let temps = |corner: &str, v: f64| {
            let mut t = json!({"fl": 85, "fr": 86, "rl": 84, "rr": 85});
            t[corner] = json!(v);
            t
        };
        // Per kind: the frame with a reading, and readings that raise it, that
        // lie inside the threshold by less than the hysteresis (2 %), and that
        // lie inside it by more. Fuel is 3 L a lap.
        type Frame = Box<dyn Fn(f64) -> serde_json::Value>;
        let cases: [(&str, Frame, [f64; 3]); 6] = [
            // Laps of fuel: 1.9, 2.01 (< 2 + 0.04), 2.1.
            (
                "fuel_low",
                Box::new(|f| json!({"fuel": f})),
                [5.7, 6.03, 6.3],
            ),
            // 0.9, 1.01 (< 1 + 0.02), 1.1.
            (
                "pit_overdue",
                Box::new(|f| json!({"fuel": f})),
                [2.7, 3.03, 3.3],
            ),
            // °C against 105 (margin 2.1), 60 (1.2), 700 (14).
            (
                "tyre_hot",
                Box::new(move |v| json!({"tire_temps": temps("fr", v)})),
                [106.0, 104.0, 100.0],
            ),
            (
                "tyre_cold",
                Box::new(move |v| json!({"tire_temps": temps("fl", v)})),
                [55.0, 61.0, 65.0],
            ),
            (
                "brake_hot",
                Box::new(|v| json!({"brake_temps": {"fl": 500, "fr": 510, "rl": v, "rr": 410}})),
                [720.0, 690.0, 650.0],
            ),
            // The fraction left: 90 %, 79 % (> 80 % - 1.6), 70 % worn.
            (
                "tyre_worn",
                Box::new(|v| json!({"tire_wear": {"fl": 0.9, "fr": v, "rl": 0.95, "rr": 0.95}})),
                [0.1, 0.21, 0.3],
            ),
        ];
        for (kind, frame, [raise, near, clear]) in cases {
            let mut board = Board::default();
            let id = SessionId::new_v4();
            let raised = |board: &Board| board.active(&id).iter().any(|a| a.reading.kind == kind);
            check(&mut board, id, frame(near), 0.1, 0);
            assert!(!raised(&board), "{kind}: {near} is inside the threshold");
            let events = check(&mut board, id, frame(raise), 0.1, 1);
            assert!(events.contains(&pair("raised", kind)), "{kind}: {events:?}");
            let events = check(&mut board, id, frame(near), 0.1, 2);
            assert!(
                raised(&board) && !events.contains(&pair("cleared", kind)),
                "{kind} at {near}, within the hysteresis, is still raised: {events:?}"
            );
            let events = check(&mut board, id, frame(clear), 0.1, 3);
            assert!(
                events.contains(&pair("cleared", kind)),
                "{kind}: {events:?}"
            );
        }
    }

    #[test]
    fn a_value_at_the_limit_does_not_flap() {
        let mut board = Board::default();
        let id = SessionId::new_v4();
        let temps = |fr: f64| json!({"tire_temps": {"fl": 85, "fr": fr, "rl": 84, "rr": 85}});
        assert_eq!(
            check(&mut board, id, temps(106.0), 0.1, 0),
            [pair("raised", "tyre_hot")]
        );
        // Back under 105 but within 2 %: still raised, the value follows.
        assert!(check(&mut board, id, temps(104.0), 0.1, 1).is_empty());
        assert_eq!(board.active(&id)[0].reading.value, 104.0);
        assert_eq!(
            check(&mut board, id, temps(100.0), 0.1, 2),
            [pair("cleared", "tyre_hot")]
        );
        // Missing, null or garbage readings raise nothing.
        assert!(
            check(
                &mut board,
                id,
                json!({"tire_temps": null, "fuel": "x"}),
                0.1,
                3
            )
            .is_empty()
        );
        assert!(check(&mut board, id, json!([1, 2]), 0.1, 4).is_empty());
    }
}
