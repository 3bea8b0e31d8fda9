//! The engineer's numbers: stints and fuel to the finish, computed once on the
//! server from a session's lap history and its latest frame, so the page, the
//! tower, `watch` and any NATS client agree (docs/PROTOCOL.md "Stints and
//! strategy").
//!
//! Pure: lap records and a frame in, numbers out. Every time is the sim's own
//! (`last_lap_time`, `session_time`, `session_time_left`), never when frames
//! arrived, so a replay at `--time-scale 20` or a burst of buffered frames after
//! a reconnect gives the numbers the live race gave.

use std::sync::Arc;

use serde::Deserialize;

use crate::protocol::documents::{Stint, Strategy};
use crate::server::laps::LapRecord;

/// Green laps the fuel and lap-time means take, newest first.
pub const RECENT_LAPS: usize = 5;

/// Fuel (L) a lap must gain over the previous line to count as a refuel: above
/// a sim's rounding and slosh.
const REFUEL_MIN: f64 = 0.5;

/// Laps the strategy reads back at most: a stint is rarely longer, and the
/// session's fallback needs only a few green laps.
const STRATEGY_LOOKBACK: usize = 60;

/// The fields of a frame these numbers read (the documented schema's names);
/// everything else in it is skipped unparsed.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Reading {
    #[serde(default, deserialize_with = "finite")]
    pub lap: Option<f64>,
    #[serde(default, deserialize_with = "finite")]
    pub fuel: Option<f64>,
    #[serde(default, deserialize_with = "finite")]
    pub fuel_capacity: Option<f64>,
    #[serde(default, deserialize_with = "finite")]
    pub last_lap_time: Option<f64>,
    #[serde(default, deserialize_with = "finite")]
    pub session_time: Option<f64>,
    #[serde(default, deserialize_with = "finite")]
    pub session_time_left: Option<f64>,
    #[serde(default, deserialize_with = "finite")]
    pub laps_left: Option<f64>,
    #[serde(default, deserialize_with = "text")]
    pub player_name: Option<String>,
}

/// A number, or nothing: a string, a NaN turned null, or an object where a
/// number belongs reads as absent rather than failing the whole frame.
fn finite<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(value.as_f64().filter(|v| v.is_finite()))
}

fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(value.as_str().map(str::to_string))
}

impl Reading {
    /// What a frame says; an unreadable frame says nothing.
    pub fn of(frame: &[u8]) -> Self {
        // An object's members only: serde would read an array's items as the
        // fields in order.
        match frame.trim_ascii_start().first() {
            Some(b'{') => serde_json::from_slice(frame).unwrap_or_default(),
            _ => Reading::default(),
        }
    }
}

/// One completed lap as these numbers see it.
#[derive(Debug, Clone, Default)]
pub struct Lap {
    /// The lap's value at its last frame (the lap field's number).
    pub lap: Option<f64>,
    pub driver: Option<String>,
    /// The sim's time of the lap (the next lap's first frame's `last_lap_time`).
    pub time: Option<f64>,
    /// Fuel at the line (the lap's last frame).
    pub fuel: Option<f64>,
    /// `session_time` at the line (the next lap's first frame's).
    pub session_time: Option<f64>,
    /// A frame of the lap said `in_pits`.
    pub pitted: bool,
}

impl Lap {
    pub fn of(record: &LapRecord) -> Self {
        let last = Reading::of(&record.last_frame);
        let next = Reading::of(&record.next_frame);
        Lap {
            lap: last.lap,
            driver: last.player_name,
            time: next.last_lap_time.filter(|t| *t > 0.0),
            fuel: last.fuel,
            // The first frame after the line is nearer to it than the last before.
            session_time: next.session_time.or(last.session_time),
            pitted: record.pitted,
        }
    }
}

/// Per lap: fuel burned since the previous line (positive), and whether fuel
/// went up (a refuel) across it.
fn fuel_use(previous: Option<&Lap>, lap: &Lap) -> (Option<f64>, bool) {
    match (previous.and_then(|p| p.fuel), lap.fuel) {
        (Some(before), Some(after)) if after > before + REFUEL_MIN => (None, true),
        (Some(before), Some(after)) if before > after => (Some(before - after), false),
        _ => (None, false),
    }
}

/// The stints of a history, oldest first. A stint ends at a lap with a pit
/// stop (a frame said `in_pits`; a stop across the line marks two laps, and
/// ends the stint at the first), at a refuel without one, or before a lap
/// driven by someone else (`player_name` changed).
pub fn stints(laps: &[Lap]) -> Vec<Stint> {
    let mut out: Vec<Stint> = Vec::new();
    // Index of the current stint's first lap.
    let mut first = 0;
    let mut index = 0;
    while index < laps.len() {
        let lap = &laps[index];
        let previous = index.checked_sub(1).map(|i| &laps[i]);
        // A driver swap during a stop is the stop's: one boundary, after it.
        if index > first
            && !lap.pitted
            && let (Some(was), Some(now)) = (
                previous.and_then(|p| p.driver.as_deref()),
                lap.driver.as_deref(),
            )
            && was != now
        {
            out.push(stint(laps, first, index, Some("driver_change")));
            first = index;
        }
        let (_, refuelled) = fuel_use(previous, lap);
        // A stop across the line: the out-lap after a pitted lap is the new stint's.
        let out_lap = index == first && previous.is_some_and(|p| p.pitted);
        let ended = if lap.pitted && !out_lap {
            Some("pit_stop")
        } else if refuelled && !out_lap {
            Some("refuel")
        } else {
            None
        };
        index += 1;
        if let Some(why) = ended {
            out.push(stint(laps, first, index, Some(why)));
            first = index;
        }
    }
    if first < laps.len() {
        out.push(stint(laps, first, laps.len(), None));
    }
    for (n, s) in out.iter_mut().enumerate() {
        s.n = n as u32 + 1;
    }
    out
}

/// The stint of `laps[from..to]`.
fn stint(laps: &[Lap], from: usize, to: usize, ended_by: Option<&str>) -> Stint {
    let these = &laps[from..to];
    let green: Vec<f64> = these
        .iter()
        .filter(|l| !l.pitted)
        .filter_map(|l| l.time)
        .collect();
    let burned: Vec<f64> = (from..to)
        .filter(|&i| !laps[i].pitted)
        .filter_map(|i| fuel_use(i.checked_sub(1).map(|p| &laps[p]), &laps[i]).0)
        .collect();
    let times: Vec<f64> = these.iter().filter_map(|l| l.time).collect();
    let fuel_used = (!burned.is_empty()).then(|| round(burned.iter().sum(), 3));
    Stint {
        n: 0,
        driver: these.iter().find_map(|l| l.driver.clone()),
        first_lap: these.first().and_then(|l| l.lap),
        last_lap: these.last().and_then(|l| l.lap),
        laps: these.len() as u32,
        start_time_s: from
            .checked_sub(1)
            .and_then(|i| laps[i].session_time)
            .or_else(|| {
                // The first stint starts a lap's time before its first line.
                let first = these.first()?;
                Some(first.session_time? - first.time?)
            }),
        end_time_s: these.last().and_then(|l| l.session_time),
        duration_s: (times.len() == these.len() && !times.is_empty())
            .then(|| round(times.iter().sum(), 3)),
        best_lap_time: green.iter().copied().reduce(f64::min),
        mean_lap_time: mean(&green).map(|m| round(m, 3)),
        green_laps: green.len() as u32,
        fuel_used,
        fuel_per_lap: mean(&burned).map(|m| round(m, 3)),
        ended_by: ended_by.map(str::to_string),
    }
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn round(v: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (v * scale).round() / scale
}

/// The car's recent pace from the newest laps of a history (at most
/// [`STRATEGY_LOOKBACK`] are read): fuel per lap and lap time over the last
/// [`RECENT_LAPS`] green laps that burned fuel of the running stint, else of
/// the laps before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub fuel_per_lap: Option<f64>,
    pub lap_time: Option<f64>,
    /// `stint` or `session`.
    pub from: &'static str,
}

pub fn pace(records: &[Arc<LapRecord>]) -> Pace {
    let from = records.len().saturating_sub(STRATEGY_LOOKBACK);
    let laps: Vec<Lap> = records[from..].iter().map(|r| Lap::of(r)).collect();
    let all = stints(&laps);
    // The green laps that burned fuel, newest first, of the running stint
    // (the last one, unless it just ended at a stop) and of the whole history.
    let usable = |range: std::ops::Range<usize>| -> Vec<(f64, Option<f64>)> {
        range
            .rev()
            .filter(|&i| !laps[i].pitted)
            .filter_map(|i| {
                let used = fuel_use(i.checked_sub(1).map(|p| &laps[p]), &laps[i]).0?;
                Some((used, laps[i].time))
            })
            .take(RECENT_LAPS)
            .collect()
    };
    let stint_start = match all.last() {
        Some(last) if last.ended_by.is_none() => laps.len() - last.laps as usize,
        _ => laps.len(),
    };
    let (recent, from_what) = match usable(stint_start..laps.len()) {
        stint if !stint.is_empty() => (stint, "stint"),
        _ => (usable(0..laps.len()), "session"),
    };
    Pace {
        fuel_per_lap: mean(&recent.iter().map(|(used, _)| *used).collect::<Vec<_>>()),
        lap_time: mean(&recent.iter().filter_map(|(_, t)| *t).collect::<Vec<_>>()),
        from: from_what,
    }
}

/// Fuel to the finish from a history's [`pace`] and the latest frame; `None`
/// without a frame that gives the fuel.
pub fn strategy(records: &[Arc<LapRecord>], latest: &[u8], reserve_laps: f64) -> Option<Strategy> {
    strategy_at(pace(records), latest, reserve_laps)
}

/// [`strategy`] from a pace already read (the tower keeps each car's until
/// the car completes another lap).
pub fn strategy_at(pace: Pace, latest: &[u8], reserve_laps: f64) -> Option<Strategy> {
    strategy_of(pace, &Reading::of(latest), reserve_laps)
}

/// [`strategy_at`] from a frame already read (the tower reads each car's
/// latest frame once a tick, for its own fields and these).
pub fn strategy_of(pace: Pace, now: &Reading, reserve_laps: f64) -> Option<Strategy> {
    let fuel = now.fuel?;
    let Pace {
        fuel_per_lap,
        lap_time,
        from: from_what,
    } = pace;
    let laps_in_tank = fuel_per_lap.map(|per| fuel / per);
    let race_laps_left = now.laps_left.filter(|l| *l >= 0.0).or_else(|| {
        let left = now.session_time_left.filter(|t| *t >= 0.0)?;
        Some((left / lap_time?).ceil())
    });
    let fuel_to_finish = race_laps_left.zip(fuel_per_lap).map(|(l, per)| l * per);
    let fuel_to_add = fuel_to_finish
        .zip(fuel_per_lap)
        .map(|(need, per)| (need + reserve_laps * per - fuel).max(0.0));
    // A stop made on the last lap to stop has about the reserve left in the
    // tank, so it can take the tank less the reserve: the next stop's fill,
    // and what each stop adds in a race that needs several.
    let per_stop = now
        .fuel_capacity
        .zip(fuel_per_lap)
        .map(|(capacity, per)| capacity - reserve_laps * per)
        .filter(|room| *room > 0.0);
    let next_stop_fuel = fuel_to_add.zip(per_stop).map(|(add, room)| add.min(room));
    let stops_needed = fuel_to_add
        .zip(per_stop)
        .map(|(add, room)| (add / room).ceil() as u32);
    let last_lap_to_stop = laps_in_tank
        .zip(now.lap)
        .map(|(tank, lap)| lap + (tank - reserve_laps).floor().max(0.0));
    Some(Strategy {
        fuel_per_lap: fuel_per_lap.map(|v| round(v, 3)),
        fuel_per_lap_from: fuel_per_lap.map(|_| from_what.to_string()),
        lap_time: lap_time.map(|v| round(v, 3)),
        laps_in_tank: laps_in_tank.map(|v| round(v, 2)),
        race_laps_left,
        fuel_to_finish: fuel_to_finish.map(|v| round(v, 2)),
        fuel_to_add: fuel_to_add.map(|v| round(v, 2)),
        next_stop_fuel: next_stop_fuel.map(|v| round(v, 2)),
        stops_needed,
        reserve_laps,
        last_lap_to_stop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    /// A record of lap `lap` whose line frame says `line` and whose next lap's
    /// first frame says `next`.
    fn record(
        n: u64,
        line: serde_json::Value,
        next: serde_json::Value,
        pitted: bool,
    ) -> Arc<LapRecord> {
        let at = chrono::Utc::now();
        Arc::new(LapRecord {
            session_id: crate::protocol::id::SessionId::new_v4(),
            n,
            lap: Bytes::from(n.to_string()),
            started_at: at,
            ended_at: at,
            frames: 10,
            last_frame: Bytes::from(line.to_string()),
            next_frame: Bytes::from(next.to_string()),
            pitted,
        })
    }

    /// A scripted race: 100 s laps, 3 L a lap; a stop with a refuel to 60 L
    /// on lap 5 (in_pits mid-lap, lap time 130 s) and a new driver after it;
    /// the race clock counts down from 3,600 s.
    fn race() -> Vec<Arc<LapRecord>> {
        let mut records = Vec::new();
        let mut fuel = 50.0;
        let mut clock = 0.0;
        for lap in 1..=9u64 {
            let pitted = lap == 5;
            let time = if pitted { 130.0 } else { 100.0 };
            clock += time;
            fuel -= 3.0;
            if pitted {
                fuel = 60.0;
            }
            let driver = if lap <= 5 { "Ann" } else { "Bob" };
            let line = json!({"lap": lap, "fuel": fuel, "player_name": driver,
                "session_time": clock, "fuel_capacity": 75});
            let next = json!({"lap": lap + 1, "fuel": fuel, "last_lap_time": time,
                "player_name": driver, "session_time": clock, "session_time_left": 3600.0 - clock});
            records.push(record(lap, line, next, pitted));
        }
        records
    }

    #[test]
    fn stints_end_at_a_stop_and_count_green_laps_and_fuel() {
        let laps: Vec<Lap> = race().iter().map(|r| Lap::of(r)).collect();
        let s = stints(&laps);
        assert_eq!(s.len(), 2, "{s:#?}");
        assert_eq!(s[0].driver.as_deref(), Some("Ann"));
        assert_eq!(
            (s[0].first_lap, s[0].last_lap, s[0].laps),
            (Some(1.0), Some(5.0), 5)
        );
        assert_eq!(s[0].ended_by.as_deref(), Some("pit_stop"));
        assert_eq!(s[0].green_laps, 4);
        assert_eq!(s[0].best_lap_time, Some(100.0));
        assert_eq!(s[0].mean_lap_time, Some(100.0));
        assert_eq!(s[0].duration_s, Some(530.0));
        // Laps 2-4 burned 3 L each (lap 1 has no previous line).
        assert_eq!(s[0].fuel_used, Some(9.0));
        assert_eq!(s[0].fuel_per_lap, Some(3.0));
        assert_eq!(
            (s[0].start_time_s, s[0].end_time_s),
            (Some(0.0), Some(530.0))
        );
        assert_eq!(s[1].driver.as_deref(), Some("Bob"));
        assert_eq!(
            (s[1].first_lap, s[1].laps, s[1].ended_by.as_deref()),
            (Some(6.0), 4, None)
        );
        assert_eq!(s[1].start_time_s, Some(530.0));
        assert_eq!(s[1].fuel_used, Some(12.0));
    }

    #[test]
    fn laps_are_whole_numbers_in_the_json() {
        let laps: Vec<Lap> = race().iter().map(|r| Lap::of(r)).collect();
        let json = serde_json::to_string(&stints(&laps)[0]).unwrap();
        assert!(
            json.contains(r#""first_lap":1,"last_lap":5,"laps":5,"#),
            "{json}"
        );
        // Not a count: a lap time keeps its decimals.
        assert!(json.contains(r#""best_lap_time":100.0"#), "{json}");
        let latest = json!({"lap": 10, "fuel": 45.5, "session_time_left": 2670.0});
        let s = strategy(&race(), latest.to_string().as_bytes(), 1.0).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""race_laps_left":27,"#), "{json}");
        assert!(json.contains(r#""last_lap_to_stop":24}"#), "{json}");
    }

    #[test]
    fn a_driver_change_without_a_stop_or_a_refuel_alone_ends_a_stint() {
        let line = |lap: u64, fuel: f64, driver: &str| json!({"lap": lap, "fuel": fuel, "player_name": driver});
        let next = |lap: u64| json!({"lap": lap + 1, "last_lap_time": 90.0});
        let records = [
            record(1, line(1, 40.0, "Ann"), next(1), false),
            record(2, line(2, 37.0, "Ann"), next(2), false),
            record(3, line(3, 34.0, "Bob"), next(3), false),
            record(4, line(4, 50.0, "Bob"), next(4), false),
            record(5, line(5, 47.0, "Bob"), next(5), false),
        ];
        let laps: Vec<Lap> = records.iter().map(|r| Lap::of(r)).collect();
        let s = stints(&laps);
        let ends: Vec<_> = s.iter().map(|s| (s.laps, s.ended_by.clone())).collect();
        assert_eq!(
            ends,
            [
                (2, Some("driver_change".into())),
                (2, Some("refuel".into())),
                (1, None)
            ]
        );
    }

    #[test]
    fn a_stop_across_the_line_ends_one_stint_not_two() {
        let line = |lap: u64| json!({"lap": lap, "fuel": 40.0 - lap as f64});
        let next = |lap: u64| json!({"lap": lap + 1, "last_lap_time": 90.0});
        let records: Vec<_> = (1..=5)
            .map(|lap| record(lap, line(lap), next(lap), lap == 2 || lap == 3))
            .collect();
        let laps: Vec<Lap> = records.iter().map(|r| Lap::of(r)).collect();
        let s = stints(&laps);
        let shape: Vec<_> = s.iter().map(|s| (s.first_lap, s.laps)).collect();
        assert_eq!(shape, [(Some(1.0), 2), (Some(3.0), 3)]);
    }

    #[test]
    fn fuel_to_the_finish_from_the_stint_and_the_race_clock() {
        let records = race();
        // On lap 10, 45.5 L in the tank, 2,670 s of race left, 1 lap reserve.
        let latest = json!({"lap": 10, "fuel": 45.5, "fuel_capacity": 75,
            "session_time_left": 2670.0});
        let s = strategy(&records, latest.to_string().as_bytes(), 1.0).unwrap();
        assert_eq!(s.fuel_per_lap, Some(3.0));
        assert_eq!(s.fuel_per_lap_from.as_deref(), Some("stint"));
        assert_eq!(s.lap_time, Some(100.0));
        assert_eq!(s.laps_in_tank, Some(15.17));
        // ceil(2670 / 100) = 27 laps; 81 L to finish; 81 + 3 - 45.5 = 38.5 to add.
        assert_eq!(s.race_laps_left, Some(27.0));
        assert_eq!(s.fuel_to_finish, Some(81.0));
        assert_eq!(s.fuel_to_add, Some(38.5));
        // It all fits in one stop: 75 L less the 3 L reserve is room for 72.
        assert_eq!(s.next_stop_fuel, Some(38.5));
        assert_eq!(s.stops_needed, Some(1));
        // 10 + floor(15.17 - 1) = 24.
        assert_eq!(s.last_lap_to_stop, Some(24.0));
        // A long race: 600 laps × 3 = 1800 L to the flag, 1757.5 to add, at
        // most 72 a stop: the next stop fills 72, and it takes 25 of them.
        let latest = json!({"lap": 10, "fuel": 45.5, "fuel_capacity": 75, "laps_left": 600});
        let s = strategy(&records, latest.to_string().as_bytes(), 1.0).unwrap();
        assert_eq!(s.fuel_to_add, Some(1757.5));
        assert_eq!(s.next_stop_fuel, Some(72.0));
        assert_eq!(s.stops_needed, Some(25));
        // Without the tank's size only the total is known.
        let latest = json!({"lap": 10, "fuel": 45.5, "laps_left": 600});
        let s = strategy(&records, latest.to_string().as_bytes(), 1.0).unwrap();
        assert_eq!((s.next_stop_fuel, s.stops_needed), (None, None));
        // The frame's own laps_left wins over the clock.
        let latest = json!({"lap": 10, "fuel": 45.5, "laps_left": 10, "session_time_left": 2670.0});
        let s = strategy(&records, latest.to_string().as_bytes(), 1.0).unwrap();
        assert_eq!((s.race_laps_left, s.fuel_to_add), (Some(10.0), Some(0.0)));
    }

    #[test]
    fn the_pace_is_the_stints_last_five_green_laps_not_all_of_it() {
        // One stint of 8 laps: laps 2-3 burn 5 L in 120 s, laps 4-8 3 L in
        // 100 s (lap 1 has no line before it, so no fuel use).
        let mut fuel = 60.0;
        let records: Vec<_> = (1..=8u64)
            .map(|lap| {
                let (burn, time) = if lap <= 3 { (5.0, 120.0) } else { (3.0, 100.0) };
                if lap > 1 {
                    fuel -= burn;
                }
                let line = json!({"lap": lap, "fuel": fuel});
                let next = json!({"lap": lap + 1, "last_lap_time": time});
                record(lap, line, next, false)
            })
            .collect();
        let p = pace(&records);
        assert_eq!(
            (p.fuel_per_lap, p.lap_time, p.from),
            (Some(3.0), Some(100.0), "stint")
        );
    }

    #[test]
    fn right_after_a_stop_the_session_gives_the_fuel_use() {
        let mut records = race();
        records.truncate(5); // the stint ended at the stop on lap 5
        let latest = json!({"lap": 6, "fuel": 60.0});
        let s = strategy(&records, latest.to_string().as_bytes(), 1.0).unwrap();
        assert_eq!(s.fuel_per_lap, Some(3.0));
        assert_eq!(s.fuel_per_lap_from.as_deref(), Some("session"));
        assert_eq!(s.race_laps_left, None);
        assert_eq!(s.fuel_to_add, None);
        // No fuel in the frame: no strategy.
        assert!(strategy(&records, br#"{"lap": 6}"#, 1.0).is_none());
        // Strings, nulls and garbage where numbers belong read as absent.
        let s = strategy(
            &records,
            br#"{"lap": "six", "fuel": 60, "session_time_left": null}"#,
            1.0,
        )
        .unwrap();
        assert_eq!(s.last_lap_to_stop, None);
    }
}
