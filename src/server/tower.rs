//! The pit wall's feed: each team's cars as one small message a few times a
//! second (`team.<token>.tower`, docs/PROTOCOL.md "The pit wall"), so a team page
//! costs the same whether its cars send 2 or 60 frames a second (30 cars at 20 Hz
//! would be 600 frames a second for a phone to read; this is 2 messages).
//!
//! Built in the processor's loop from the session map, not from the data path:
//! each tick parses each team car's latest frame once, and only the fields the
//! tower shows. Pit stops and stints are read from successive ticks (`in_pits`
//! changes), which is enough for a stop of seconds; a frame's own `pit_stops`
//! wins when it has one. They are this processor's memory: a restarted
//! processor counts the stint from when it first sees the car.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::protocol::documents::{RejoinCar, Tower, TowerCar};
use crate::protocol::field::Field;
use crate::protocol::id::SessionId;
use crate::server::race::{self, Reading};
use crate::server::rejoin;
use crate::server::sessions::TeamCar;

/// Most cars one message lists; a team past it is cut to its first cars by
/// position and the message says how many were left out. A row is some 430
/// bytes (the docs/PROTOCOL.md example without its alert), 610 with a field's
/// `ahead`, `behind` and `rejoin`, under 800 with 64-byte names: 150 rows are
/// 64-120 KiB, well within the shipped broker's 1 MB `max_payload`.
pub const MAX_CARS: usize = 150;

/// What the feed remembers of a car between ticks.
#[derive(Debug, Clone)]
struct Track {
    in_pits: Option<bool>,
    pit_entries: u32,
    stint_lap: Option<f64>,
    stint_session_time: Option<f64>,
    stint_at: DateTime<Utc>,
    /// The strategy's pace (`race::pace`) as of the newest lap record (its
    /// `n`): read again only when the car completes a lap.
    pace: Option<(u64, race::Pace)>,
    /// The cars around it and the rejoin line, as of the field stored at
    /// `.0` and the pit loss `.1`: a field (some 8 KB for 22 cars) is parsed
    /// again only when a new one came, not on every tick.
    around: Option<(DateTime<Utc>, f64, Around)>,
}

/// The car ahead, the car behind, and the rejoin line, from a field.
type Around = (Option<RejoinCar>, Option<RejoinCar>, Option<String>);

/// The feed's state: per car its pit and stint memory, and the teams published
/// last tick (a team whose last car left gets one empty message, so its pages
/// mark the car ended).
#[derive(Debug, Default)]
pub struct Towers {
    tracks: HashMap<SessionId, Track>,
    published: HashSet<String>,
    /// `--fuel-reserve-laps`, for each car's fuel to add and last lap to stop.
    reserve_laps: f64,
    /// `--pit-loss`: what a stop costs a car that has not stopped yet.
    pit_loss: f64,
}

impl Towers {
    pub fn new(reserve_laps: f64, pit_loss: f64) -> Self {
        Towers {
            reserve_laps,
            pit_loss,
            ..Towers::default()
        }
    }

    /// One message per team, for the cars given (every labelled live session
    /// this processor holds), as of `now`.
    pub fn tick(&mut self, cars: Vec<TeamCar>, now: DateTime<Utc>, processor: &str) -> Vec<Tower> {
        let mut teams: HashMap<String, Vec<TowerCar>> = HashMap::new();
        let present: HashSet<SessionId> = cars.iter().map(|c| c.session_id).collect();
        self.tracks.retain(|id, _| present.contains(id));
        for car in cars {
            let row = self.car(&car, now);
            teams.entry(car.team).or_default().push(row);
        }
        let mut towers = Vec::with_capacity(teams.len() + self.published.len());
        for team in std::mem::take(&mut self.published) {
            if !teams.contains_key(&team) {
                towers.push(Tower {
                    team,
                    processor: processor.to_string(),
                    at: now,
                    cars: Vec::new(),
                    omitted: 0,
                });
            }
        }
        for (team, mut rows) in teams {
            // By position; cars level on it (or without one) by label, then id.
            rows.sort_by(|a, b| {
                let key = |c: &TowerCar| c.position.filter(|p| *p > 0.0).unwrap_or(f64::MAX);
                key(a)
                    .total_cmp(&key(b))
                    .then_with(|| a.car.cmp(&b.car))
                    .then_with(|| a.session_id.to_string().cmp(&b.session_id.to_string()))
            });
            let omitted = rows.len().saturating_sub(MAX_CARS);
            rows.truncate(MAX_CARS);
            self.published.insert(team.clone());
            towers.push(Tower {
                team,
                processor: processor.to_string(),
                at: now,
                cars: rows,
                omitted,
            });
        }
        towers
    }

    fn car(&mut self, car: &TeamCar, now: DateTime<Utc>) -> TowerCar {
        // The frame is parsed once, for the fields shown and the strategy's.
        let parsed: Value = car
            .telemetry
            .as_ref()
            .and_then(|f| serde_json::from_slice(&f.body).ok())
            .unwrap_or(Value::Null);
        let reading = match &parsed {
            Value::Object(_) => Reading::deserialize(&parsed).unwrap_or_default(),
            _ => Reading::default(),
        };
        let empty = Map::new();
        let frame = parsed.as_object().unwrap_or(&empty);
        let number = |key: &str| {
            frame
                .get(key)
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite())
        };
        let text = |key: &str| frame.get(key).and_then(Value::as_str).map(str::to_string);
        let lap = number("lap");
        let session_time = number("session_time");
        let in_pits = frame.get("in_pits").and_then(Value::as_bool);

        let track = self.tracks.entry(car.session_id).or_insert_with(|| Track {
            in_pits,
            pit_entries: 0,
            stint_lap: lap,
            stint_session_time: session_time,
            // A car first seen in a session's opening minute is at its start.
            stint_at: if now - car.created_at < chrono::TimeDelta::minutes(1) {
                car.created_at
            } else {
                now
            },
            pace: None,
            around: None,
        });
        match (track.in_pits, in_pits) {
            (Some(false), Some(true)) => track.pit_entries += 1,
            (Some(true), Some(false)) => {
                track.stint_lap = lap;
                track.stint_session_time = session_time;
                track.stint_at = now;
            }
            _ => {}
        }
        if in_pits.is_some() {
            track.in_pits = in_pits;
        }
        if track.stint_lap.is_none() {
            track.stint_lap = lap;
        }
        if track.stint_session_time.is_none() {
            track.stint_session_time = session_time;
        }
        let stint_s = match (session_time, track.stint_session_time) {
            (Some(t), Some(start)) if t >= start => t - start,
            _ => seconds(now - track.stint_at),
        };

        let fuel = number("fuel");
        // The pace the session document's strategy gives, so the tower, the car
        // page and watch show one number.
        let newest = car.laps.last().map(|record| record.n);
        let pace = match track.pace {
            Some((n, pace)) if Some(n) == newest => pace,
            _ => {
                let pace = race::pace(&car.laps);
                track.pace = newest.map(|n| (n, pace));
                pace
            }
        };
        let fuel_per_lap = pace.fuel_per_lap;
        let strategy = race::strategy_of(pace, &reading, self.reserve_laps);
        let loss = car.pit_loss.unwrap_or((self.pit_loss, "default", 0));
        let (ahead, behind, rejoin) = match &car.field {
            None => (None, None, None),
            Some(field) => match &track.around {
                Some((at, cost, around)) if *at == field.at && *cost == loss.0 => around.clone(),
                _ => {
                    // Held to its schema at ingest, so this reads.
                    let around = match Field::parse(&field.body) {
                        Ok(parsed) => {
                            let (ahead, behind) = rejoin::neighbours(&parsed).unwrap_or_default();
                            let line = rejoin::rejoin(&parsed, loss).map(|r| r.message);
                            (ahead, behind, line)
                        }
                        Err(_) => (None, None, None),
                    };
                    track.around = Some((field.at, loss.0, around.clone()));
                    around
                }
            },
        };
        TowerCar {
            session_id: car.session_id,
            car: car.car.clone(),
            driver: text("player_name"),
            position: number("position"),
            lap,
            last_lap_time: number("last_lap_time"),
            best_lap_time: number("best_lap_time"),
            gap_ahead: number("gap_ahead"),
            fuel,
            fuel_per_lap: fuel_per_lap.map(round2),
            fuel_laps: fuel.zip(fuel_per_lap).map(|(f, per)| round2(f / per)),
            race_laps_left: strategy.as_ref().and_then(|s| s.race_laps_left),
            fuel_to_add: strategy.as_ref().and_then(|s| s.fuel_to_add),
            next_stop_fuel: strategy.as_ref().and_then(|s| s.next_stop_fuel),
            stops_needed: strategy.as_ref().and_then(|s| s.stops_needed),
            last_lap_to_stop: strategy.as_ref().and_then(|s| s.last_lap_to_stop),
            in_pits,
            pit_stops: number("pit_stops")
                .filter(|n| *n >= 0.0)
                .map_or(track.pit_entries, |n| n as u32),
            stint_laps: lap.zip(track.stint_lap).map(|(l, s)| (l - s).max(0.0)),
            stint_s: round2(stint_s.max(0.0)),
            tyre_age_laps: number("tyre_age_laps"),
            tyre_compound: text("tyre_compound"),
            frame_age_s: car
                .telemetry
                .as_ref()
                .map(|f| round2(seconds(now - f.at).max(0.0))),
            alerts: Vec::new(),
            ahead,
            behind,
            rejoin,
        }
    }
}

fn seconds(delta: chrono::TimeDelta) -> f64 {
    delta.num_milliseconds() as f64 / 1000.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use bytes::Bytes;

    use crate::server::laps::LapRecord;
    use crate::server::sessions::Frame;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn record(id: SessionId, n: u64, fuel: f64) -> Arc<LapRecord> {
        let frame = Bytes::from(format!(r#"{{"lap":{n},"fuel":{fuel}}}"#));
        Arc::new(LapRecord {
            session_id: id,
            n,
            lap: Bytes::from(n.to_string()),
            started_at: at(0),
            ended_at: at(1),
            frames: 1,
            last_frame: frame.clone(),
            next_frame: frame,
            pitted: false,
        })
    }

    fn car(
        id: SessionId,
        team: &str,
        frame: &str,
        seen: i64,
        laps: Vec<Arc<LapRecord>>,
    ) -> TeamCar {
        TeamCar {
            session_id: id,
            team: team.into(),
            car: Some("#7".into()),
            created_at: at(0),
            telemetry: Some(Frame {
                body: Bytes::from(frame.to_string()),
                at: at(seen),
            }),
            laps,
            field: None,
            pit_loss: None,
        }
    }

    #[test]
    fn a_team_is_one_message_by_position_with_the_fields_it_carries() {
        let (a, b, c) = (
            SessionId::new_v4(),
            SessionId::new_v4(),
            SessionId::new_v4(),
        );
        let mut towers = Towers::default();
        let out = towers.tick(
            vec![
                car(a, "Blue", r#"{"position":5,"lap":3,"player_name":"Ann","gap_ahead":1.25}"#, 10, vec![]),
                car(b, "Blue", r#"{"position":2,"lap":4,"fuel":30.5,"tyre_age_laps":4,"tyre_compound":"soft"}"#, 8, vec![]),
                car(c, "Red", r#"{"position":1}"#, 10, vec![]),
            ],
            at(10),
            "p1",
        );
        assert_eq!(out.len(), 2);
        let blue = out.iter().find(|t| t.team == "Blue").unwrap();
        assert_eq!(
            blue.cars.iter().map(|c| c.session_id).collect::<Vec<_>>(),
            [b, a]
        );
        assert_eq!(blue.cars[0].frame_age_s, Some(2.0));
        assert_eq!(blue.cars[0].tyre_compound.as_deref(), Some("soft"));
        assert_eq!(blue.cars[1].driver.as_deref(), Some("Ann"));
        assert_eq!(blue.cars[1].gap_ahead, Some(1.25));
        assert_eq!(blue.cars[1].fuel, None);
        let json = serde_json::to_string(&blue.cars[1]).unwrap();
        assert!(
            !json.contains("fuel"),
            "absent readings are left out: {json}"
        );
        // Counts are JSON integers: 5, not 5.0.
        assert!(json.contains(r#""position":5,"lap":3,"#), "{json}");
        assert!(json.contains(r#""stint_laps":0,"#), "{json}");
        let json = serde_json::to_string(&blue.cars[0]).unwrap();
        assert!(json.contains(r#""tyre_age_laps":4,"#), "{json}");
        assert!(json.contains(r#""fuel":30.5,"#), "{json}");
    }

    #[test]
    fn fuel_per_lap_is_the_strategys_pace_and_gives_laps_in_the_tank() {
        let id = SessionId::new_v4();
        let laps = vec![
            record(id, 1, 60.0),
            record(id, 2, 57.0),
            record(id, 3, 90.0),
            record(id, 4, 86.0),
            record(id, 5, 83.0),
        ];
        let mut towers = Towers::new(1.0, 25.0);
        let frame = r#"{"fuel":35,"fuel_capacity":40,"lap":6,"laps_left":20}"#;
        let out = towers.tick(vec![car(id, "Blue", frame, 0, laps)], at(0), "p");
        let row = &out[0].cars[0];
        // The strategy's pace: the stint since the refuel on lap 3,
        // 90→86 (4) and 86→83 (3): 3.5 a lap.
        assert_eq!(row.fuel_per_lap, Some(3.5));
        assert_eq!(row.fuel_laps, Some(10.0));
        // To the flag: 20 laps × 3.5 = 70 L, plus a lap's reserve, less 35 in
        // the tank; 10 laps in it, one kept in reserve: stop by lap 6 + 9.
        assert_eq!(
            (row.race_laps_left, row.fuel_to_add, row.last_lap_to_stop),
            (Some(20.0), Some(38.5), Some(15.0))
        );
        // A 40 L tank stopped on the reserve takes 36.5 a stop: two stops.
        assert_eq!(
            (row.next_stop_fuel, row.stops_needed),
            (Some(36.5), Some(2))
        );
    }

    #[test]
    fn pit_stops_and_the_stint_follow_in_pits_on_the_sims_clock() {
        let id = SessionId::new_v4();
        let mut towers = Towers::default();
        let mut tick = |frame: &str, now: i64| {
            towers
                .tick(vec![car(id, "Blue", frame, now, vec![])], at(now), "p")
                .remove(0)
                .cars
                .remove(0)
        };
        let row = tick(r#"{"lap":1,"session_time":10,"in_pits":false}"#, 10);
        assert_eq!(
            (row.pit_stops, row.stint_laps, row.stint_s),
            (0, Some(0.0), 0.0)
        );
        let row = tick(r#"{"lap":5,"session_time":400,"in_pits":false}"#, 400);
        assert_eq!(
            (row.pit_stops, row.stint_laps, row.stint_s),
            (0, Some(4.0), 390.0)
        );
        let row = tick(r#"{"lap":5,"session_time":420,"in_pits":true}"#, 420);
        assert_eq!(row.pit_stops, 1);
        // Still in the pits a tick later: the same stop.
        let row = tick(r#"{"lap":5,"session_time":425,"in_pits":true}"#, 425);
        assert_eq!(row.pit_stops, 1, "a stop seen on two ticks is one stop");
        let row = tick(r#"{"lap":6,"session_time":450,"in_pits":false}"#, 450);
        assert_eq!(
            (row.pit_stops, row.stint_laps, row.stint_s),
            (1, Some(0.0), 0.0)
        );
        // A replay 20× faster: the sim's clock, not the processor's.
        let row = tick(r#"{"lap":7,"session_time":550,"in_pits":false}"#, 455);
        assert_eq!((row.stint_laps, row.stint_s), (Some(1.0), 100.0));
        // The frame's own count wins.
        let row = tick(r#"{"lap":7,"session_time":560,"pit_stops":3}"#, 456);
        assert_eq!(row.pit_stops, 3);
    }

    #[test]
    fn a_team_whose_last_car_left_gets_one_empty_message() {
        let id = SessionId::new_v4();
        let mut towers = Towers::default();
        assert_eq!(
            towers
                .tick(vec![car(id, "Blue", "{}", 0, vec![])], at(0), "p")
                .len(),
            1
        );
        let out = towers.tick(vec![], at(1), "p");
        assert_eq!(out.len(), 1);
        assert!(out[0].cars.is_empty());
        assert!(towers.tick(vec![], at(2), "p").is_empty());
    }

    #[test]
    fn a_car_with_a_field_shows_its_neighbours_and_where_a_stop_rejoins() {
        // Our car (#7, P2, 4.0 s behind the leader, 1.5 s ahead of #44): a
        // 22 s stop puts it 26.0 s back, behind #44 (5.5 s) by 20.5 s.
        let field = serde_json::json!({"cars": [
            {"index": 0, "race_number": 1, "position": 1, "gap_leader": 0.0, "status": "running"},
            {"index": 3, "race_number": 7, "position": 2, "gap_leader": 4.0, "interval": 4.0,
             "status": "running", "player": true},
            {"index": 5, "race_number": 44, "position": 3, "gap_leader": 5.5, "interval": 1.5,
             "status": "running"},
        ]});
        let id = SessionId::new_v4();
        let mut with_field = car(id, "Blue", r#"{"position":2}"#, 0, vec![]);
        with_field.field = Some(Frame {
            body: Bytes::from(field.to_string()),
            at: at(0),
        });
        with_field.pit_loss = Some((22.0, "stops", 1));
        let mut towers = Towers::new(1.0, 25.0);
        let out = towers.tick(vec![with_field.clone()], at(0), "p");
        let row = &out[0].cars[0];
        let (ahead, behind) = (row.ahead.as_ref().unwrap(), row.behind.as_ref().unwrap());
        assert_eq!((ahead.race_number, ahead.gap), (Some(1), 4.0));
        assert_eq!((behind.race_number, behind.gap), (Some(44), 1.5));
        assert_eq!(
            row.rejoin.as_deref(),
            Some("stop now: rejoin P3, 20.5 s behind #44")
        );
        // Without its own measure, the default loss (25 s): the same place.
        with_field.pit_loss = None;
        let out = towers.tick(vec![with_field.clone()], at(1), "p");
        assert_eq!(
            out[0].cars[0].rejoin.as_deref(),
            Some("stop now: rejoin P3, 23.5 s behind #44")
        );
        // A car without a field has none of it, and the message says nothing.
        with_field.field = None;
        let out = towers.tick(vec![with_field], at(2), "p");
        let json = serde_json::to_value(&out[0].cars[0]).unwrap();
        assert!(
            ["ahead", "behind", "rejoin"]
                .iter()
                .all(|k| json.get(k).is_none()),
            "{json}"
        );
    }

    #[test]
    fn garbage_frames_give_a_row_without_readings() {
        let id = SessionId::new_v4();
        let mut towers = Towers::default();
        let out = towers.tick(
            vec![car(
                id,
                "Blue",
                r#"{"position":"first","lap":1e999,"fuel":null}"#,
                0,
                vec![],
            )],
            at(0),
            "p",
        );
        let row = &out[0].cars[0];
        assert_eq!((row.position, row.lap, row.fuel), (None, None, None));
    }
}
