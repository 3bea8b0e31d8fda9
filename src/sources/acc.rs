//! Assetto Corsa Competizione and Assetto Corsa shared memory: the game's three
//! pages in, the player's car as schema frames out.
//!
//! Kunos publishes the layout as `SharedFileOut.h` (in ACC's
//! "ACCSharedMemoryDocumentation" PDF and AC's "Shared Memory Reference"):
//! three C structs, `#pragma pack(4)`, little-endian, `wchar_t` strings as
//! UTF-16LE, in the memory-mapped files `Local\acpmf_physics`
//! (`SPageFilePhysics`, every physics step), `Local\acpmf_graphics`
//! (`SPageFileGraphic`, some 60 a second) and `Local\acpmf_static`
//! (`SPageFileStatic`, once a session). The offsets below follow from the
//! header's field order; they are checked against the public readers (facts
//! only): github.com/mdjarv/assettocorsasharedmemory (MIT: `Physics.cs`,
//! `Graphics.cs`, `StaticInfo.cs`, `Pack = 4`), madmak2005/acc-manager-server
//! (`SPageFileGraphics.java`: the field order ACC extends AC's with). ACC
//! appends fields to each of AC's structs and keeps AC's in place, so the
//! fields read here are common to both games (ACC leaves some of AC's at 0:
//! tyre wear, brake temperatures before its 1.x patches).
//!
//! | page | offset | field |
//! |---|---|---|
//! | physics | 0 | `int` packetId (a step counter) |
//! | | 4, 8, 12 | `float` gas, brake (0–1), fuel (L) |
//! | | 16, 20 | `int` gear (0 R, 1 N, 2 first), rpms |
//! | | 24, 28 | `float` steerAngle (−1…1), speedKmh |
//! | | 88 | `float[4]` wheelsPressure (psi) FL FR RL RR |
//! | | 152 | `float[4]` tyreCoreTemperature (°C) |
//! | | 288, 292 | `float` airTemp, roadTemp (°C) |
//! | | 348 | `float[4]` brakeTemp (°C) |
//! | graphics | 0 | `int` packetId |
//! | | 4, 8 | `int` status (0 off, 1 replay, 2 live, 3 pause), session type |
//! | | 132, 136 | `int` completedLaps, position |
//! | | 140, 144, 148 | `int` iCurrentTime, iLastTime, iBestTime (ms) |
//! | | 160 | `int` isInPit |
//! | | 176 | `wchar_t[33]` tyreCompound |
//! | | 248 | `float` normalizedCarPosition (0–1 along the lap) |
//! | static | 68, 134 | `wchar_t[33]` carModel, track |
//! | | 200, 266 | `wchar_t[33]` playerName, playerSurname |
//! | | 412, 416 | `int` maxRpm, `float` maxFuel (L) |
//! | | 520 | `float` trackSPlineLength (m) |
//!
//! Fuel is litres on both pages, whatever the header's comment says: Kunos's
//! ACC document calls physics `fuel` "Amount of fuel remaining in kg", yet it
//! is the figure the game's own HUD and pit menu show in litres, of one unit
//! with static `maxFuel` (120 for a GT3: the regulations' 120 L tank, not
//! 90 kg of it) and graphics `fuelXLap` ("in liters"). So it is the schema's
//! `fuel` as it is, with no kg-to-litre conversion (F1's 0.75 kg/L would
//! make a full GT3 tank 160 L).
//!
//! The game writes the pages while they are read: the reader copies a page,
//! then reads its `packetId` again, and hands the decoder both ([`Pages`]);
//! a page whose id moved under the copy is torn, counted, and not read.
//!
//! What the pages do not give, paddock cannot show: the session's time or laps
//! left in one unit both games agree on, tyre wear (ACC leaves it 0), water and
//! oil temperatures. A page shorter than the fields read is counted and
//! dropped; no value read can panic.

use serde_json::{Map, Value, json};

use super::{Le, corners, put, rounded};

/// The physics page up to the last field read (brakeTemp).
pub const PHYSICS_LEN: usize = 364;
/// The graphics page up to normalizedCarPosition.
pub const GRAPHICS_LEN: usize = 252;
/// The static page up to trackSPlineLength.
pub const STATIC_LEN: usize = 524;

/// `AC_STATUS`: the game's state as the graphics page says it. Off (no
/// session loaded) and replay are not the car on track: a replay's laps would
/// read as laps driven again.
const STATUS_OFF: i32 = 0;
const STATUS_REPLAY: i32 = 1;

/// iLastTime and iBestTime before a lap is timed: ACC writes `INT_MAX`, AC 0.
/// No real lap takes a day.
const NO_LAP_MS: i32 = 86_400_000;

/// One read of the game's three pages: each copied out of shared memory, with
/// the `packetId` the reader saw after copying (the copy holds the one before).
#[derive(Debug, Clone, Copy)]
pub struct Pages<'a> {
    pub physics: &'a [u8],
    pub physics_id_after: i32,
    pub graphics: &'a [u8],
    pub graphics_id_after: i32,
    /// Written once a session, before the car moves: no id to check.
    pub statics: &'a [u8],
}

/// The `packetId` a page starts with, if it is long enough to have one.
pub fn packet_id(page: &[u8]) -> Option<i32> {
    Le(page).i32(0)
}

/// What the decoder has seen, for the monitor's progress line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Reads that made the car's frame.
    pub read: u64,
    /// Reads with nothing new: the physics step and the graphics page as at
    /// the last read (the game paused, in its menus, or not yet started).
    pub unchanged: u64,
    /// The game's status "off" (no session loaded) or "replay".
    pub off: u64,
    /// A page written while it was copied (its packetId moved): skipped.
    pub torn: u64,
    /// A page shorter than the fields read (not the game's, or not yet made).
    pub short: u64,
}

/// The player's car as the game last described it.
#[derive(Debug)]
pub struct Decoder {
    /// The `game` the frames name: the pages do not say which game wrote them.
    game: &'static str,
    counts: Counts,
    frame: Map<String, Value>,
    /// The packetIds of the last pages read, to tell a new step from a pause.
    last_ids: Option<(i32, i32)>,
}

impl Decoder {
    /// A decoder whose frames say `game` ("Assetto Corsa Competizione", "Assetto Corsa").
    pub fn new(game: &'static str) -> Self {
        Decoder {
            game,
            counts: Counts::default(),
            frame: Map::new(),
            last_ids: None,
        }
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Reads the three pages; true when the car's frame changed.
    pub fn read(&mut self, pages: Pages<'_>) -> bool {
        if pages.physics.len() < PHYSICS_LEN
            || pages.graphics.len() < GRAPHICS_LEN
            || pages.statics.len() < STATIC_LEN
        {
            self.counts.short += 1;
            return false;
        }
        let (Some(physics_id), Some(graphics_id)) =
            (packet_id(pages.physics), packet_id(pages.graphics))
        else {
            self.counts.short += 1;
            return false;
        };
        if physics_id != pages.physics_id_after || graphics_id != pages.graphics_id_after {
            self.counts.torn += 1;
            return false;
        }
        let (p, g, s) = (Le(pages.physics), Le(pages.graphics), Le(pages.statics));
        if matches!(g.i32(4), Some(STATUS_OFF | STATUS_REPLAY)) {
            self.counts.off += 1;
            return false;
        }
        if self.last_ids == Some((physics_id, graphics_id)) {
            self.counts.unchanged += 1;
            return false;
        }
        self.last_ids = Some((physics_id, graphics_id));
        self.counts.read += 1;
        let mut m = Map::new();
        m.insert("game".into(), json!(self.game));
        for (key, at) in [("car_name", 68), ("track_name", 134)] {
            put(&mut m, key, wide(pages.statics, at, 33).map(Value::String));
        }
        let player = [wide(pages.statics, 200, 33), wide(pages.statics, 266, 33)]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        if !player.is_empty() {
            m.insert("player_name".into(), json!(player));
        }
        put(&mut m, "throttle", p.f32(4).map(|v| rounded(v, 3)));
        put(&mut m, "brake", p.f32(8).map(|v| rounded(v, 3)));
        put(&mut m, "fuel", p.f32(12).map(|v| rounded(v, 3)));
        let capacity = s.f32(416).filter(|l| l.is_finite() && *l > 0.0);
        put(&mut m, "fuel_capacity", capacity.map(|l| rounded(l, 3)));
        // Both litres: the tank's fill is their ratio.
        if let (Some(fuel), Some(capacity)) = (p.f32(12).filter(|f| f.is_finite()), capacity) {
            m.insert(
                "fuel_pct".into(),
                rounded((fuel / capacity).clamp(0.0, 1.0), 4),
            );
        }
        // 0 reverse, 1 neutral, 2 first: the schema's -1, 0, 1.
        put(&mut m, "gear", p.i32(16).map(|g| json!(i64::from(g) - 1)));
        put(&mut m, "rpm", p.i32(20).map(|r| json!(r)));
        put(
            &mut m,
            "max_rpm",
            s.i32(412).filter(|r| *r > 0).map(|r| json!(r)),
        );
        put(&mut m, "steering", p.f32(24).map(|v| rounded(v, 3)));
        put(&mut m, "speed", p.f32(28).map(|v| rounded(v, 1)));
        m.insert("tire_pressures".into(), four(p, 88, 2));
        m.insert("tire_temps".into(), four(p, 152, 1));
        m.insert("brake_temps".into(), four(p, 348, 1));
        put(&mut m, "ambient_temp", p.f32(288).map(|t| rounded(t, 1)));
        put(&mut m, "track_temp", p.f32(292).map(|t| rounded(t, 1)));
        put(
            &mut m,
            "session_type",
            g.i32(8).and_then(session_type).map(|t| json!(t)),
        );
        put(
            &mut m,
            "lap",
            g.i32(132)
                .filter(|l| *l >= 0)
                .map(|l| json!(i64::from(l) + 1)),
        );
        put(
            &mut m,
            "position",
            g.i32(136).filter(|p| *p > 0).map(|p| json!(p)),
        );
        put(
            &mut m,
            "lap_time",
            g.i32(140)
                .filter(|ms| (0..NO_LAP_MS).contains(ms))
                .map(seconds),
        );
        // No lap timed yet: null, not a lap of 0 s (or of INT_MAX ms).
        for (key, at) in [("last_lap_time", 144), ("best_lap_time", 148)] {
            let time = g.i32(at).filter(|ms| (1..NO_LAP_MS).contains(ms));
            m.insert(key.into(), time.map_or(Value::Null, seconds));
        }
        put(&mut m, "in_pits", g.i32(160).map(|v| json!(v != 0)));
        put(
            &mut m,
            "tyre_compound",
            wide(pages.graphics, 176, 33).map(Value::String),
        );
        let along = g.f32(248).filter(|x| (0.0..=1.0).contains(x));
        let length = s.f32(520).filter(|l| l.is_finite() && *l > 0.0);
        if let (Some(along), Some(length)) = (along, length) {
            m.insert("lap_distance".into(), rounded(along * length, 1));
        }
        self.frame = m;
        true
    }

    /// The car's frame: `None` until the pages were read with the game on.
    pub fn frame(&self) -> Option<Value> {
        (!self.frame.is_empty()).then(|| Value::Object(self.frame.clone()))
    }
}

fn seconds(ms: i32) -> Value {
    rounded(f64::from(ms) / 1000.0, 3)
}

/// `AC_SESSION_TYPE` (ACC adds 7 and 8) as the session's name.
fn session_type(code: i32) -> Option<&'static str> {
    Some(match code {
        0 => "Practice",
        1 => "Qualifying",
        2 => "Race",
        3 => "Hotlap",
        4 => "Time Attack",
        5 => "Drift",
        6 => "Drag",
        7 => "Hotstint",
        8 => "Superpole",
        _ => return None,
    })
}

/// A `wchar_t[len]` at `at`: UTF-16LE up to its first NUL; `None` when empty
/// or past the page's end.
fn wide(page: &[u8], at: usize, len: usize) -> Option<String> {
    let raw = page.get(at..at.checked_add(len * 2)?)?;
    let units = raw
        .chunks_exact(2)
        .map(|u| u16::from_le_bytes([u[0], u[1]]))
        .take_while(|u| *u != 0);
    let text: String = char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Four `f32` at `at` in Kunos's order FL FR RL RR (the schema's), rounded
/// to `digits`; a value not finite is null.
fn four(page: Le, at: usize, digits: i32) -> Value {
    let corner = |i: usize| {
        page.f32(at + 4 * i)
            .filter(|v| v.is_finite())
            .map_or(Value::Null, |v| rounded(v, digits))
    };
    corners(corner(0), corner(1), corner(2), corner(3))
}

/// The pages as a game would write them, each field at its documented offset:
/// the decoder's tests, the fuzzer's seeds and the monitor's stand-in game
/// (tests) build from these.
pub mod build {
    use super::{GRAPHICS_LEN, PHYSICS_LEN, STATIC_LEN};

    /// The lengths the builder writes: ACC's pages are longer than what is
    /// read (physics 800 bytes, graphics 1 588, static 820 in ACC 1.9), and the
    /// extra bytes must not matter.
    pub const PHYSICS: usize = 800;
    pub const GRAPHICS: usize = 1588;
    pub const STATIC: usize = 820;

    const _: () = assert!(PHYSICS >= PHYSICS_LEN && GRAPHICS >= GRAPHICS_LEN);
    const _: () = assert!(STATIC >= STATIC_LEN);

    /// A page being written.
    pub struct Page(pub Vec<u8>);

    impl Page {
        pub fn new(len: usize) -> Self {
            Page(vec![0; len])
        }
        pub fn i32(&mut self, at: usize, v: i32) -> &mut Self {
            self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
            self
        }
        pub fn f32(&mut self, at: usize, v: f32) -> &mut Self {
            self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
            self
        }
        pub fn f32s(&mut self, at: usize, vs: [f32; 4]) -> &mut Self {
            for (i, v) in vs.into_iter().enumerate() {
                self.f32(at + 4 * i, v);
            }
            self
        }
        /// A `wchar_t[33]`: UTF-16LE, NUL-terminated (cut to 32 units).
        pub fn wide(&mut self, at: usize, text: &str) -> &mut Self {
            for (i, unit) in text.encode_utf16().take(32).enumerate() {
                self.0[at + 2 * i..at + 2 * i + 2].copy_from_slice(&unit.to_le_bytes());
            }
            self
        }
    }

    /// A car on lap 4 of a race, third, in third gear, at packet ids
    /// `physics_id` and `graphics_id`.
    pub fn pages(physics_id: i32, graphics_id: i32) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut p = Page::new(PHYSICS);
        p.i32(0, physics_id)
            .f32(4, 0.75) // gas
            .f32(8, 0.125) // brake
            .f32(12, 54.5) // fuel, L
            .i32(16, 4) // third
            .i32(20, 7250)
            .f32(24, -0.25) // steerAngle
            .f32(28, 201.25) // speedKmh
            .f32s(88, [27.5, 27.25, 26.75, 26.5]) // wheelsPressure, psi
            .f32s(152, [85.5, 84.5, 80.25, 79.75]) // tyreCoreTemperature
            .f32(288, 22.5) // airTemp
            .f32(292, 31.25) // roadTemp
            .f32s(348, [450.0, 440.0, 300.0, 290.0]); // brakeTemp
        let mut g = Page::new(GRAPHICS);
        g.i32(0, graphics_id)
            .i32(4, 2) // AC_LIVE
            .i32(8, 2) // AC_RACE
            .i32(132, 3) // completedLaps
            .i32(136, 3) // position
            .i32(140, 42_125) // iCurrentTime
            .i32(144, 104_250) // iLastTime
            .i32(148, 103_875) // iBestTime
            .i32(160, 0) // isInPit
            .wide(176, "dry_compound")
            .f32(248, 0.25); // normalizedCarPosition
        let mut s = Page::new(STATIC);
        s.wide(0, "1.9")
            .wide(30, "1.10.2")
            .wide(68, "porsche_992_gt3_r")
            .wide(134, "Spa")
            .wide(200, "Jöns")
            .wide(266, "Ågren")
            .i32(412, 9250) // maxRpm
            .f32(416, 120.0) // maxFuel
            .f32(520, 7004.0); // trackSPlineLength
        (p.0, g.0, s.0)
    }
}

#[cfg(test)]
mod tests {
    use super::build::{Page, pages};
    use super::*;

    fn consistent<'a>(p: &'a [u8], g: &'a [u8], s: &'a [u8]) -> Pages<'a> {
        Pages {
            physics: p,
            physics_id_after: packet_id(p).unwrap(),
            graphics: g,
            graphics_id_after: packet_id(g).unwrap(),
            statics: s,
        }
    }

    #[test]
    fn the_pages_read_into_the_schema() {
        let (p, g, s) = pages(1000, 500);
        let mut d = Decoder::new("Assetto Corsa Competizione");
        assert!(d.read(consistent(&p, &g, &s)));
        let f = d.frame().unwrap();
        let want = json!({
            "game": "Assetto Corsa Competizione",
            "car_name": "porsche_992_gt3_r", "track_name": "Spa",
            "player_name": "Jöns Ågren",
            "throttle": 0.75, "brake": 0.125, "fuel": 54.5, "fuel_capacity": 120.0,
            "fuel_pct": 0.4542,
            "gear": 3, "rpm": 7250, "max_rpm": 9250, "steering": -0.25, "speed": 201.3,
            "tire_pressures": {"fl": 27.5, "fr": 27.25, "rl": 26.75, "rr": 26.5},
            "tire_temps": {"fl": 85.5, "fr": 84.5, "rl": 80.3, "rr": 79.8},
            "brake_temps": {"fl": 450.0, "fr": 440.0, "rl": 300.0, "rr": 290.0},
            "ambient_temp": 22.5, "track_temp": 31.3,
            "session_type": "Race", "lap": 4, "position": 3,
            "lap_time": 42.125, "last_lap_time": 104.25, "best_lap_time": 103.875,
            "in_pits": false, "tyre_compound": "dry_compound",
            "lap_distance": 1751.0,
        });
        assert_eq!(f, want);
        crate::protocol::payload::validate_object(f.to_string().as_bytes(), 64 * 1024).unwrap();
        assert_eq!(d.counts().read, 1);
    }

    #[test]
    fn reverse_neutral_and_no_lap_yet() {
        let (mut p, mut g, s) = pages(1, 1);
        let mut d = Decoder::new("Assetto Corsa");
        for (raw, want) in [(0, -1), (1, 0), (2, 1)] {
            p[16..20].copy_from_slice(&i32::to_le_bytes(raw));
            p[0..4].copy_from_slice(&i32::to_le_bytes(raw + 10));
            // ACC's INT_MAX and AC's 0 both mean no lap timed.
            let none = if raw == 0 { i32::MAX } else { 0 };
            g[144..148].copy_from_slice(&none.to_le_bytes());
            g[148..152].copy_from_slice(&none.to_le_bytes());
            assert!(d.read(consistent(&p, &g, &s)));
            let f = d.frame().unwrap();
            assert_eq!(f["gear"], want, "gear {raw}");
            assert_eq!(f["game"], "Assetto Corsa");
            assert_eq!(
                (&f["last_lap_time"], &f["best_lap_time"]),
                (&Value::Null, &Value::Null)
            );
        }
    }

    #[test]
    fn a_page_written_under_the_copy_is_counted_and_skipped() {
        let (p, g, s) = pages(7, 3);
        let mut d = Decoder::new("Assetto Corsa Competizione");
        let mut torn = consistent(&p, &g, &s);
        torn.physics_id_after = 8;
        assert!(!d.read(torn));
        let mut torn = consistent(&p, &g, &s);
        torn.graphics_id_after = 4;
        assert!(!d.read(torn));
        assert_eq!(d.frame(), None, "nothing read from a torn page");
        assert!(d.read(consistent(&p, &g, &s)));
        assert_eq!(
            d.counts(),
            Counts {
                read: 1,
                torn: 2,
                ..Counts::default()
            }
        );
    }

    #[test]
    fn a_pause_is_unchanged_and_the_menus_and_replays_are_off() {
        let (p, mut g, s) = pages(7, 3);
        let mut d = Decoder::new("Assetto Corsa Competizione");
        assert!(d.read(consistent(&p, &g, &s)));
        // Paused: the ids stand still, no new frame.
        assert!(!d.read(consistent(&p, &g, &s)));
        // The graphics page moves on (a lap time ticks): a new frame.
        g[0..4].copy_from_slice(&4i32.to_le_bytes());
        assert!(d.read(consistent(&p, &g, &s)));
        g[4..8].copy_from_slice(&STATUS_OFF.to_le_bytes());
        g[0..4].copy_from_slice(&5i32.to_le_bytes());
        assert!(!d.read(consistent(&p, &g, &s)));
        // A replay moves the ids on, but is not the car driven now.
        g[4..8].copy_from_slice(&STATUS_REPLAY.to_le_bytes());
        g[0..4].copy_from_slice(&6i32.to_le_bytes());
        assert!(!d.read(consistent(&p, &g, &s)));
        // Paused (3) is the game on: a new step reads.
        g[4..8].copy_from_slice(&3i32.to_le_bytes());
        g[0..4].copy_from_slice(&7i32.to_le_bytes());
        assert!(d.read(consistent(&p, &g, &s)));
        assert_eq!(
            d.counts(),
            Counts {
                read: 3,
                unchanged: 1,
                off: 2,
                ..Counts::default()
            }
        );
    }

    /// ACC's `fuel` is litres (its document says kg): a full GT3 tank reads
    /// as the 120 L `maxFuel` says it holds, not as 120 kg's 160 L.
    #[test]
    fn fuel_is_litres_as_the_tank_is() {
        let (mut p, g, s) = pages(1, 1);
        p[12..16].copy_from_slice(&120f32.to_le_bytes());
        let mut d = Decoder::new("Assetto Corsa Competizione");
        assert!(d.read(consistent(&p, &g, &s)));
        let f = d.frame().unwrap();
        assert_eq!(
            (&f["fuel"], &f["fuel_capacity"], &f["fuel_pct"]),
            (&json!(120.0), &json!(120.0), &json!(1.0))
        );
        assert_eq!(f.get("fuel_kg"), None, "not a mass");
    }

    #[test]
    fn lap_distance_needs_the_track_length() {
        let (p, g, mut s) = pages(1, 1);
        s[520..524].copy_from_slice(&0f32.to_le_bytes());
        let mut d = Decoder::new("Assetto Corsa");
        assert!(d.read(consistent(&p, &g, &s)));
        assert_eq!(d.frame().unwrap().get("lap_distance"), None);
    }

    /// The fuzzer's seeds (.ci/run copies them into its corpus): the three
    /// pages as the fuzz target reads them (see fuzz/fuzz_targets/acc.rs),
    /// held to the builder here; `PADDOCK_WRITE_FIXTURES=1` rewrites them.
    #[test]
    fn the_fuzz_seeds_are_the_builders_pages() {
        let dir = format!("{}/tests/data/acc", env!("CARGO_MANIFEST_DIR"));
        let (p, g, s) = pages(1000, 500);
        let mut built = Vec::new();
        for page in [&p, &g, &s] {
            built.extend_from_slice(&u32::try_from(page.len()).unwrap().to_le_bytes());
            built.extend_from_slice(page);
        }
        let path = format!("{dir}/pages.bin");
        if std::env::var_os("PADDOCK_WRITE_FIXTURES").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &built).unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), built, "{path}");
    }

    #[test]
    fn short_pages_and_garbage_are_counted_never_read() {
        let (p, g, s) = pages(1, 1);
        let mut d = Decoder::new("Assetto Corsa Competizione");
        assert!(!d.read(consistent(&p[..PHYSICS_LEN - 1], &g, &s)));
        assert!(!d.read(consistent(&p, &g[..GRAPHICS_LEN - 1], &s)));
        assert!(!d.read(Pages {
            physics: &[],
            physics_id_after: 0,
            graphics: &[],
            graphics_id_after: 0,
            statics: &[],
        }));
        assert_eq!(d.counts().short, 3);
        assert_eq!(d.frame(), None);
        // Any bytes of the right lengths read without panic, NaN as null.
        let mut nan = vec![0xff; build::PHYSICS];
        nan[0..4].copy_from_slice(&9i32.to_le_bytes());
        let mut gg = Page::new(build::GRAPHICS);
        gg.i32(4, 2);
        gg.0[176..242].fill(0xd8); // unpaired surrogates
        let junk = vec![0xff; build::STATIC];
        assert!(d.read(consistent(&nan, &gg.0, &junk)));
        let f = d.frame().unwrap();
        assert_eq!(
            (&f["speed"], &f["tire_temps"]["fl"]),
            (&Value::Null, &Value::Null)
        );
        assert!(f["tyre_compound"].as_str().unwrap().starts_with('\u{fffd}'));
        serde_json::to_vec(&f).unwrap();
    }
}
