//! A simulated endurance-race car: the data a real monitor would send.
//!
//! Deterministic for a given seed, so tests can rely on it. One car laps the
//! Circuit de la Sarthe: lap times drift with tyre wear, fuel burns per lap, tyre
//! temperatures, pressures and wear move per corner, positions change, and when the
//! fuel would not last another lap and a bit it pits, refuels and takes new tyres.
//! Field names follow the sample frames in `tests/data/`.

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

const TRACK_LENGTH_M: f64 = 13_626.0;
const BASE_LAP_S: f64 = 210.0;
const FUEL_CAPACITY_L: f64 = 75.0;
const FUEL_PER_LAP_L: f64 = 5.4;
/// Pit when less than this many laps of fuel are left.
const PIT_THRESHOLD_LAPS: f64 = 1.3;
const PIT_STOP_S: f64 = 32.0;
const CORNERS: [&str; 4] = ["fl", "fr", "rl", "rr"];
/// As many as a simulated field has cars, so no two share a name.
const DRIVERS: [&str; 12] = [
    "A. Driver",
    "B. Pilote",
    "C. Fahrer",
    "D. Piloto",
    "E. Kuljettaja",
    "F. Coureur",
    "G. Rijder",
    "H. Kierowca",
    "I. Pilota",
    "J. Förare",
    "K. Jezdec",
    "L. Vozač",
];
/// The cars, with their class and how much slower than [`BASE_LAP_S`] and
/// thriftier than [`FUEL_PER_LAP_L`] the class is.
const CARS: [(&str, &str, f64, f64); 4] = [
    ("Oreca 07 Gibson", "LMP2", 12.0, 0.9),
    ("Ligier JS P217", "LMP2", 12.0, 0.9),
    ("Porsche 963", "Hypercar", 0.0, 1.0),
    ("Ferrari 499P", "Hypercar", 0.0, 1.0),
];
/// The rivals' teams in a simulated field (a monitor's own cars race for its
/// `--team`).
const TEAMS: [&str; 6] = [
    "Rossa Corse",
    "Blau Motorsport",
    "Équipe Bleue",
    "Verde Racing",
    "Oranje Endurance",
    "Silver Arrow",
];

/// A small xorshift generator: enough for plausible noise and a reproducible
/// fault schedule (`paddock chaos`), no dependency.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [0, n).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [-1, 1).
    fn noise(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.noise() + 1.0) / 2.0 < p
    }
}

#[derive(Debug, Clone, Copy)]
struct Tyre {
    /// Remaining tread, 1.0 new.
    wear: f64,
    temp: f64,
    pressure: f64,
}

/// Long straights and slow corners: the speed along the lap, km/h, before a
/// lap's pace scales it.
/// Long straights (the square root keeps the car near the top for long), slow
/// corners: at a 3:30 lap, 78 to 331 km/h.
fn profile_kph(lap_distance: f64) -> f64 {
    let x = lap_distance / TRACK_LENGTH_M * std::f64::consts::TAU;
    80.0 + 260.0 * (0.5 + 0.5 * (x * 3.0).sin() * (x * 2.0).cos()).sqrt()
}

/// Seconds a lap takes at [`profile_kph`] as it is.
fn profile_lap_s() -> f64 {
    static LAP_S: std::sync::LazyLock<f64> = std::sync::LazyLock::new(|| {
        const STEPS: usize = 10_000;
        let step = TRACK_LENGTH_M / STEPS as f64;
        (0..STEPS)
            .map(|k| step / (profile_kph((k as f64 + 0.5) * step) / 3.6))
            .sum()
    });
    *LAP_S
}

/// The simulated race's length, seconds (Le Mans: 24 hours).
const RACE_LENGTH_S: f64 = 24.0 * 3600.0;

/// One car's race.
#[derive(Debug, Clone)]
pub struct Race {
    rng: Rng,
    driver: &'static str,
    car: &'static str,
    class: &'static str,
    /// Seconds this car's class is slower than [`BASE_LAP_S`].
    class_pace: f64,
    /// Litres this car burns a lap.
    fuel_per_lap: f64,
    /// Race time, seconds.
    session_time: f64,
    lap: u32,
    lap_distance: f64,
    /// Time into the current lap.
    lap_elapsed: f64,
    current_lap_target: f64,
    last_lap_time: Option<f64>,
    best_lap_time: Option<f64>,
    sector_times: [Option<f64>; 3],
    fuel: f64,
    tyres: [Tyre; 4],
    position: u32,
    /// Seconds behind the car one position ahead (unused at P1).
    gap_ahead: f64,
    /// The tyres on the car, changed at each stop.
    compound: &'static str,
    /// Seconds left in the pit box, when pitting.
    pit_remaining: Option<f64>,
    stint_start_lap: u32,
    stint_time: f64,
    /// Stops made.
    pit_stops: u32,
    /// Position and gap come from the field the monitor works out
    /// ([`standings`]) rather than from this car's own random walk.
    in_a_field: bool,
    /// When the car passed each [`CHECKPOINT_M`] of its race (metres run,
    /// race time), the last [`CHECKPOINTS`]: a car behind is as far behind as
    /// the time since this car was where it is now, as timing screens say.
    passed: std::collections::VecDeque<(f64, f64)>,
}

/// Metres between a car's timing checkpoints.
const CHECKPOINT_M: f64 = 50.0;
/// Checkpoints kept per car: 1,024 are 51 km, nearly four laps of Le Mans.
const CHECKPOINTS: usize = 1024;

impl Race {
    /// The `index`th of a monitor's cars (`--sessions N`): drivers in turn, so
    /// the demo's cars do not share a name (twelve before one comes back).
    pub fn numbered(seed: u64, index: usize) -> Self {
        Race {
            driver: DRIVERS[index % DRIVERS.len()],
            ..Race::new(seed)
        }
    }

    /// A car at the start of its race. `seed` picks the driver, car and noise.
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let driver = DRIVERS[(rng.next_u64() % DRIVERS.len() as u64) as usize];
        let (car, class, class_pace, thrift) = CARS[(rng.next_u64() % CARS.len() as u64) as usize];
        // Each car its own thirst, so a field does not stop all on one lap.
        let fuel_per_lap = FUEL_PER_LAP_L * thrift * (1.0 + 0.04 * rng.noise());
        let compound = if rng.chance(0.5) { "Medium" } else { "Hard" };
        let position = 1 + (rng.next_u64() % 20) as u32;
        let mut race = Race {
            rng,
            driver,
            car,
            class,
            class_pace,
            fuel_per_lap,
            session_time: 0.0,
            lap: 1,
            lap_distance: 0.0,
            lap_elapsed: 0.0,
            current_lap_target: BASE_LAP_S,
            last_lap_time: None,
            best_lap_time: None,
            sector_times: [None; 3],
            fuel: FUEL_CAPACITY_L,
            tyres: [Tyre {
                wear: 1.0,
                temp: 70.0,
                pressure: 27.2,
            }; 4],
            position,
            gap_ahead: 0.0,
            compound,
            pit_remaining: None,
            stint_start_lap: 1,
            stint_time: 0.0,
            pit_stops: 0,
            in_a_field: false,
            passed: std::collections::VecDeque::new(),
        };
        // The first lap from the grid, in traffic: slower than any other.
        race.current_lap_target = race.next_lap_target() + 6.0;
        race.gap_ahead = 0.5 + 2.5 * race.rng.noise().abs();
        race
    }

    /// The car setup, as the monitor sends it once at the start.
    pub fn setup(&self) -> Value {
        json!({
            "suspension": {
                "front_spring_rate": 120.5, "rear_spring_rate": 115.3,
                "front_damper": 8, "rear_damper": 7,
                "front_anti_roll_bar": 6, "rear_anti_roll_bar": 5,
                "front_ride_height": 45.0, "rear_ride_height": 55.0
            },
            "aerodynamics": { "front_wing": 5, "rear_wing": 8, "front_splitter": 3, "rear_diffuser": 4 },
            "brakes": { "brake_bias": 56.5, "brake_pressure": 85.0, "front_brake_duct": 2, "rear_brake_duct": 2 },
            "tires": {
                "compound": "Medium",
                "cold_pressures_kpa": { "fl": 138.0, "fr": 138.0, "rl": 135.0, "rr": 135.0 }
            },
            "gearing": { "final_drive": 3.42, "gears": [2.91, 2.21, 1.79, 1.51, 1.31, 1.16] },
            "electronics": { "tc_map": 4, "abs_map": 3, "engine_map": 2 },
            "car_name": self.car
        })
    }

    pub fn lap(&self) -> u32 {
        self.lap
    }

    pub fn fuel(&self) -> f64 {
        self.fuel
    }

    pub fn in_pits(&self) -> bool {
        self.pit_remaining.is_some()
    }

    /// Advances the race by `dt` seconds of race time and returns the frame.
    pub fn step(&mut self, dt: f64) -> Value {
        self.advance(dt);
        self.frame()
    }

    /// Advances the race by `dt` seconds of race time (a rival in the field,
    /// whose frames nobody sends).
    pub fn advance(&mut self, dt: f64) {
        self.session_time += dt;
        self.stint_time += dt;
        if let Some(left) = self.pit_remaining {
            // The stop is part of the lap it is made in (the out-lap here):
            // the clock runs while the car stands.
            self.lap_elapsed += dt;
            let left = left - dt;
            if left <= 0.0 {
                self.pit_remaining = None;
                self.fuel = FUEL_CAPACITY_L;
                self.tyres = [Tyre {
                    wear: 1.0,
                    temp: 65.0,
                    pressure: 26.8,
                }; 4];
                self.stint_start_lap = self.lap;
                self.stint_time = 0.0;
            } else {
                self.pit_remaining = Some(left);
            }
        } else {
            self.drive(dt);
        }
        let run = self.run();
        if self
            .passed
            .back()
            .is_none_or(|&(at, _)| run - at >= CHECKPOINT_M)
        {
            self.passed.push_back((run, self.session_time));
            if self.passed.len() > CHECKPOINTS {
                self.passed.pop_front();
            }
        }
    }

    /// Metres run since the start.
    fn run(&self) -> f64 {
        f64::from(self.lap - 1) * TRACK_LENGTH_M + self.lap_distance
    }

    /// The race time this car was `run` metres into its race, if it has been
    /// there within its last checkpoints.
    fn time_at(&self, run: f64) -> Option<f64> {
        let after = self.passed.partition_point(|&(at, _)| at <= run);
        let (r0, t0) = *self.passed.get(after.checked_sub(1)?)?;
        let (r1, t1) = match self.passed.get(after) {
            Some(&next) => next,
            None if run <= self.run() => (self.run(), self.session_time),
            None => return None,
        };
        Some(if r1 > r0 {
            t0 + (t1 - t0) * (run - r0) / (r1 - r0)
        } else {
            t0
        })
    }

    fn next_lap_target(&mut self) -> f64 {
        let worn = 1.0 - self.tyres.iter().map(|t| t.wear).sum::<f64>() / 4.0;
        // Worn tyres cost time, a full tank too (so the stint's best lap
        // comes once some fuel is gone and before the tyres are done).
        BASE_LAP_S
            + self.class_pace
            + worn * 6.0
            + 2.5 * self.fuel / FUEL_CAPACITY_L
            + self.rng.noise() * 1.0
    }

    fn drive(&mut self, dt: f64) {
        let speed_mps = self.speed_kph() / 3.6;
        self.lap_elapsed += dt;
        self.lap_distance += speed_mps * dt;
        let burn =
            self.fuel_per_lap * (speed_mps * dt / TRACK_LENGTH_M) * (1.0 + self.rng.noise() * 0.03);
        self.fuel = (self.fuel - burn).max(0.0);
        let load = self.speed_kph() / 300.0;
        for tyre in &mut self.tyres {
            tyre.wear = (tyre.wear - 0.000_11 * dt * (0.8 + load)).max(0.0);
            let target = 78.0 + 14.0 * load + 6.0 * (1.0 - tyre.wear);
            tyre.temp += (target - tyre.temp) * (dt / 20.0).min(1.0) + self.rng.noise() * 0.3;
            tyre.pressure = 26.5 + (tyre.temp - 60.0) * 0.065;
        }
        let sector = ((self.lap_distance / TRACK_LENGTH_M) * 3.0).floor() as usize;
        for done in 0..sector.min(3) {
            if self.sector_times[done].is_none() {
                let previous: f64 = self.sector_times[..done].iter().flatten().sum();
                self.sector_times[done] = Some(self.lap_elapsed - previous);
            }
        }
        if self.lap_distance >= TRACK_LENGTH_M {
            self.complete_lap();
        }
    }

    fn complete_lap(&mut self) {
        // The line was crossed during the last step: the time past it belongs
        // to the next lap. (Without this a lap took whole steps, whole seconds
        // in the demo's 10 Hz at ten times real time.)
        let speed_mps = self.speed_kph() / 3.6;
        let past = ((self.lap_distance - TRACK_LENGTH_M) / speed_mps).clamp(0.0, self.lap_elapsed);
        let lap_time = self.lap_elapsed - past;
        self.last_lap_time = Some(lap_time);
        self.best_lap_time = Some(self.best_lap_time.map_or(lap_time, |b| b.min(lap_time)));
        self.lap += 1;
        self.lap_distance -= TRACK_LENGTH_M;
        self.lap_elapsed = past;
        self.sector_times = [None; 3];
        self.current_lap_target = self.next_lap_target();
        // The gap to the car ahead drifts a few tenths a lap; a new car ahead
        // (a pass either way, or a stop) starts a gap of its own.
        self.gap_ahead = (self.gap_ahead + 0.4 * self.rng.noise()).clamp(0.2, 12.0);
        if !self.in_a_field && self.rng.chance(0.35) {
            let up = self.rng.chance(0.5);
            self.position = if up {
                self.position.saturating_sub(1).max(1)
            } else {
                (self.position + 1).min(24)
            };
            self.gap_ahead = 0.3 + 2.0 * self.rng.noise().abs();
        }
        if self.fuel < self.fuel_per_lap * PIT_THRESHOLD_LAPS {
            self.pit_remaining = Some(PIT_STOP_S);
            self.pit_stops += 1;
            if !self.in_a_field {
                self.position = (self.position + 2).min(24);
            }
            self.gap_ahead = 1.0 + 4.0 * self.rng.noise().abs();
            // Fresh tyres, alternating the two race compounds.
            self.compound = if self.compound == "Hard" {
                "Medium"
            } else {
                "Hard"
            };
        }
    }

    fn speed_kph(&self) -> f64 {
        if self.in_pits() {
            return 0.0;
        }
        // The profile, scaled so that driving it takes this lap's target
        // time: a lap on worn tyres is slower everywhere, so two laps differ
        // along the whole trace (the Laps view, the live delta).
        profile_kph(self.lap_distance) * profile_lap_s() / self.current_lap_target
    }

    /// Pedals as the profile asks: throttle where the speed rises or holds,
    /// brake where it falls ahead (50 m on), a little noise on both.
    fn pedals(&mut self) -> (f64, f64) {
        if self.in_pits() {
            return (0.0, 0.0);
        }
        let now = profile_kph(self.lap_distance);
        let ahead = profile_kph(self.lap_distance + 50.0);
        let change = (ahead - now) / now;
        let wobble = 0.03 * self.rng.noise();
        if change < -0.01 {
            (0.0, (0.3 - change * 8.0 + wobble).clamp(0.0, 1.0))
        } else {
            ((0.75 + change * 10.0 + wobble).clamp(0.0, 1.0), 0.0)
        }
    }

    fn frame(&mut self) -> Value {
        let (throttle, brake) = self.pedals();
        let speed = self.speed_kph();
        let gear = if speed < 1.0 {
            0
        } else {
            (1.0 + speed / 55.0).min(6.0) as u32
        };
        let rpm = if gear == 0 {
            1200.0
        } else {
            4000.0 + (speed % 55.0) / 55.0 * 4000.0
        };
        let corner = |f: &dyn Fn(&Tyre) -> f64| {
            let mut m = serde_json::Map::new();
            for (name, tyre) in CORNERS.iter().zip(&self.tyres) {
                m.insert((*name).into(), json!((f(tyre) * 1000.0).round() / 1000.0));
            }
            Value::Object(m)
        };
        let round = |v: f64, digits: i32| (v * 10f64.powi(digits)).round() / 10f64.powi(digits);
        json!({
            "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            "lap": self.lap,
            "position": self.position,
            "lap_time": round(self.lap_elapsed, 3),
            "fuel": round(self.fuel, 2),
            "fuel_capacity": FUEL_CAPACITY_L,
            "tire_pressures": corner(&|t| round(t.pressure, 2)),
            "tire_temps": corner(&|t| round(t.temp, 1)),
            "tire_wear": corner(&|t| round(t.wear, 3)),
            "brake_temps": corner(&|t| round(380.0 + t.temp * 0.9, 1)),
            "engine_water_temp": round(88.0 + speed / 60.0, 1),
            "engine_oil_temp": round(100.0 + speed / 50.0, 1),
            "track_temp": 28.5,
            "ambient_temp": 22.0,
            "player_name": self.driver,
            "car_name": self.car,
            "track_name": "Circuit de la Sarthe",
            "speed": round(speed, 1),
            "rpm": rpm.round(),
            "gear": gear,
            "session_time": round(self.session_time, 2),
            // A 24-hour race: what the strategy's fuel to the finish reads.
            "session_time_left": round((RACE_LENGTH_S - self.session_time).max(0.0), 2),
            "session_type": "RACE",
            "flag": "green",
            "in_pits": self.in_pits(),
            "throttle": round(throttle, 2),
            "brake": round(brake, 2),
            "lap_distance": round(self.lap_distance, 1),
            "track_length": TRACK_LENGTH_M,
            "best_lap_time": self.best_lap_time.map(|t| round(t, 3)),
            "last_lap_time": self.last_lap_time.map(|t| round(t, 3)),
            "sector": 1 + ((self.lap_distance / TRACK_LENGTH_M) * 3.0).floor().min(2.0) as u32,
            "sector_times": self.sector_times.map(|s| s.map(|t| round(t, 3))),
            "laps_completed": self.lap - 1,
            "tire_compound": { "front": self.compound, "rear": self.compound },
            "tyre_compound": self.compound,
            "gap_ahead": (self.position > 1).then(|| round(self.gap_ahead, 3)),
            "driver_stint": {
                "driver": self.driver,
                "stint_start_lap": self.stint_start_lap,
                "stint_time": round(self.stint_time, 1)
            }
        })
    }
}

/// Where one car of a simulated field stands: its place by distance run, and
/// seconds behind the leader and the car ahead (at its own pace: its best lap,
/// else its last, else the base lap).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    /// The car's index in the slice [`standings`] was given.
    pub car: usize,
    pub position: u32,
    pub gap_leader: f64,
    pub interval: f64,
}

/// Seconds from `from` to `to` metres of the race (laps included) along the
/// speed profile at a `pace` lap, in 50 m steps.
fn time_along(from: f64, to: f64, pace: f64) -> f64 {
    const STEP: f64 = 50.0;
    let scale = profile_lap_s() / pace / 3.6;
    let mut at = from;
    let mut took = 0.0;
    while at < to {
        let step = STEP.min(to - at);
        let mid = (at + step / 2.0).rem_euclid(TRACK_LENGTH_M);
        took += step / (profile_kph(mid) * scale);
        at += step;
    }
    took
}

/// The field of `cars` (a monitor's own and the rivals it runs beside them),
/// by position.
pub fn standings(cars: &[&Race]) -> Vec<Standing> {
    let mut order: Vec<usize> = (0..cars.len()).collect();
    order.sort_by(|&a, &b| cars[b].run().total_cmp(&cars[a].run()));
    let Some(&leader) = order.first() else {
        return Vec::new();
    };
    // As timing screens give it: the time since the car ahead was where
    // this car is now (a gap in metres swings with where each car is on the
    // lap). Further back than the checkpoints reach: the time this car would
    // take to get where the car ahead is, at its pace.
    let behind = |ahead: usize, car: usize| {
        let r = cars[car];
        match cars[ahead].time_at(r.run()) {
            Some(then) => (r.session_time - then).max(0.0),
            None => {
                let pace = r
                    .best_lap_time
                    .or(r.last_lap_time)
                    .unwrap_or(r.current_lap_target);
                r.pit_remaining.unwrap_or(0.0) + time_along(r.run(), cars[ahead].run(), pace)
            }
        }
    };
    order
        .iter()
        .enumerate()
        .map(|(k, &car)| Standing {
            car,
            position: k as u32 + 1,
            gap_leader: behind(leader, car),
            interval: k.checked_sub(1).map_or(0.0, |a| behind(order[a], car)),
        })
        .collect()
}

impl Race {
    /// Takes the place and gap the field gives this car (its frames' `position`
    /// and `gap_ahead`), instead of its own random walk.
    pub fn stand(&mut self, standing: &Standing) {
        self.in_a_field = true;
        self.position = standing.position;
        self.gap_ahead = standing.interval;
    }
}

/// `session.<id>.field` for the car `player` of `cars` (docs/field.schema.json),
/// each car numbered by its index + 1; the first `own` cars race for `team`.
pub fn field(
    cars: &[&Race],
    standings: &[Standing],
    player: usize,
    (own, team): (usize, Option<&str>),
) -> Value {
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    let mut in_class: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    let rows: Vec<Value> = standings
        .iter()
        .map(|s| {
            let r = cars[s.car];
            let class_position = {
                let n = in_class.entry(r.class).or_insert(0);
                *n += 1;
                *n
            };
            let team = match team {
                Some(team) if s.car < own => team,
                _ => TEAMS[s.car % TEAMS.len()],
            };
            json!({
                "index": s.car, "position": s.position, "class": r.class,
                "class_position": class_position, "driver": r.driver, "team": team,
                "race_number": s.car + 1, "lap": r.lap,
                "lap_distance": round(r.lap_distance.min(TRACK_LENGTH_M)),
                "last_lap": r.last_lap_time.map(round), "best_lap": r.best_lap_time.map(round),
                "sector_times": r.sector_times.map(|t| t.map(round)),
                "gap_leader": round(s.gap_leader), "interval": round(s.interval),
                "in_pits": r.in_pits(), "pit_stops": r.pit_stops,
                "tyre": r.compound.to_lowercase(),
                "tyre_age_laps": r.lap - r.stint_start_lap, "penalties_s": 0,
                "status": if r.in_pits() { "pitting" } else { "running" },
                "player": s.car == player,
            })
        })
        .collect();
    json!({"game": "paddock sim", "track_length": TRACK_LENGTH_M, "cars": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_use_the_sample_field_names() {
        let sample: Value =
            serde_json::from_str(include_str!("../../tests/data/telemetry.json")).unwrap();
        let frame = Race::new(1).step(0.1);
        for key in sample.as_object().unwrap().keys() {
            assert!(frame.get(key).is_some(), "missing {key}");
        }
    }

    #[test]
    fn a_stint_burns_fuel_wears_tyres_and_ends_in_a_pit_stop_that_restores_both() {
        let mut race = Race::new(7);
        let mut pitted_at_lap = None;
        let mut min_fuel = f64::MAX;
        let mut min_wear = f64::MAX;
        // Up to 20 simulated laps at 10 Hz.
        for _ in 0..(20.0 * BASE_LAP_S * 10.0) as usize {
            let frame = race.step(0.1);
            min_fuel = min_fuel.min(race.fuel());
            min_wear = min_wear.min(frame["tire_wear"]["fl"].as_f64().unwrap());
            if race.in_pits() && pitted_at_lap.is_none() {
                pitted_at_lap = Some(race.lap());
            }
            if pitted_at_lap.is_some() && !race.in_pits() {
                break;
            }
        }
        let lap = pitted_at_lap.expect("the car never pitted");
        assert!((11..=17).contains(&lap), "pitted at lap {lap}");
        assert!(
            min_fuel < race.fuel_per_lap * PIT_THRESHOLD_LAPS && min_fuel > 0.0,
            "{min_fuel}"
        );
        assert!(min_wear < 0.8, "{min_wear}");
        assert_eq!(race.fuel(), FUEL_CAPACITY_L);
        let frame = race.step(0.1);
        assert!(frame["tire_wear"]["fl"].as_f64().unwrap() > 0.99);
    }

    #[test]
    fn a_field_orders_the_cars_by_distance_run_and_holds_to_its_schema() {
        let mut cars: Vec<Race> = (0..5).map(|k| Race::numbered(k, k as usize)).collect();
        for _ in 0..(3.0 * BASE_LAP_S * 10.0) as usize {
            for car in &mut cars {
                car.advance(0.1);
            }
        }
        let all: Vec<&Race> = cars.iter().collect();
        let standings = standings(&all);
        assert_eq!(standings.len(), 5);
        let run = |r: &Race| f64::from(r.lap - 1) * TRACK_LENGTH_M + r.lap_distance;
        for pair in standings.windows(2) {
            assert!(run(all[pair[0].car]) >= run(all[pair[1].car]));
            assert!(pair[1].gap_leader >= pair[0].gap_leader);
        }
        assert_eq!(standings[0].gap_leader, 0.0);
        let field = field(&all, &standings, 2, (3, Some("Demo")));
        let parsed = crate::protocol::field::Field::parse(field.to_string().as_bytes());
        assert!(parsed.is_ok(), "{parsed:?}\n{field}");
        let players: Vec<_> = field["cars"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["player"] == true)
            .collect();
        assert_eq!(players.len(), 1);
        assert_eq!(players[0]["index"], 2);
        assert_eq!(players[0]["team"], "Demo");
        // Class positions count within each class.
        let rows = field["cars"].as_array().unwrap();
        for class in ["LMP2", "Hypercar"] {
            let places: Vec<u64> = rows
                .iter()
                .filter(|c| c["class"] == class)
                .map(|c| c["class_position"].as_u64().unwrap())
                .collect();
            assert_eq!(places, (1..=places.len() as u64).collect::<Vec<_>>());
        }
        // A car told its standing sends it in its frames.
        let mut third = cars[2].clone();
        let mine = standings.iter().find(|s| s.car == 2).unwrap();
        third.stand(mine);
        assert_eq!(third.step(0.1)["position"], mine.position);
    }

    #[test]
    fn gaps_move_by_tenths_from_one_field_to_the_next_not_by_seconds() {
        // Gaps measured in metres swung by seconds as cars went from a
        // straight into a corner; in time along the lap they drift.
        let mut cars: Vec<Race> = (0..12).map(|k| Race::numbered(k, k as usize)).collect();
        let mut last: Option<Vec<f64>> = None;
        for tick in 0..(4.0 * BASE_LAP_S * 10.0) as usize {
            for car in &mut cars {
                car.advance(0.1);
            }
            // A field every half second of race time, after the first lap.
            if tick < (BASE_LAP_S * 10.0) as usize || tick % 5 != 0 {
                continue;
            }
            let all: Vec<&Race> = cars.iter().collect();
            let mut gaps = vec![0.0; 12];
            for s in standings(&all) {
                gaps[s.car] = s.gap_leader;
            }
            if let Some(before) = &last {
                for (car, (a, b)) in before.iter().zip(&gaps).enumerate() {
                    let pitting = all[car].in_pits() || a - b > 20.0;
                    assert!(pitting || (a - b).abs() < 0.5, "car {car}: {a} then {b}");
                }
            }
            last = Some(gaps);
        }
    }

    #[test]
    fn pedals_follow_the_profile_and_worn_laps_are_slower_everywhere() {
        let mut race = Race::new(5);
        let (mut braking, mut flat_out) = (0, 0);
        for _ in 0..(BASE_LAP_S * 10.0) as usize {
            let frame = race.step(0.1);
            let (t, b) = (
                frame["throttle"].as_f64().unwrap(),
                frame["brake"].as_f64().unwrap(),
            );
            assert!(t == 0.0 || b == 0.0, "both pedals at once: {frame}");
            braking += usize::from(b > 0.2);
            flat_out += usize::from(t > 0.9);
        }
        assert!(braking > 100 && flat_out > 100, "{braking} {flat_out}");
        // The same point of the lap at two paces.
        let mut slow = Race::new(5);
        slow.current_lap_target = 220.0;
        let mut fast = Race::new(5);
        fast.current_lap_target = 205.0;
        assert!(slow.speed_kph() < fast.speed_kph());
    }

    #[test]
    fn laps_take_about_three_and_a_half_minutes() {
        let mut race = Race::new(3);
        let mut t = 0.0;
        while race.lap() == 1 {
            race.step(0.1);
            t += 0.1;
        }
        // A 3:30 lap, a class's and a full tank's seconds on it, and the
        // first lap's from the grid.
        assert!((205.0..240.0).contains(&t), "{t}");
        let frame = race.step(0.1);
        let last = frame["last_lap_time"].as_f64().unwrap();
        assert!((last - t).abs() < 0.2, "{last} vs {t}");
    }

    #[test]
    fn a_lap_ends_where_the_line_was_crossed_not_on_a_whole_step() {
        // Steps of a second (the demo's 10 Hz at ten times real time): the
        // lap time is the crossing's, not a whole second. (Within 0.1 s of
        // the lap's target: the speed changes along the lap between steps.)
        let mut race = Race::new(3);
        let target = race.current_lap_target;
        while race.lap() == 1 {
            race.step(1.0);
        }
        let last = race.last_lap_time.unwrap();
        assert!((last - target).abs() < 0.1, "{last} vs {target}");
        assert!((last - last.round()).abs() > 1e-3, "{last}: a whole second");
        assert!(race.lap_elapsed < 1.0 && race.lap_elapsed >= 0.0);
    }

    #[test]
    fn the_same_seed_gives_the_same_race() {
        let (mut a, mut b) = (Race::new(42), Race::new(42));
        for _ in 0..1000 {
            let (fa, fb) = (a.step(0.5), b.step(0.5));
            assert_eq!(fa["fuel"], fb["fuel"]);
            assert_eq!(fa["position"], fb["position"]);
        }
    }
}
