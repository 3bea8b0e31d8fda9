//! Le Mans Ultimate (and rFactor 2) shared memory: the rF2 shared memory
//! plugin's telemetry and scoring buffers in, the player's car as schema
//! frames out.
//!
//! LMU ships two interfaces. Its own (`LMU_Data`, `SharedMemoryInterface.hpp`
//! in the game's `Support\SharedMemoryInterface`) is one mapping guarded by a
//! lock the reader must take; it also ships and loads TheIronWolf's rFactor 2
//! shared memory plugin (`rFactor2SharedMemoryMapPlugin64.dll`, MIT, enabled
//! by the game's "Enable Plugins" setting), which rFactor 2 itself uses too.
//! This reads the plugin's buffers: a reader never blocks the game, a copy
//! written under it is told by the plugin's version counters, and the same
//! reader serves rFactor 2.
//!
//! The layout is the plugin's `Include/rF2State.h` (github.com/
//! TheIronWolfModding/rF2SharedMemoryMapPlugin): S397's `InternalsPlugin.hpp`
//! structs (`TelemInfoV01`, `ScoringInfoV01`, `VehicleScoringInfoV01`) copied
//! one to one, `#pragma pack(4)`, 64-bit Windows (`long` is 4 bytes, a pointer
//! 8), little-endian. Each mapping starts with a version block the plugin
//! increments around every write (`MappedBuffer.h`): `mVersionUpdateBegin`
//! before it, `mVersionUpdateEnd` after. The offsets below were checked with
//! `offsetof` under mingw-w64 (the Windows ABI) on a transcription of those
//! structs; `TelemInfoV01` is 1,888 bytes and `VehicleScoringInfoV01` 584, as
//! LMU's own header has them too.
//!
//! | buffer | offset | field |
//! |---|---|---|
//! | both | 0, 4 | `u32` mVersionUpdateBegin, mVersionUpdateEnd |
//! | `$rFactor2SMMP_Telemetry$` | 12 | `long` mNumVehicles |
//! | | 16 + 1888·i | `rF2VehicleTelemetry` (below), up to 128 |
//! | `$rFactor2SMMP_Scoring$` | 12 | `rF2ScoringInfo` (below) |
//! | | 560 + 584·i | `rF2VehicleScoring` (below), up to 128 |
//!
//! | struct | offset | field |
//! |---|---|---|
//! | vehicle telemetry | 0 | `long` mID (the slot, as scoring's) |
//! | | 12, 24 | `double` mElapsedTime, mLapStartET (s) |
//! | | 184 | `double[3]` mLocalVel (m/s) |
//! | | 352, 356 | `long` mGear (-1 R, 0 N), `double` mEngineRPM |
//! | | 364, 372 | `double` mEngineWaterTemp, mEngineOilTemp (°C) |
//! | | 388, 396, 404 | `double` mUnfilteredThrottle, Brake (0–1), Steering (−1…1) |
//! | | 524, 532 | `double` mFuel (L), mEngineMaxRPM |
//! | | 608 | `double` mFuelCapacity (L) |
//! | | 620 | `char[18]` mFrontTireCompoundName |
//! | | 848 + 260·w | `TelemWheelV01` FL FR RL RR: 24 mBrakeTemp, 120 mPressure (kPa), 128 mTemperature[3] (K), 152 mWear, 204 mTireCarcassTemperature (K) |
//! | scoring info | 0, 64 | `char[64]` mTrackName, `long` mSession |
//! | | 68, 76 | `double` mCurrentET, mEndET (s) |
//! | | 84 | `long` mMaxLaps |
//! | | 104, 108 | `long` mNumVehicles, `u8` mGamePhase |
//! | | 115 | `bool` mInRealtime (false: at the monitor, the garage screen) |
//! | | 116 | `char[32]` mPlayerName |
//! | | 212, 220 | `double` mDarkCloud, mRaining (0–1) |
//! | | 228, 236 | `double` mAmbientTemp, mTrackTemp (°C) |
//! | | 332 | `double` mAvgPathWetness (0–1) |
//! | vehicle scoring | 0, 4, 36 | `long` mID, `char[32]` mDriverName, `char[64]` mVehicleName |
//! | | 100, 102 | `short` mTotalLaps (completed), `i8` mSector (0 is sector 3) |
//! | | 104 | `double` mLapDist (m along the lap) |
//! | | 144, 168 | `double` mBestLapTime, mLastLapTime (s; ≤ 0 none) |
//! | | 192, 196 | `short` mNumPitstops, `bool` mIsPlayer |
//! | | 198, 199 | `bool` mInPits, `u8` mPlace (1 first) |
//! | | 200 | `char[32]` mVehicleClass |
//! | | 232, 240 | `double` mTimeBehindNext, `long` mLapsBehindNext |
//! | | 244, 252 | `double` mTimeBehindLeader, `long` mLapsBehindLeader |
//! | | 504 | `u8` mFlag (6 blue) |
//!
//! Units as the game gives them, converted once here: tyre pressures in kPa
//! (to psi), tyre and brake temperatures in Kelvin (to °C; the header calls
//! mBrakeTemp Celsius, but the game fills it in Kelvin: 307.6 for a car in the
//! garage on a 29 °C day in the origin's capture, tests/data/
//! origin-telemetry-lmu.json, and CrewChief and TinyPedal convert it too), 0 K
//! meaning no reading (null); mWear is the tread left (1 new), the schema's.
//!
//! The player's car is the scoring vehicle with mIsPlayer; its telemetry is
//! the telemetry vehicle of the same mID (the two arrays need not be in the
//! same order). A buffer shorter than its header is counted and dropped;
//! vehicles past a buffer's end are not read; no value read can panic.

use serde_json::{Map, Value, json};

use super::{Le, corners, kpa_to_psi, put, rounded};

/// The version block every mapping starts with.
pub const VERSIONS_LEN: usize = 8;
/// The telemetry buffer up to its first vehicle.
pub const TELEMETRY_HEADER_LEN: usize = 16;
/// One `rF2VehicleTelemetry` (`TelemInfoV01`).
pub const VEHICLE_TELEMETRY_LEN: usize = 1888;
/// The scoring buffer up to its first vehicle (version block, bytes hint,
/// `rF2ScoringInfo` of 548 bytes).
pub const SCORING_HEADER_LEN: usize = 560;
/// One `rF2VehicleScoring` (`VehicleScoringInfoV01`).
pub const VEHICLE_SCORING_LEN: usize = 584;
/// The plugin maps at most this many vehicles (`MAX_MAPPED_VEHICLES`).
pub const MAX_VEHICLES: usize = 128;
/// The whole mappings, as the plugin creates them.
pub const TELEMETRY_LEN: usize = TELEMETRY_HEADER_LEN + MAX_VEHICLES * VEHICLE_TELEMETRY_LEN;
pub const SCORING_LEN: usize = SCORING_HEADER_LEN + MAX_VEHICLES * VEHICLE_SCORING_LEN;

/// Where a wheel's `TelemWheelV01` starts in a vehicle's telemetry, and its size.
const WHEELS: usize = 848;
const WHEEL_LEN: usize = 260;

/// 0 °C in Kelvin.
const ZERO_CELSIUS: f64 = 273.15;
/// mMaxLaps when the session is not over a distance: rF2 writes a huge number
/// (INT_MAX); no race is this long.
const MOST_LAPS: i32 = 10_000;

/// A mapping's version block: equal counters when no write is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Versions {
    pub begin: u32,
    pub end: u32,
}

impl Versions {
    /// The block `buffer` starts with, if it is long enough to have one.
    pub fn of(buffer: &[u8]) -> Option<Self> {
        let b = Le(buffer);
        Some(Versions {
            begin: b.u32(0)?,
            end: b.u32(4)?,
        })
    }
}

/// One read of the game's two buffers: each copied out of shared memory, with
/// the version block the reader read again once the copy was done.
#[derive(Debug, Clone, Copy)]
pub struct Buffers<'a> {
    pub telemetry: &'a [u8],
    pub telemetry_after: Versions,
    pub scoring: &'a [u8],
    pub scoring_after: Versions,
}

/// What one read came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The player's car, as a new frame.
    Frame,
    /// Nothing written since the last read (paused, or read faster than the
    /// plugin writes: telemetry 50 a second, scoring 5).
    Unchanged,
    /// A buffer written while it was copied: copy again.
    Torn,
    /// No player's car on track: at the monitor (garage screen, menus) or
    /// spectating.
    Off,
    /// A buffer shorter than its header (not the plugin's, or not yet made).
    Short,
}

/// What the decoder has seen, for the monitor's progress line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Reads that made the car's frame.
    pub read: u64,
    /// Reads with no write since the last (paused, or faster than the plugin).
    pub unchanged: u64,
    /// Copies a write landed in (the version block moved): copied again.
    pub torn: u64,
    /// Reads with no car of the player's on track (garage screen, menus).
    pub off: u64,
    /// Buffers shorter than their headers.
    pub short: u64,
}

/// The player's car as the game last described it.
#[derive(Debug, Default)]
pub struct Decoder {
    counts: Counts,
    frame: Map<String, Value>,
    /// The versions of the last buffers read, to tell a new write from none.
    last: Option<(u32, u32)>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Reads the two buffers; [`Read::Frame`] when the car's frame changed.
    pub fn read(&mut self, buffers: Buffers<'_>) -> Read {
        let read = self.read_inner(buffers);
        let c = &mut self.counts;
        match read {
            Read::Frame => c.read += 1,
            Read::Unchanged => c.unchanged += 1,
            Read::Torn => c.torn += 1,
            Read::Off => c.off += 1,
            Read::Short => c.short += 1,
        }
        read
    }

    fn read_inner(&mut self, b: Buffers<'_>) -> Read {
        if b.telemetry.len() < TELEMETRY_HEADER_LEN || b.scoring.len() < SCORING_HEADER_LEN {
            return Read::Short;
        }
        let (Some(telemetry), Some(scoring)) = (Versions::of(b.telemetry), Versions::of(b.scoring))
        else {
            return Read::Short;
        };
        // Whole only if no write was under way when the copy began (the
        // counters equal) and none began before it ended (the same again).
        let whole =
            |copied: Versions, after: Versions| copied.begin == copied.end && copied == after;
        if !whole(telemetry, b.telemetry_after) || !whole(scoring, b.scoring_after) {
            return Read::Torn;
        }
        let (t, s) = (Le(b.telemetry), Le(b.scoring));
        if s.u8(12 + 115) == Some(0) {
            return Read::Off;
        }
        let Some(player) = vehicles(s, 12 + 104, SCORING_HEADER_LEN, VEHICLE_SCORING_LEN)
            .find(|&at| s.u8(at + 196).is_some_and(|p| p != 0))
        else {
            return Read::Off;
        };
        let id = s.i32(player);
        let Some(car) = vehicles(t, 12, TELEMETRY_HEADER_LEN, VEHICLE_TELEMETRY_LEN)
            .find(|&at| t.i32(at) == id)
        else {
            return Read::Off;
        };
        if self.last == Some((telemetry.begin, scoring.begin)) {
            return Read::Unchanged;
        }
        self.last = Some((telemetry.begin, scoring.begin));
        self.frame = frame(t, car, s, player);
        Read::Frame
    }

    /// The car's frame: `None` until the buffers were read with the car on track.
    pub fn frame(&self) -> Option<Value> {
        (!self.frame.is_empty()).then(|| Value::Object(self.frame.clone()))
    }
}

/// The offsets of the vehicles a buffer holds: as many as its count at
/// `count_at` says, at most [`MAX_VEHICLES`], and only those whole in it.
fn vehicles(b: Le<'_>, count_at: usize, first: usize, len: usize) -> impl Iterator<Item = usize> {
    let said = b
        .i32(count_at)
        .map_or(0, |n| usize::try_from(n).unwrap_or(0));
    let fit = b.0.len().saturating_sub(first) / len;
    (0..said.min(MAX_VEHICLES).min(fit)).map(move |i| first + i * len)
}

/// The schema frame of the car whose telemetry is at `car` in `t` and whose
/// scoring is at `v` in `s`.
fn frame(t: Le<'_>, car: usize, s: Le<'_>, v: usize) -> Map<String, Value> {
    const INFO: usize = 12;
    let mut m = Map::new();
    m.insert("game".into(), json!("Le Mans Ultimate"));
    put(&mut m, "car_name", text(s.0, v + 36, 64).map(Value::String));
    put(
        &mut m,
        "car_class",
        text(s.0, v + 200, 32).map(Value::String),
    );
    put(&mut m, "track_name", text(s.0, INFO, 64).map(Value::String));
    let driver = text(s.0, v + 4, 32).or_else(|| text(s.0, INFO + 116, 32));
    put(&mut m, "player_name", driver.map(Value::String));
    let session = s.i32(INFO + 64).and_then(session_type);
    put(&mut m, "session_type", session.map(|t| json!(t)));

    let laps_done = s.i16(v + 100).filter(|l| *l >= 0);
    let lap = laps_done.map(|l| i64::from(l) + 1);
    put(&mut m, "lap", lap.map(|l| json!(l)));
    put(
        &mut m,
        "position",
        s.u8(v + 199).filter(|p| *p > 0).map(|p| json!(p)),
    );
    // The running lap: the car's clock since it last crossed the line
    // (negative before its first crossing, as the schema allows).
    if let (Some(now), Some(start)) = (finite(t.f64(car + 12)), finite(t.f64(car + 24))) {
        m.insert("lap_time".into(), rounded(now - start, 3));
    }
    for (key, at) in [("last_lap_time", v + 168), ("best_lap_time", v + 144)] {
        let time = finite(s.f64(at)).filter(|t| *t > 0.0);
        m.insert(key.into(), time.map_or(Value::Null, |t| rounded(t, 3)));
    }
    let now = finite(s.f64(INFO + 68));
    put(&mut m, "session_time", now.map(|t| rounded(t, 3)));
    if let (Some(now), Some(end)) = (now, finite(s.f64(INFO + 76)).filter(|e| *e > 0.0)) {
        m.insert("session_time_left".into(), rounded((end - now).max(0.0), 3));
    }
    let total = s.i32(INFO + 84).filter(|l| (1..MOST_LAPS).contains(l));
    put(&mut m, "total_laps", total.map(|l| json!(l)));
    // Race laps left, the lap being driven included (as F1's and GT7's).
    if let (Some(total), Some(lap), Some("Race")) = (total, lap, session) {
        m.insert(
            "laps_left".into(),
            json!((i64::from(total) + 1 - lap).max(0)),
        );
    }
    put(
        &mut m,
        "lap_distance",
        finite(s.f64(v + 104)).map(|d| rounded(d.max(0.0), 1)),
    );
    // 0 is sector 3 ("don't ask why", says the header).
    put(
        &mut m,
        "sector",
        s.i8(v + 102).and_then(|x| match x {
            0 => Some(json!(3)),
            1 | 2 => Some(json!(x)),
            _ => None,
        }),
    );
    put(&mut m, "in_pits", s.u8(v + 198).map(|p| json!(p != 0)));
    put(
        &mut m,
        "pit_stops",
        s.i16(v + 192).filter(|n| *n >= 0).map(|n| json!(n)),
    );
    // Gaps in time only while on the same lap as the car ahead (or the leader).
    let place = s.u8(v + 199).unwrap_or(0);
    for (key, time, laps) in [
        ("gap_ahead", v + 232, v + 240),
        ("gap_leader", v + 244, v + 252),
    ] {
        let gap = finite(s.f64(time)).filter(|g| *g >= 0.0);
        if place > 1 && s.i32(laps) == Some(0) {
            put(&mut m, key, gap.map(|g| rounded(g, 3)));
        }
    }
    let flag = match (s.u8(INFO + 108), s.u8(v + 504)) {
        (_, Some(6)) => "blue",
        (Some(6), _) => "yellow",
        _ => "green",
    };
    m.insert("flag".into(), json!(flag));

    let fuel = finite(t.f64(car + 524)).map(|f| f.max(0.0));
    let capacity = finite(t.f64(car + 608)).filter(|c| *c > 0.0);
    put(&mut m, "fuel", fuel.map(|f| rounded(f, 3)));
    put(&mut m, "fuel_capacity", capacity.map(|c| rounded(c, 3)));
    if let (Some(fuel), Some(capacity)) = (fuel, capacity) {
        m.insert("fuel_pct".into(), rounded((fuel / capacity).min(1.0), 4));
    }
    let velocity = [184, 192, 200].map(|at| finite(t.f64(car + at)));
    if let [Some(x), Some(y), Some(z)] = velocity {
        m.insert(
            "speed".into(),
            rounded((x * x + y * y + z * z).sqrt() * 3.6, 1),
        );
    }
    put(&mut m, "gear", t.i32(car + 352).map(|g| json!(g)));
    put(
        &mut m,
        "rpm",
        finite(t.f64(car + 356)).map(|r| rounded(r, 0)),
    );
    put(
        &mut m,
        "max_rpm",
        finite(t.f64(car + 532))
            .filter(|r| *r > 0.0)
            .map(|r| rounded(r, 0)),
    );
    for (key, at) in [("engine_water_temp", 364), ("engine_oil_temp", 372)] {
        put(&mut m, key, finite(t.f64(car + at)).map(|c| rounded(c, 1)));
    }
    for (key, at) in [("throttle", 388), ("brake", 396), ("steering", 404)] {
        put(&mut m, key, finite(t.f64(car + at)).map(|x| rounded(x, 3)));
    }
    put(
        &mut m,
        "tyre_compound",
        text(t.0, car + 620, 18).map(Value::String),
    );

    let wheel = |w: usize, read: &dyn Fn(usize) -> Option<Value>| {
        read(car + WHEELS + w * WHEEL_LEN).unwrap_or(Value::Null)
    };
    let four = |read: &dyn Fn(usize) -> Option<Value>| {
        corners(
            wheel(0, read),
            wheel(1, read),
            wheel(2, read),
            wheel(3, read),
        )
    };
    m.insert(
        "tire_pressures".into(),
        four(&|at| finite(t.f64(at + 120)).map(|kpa| rounded(kpa_to_psi(kpa.max(0.0)), 2))),
    );
    // The tread's left, centre and right, averaged: the surface across it.
    m.insert(
        "tire_temps".into(),
        four(&|at| {
            let [l, c, r] = [128, 136, 144].map(|o| kelvin(t.f64(at + o)));
            Some(rounded((l? + c? + r?) / 3.0, 1))
        }),
    );
    m.insert(
        "tire_carcass_temps".into(),
        four(&|at| kelvin(t.f64(at + 204)).map(|c| rounded(c, 1))),
    );
    m.insert(
        "tire_wear".into(),
        four(&|at| finite(t.f64(at + 152)).map(|w| rounded(w.clamp(0.0, 1.0), 4))),
    );
    m.insert(
        "brake_temps".into(),
        four(&|at| kelvin(t.f64(at + 24)).map(|c| rounded(c, 1))),
    );

    put(
        &mut m,
        "ambient_temp",
        finite(s.f64(INFO + 228)).map(|c| rounded(c, 1)),
    );
    put(
        &mut m,
        "track_temp",
        finite(s.f64(INFO + 236)).map(|c| rounded(c, 1)),
    );
    let mut weather = Map::new();
    for (key, at) in [
        ("raining", 220),
        ("dark_cloud", 212),
        ("track_wetness", 332),
    ] {
        put(
            &mut weather,
            key,
            finite(s.f64(INFO + at)).map(|x| rounded(x.clamp(0.0, 1.0), 3)),
        );
    }
    if !weather.is_empty() {
        m.insert("weather".into(), Value::Object(weather));
    }
    m
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
}

/// A temperature in Kelvin as °C; 0 K (or below, or not a number) is no reading.
fn kelvin(k: Option<f64>) -> Option<f64> {
    finite(k).filter(|k| *k > 0.0).map(|k| k - ZERO_CELSIUS)
}

/// `mSession` as the session's name (0 test day, 1–4 practice, 5–8
/// qualifying, 9 warm-up, 10–13 race).
fn session_type(code: i32) -> Option<&'static str> {
    Some(match code {
        0 => "Test Day",
        1..=4 => "Practice",
        5..=8 => "Qualifying",
        9 => "Warmup",
        10..=13 => "Race",
        _ => return None,
    })
}

/// A `char[len]` at `at`: up to its first NUL, trimmed; `None` when empty or
/// past the end. The game writes UTF-8 or the Windows code page: bytes that
/// are not UTF-8 are read as Latin-1, so a name is never lost to them.
fn text(buffer: &[u8], at: usize, len: usize) -> Option<String> {
    let raw = buffer.get(at..at.checked_add(len)?)?;
    let raw = &raw[..raw.iter().position(|b| *b == 0).unwrap_or(len)];
    let text = match std::str::from_utf8(raw) {
        Ok(text) => text.to_string(),
        Err(_) => raw.iter().map(|b| char::from(*b)).collect(),
    };
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// The buffers as the plugin would write them, each field at its documented
/// offset: the decoder's tests, the fuzzer's seeds and the monitor's tests
/// build from these.
pub mod build {
    use super::{
        SCORING_HEADER_LEN, TELEMETRY_HEADER_LEN, VEHICLE_SCORING_LEN, VEHICLE_TELEMETRY_LEN,
        WHEEL_LEN, WHEELS,
    };

    /// A buffer being written.
    pub struct Buffer(pub Vec<u8>);

    impl Buffer {
        pub fn new(len: usize) -> Self {
            Buffer(vec![0; len])
        }
        pub fn u8(&mut self, at: usize, v: u8) -> &mut Self {
            self.0[at] = v;
            self
        }
        pub fn i16(&mut self, at: usize, v: i16) -> &mut Self {
            self.0[at..at + 2].copy_from_slice(&v.to_le_bytes());
            self
        }
        pub fn i32(&mut self, at: usize, v: i32) -> &mut Self {
            self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
            self
        }
        pub fn u32(&mut self, at: usize, v: u32) -> &mut Self {
            self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
            self
        }
        pub fn f64(&mut self, at: usize, v: f64) -> &mut Self {
            self.0[at..at + 8].copy_from_slice(&v.to_le_bytes());
            self
        }
        /// A `char[]`: the text's bytes, NUL-terminated by the zeros after.
        pub fn text(&mut self, at: usize, text: &str) -> &mut Self {
            self.0[at..at + text.len()].copy_from_slice(text.as_bytes());
            self
        }
        /// The version block: `begin` and `end` as given (equal when whole).
        pub fn versions(&mut self, begin: u32, end: u32) -> &mut Self {
            self.u32(0, begin).u32(4, end)
        }
    }

    /// The player's slot id: the third car in scoring, the first in
    /// telemetry (the arrays need not agree on order).
    pub const PLAYER_ID: i32 = 7;

    /// A race at Imola, three cars, the player's on lap 5 of 30, second, at
    /// write counts `telemetry_version` and `scoring_version`. Each buffer is
    /// as long as its three cars (the game's are longer: the rest is unread).
    pub fn race(telemetry_version: u32, scoring_version: u32) -> (Vec<u8>, Vec<u8>) {
        let mut t = Buffer::new(TELEMETRY_HEADER_LEN + 3 * VEHICLE_TELEMETRY_LEN);
        t.versions(telemetry_version, telemetry_version).i32(12, 3);
        for (i, id) in [PLAYER_ID, 3, 5].into_iter().enumerate() {
            t.i32(TELEMETRY_HEADER_LEN + i * VEHICLE_TELEMETRY_LEN, id);
        }
        let car = TELEMETRY_HEADER_LEN;
        t.f64(car + 12, 1234.5) // mElapsedTime
            .f64(car + 24, 1200.25) // mLapStartET
            .text(car + 32, "DKR Engineering #3:ELMS25")
            .f64(car + 184, 30.0) // mLocalVel: (30, 0, -40) is 50 m/s
            .f64(car + 192, 0.0)
            .f64(car + 200, -40.0)
            .i32(car + 352, 5)
            .f64(car + 356, 7654.4)
            .f64(car + 364, 88.25)
            .f64(car + 372, 101.5)
            .f64(car + 388, 0.875)
            .f64(car + 396, 0.0625)
            .f64(car + 404, -0.125)
            .f64(car + 524, 41.25)
            .f64(car + 532, 8500.0)
            .f64(car + 608, 75.0)
            .text(car + 620, "Medium");
        let wheels = [
            // mBrakeTemp (K), mPressure (kPa), mTemperature[3] (K), mWear, carcass (K)
            (873.15, 186.0, [363.15, 366.15, 369.15], 0.93, 370.15),
            (863.15, 187.0, [362.15, 365.15, 368.15], 0.92, 369.15),
            (773.15, 180.0, [353.15, 356.15, 359.15], 0.95, 360.15),
            (0.0, 181.0, [0.0, 0.0, 0.0], 0.96, 359.15),
        ];
        for (w, (brake, pressure, temps, wear, carcass)) in wheels.into_iter().enumerate() {
            let at = car + WHEELS + w * WHEEL_LEN;
            t.f64(at + 24, brake)
                .f64(at + 120, pressure)
                .f64(at + 128, temps[0])
                .f64(at + 136, temps[1])
                .f64(at + 144, temps[2])
                .f64(at + 152, wear)
                .f64(at + 204, carcass);
        }

        let mut s = Buffer::new(SCORING_HEADER_LEN + 3 * VEHICLE_SCORING_LEN);
        const INFO: usize = 12;
        s.versions(scoring_version, scoring_version)
            .text(INFO, "Autodromo Enzo e Dino Ferrari")
            .i32(INFO + 64, 10) // race
            .f64(INFO + 68, 1234.0)
            .f64(INFO + 76, 0.0) // no time limit
            .i32(INFO + 84, 30)
            .i32(INFO + 104, 3)
            .u8(INFO + 108, 5) // green flag
            .u8(INFO + 115, 1) // in realtime
            .text(INFO + 116, "A. Driver")
            .f64(INFO + 212, 0.5)
            .f64(INFO + 220, 0.125)
            .f64(INFO + 228, 28.9)
            .f64(INFO + 236, 40.31)
            .f64(INFO + 332, 0.25);
        for (i, (id, place)) in [(3, 1u8), (5, 3), (PLAYER_ID, 2)].into_iter().enumerate() {
            let v = SCORING_HEADER_LEN + i * VEHICLE_SCORING_LEN;
            s.i32(v, id).u8(v + 199, place);
        }
        let v = SCORING_HEADER_LEN + 2 * VEHICLE_SCORING_LEN;
        s.text(v + 4, "Jöns Ågren")
            .text(v + 36, "DKR Engineering #3:ELMS25")
            .i16(v + 100, 4) // laps completed
            .u8(v + 102, 2) // sector 2
            .f64(v + 104, 1523.25)
            .f64(v + 144, 101.5)
            .f64(v + 168, 102.125)
            .i16(v + 192, 1)
            .u8(v + 196, 1) // the player
            .u8(v + 198, 0)
            .text(v + 200, "LMP2_ELMS")
            .f64(v + 232, 1.5)
            .i32(v + 240, 0)
            .f64(v + 244, 1.5)
            .i32(v + 252, 0);
        (t.0, s.0)
    }
}

#[cfg(test)]
mod tests {
    use super::build::{Buffer, race};
    use super::*;

    fn whole<'a>(t: &'a [u8], s: &'a [u8]) -> Buffers<'a> {
        Buffers {
            telemetry: t,
            telemetry_after: Versions::of(t).unwrap(),
            scoring: s,
            scoring_after: Versions::of(s).unwrap(),
        }
    }

    #[test]
    fn the_buffers_read_into_the_schema() {
        let (t, s) = race(100, 20);
        let mut d = Decoder::new();
        assert_eq!(d.read(whole(&t, &s)), Read::Frame);
        let f = d.frame().unwrap();
        let want = json!({
            "game": "Le Mans Ultimate",
            "car_name": "DKR Engineering #3:ELMS25", "car_class": "LMP2_ELMS",
            "track_name": "Autodromo Enzo e Dino Ferrari", "player_name": "Jöns Ågren",
            "session_type": "Race", "lap": 5, "position": 2, "lap_time": 34.25,
            "last_lap_time": 102.125, "best_lap_time": 101.5, "session_time": 1234.0,
            "total_laps": 30, "laps_left": 26, "lap_distance": 1523.3, "sector": 2,
            "in_pits": false, "pit_stops": 1, "gap_ahead": 1.5, "gap_leader": 1.5,
            "flag": "green",
        });
        // In two: one json! of it all is past the macro's recursion limit.
        let car = json!({
            "fuel": 41.25, "fuel_capacity": 75.0, "fuel_pct": 0.55,
            "speed": 180.0, "gear": 5, "rpm": 7654.0, "max_rpm": 8500.0,
            "engine_water_temp": 88.3, "engine_oil_temp": 101.5,
            "throttle": 0.875, "brake": 0.063, "steering": -0.125,
            "tyre_compound": "Medium",
            // kPa as psi, Kelvin as °C (0 K: no reading), wear as the tread left.
            "tire_pressures": {"fl": 26.98, "fr": 27.12, "rl": 26.11, "rr": 26.25},
            "tire_temps": {"fl": 93.0, "fr": 92.0, "rl": 83.0, "rr": null},
            "tire_carcass_temps": {"fl": 97.0, "fr": 96.0, "rl": 87.0, "rr": 86.0},
            "tire_wear": {"fl": 0.93, "fr": 0.92, "rl": 0.95, "rr": 0.96},
            "brake_temps": {"fl": 600.0, "fr": 590.0, "rl": 500.0, "rr": null},
            "ambient_temp": 28.9, "track_temp": 40.3,
            "weather": {"raining": 0.125, "dark_cloud": 0.5, "track_wetness": 0.25},
        });
        let mut want = want.as_object().unwrap().clone();
        want.extend(car.as_object().unwrap().clone());
        assert_eq!(f, Value::Object(want));
        crate::protocol::payload::validate_object(f.to_string().as_bytes(), 64 * 1024).unwrap();
        assert_eq!(d.counts().read, 1);
    }

    /// The origin's Python monitor read the same car (tests/data/
    /// origin-telemetry-lmu.json): what it sent raw (kPa, Kelvin, the tread
    /// left) arrives here in the schema's units, and the fields it had are
    /// all here.
    #[test]
    fn the_frame_carries_what_the_origin_monitor_sent_in_the_schemas_units() {
        let origin: Value =
            serde_json::from_str(include_str!("../../tests/data/origin-telemetry-lmu.json"))
                .unwrap();
        let (t, s) = race(1, 1);
        let mut d = Decoder::new();
        d.read(whole(&t, &s));
        let f = d.frame().unwrap();
        for key in origin["telemetry"].as_object().unwrap().keys() {
            if key != "timestamp" {
                assert!(f.get(key).is_some(), "{key} missing from {f}");
            }
        }
        // The garage's brake temperature, 307.576 K: 34.4 °C, as the gateway has it.
        let (mut t, s) = race(2, 2);
        let at = TELEMETRY_HEADER_LEN + WHEELS + 24;
        t[at..at + 8].copy_from_slice(&307.576_263_427_734_4f64.to_le_bytes());
        d.read(whole(&t, &s));
        assert_eq!(d.frame().unwrap()["brake_temps"]["fl"], json!(34.4));
    }

    #[test]
    fn a_buffer_written_under_the_copy_is_torn_until_copied_whole() {
        let (t, s) = race(10, 4);
        let mut d = Decoder::new();
        // A telemetry write began after the copy (begin moved on).
        let mut torn = whole(&t, &s);
        torn.telemetry_after = Versions { begin: 11, end: 10 };
        assert_eq!(d.read(torn), Read::Torn);
        // A scoring write was under way as the copy began (begin ahead of end).
        let mut s2 = Buffer(s.clone());
        s2.versions(5, 4);
        let mut torn = whole(&t, &s2.0);
        torn.scoring_after = Versions { begin: 5, end: 5 };
        assert_eq!(d.read(torn), Read::Torn);
        assert_eq!(d.frame(), None, "nothing read from a torn copy");
        assert_eq!(d.read(whole(&t, &s)), Read::Frame);
        assert_eq!(d.read(whole(&t, &s)), Read::Unchanged);
        assert_eq!(
            d.counts(),
            Counts {
                read: 1,
                unchanged: 1,
                torn: 2,
                ..Counts::default()
            }
        );
    }

    #[test]
    fn at_the_monitor_or_without_a_player_car_it_is_off() {
        let (t, s) = race(1, 1);
        let mut d = Decoder::new();
        let mut garage = Buffer(s.clone());
        garage.u8(12 + 115, 0);
        assert_eq!(d.read(whole(&t, &garage.0)), Read::Off);
        // Spectating: no car is the player's.
        let mut spectating = Buffer(s.clone());
        spectating.u8(SCORING_HEADER_LEN + 2 * VEHICLE_SCORING_LEN + 196, 0);
        assert_eq!(d.read(whole(&t, &spectating.0)), Read::Off);
        // The player's car not (yet) in telemetry.
        let mut t2 = Buffer(t.clone());
        t2.i32(TELEMETRY_HEADER_LEN, 99);
        assert_eq!(d.read(whole(&t2.0, &s)), Read::Off);
        assert_eq!(d.counts().off, 3);
        assert_eq!(d.frame(), None);
    }

    #[test]
    fn no_lap_yet_no_laps_limit_and_a_time_limit() {
        let (t, s) = race(1, 1);
        let mut s = Buffer(s);
        let v = SCORING_HEADER_LEN + 2 * VEHICLE_SCORING_LEN;
        s.f64(v + 144, -1.0)
            .f64(v + 168, 0.0)
            .i32(12 + 84, i32::MAX)
            .f64(12 + 76, 1234.0 + 3600.0)
            .i32(12 + 64, 6);
        let mut d = Decoder::new();
        assert_eq!(d.read(whole(&t, &s.0)), Read::Frame);
        let f = d.frame().unwrap();
        assert_eq!(
            (&f["last_lap_time"], &f["best_lap_time"]),
            (&Value::Null, &Value::Null)
        );
        assert_eq!(f.get("total_laps"), None);
        assert_eq!(f.get("laps_left"), None);
        assert_eq!(f["session_time_left"], 3600.0);
        assert_eq!(f["session_type"], "Qualifying");
    }

    /// The fuzzer's seeds (.ci/run copies them into its corpus): the two
    /// buffers as the fuzz target reads them (see fuzz/fuzz_targets/lmu.rs),
    /// held to the builder here; `PADDOCK_WRITE_FIXTURES=1` rewrites them.
    #[test]
    fn the_fuzz_seeds_are_the_builders_buffers() {
        let dir = format!("{}/tests/data/lmu", env!("CARGO_MANIFEST_DIR"));
        let (t, s) = race(100, 20);
        let mut built = Vec::new();
        for buffer in [&t, &s] {
            built.extend_from_slice(&u32::try_from(buffer.len()).unwrap().to_le_bytes());
            built.extend_from_slice(buffer);
        }
        let path = format!("{dir}/buffers.bin");
        if std::env::var_os("PADDOCK_WRITE_FIXTURES").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &built).unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), built, "{path}");
    }

    #[test]
    fn short_buffers_lying_counts_and_garbage_never_panic() {
        let (t, s) = race(1, 1);
        let mut d = Decoder::new();
        assert_eq!(
            d.read(whole(&t[..TELEMETRY_HEADER_LEN - 1], &s)),
            Read::Short
        );
        assert_eq!(d.read(whole(&t, &s[..SCORING_HEADER_LEN - 1])), Read::Short);
        // Counts that claim more cars than the buffers hold: only whole cars read.
        let mut lying = Buffer(s.clone());
        lying.i32(12 + 104, i32::MAX);
        let mut lying_t = Buffer(t.clone());
        lying_t.i32(12, 1000);
        assert_eq!(d.read(whole(&lying_t.0, &lying.0)), Read::Frame);
        // A player car cut off mid-record is not read.
        let cut = &s[..s.len() - 1];
        assert_eq!(d.read(whole(&t, cut)), Read::Off);
        // Any bytes of the right lengths: NaN as null, bad text kept.
        let mut junk_t = vec![0xff; t.len()];
        junk_t[..8].fill(0);
        junk_t[12..16].copy_from_slice(&1i32.to_le_bytes());
        junk_t[16..20].copy_from_slice(&build::PLAYER_ID.to_le_bytes());
        let mut junk_s = Buffer(vec![0xff; s.len()]);
        junk_s
            .versions(0, 0)
            .i32(12 + 104, 1)
            .i32(SCORING_HEADER_LEN, build::PLAYER_ID);
        assert_eq!(d.read(whole(&junk_t, &junk_s.0)), Read::Frame);
        let f = d.frame().unwrap();
        assert_eq!(f["speed"], Value::Null);
        assert_eq!(f["tire_temps"]["fl"], Value::Null);
        assert!(f["car_name"].as_str().unwrap().starts_with('ÿ'));
        serde_json::to_vec(&f).unwrap();
    }
}
