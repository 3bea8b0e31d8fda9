//! Forza "Data Out" UDP telemetry (Forza Motorsport (2023), Forza Motorsport 7,
//! Forza Horizon 4 and 5): packets in, the player's car as schema frames out.
//!
//! Written from Turn 10's published layout, "Forza Motorsport Data Out
//! Documentation"
//! (<https://support.forzamotorsport.net/hc/en-us/articles/21742934024211>: the
//! Sled and Dash structures, FM7's the same, and FM (2023)'s tyre wear and track
//! ordinal after them). What it leaves unsaid is taken from the community's
//! readers, facts only: Horizon's 12 bytes between Sled and Dash and its one
//! trailing byte (github.com/richstokes/Forza-data-tools `FH4_packetformat.dat`,
//! github.com/cdn-lnk/fh4, github.com/geeooff/forza-data-web), TireWear as 0 new
//! … 1 worn through (richstokes's `FM7_packetformat.dat`), tyre temperatures in
//! °F (every public reader converts them from Fahrenheit), and `LapNumber` as
//! the laps completed (0 on the first lap).
//!
//! The game sends the whole car in every packet, 60 a second, little-endian and
//! packed; the layout follows from the length alone:
//!
//! | bytes | layout | sent by |
//! |---|---|---|
//! | 232 | Sled | FM7 and FM (2023) set to "Sled" |
//! | 311 | Sled, Dash | FM7 set to "Car Dash" |
//! | 331 | Sled, Dash, tyre wear ×4, track ordinal | FM (2023) set to "Dash" |
//! | 323, 324 | Sled, 12 bytes (car category, 2 unknown), Dash, (1 byte) | FH4, FH5 |
//!
//! The Sled fields read (offset from 0) and the Dash's (offset from the Dash's
//! start: 232, or 244 on Horizon):
//!
//! | Sled | field | Dash | field |
//! |---|---|---|---|
//! | 0 | `s32` IsRaceOn (0: menus, paused) | 12 | `f32` Speed (m/s) |
//! | 8 | `f32` EngineMaxRpm | 24 | `f32` TireTemp FL FR RL RR (°F) |
//! | 16 | `f32` CurrentEngineRpm | 44 | `f32` Fuel (fraction of the tank) |
//! | 32 | `f32` Velocity X Y Z (m/s, car space) | 48 | `f32` DistanceTraveled (m, this race) |
//! | 212 | `s32` CarOrdinal | 52 | `f32` BestLap, LastLap, CurrentLap, CurrentRaceTime (s) |
//! | 216 | `s32` CarClass | 68 | `u16` LapNumber (laps completed) |
//! | 220 | `s32` CarPerformanceIndex | 70 | `u8` RacePosition |
//! | 224 | `s32` DrivetrainType | 71 | `u8` Accel, Brake (0–255) |
//! | | | 75 | `u8` Gear (0 reverse), `s8` Steer (±127) |
//!
//! A new race (what `paddock monitor --new-session-per-race` starts a new
//! session for) is told by the packets alone: CarOrdinal changes (another
//! car), or CurrentRaceTime falls back to a race's first seconds from more
//! than a rewind takes back (the race restarted, or the next one began; its
//! LapNumber is back to 0 with it). IsRaceOn alone does not tell: it goes to
//! 0 for a pause as for the menus between races.
//!
//! Nothing here trusts a packet: a length other than those above is counted
//! and dropped, a packet sent while the race is off (IsRaceOn 0: menus, pause)
//! is counted and is not a frame, and no value read can panic.

use serde_json::{Map, Value, json};

use super::{Le, corners, put, rounded};

/// The Sled structure: FM7's original, for motion sleds.
pub const SLED_LEN: usize = 232;
/// Sled and Dash (FM7's "Car Dash").
pub const DASH_LEN: usize = 311;
/// Dash and FM (2023)'s extension: tyre wear per corner and the track ordinal.
pub const MOTORSPORT_LEN: usize = 331;
/// Forza Horizon 4 and 5: Sled, 12 bytes of Horizon's own, Dash, one byte.
pub const HORIZON_LEN: usize = 324;
/// The same without its last byte, which some Horizon builds leave off
/// (richstokes's reader accepts both).
pub const HORIZON_SHORT_LEN: usize = 323;

/// A Data Out layout, told apart by length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Sled,
    Dash,
    Motorsport,
    Horizon,
}

impl Format {
    pub fn of(len: usize) -> Option<Self> {
        match len {
            SLED_LEN => Some(Format::Sled),
            DASH_LEN => Some(Format::Dash),
            MOTORSPORT_LEN => Some(Format::Motorsport),
            HORIZON_LEN | HORIZON_SHORT_LEN => Some(Format::Horizon),
            _ => None,
        }
    }

    /// Where the Dash fields start, for the layouts that have them.
    fn dash(self) -> Option<usize> {
        match self {
            Format::Sled => None,
            Format::Dash | Format::Motorsport => Some(SLED_LEN),
            Format::Horizon => Some(SLED_LEN + 12),
        }
    }

    /// The `game` a frame of this layout names: the length says which game
    /// sent it only so far (a Sled packet may be FM7's or FM (2023)'s).
    pub fn game(self) -> &'static str {
        match self {
            Format::Sled => "Forza (Sled)",
            Format::Dash => "Forza Motorsport 7",
            Format::Motorsport => "Forza Motorsport",
            Format::Horizon => "Forza Horizon",
        }
    }
}

/// CurrentRaceTime of a race just begun, s: a new race's first packets are
/// read under it (the game sends 60 a second from the start).
const RACE_START: f64 = 10.0;
/// How far back CurrentRaceTime must fall to be another race: further than
/// a rewind takes the car back (a few seconds), s.
const REWIND: f64 = 10.0;

/// What the decoder has seen, for the monitor's progress line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Packets read into the car's frame.
    pub read: u64,
    /// Well-formed packets sent while the race is off (menus, pause, rewind
    /// screens): IsRaceOn 0. Not frames.
    pub race_off: u64,
    /// Of a length no Data Out layout has (not Forza, or cut short).
    pub malformed: u64,
}

/// The player's car as the game last described it.
#[derive(Debug, Default)]
pub struct Decoder {
    counts: Counts,
    format: Option<Format>,
    frame: Map<String, Value>,
    /// The lap (LapNumber) the car is on and the DistanceTraveled where it
    /// began, once the decoder has seen the car cross the line: the packet
    /// carries the distance since the race's start only, and where the line
    /// lies relative to the grid it does not say.
    lap_start: Option<(u16, f64)>,
    /// The last LapNumber read, to see it change.
    laps_completed: Option<u16>,
    /// CarOrdinal and CurrentRaceTime (Dash layouts) of the last packet read
    /// with the race on, to see a new race begin.
    last: Option<(i32, Option<f64>)>,
    /// Why the packets say a new race began, until the monitor takes it.
    new_race: Option<&'static str>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The layout of the last packet read, if any.
    pub fn format(&self) -> Option<Format> {
        self.format
    }

    /// Reads one UDP datagram; true when the car's frame changed.
    pub fn read(&mut self, packet: &[u8]) -> bool {
        let Some(format) = Format::of(packet.len()) else {
            self.counts.malformed += 1;
            return false;
        };
        let p = Le(packet);
        if p.i32(0) == Some(0) {
            self.counts.race_off += 1;
            return false;
        }
        self.counts.read += 1;
        self.format = Some(format);
        let mut m = Map::new();
        m.insert("game".into(), json!(format.game()));
        put(&mut m, "rpm", p.f32(16).map(|r| rounded(r, 0)));
        put(&mut m, "max_rpm", p.f32(8).map(|r| rounded(r, 0)));
        put(&mut m, "car_ordinal", p.i32(212).map(|n| json!(n)));
        put(&mut m, "car_class", p.i32(216).map(|n| json!(n)));
        put(
            &mut m,
            "car_performance_index",
            p.i32(220).map(|n| json!(n)),
        );
        put(
            &mut m,
            "drivetrain",
            p.i32(224).map(|d| {
                json!(match d {
                    0 => "FWD",
                    1 => "RWD",
                    2 => "AWD",
                    _ => "unknown",
                })
            }),
        );
        match format.dash() {
            Some(at) => self.dash(&mut m, p, at),
            // The Sled has no speed of its own: the velocity's length is it.
            None => {
                let v = [p.f32(32), p.f32(36), p.f32(40)];
                if let [Some(x), Some(y), Some(z)] = v {
                    put(&mut m, "speed", Some(kmh((x * x + y * y + z * z).sqrt())));
                }
            }
        }
        if format == Format::Motorsport {
            // The game's wear is the tread worn (0 new, 1 gone); the schema's
            // is the tread left.
            m.insert(
                "tire_wear".into(),
                p.corners(DASH_LEN, |w| {
                    w.is_finite().then(|| rounded((1.0 - w).clamp(0.0, 1.0), 4))
                }),
            );
            put(&mut m, "track_ordinal", p.i32(327).map(|n| json!(n)));
        }
        self.frame = m;
        let clock = format
            .dash()
            .and_then(|at| p.f32(at + 64))
            .filter(|t| t.is_finite());
        self.follow_races(p.i32(212), clock);
        true
    }

    /// Sees a new race begin in a packet read with the race on: another car,
    /// or the race clock back at the start from further on than a rewind.
    fn follow_races(&mut self, car: Option<i32>, clock: Option<f64>) {
        let Some(car) = car else { return };
        if let Some((car_before, clock_before)) = self.last {
            if car != car_before && car != 0 && car_before != 0 {
                self.new_race = Some("another car");
            } else if let (Some(now), Some(before)) = (clock, clock_before)
                && now < RACE_START
                && before - now > REWIND
            {
                self.new_race = Some("the race clock back at the start");
            }
        }
        self.last = Some((car, clock));
    }

    /// Why a new race began since the last call, once: the packet just read
    /// is the new race's first.
    pub fn take_new_race(&mut self) -> Option<&'static str> {
        self.new_race.take()
    }

    fn dash(&mut self, m: &mut Map<String, Value>, p: Le, at: usize) {
        put(m, "speed", p.f32(at + 12).map(kmh));
        m.insert(
            "tire_temps".into(),
            p.corners(at + 24, |f| Some(rounded((f - 32.0) * 5.0 / 9.0, 1))),
        );
        put(
            m,
            "fuel_pct",
            p.f32(at + 44)
                .filter(|f| f.is_finite())
                .map(|f| rounded(f.clamp(0.0, 1.0), 4)),
        );
        let distance = p.f32(at + 48).filter(|d| d.is_finite());
        put(m, "distance_traveled", distance.map(|d| rounded(d, 1)));
        // 0: no lap completed yet (best and last), not a lap of 0 s.
        let time = |v: Option<f64>| match v {
            Some(s) if s.is_finite() && s > 0.0 => rounded(s, 3),
            _ => Value::Null,
        };
        m.insert("best_lap_time".into(), time(p.f32(at + 52)));
        m.insert("last_lap_time".into(), time(p.f32(at + 56)));
        put(m, "lap_time", p.f32(at + 60).map(|s| rounded(s, 3)));
        put(m, "session_time", p.f32(at + 64).map(|s| rounded(s, 3)));
        let laps = p.u16(at + 68);
        put(m, "lap", laps.map(|n| json!(u32::from(n) + 1)));
        put(m, "position", p.u8(at + 70).map(|n| json!(n)));
        put(m, "throttle", p.u8(at + 71).map(fraction));
        put(m, "brake", p.u8(at + 72).map(fraction));
        put(
            m,
            "gear",
            p.u8(at + 75)
                .map(|g| json!(if g == 0 { -1 } else { i16::from(g) })),
        );
        put(
            m,
            "steering",
            p.i8(at + 76)
                .map(|s| rounded((f64::from(s) / 127.0).clamp(-1.0, 1.0), 3)),
        );
        if let (Some(laps), Some(distance)) = (laps, distance) {
            self.track_lap(laps, distance);
            if let Some((_, start)) = self.lap_start {
                m.insert("lap_distance".into(), rounded(distance - start, 1));
            }
        }
    }

    /// Follows the line: a LapNumber one more than the last is the line
    /// crossed here; anything else (a new race, a rewind past the line,
    /// packets lost over a whole lap) forgets where it was.
    fn track_lap(&mut self, laps: u16, distance: f64) {
        match self.laps_completed {
            Some(before) if laps == before.wrapping_add(1) => {
                self.lap_start = Some((laps, distance));
            }
            Some(before) if laps != before => self.lap_start = None,
            _ => {}
        }
        // Driven backwards past where the lap began (rewind): not this lap.
        if self
            .lap_start
            .is_some_and(|(lap, start)| lap != laps || distance < start)
        {
            self.lap_start = None;
        }
        self.laps_completed = Some(laps);
    }

    /// The car's frame: `None` until a packet with the race on was read.
    pub fn frame(&self) -> Option<Value> {
        (!self.frame.is_empty()).then(|| Value::Object(self.frame.clone()))
    }
}

fn kmh(ms: f64) -> Value {
    rounded(ms * 3.6, 1)
}

/// A pedal's 0–255 as the schema's fraction.
fn fraction(byte: u8) -> Value {
    rounded(f64::from(byte) / 255.0, 3)
}

/// Forza's corners beside the shared reads.
impl Le<'_> {
    /// Four `f32` at `at` in the game's order FL FR RL RR (the schema's).
    fn corners(self, at: usize, map: impl Fn(f64) -> Option<Value>) -> Value {
        let corner = |i: usize| self.f32(at + 4 * i).and_then(&map).unwrap_or(Value::Null);
        corners(corner(0), corner(1), corner(2), corner(3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet of `format`'s length built from the spec: each field written
    /// at its documented offset, every corner distinct.
    struct Packet {
        bytes: Vec<u8>,
        dash: Option<usize>,
    }

    impl Packet {
        fn new(len: usize) -> Self {
            let mut p = Packet {
                bytes: vec![0; len],
                dash: Format::of(len).and_then(Format::dash),
            };
            p.i32(0, 1); // IsRaceOn
            p.f32(8, 8500.0);
            p.f32(16, 7123.4);
            p.f32(32, 3.0); // velocity: (3, 0, 4) m/s is 5 m/s
            p.f32(40, 4.0);
            p.i32(212, 2345);
            p.i32(216, 5);
            p.i32(220, 812);
            p.i32(224, 1);
            if let Some(d) = p.dash {
                p.f32(d + 12, 50.0); // 180 km/h
                for (i, f) in [212.0f32, 194.0, 176.0, 158.0].iter().enumerate() {
                    p.f32(d + 24 + 4 * i, *f); // 100, 90, 80, 70 °C
                }
                p.f32(d + 44, 0.625);
                p.f32(d + 48, 12_345.5);
                p.f32(d + 52, 92.125);
                p.f32(d + 56, 93.5);
                p.f32(d + 60, 12.25);
                p.f32(d + 64, 380.75);
                p.u16(d + 68, 4);
                p.bytes[d + 70] = 3;
                p.bytes[d + 71] = 255;
                p.bytes[d + 72] = 51;
                p.bytes[d + 75] = 5;
                p.bytes[d + 76] = (-127i8) as u8;
            }
            if len == MOTORSPORT_LEN {
                for (i, w) in [0.1f32, 0.2, 0.3, 0.4].iter().enumerate() {
                    p.f32(DASH_LEN + 4 * i, *w);
                }
                p.i32(327, 860);
            }
            p
        }
        fn i32(&mut self, at: usize, v: i32) {
            self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        fn u16(&mut self, at: usize, v: u16) {
            self.bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
        fn f32(&mut self, at: usize, v: f32) {
            self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        /// Sets a Dash field (offset from the Dash's start).
        fn dash_f32(&mut self, at: usize, v: f32) {
            let d = self.dash.unwrap();
            self.f32(d + at, v);
        }
        fn laps(&mut self, n: u16) {
            let d = self.dash.unwrap();
            self.u16(d + 68, n);
        }
    }

    fn frame_of(len: usize) -> Value {
        let mut d = Decoder::new();
        assert!(d.read(&Packet::new(len).bytes));
        d.frame().unwrap()
    }

    #[test]
    fn a_motorsport_packet_reads_into_the_schema() {
        let f = frame_of(MOTORSPORT_LEN);
        let want = json!({
            "game": "Forza Motorsport", "rpm": 7123.0, "max_rpm": 8500.0,
            "car_ordinal": 2345, "car_class": 5, "car_performance_index": 812,
            "drivetrain": "RWD", "speed": 180.0,
            "tire_temps": {"fl": 100.0, "fr": 90.0, "rl": 80.0, "rr": 70.0},
            "fuel_pct": 0.625, "distance_traveled": 12345.5,
            "best_lap_time": 92.125, "last_lap_time": 93.5, "lap_time": 12.25,
            "session_time": 380.75, "lap": 5, "position": 3, "throttle": 1.0,
            "brake": 0.2, "gear": 5, "steering": -1.0,
            "tire_wear": {"fl": 0.9, "fr": 0.8, "rl": 0.7, "rr": 0.6},
            "track_ordinal": 860,
        });
        assert_eq!(f, want);
        crate::protocol::payload::validate_object(f.to_string().as_bytes(), 64 * 1024).unwrap();
    }

    #[test]
    fn a_new_race_is_another_car_or_the_race_clock_back_at_the_start() {
        let packet = |clock: f32, laps: u16, car: i32, race_on: bool| {
            let mut p = Packet::new(MOTORSPORT_LEN);
            p.dash_f32(64, clock);
            p.laps(laps);
            p.i32(212, car);
            p.i32(0, i32::from(race_on));
            p.bytes
        };
        let mut d = Decoder::new();
        // A race goes on, a pause (race off) in it, a rewind of 8 s: no new race.
        for (clock, laps, on) in [(0.0, 0, true), (5.0, 0, true), (95.0, 1, true)] {
            assert_eq!(d.read(&packet(clock, laps, 2345, on)), on);
        }
        assert!(!d.read(&packet(95.0, 1, 2345, false)), "paused");
        assert!(d.read(&packet(96.0, 1, 2345, true)));
        assert!(
            d.read(&packet(88.0, 0, 2345, true)),
            "rewound over the line"
        );
        assert_eq!(d.take_new_race(), None);
        // The menus, then the next race from its start.
        assert!(!d.read(&packet(0.0, 0, 2345, false)));
        assert!(d.read(&packet(0.25, 0, 2345, true)));
        assert_eq!(d.take_new_race(), Some("the race clock back at the start"));
        assert_eq!(d.take_new_race(), None, "said once");
        // Another car, whatever the clock says.
        assert!(d.read(&packet(0.5, 0, 9999, true)));
        assert_eq!(d.take_new_race(), Some("another car"));
        // The Sled has no clock: only the car tells.
        let mut sled = Packet::new(SLED_LEN);
        sled.i32(212, 9999);
        assert!(d.read(&sled.bytes));
        assert_eq!(d.take_new_race(), None);
        sled.i32(212, 1111);
        assert!(d.read(&sled.bytes));
        assert_eq!(d.take_new_race(), Some("another car"));
    }

    #[test]
    fn every_layout_is_told_by_its_length() {
        let dash = frame_of(DASH_LEN);
        assert_eq!(dash["game"], "Forza Motorsport 7");
        assert_eq!((&dash["lap"], &dash["speed"]), (&json!(5), &json!(180.0)));
        assert_eq!(dash.get("tire_wear"), None, "FM7 sends no wear");
        for len in [HORIZON_LEN, HORIZON_SHORT_LEN] {
            let horizon = frame_of(len);
            assert_eq!(horizon["game"], "Forza Horizon");
            // The Dash 12 bytes later: read from there, every value lands.
            assert_eq!(horizon["tire_temps"]["rr"], 70.0);
            assert_eq!(horizon["lap"], 5);
            assert_eq!(horizon["steering"], -1.0);
        }
        let sled = frame_of(SLED_LEN);
        assert_eq!(sled["game"], "Forza (Sled)");
        assert_eq!(sled["speed"], 18.0, "|(3, 0, 4)| m/s");
        assert_eq!(sled["rpm"], 7123.0);
        assert_eq!(sled.get("lap"), None, "the Sled has no laps");
    }

    #[test]
    fn no_lap_yet_is_null_and_gear_zero_is_reverse() {
        let mut p = Packet::new(MOTORSPORT_LEN);
        p.dash_f32(52, 0.0);
        p.dash_f32(56, 0.0);
        let d = p.dash.unwrap();
        p.bytes[d + 75] = 0;
        let mut decoder = Decoder::new();
        decoder.read(&p.bytes);
        let f = decoder.frame().unwrap();
        assert_eq!(
            (&f["best_lap_time"], &f["last_lap_time"]),
            (&Value::Null, &Value::Null)
        );
        assert_eq!(f["gear"], -1);
    }

    #[test]
    fn lap_distance_counts_from_the_line_once_the_car_has_crossed_it() {
        let mut d = Decoder::new();
        let mut p = Packet::new(MOTORSPORT_LEN);
        p.laps(0);
        p.dash_f32(48, 900.0);
        d.read(&p.bytes);
        assert_eq!(d.frame().unwrap().get("lap_distance"), None, "grid unknown");
        p.laps(1);
        p.dash_f32(48, 1000.0);
        d.read(&p.bytes);
        assert_eq!(d.frame().unwrap()["lap_distance"], 0.0);
        p.dash_f32(48, 1250.5);
        d.read(&p.bytes);
        assert_eq!(d.frame().unwrap()["lap_distance"], 250.5);
        // A rewind past the line: not this lap's distance any more.
        p.dash_f32(48, 990.0);
        d.read(&p.bytes);
        assert_eq!(d.frame().unwrap().get("lap_distance"), None);
        // A new race (laps back to 0): nothing until the next line.
        p.laps(0);
        p.dash_f32(48, 10.0);
        d.read(&p.bytes);
        assert_eq!(d.frame().unwrap().get("lap_distance"), None);
    }

    /// The fuzzer's seeds (.ci/run copies them into its corpus): this
    /// builder's packets, held to it here; `PADDOCK_WRITE_FIXTURES=1` rewrites
    /// them after a change to the builder.
    #[test]
    fn the_fuzz_seeds_are_the_builders_packets() {
        let dir = format!("{}/tests/data/forza", env!("CARGO_MANIFEST_DIR"));
        for (name, len) in [
            ("sled", SLED_LEN),
            ("dash", DASH_LEN),
            ("motorsport", MOTORSPORT_LEN),
            ("horizon", HORIZON_LEN),
        ] {
            let path = format!("{dir}/{name}.bin");
            let built = Packet::new(len).bytes;
            if std::env::var_os("PADDOCK_WRITE_FIXTURES").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &built).unwrap();
            }
            assert_eq!(std::fs::read(&path).unwrap(), built, "{path}");
        }
    }

    #[test]
    fn garbage_is_counted_never_read() {
        let mut d = Decoder::new();
        let good = Packet::new(MOTORSPORT_LEN).bytes;
        assert!(!d.read(&[]));
        d.read(&good[..MOTORSPORT_LEN - 1]);
        d.read(&[0xff; 400]);
        d.read(b"hello, this is not a game");
        let mut off = good.clone();
        off[0..4].copy_from_slice(&0i32.to_le_bytes());
        assert!(!d.read(&off));
        assert_eq!(
            d.counts(),
            Counts {
                read: 0,
                race_off: 1,
                malformed: 4
            }
        );
        assert_eq!(d.frame(), None);
        // Any bytes of a known length read without panic, NaN as null.
        let mut nan = vec![0xff; MOTORSPORT_LEN];
        nan[0..4].copy_from_slice(&1i32.to_le_bytes());
        assert!(d.read(&nan));
        let f = d.frame().unwrap();
        assert_eq!(
            (&f["speed"], &f["tire_wear"]["fl"]),
            (&Value::Null, &Value::Null)
        );
        serde_json::to_vec(&f).unwrap();
        assert!(d.read(&good));
        assert_eq!(d.frame().unwrap()["speed"], 180.0);
    }
}
