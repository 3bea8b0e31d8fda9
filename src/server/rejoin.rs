//! Where a stop now rejoins: the pit loss measured from the car's own stops,
//! and the field (protocol/field.rs) to place the car after one
//! (docs/PROTOCOL.md "Where a stop rejoins").
//!
//! Pure: lap records and a field in, numbers out, as race.rs is. A stop's
//! loss is its in-lap and out-lap against the car's green pace; until the car
//! has stopped once, `serve --pit-loss` stands in for it.

use crate::protocol::documents::{Rejoin, RejoinCar};
use crate::protocol::field::{CarStatus, Field, FieldCar};
use crate::server::race::Lap;

/// s a stop costs until the car has stopped once (`serve --pit-loss`): a
/// typical GT3 or F1 pit lane with a short stop.
pub const DEFAULT_PIT_LOSS_S: f64 = 25.0;

/// The median of the green laps' times: laps without a stop, nor just after
/// one (an out-lap is slow for the stop's sake).
fn green_pace(laps: &[Lap]) -> Option<f64> {
    let mut green: Vec<f64> = laps
        .iter()
        .enumerate()
        .filter(|(i, lap)| !lap.pitted && (*i == 0 || !laps[i - 1].pitted))
        .filter_map(|(_, lap)| lap.time)
        .collect();
    if green.is_empty() {
        return None;
    }
    green.sort_by(f64::total_cmp);
    let mid = green.len() / 2;
    Some(if green.len() % 2 == 1 {
        green[mid]
    } else {
        (green[mid - 1] + green[mid]) / 2.0
    })
}

/// s the car's stops cost, their mean, and how many were measured: each stop
/// is its in-lap (the first lap that says `in_pits`) and out-lap (the lap
/// after, or the second pitted lap when the stop crossed the line) less two
/// green laps. `None` until a stop with both laps' times.
pub fn pit_loss(laps: &[Lap]) -> Option<(f64, u32)> {
    let pace = green_pace(laps)?;
    let mut losses = Vec::new();
    let mut i = 0;
    while i < laps.len() {
        if !laps[i].pitted {
            i += 1;
            continue;
        }
        // The in-lap and the out-lap, however many laps said `in_pits`.
        let Some(out) = laps.get(i + 1) else { break };
        if let (Some(a), Some(b)) = (laps[i].time, out.time) {
            let loss = a + b - 2.0 * pace;
            if loss > 0.0 {
                losses.push(loss);
            }
        }
        i += 2;
    }
    (!losses.is_empty()).then(|| {
        let n = losses.len();
        (round(losses.iter().sum::<f64>() / n as f64, 1), n as u32)
    })
}

fn round(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

/// How a car is named in a message: its race number, else its driver, else
/// its index.
fn name(car: &FieldCar) -> String {
    match (&car.race_number, &car.driver) {
        (Some(n), _) => format!("#{n}"),
        (None, Some(d)) => d.clone(),
        (None, None) => format!("car {}", car.index),
    }
}

fn neighbour(car: &FieldCar, gap: f64) -> RejoinCar {
    RejoinCar {
        index: car.index,
        race_number: car.race_number,
        driver: car.driver.clone(),
        gap: round(gap, 1),
    }
}

/// Where the field's own car (`player`) rejoins if it stops now: its gap to
/// the leader grows by `pit_loss`, and it comes out behind every running car
/// whose gap is smaller. `None` without a player car or its gap.
pub fn rejoin(field: &Field, (pit_loss, from, stops): (f64, &str, u32)) -> Option<Rejoin> {
    let me = field.player()?;
    let out_at = me.gap_leader? + pit_loss;
    let others = field.cars.iter().filter(|c| {
        c.index != me.index
            && matches!(c.status, CarStatus::Running | CarStatus::Pitting)
            && c.gap_leader.is_some()
    });
    let (mut ahead, mut behind): (Option<&FieldCar>, Option<&FieldCar>) = (None, None);
    let mut position = 1u16;
    for car in others {
        let gap = car.gap_leader.unwrap_or_default();
        if gap <= out_at {
            position += 1;
            if ahead.is_none_or(|a| a.gap_leader < Some(gap)) {
                ahead = Some(car);
            }
        } else if behind.is_none_or(|b| b.gap_leader > Some(gap)) {
            behind = Some(car);
        }
    }
    let ahead = ahead.map(|c| (c, out_at - c.gap_leader.unwrap_or_default()));
    let behind = behind.map(|c| (c, c.gap_leader.unwrap_or_default() - out_at));
    let message = match (ahead, behind) {
        (Some((car, gap)), _) => {
            format!(
                "stop now: rejoin P{position}, {gap:.1} s behind {}",
                name(car)
            )
        }
        (None, Some((car, gap))) => {
            format!(
                "stop now: rejoin P{position}, {gap:.1} s ahead of {}",
                name(car)
            )
        }
        (None, None) => format!("stop now: rejoin P{position}"),
    };
    // The car behind now: whether a stop now keeps it behind (its gap is
    // more than the stop costs).
    let behind_now = field
        .cars
        .iter()
        .filter(|c| c.index != me.index && matches!(c.status, CarStatus::Running))
        .filter_map(|c| Some((c, c.gap_leader? - me.gap_leader?)))
        .filter(|(_, gap)| *gap > 0.0)
        .min_by(|a, b| a.1.total_cmp(&b.1));
    Some(Rejoin {
        pit_loss: round(pit_loss, 1),
        pit_loss_from: from.to_string(),
        stops_measured: stops,
        position,
        ahead: ahead.map(|(c, gap)| neighbour(c, gap)),
        behind: behind.map(|(c, gap)| neighbour(c, gap)),
        gap_behind_now: behind_now.map(|(c, gap)| neighbour(c, gap)),
        undercut_window: behind_now.map(|(_, gap)| gap > pit_loss),
        message,
    })
}

/// The cars nearest ahead of and behind the field's own car on the road
/// order the field gives (retired cars left out), each with the gap between
/// them in s: the car's own `interval` to the one ahead and the car behind's
/// `interval` to it where they are next to each other in position, else the
/// difference of their gaps to the leader. `None` without a player car; a
/// side is `None` at the front or back of the field, or without a gap.
pub fn neighbours(field: &Field) -> Option<(Option<RejoinCar>, Option<RejoinCar>)> {
    let me = field.player()?;
    let running: Vec<&FieldCar> = field
        .cars
        .iter()
        .filter(|c| c.index == me.index || c.status != CarStatus::Retired)
        .collect();
    let at = running.iter().position(|c| c.index == me.index)?;
    let gap = |front: &FieldCar, back: &FieldCar| {
        let adjacent = back.position == front.position + 1;
        let gap = match back.interval {
            Some(interval) if adjacent => Some(interval),
            _ => Some(back.gap_leader? - front.gap_leader?),
        };
        gap.filter(|g| *g >= 0.0)
    };
    let ahead = at
        .checked_sub(1)
        .and_then(|i| running.get(i).copied())
        .and_then(|c| Some(neighbour(c, gap(c, me)?)));
    let behind = running
        .get(at + 1)
        .copied()
        .and_then(|c| Some(neighbour(c, gap(me, c)?)));
    Some((ahead, behind))
}

/// The pit loss to place the car with: its own stops' where it has stopped,
/// else `default`.
pub fn loss_of(laps: &[Lap], default: f64) -> (f64, &'static str, u32) {
    match pit_loss(laps) {
        Some((loss, n)) => (loss, "stops", n),
        None => (default, "default", 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lap(time: f64, pitted: bool) -> Lap {
        Lap {
            time: Some(time),
            pitted,
            ..Lap::default()
        }
    }

    #[test]
    fn the_pit_loss_is_the_in_and_out_lap_against_the_green_pace() {
        // Green laps 100, 101, 99 (median 100); a stop: in-lap 112, out-lap
        // 118 → 30 s; the lap after the out-lap is green again.
        let laps = [
            lap(100.0, false),
            lap(101.0, false),
            lap(112.0, true),
            lap(118.0, false),
            lap(99.0, false),
        ];
        assert_eq!(pit_loss(&laps), Some((30.0, 1)));
        // A stop across the line marks two laps: the same stop.
        let across = [
            lap(100.0, false),
            lap(110.0, true),
            lap(116.0, true),
            lap(100.0, false),
        ];
        assert_eq!(pit_loss(&across), Some((26.0, 1)));
        assert_eq!(pit_loss(&laps[..2]), None, "no stop yet");
        assert_eq!(loss_of(&laps[..2], 25.0), (25.0, "default", 0));
    }

    #[test]
    fn a_stop_now_rejoins_where_the_hand_computed_gaps_say() {
        // Our car (#7, P3) is 10.0 s behind the leader; a stop costs 22 s, so
        // it comes out 32.0 s behind the leader: behind #44 (30.0 s, 2.0 s
        // ahead of it) and ahead of #5 (33.5 s, 1.5 s back). Four cars ahead
        // (#1, #2, #3 in the pits at 20 s, #44; the retired #9 at 31 s does
        // not count): P5.
        let car = |index: u16, n: u32, gap: f64, status: &str| {
            json!({"index": index, "race_number": n, "position": 1, "gap_leader": gap,
                   "status": status})
        };
        let mut cars = vec![
            car(0, 1, 0.0, "running"),
            car(1, 2, 4.0, "running"),
            car(2, 7, 10.0, "running"),
            car(3, 3, 20.0, "pitting"),
            car(4, 44, 30.0, "running"),
            car(5, 9, 31.0, "retired"),
            car(6, 5, 33.5, "running"),
        ];
        cars[2]["player"] = json!(true);
        for (i, c) in cars.iter_mut().enumerate() {
            c["position"] = json!(i + 1);
        }
        let field: Field = serde_json::from_value(json!({ "cars": cars })).unwrap();
        let r = rejoin(&field, (22.0, "stops", 1)).unwrap();
        assert_eq!(r.position, 5);
        assert_eq!(r.message, "stop now: rejoin P5, 2.0 s behind #44");
        let ahead = r.ahead.unwrap();
        assert_eq!((ahead.race_number, ahead.gap), (Some(44), 2.0));
        let behind = r.behind.unwrap();
        assert_eq!((behind.race_number, behind.gap), (Some(5), 1.5));
        // The car behind now is #44, 20 s back: less than the stop costs.
        assert_eq!(r.gap_behind_now.unwrap().gap, 20.0);
        assert_eq!(r.undercut_window, Some(false));
        // With a 15 s stop: out at 25 s, ahead of #44: the window is open.
        let r = rejoin(&field, (15.0, "default", 0)).unwrap();
        assert_eq!(r.message, "stop now: rejoin P4, 5.0 s behind #3");
        assert_eq!(r.undercut_window, Some(true));

        // Around the car now: #2 ahead by its own interval (absent here, so
        // the gaps' difference, 6.0 s), #3 behind (10.0 s).
        let (ahead, behind) = neighbours(&field).unwrap();
        let (ahead, behind) = (ahead.unwrap(), behind.unwrap());
        assert_eq!((ahead.race_number, ahead.gap), (Some(2), 6.0));
        assert_eq!((behind.race_number, behind.gap), (Some(3), 10.0));
    }

    #[test]
    fn the_cars_around_are_read_from_intervals_and_skip_the_retired() {
        let car = |index: u16, position: u16, gap: f64, interval: f64, status: &str| {
            json!({"index": index, "race_number": index + 10, "position": position,
                   "gap_leader": gap, "interval": interval, "status": status})
        };
        let mut cars = vec![
            car(0, 1, 0.0, 0.0, "running"),
            car(1, 2, 1.5, 1.5, "running"),
            car(2, 3, 3.0, 1.4, "running"),
            car(3, 4, 50.0, 47.0, "retired"),
        ];
        cars[1]["player"] = json!(true);
        let field: Field = serde_json::from_value(json!({ "cars": cars })).unwrap();
        let (ahead, behind) = neighbours(&field).unwrap();
        assert_eq!(ahead.unwrap().gap, 1.5, "the car's own interval");
        assert_eq!(behind.unwrap().gap, 1.4, "the car behind's interval");
        // The last running car: the retired one behind it is no neighbour.
        let mut cars = field.cars.clone();
        cars[1].player = false;
        cars[2].player = true;
        let last = Field { cars, ..field };
        let (ahead, behind) = neighbours(&last).unwrap();
        assert_eq!(ahead.unwrap().race_number, Some(11));
        assert_eq!(behind, None);
        let none = Field {
            cars: vec![],
            ..last
        };
        assert_eq!(neighbours(&none), None, "no car of our own");
    }
}
