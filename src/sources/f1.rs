//! EA F1 24 and F1 25 UDP telemetry: packets in, the player's car as schema
//! frames and its setup out, and every car on track as the field
//! (docs/field.schema.json) from the lap data, participants and car status
//! packets, which carry all 22 cars.
//!
//! Written from EA's published specs ("Data Output from F1 24 v27.2x", "F1 25
//! UDP specification"), held to real captures under tests/data/f1-24 and
//! tests/data/f1-25 (MIT, see their LICENSE files). Our own decoder rather than
//! a parser crate: `f1-game-packet-parser` reads 22–24 and
//! `f1-game-library-models-25` reads 25 only, each into its own type tree, and
//! we read a few dozen fields of seven packets; the two formats differ in two
//! of them (participants' name length, damage's blisters), which is a table
//! here, not two dependencies.
//!
//! The game sends every packet little-endian, packed, after a 29-byte header:
//!
//! | offset | field |
//! |---|---|
//! | 0 | `u16` packet format (2024, 2025) |
//! | 6 | `u8` packet id |
//! | 7 | `u64` session UID (changes with each new game session) |
//! | 15 | `f32` session time (s) |
//! | 27 | `u8` player car index |
//!
//! Per-wheel arrays are in the game's order RL, RR, FL, FR; they leave here
//! keyed `fl fr rl rr`.
//!
//! Nothing here trusts a packet: a short read, a length other than the spec's
//! for its format and id, or a player index past the cars is counted and the
//! packet dropped; no value read can panic.

use serde_json::{Map, Value, json};

use super::{Le as Bytes, corners, put, rounded};

/// The header every packet starts with.
pub const HEADER_LEN: usize = 29;
/// Cars in a packet's per-car arrays (F1 24 and 25).
pub const CARS: usize = 22;
/// Litres per kilogram of fuel: the game gives fuel as mass (kg), the schema
/// in litres; 0.75 kg/L is the density of racing petrol the FIA's range
/// (0.72–0.775) centres on. `fuel_kg` keeps the game's own figure.
pub const FUEL_DENSITY_KG_PER_L: f64 = 0.75;

/// The packet ids read here (EA's numbering).
mod id {
    pub(super) const SESSION: u8 = 1;
    pub(super) const LAP_DATA: u8 = 2;
    pub(super) const PARTICIPANTS: u8 = 4;
    pub(super) const CAR_SETUPS: u8 = 5;
    pub(super) const CAR_TELEMETRY: u8 = 6;
    pub(super) const CAR_STATUS: u8 = 7;
    pub(super) const CAR_DAMAGE: u8 = 10;
    /// Ids 0–15 exist (15: lap positions, F1 25); the rest are not read.
    pub(super) const LAST_KNOWN: u8 = 15;
}

/// A packet format this decoder reads, and the layout differences between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    F1_24,
    F1_25,
}

impl Format {
    fn of(packet_format: u16) -> Option<Self> {
        match packet_format {
            2024 => Some(Format::F1_24),
            2025 => Some(Format::F1_25),
            _ => None,
        }
    }

    /// The spec's total length of a packet read here, header included.
    fn length(self, packet_id: u8) -> Option<usize> {
        Some(match (packet_id, self) {
            (id::SESSION, _) => 753,
            (id::LAP_DATA, _) => 1285,
            (id::PARTICIPANTS, Format::F1_24) => 1350,
            (id::PARTICIPANTS, Format::F1_25) => 1284,
            (id::CAR_SETUPS, _) => 1133,
            (id::CAR_TELEMETRY, _) => 1352,
            (id::CAR_STATUS, _) => 1239,
            (id::CAR_DAMAGE, Format::F1_24) => 953,
            (id::CAR_DAMAGE, Format::F1_25) => 1041,
            _ => return None,
        })
    }

    /// One car's bytes in a per-car packet, and where the cars start after the header.
    fn car_layout(self, packet_id: u8) -> Option<(usize, usize)> {
        Some(match (packet_id, self) {
            (id::LAP_DATA, _) => (57, 0),
            // After `numActiveCars`.
            (id::PARTICIPANTS, Format::F1_24) => (60, 1),
            (id::PARTICIPANTS, Format::F1_25) => (57, 1),
            (id::CAR_SETUPS, _) => (50, 0),
            (id::CAR_TELEMETRY, _) => (60, 0),
            (id::CAR_STATUS, _) => (55, 0),
            (id::CAR_DAMAGE, Format::F1_24) => (42, 0),
            (id::CAR_DAMAGE, Format::F1_25) => (46, 0),
            _ => return None,
        })
    }

    fn name_len(self) -> usize {
        match self {
            Format::F1_24 => 48,
            Format::F1_25 => 32,
        }
    }

    pub fn year(self) -> u16 {
        match self {
            Format::F1_24 => 2024,
            Format::F1_25 => 2025,
        }
    }
}

/// What the decoder has seen, for the monitor's progress line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Packets read into the car's state.
    pub read: u64,
    /// Well-formed packets of ids not read here (motion, events, history, …).
    pub ignored: u64,
    /// Packets of another format (F1 23, a future game) or not F1 at all.
    pub other_format: u64,
    /// Too short, of the wrong length for their id, or naming no car.
    pub malformed: u64,
}

impl Counts {
    /// Packets dropped as not readable (other formats and malformed).
    pub fn rejected(&self) -> u64 {
        self.other_format + self.malformed
    }
}

/// What one packet changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The car's frame changed: send it (at most `--hz`).
    pub frame: bool,
    /// The car's setup changed: send it.
    pub setup: bool,
    /// The header's session UID changed: the game started another session
    /// (the state read so far was cleared first).
    pub new_session: bool,
    /// The field changed (lap data, participants or car status): send it
    /// (at most `--field-hz`).
    pub field: bool,
}

/// The player's car as the game last described it, packet by packet.
#[derive(Debug, Default)]
pub struct Decoder {
    counts: Counts,
    session_uid: Option<u64>,
    format: Option<Format>,
    /// Each packet kind's fields, replaced whole by the next packet of that kind.
    lap: Map<String, Value>,
    telemetry: Map<String, Value>,
    status: Map<String, Value>,
    damage: Map<String, Value>,
    session: Map<String, Value>,
    names: Map<String, Value>,
    setup: Option<Value>,
    /// The fastest `last_lap_time` seen this session (lap data carries no best).
    best_lap_time: Option<f64>,
    /// The last lap data, participants and car status packets' bodies, whole:
    /// every car's part is read into the field when it is asked for (a few
    /// times a second), not on each of the game's 60 packets a second.
    field_lap: Option<Vec<u8>>,
    field_names: Option<Vec<u8>>,
    field_status: Option<Vec<u8>>,
    /// Each car's fastest `last_lap_time` this session, as for the player's.
    best_laps: [Option<f64>; CARS],
    /// The player's car index in the last packet.
    player: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The format of the last packet read, if any.
    pub fn format(&self) -> Option<Format> {
        self.format
    }

    /// The game session the last packet read belongs to.
    pub fn session_uid(&self) -> Option<u64> {
        self.session_uid
    }

    /// The car's setup as last sent by the game (setups packet).
    pub fn setup(&self) -> Option<&Value> {
        self.setup.as_ref()
    }

    /// Reads one UDP datagram.
    pub fn read(&mut self, packet: &[u8]) -> Outcome {
        let mut outcome = Outcome::default();
        let header = match Header::parse(packet) {
            Ok(header) => header,
            Err(Reject::OtherFormat) => {
                self.counts.other_format += 1;
                return outcome;
            }
            Err(Reject::Malformed) => {
                self.counts.malformed += 1;
                return outcome;
            }
        };
        let Some(length) = header.format.length(header.packet_id) else {
            if header.packet_id <= id::LAST_KNOWN {
                self.counts.ignored += 1;
            } else {
                self.counts.malformed += 1;
            }
            return outcome;
        };
        let player = usize::from(header.player);
        if packet.len() != length || player >= CARS {
            self.counts.malformed += 1;
            return outcome;
        }
        // UID 0 is the game's menus and replays; only a change between real
        // sessions is a new one.
        if header.session_uid != 0 && self.session_uid != Some(header.session_uid) {
            if self.session_uid.is_some_and(|uid| uid != 0) {
                self.clear();
                outcome.new_session = true;
            }
            self.session_uid = Some(header.session_uid);
        }
        self.format = Some(header.format);
        self.player = player;
        self.counts.read += 1;
        let body = &packet[HEADER_LEN..];
        let car = |packet_id| {
            let (size, start) = header.format.car_layout(packet_id)?;
            let at = start + player * size;
            body.get(at..at + size).map(Bytes)
        };
        match header.packet_id {
            id::SESSION => {
                self.session = session(Bytes(body));
                outcome.frame = true;
            }
            id::LAP_DATA => {
                for (i, best) in self.best_laps.iter_mut().enumerate() {
                    let last = Bytes(body).u32(i * 57).filter(|ms| *ms > 0);
                    if let Some(last) = last.map(|ms| f64::from(ms) / 1000.0)
                        && best.is_none_or(|b| last < b)
                    {
                        *best = Some(last);
                    }
                }
                self.field_lap = Some(body.to_vec());
                outcome.field = true;
                if let Some(car) = car(id::LAP_DATA) {
                    self.lap = lap_data(car);
                    let last = self.lap.get("last_lap_time").and_then(Value::as_f64);
                    if let Some(last) = last.filter(|t| *t > 0.0)
                        && self.best_lap_time.is_none_or(|best| last < best)
                    {
                        self.best_lap_time = Some(last);
                    }
                    outcome.frame = true;
                }
            }
            id::PARTICIPANTS => {
                self.field_names = Some(body.to_vec());
                outcome.field = true;
                if let Some(car) = car(id::PARTICIPANTS) {
                    self.names = participant(car, header.format);
                    outcome.frame = true;
                }
            }
            id::CAR_SETUPS => {
                if let Some(car) = car(id::CAR_SETUPS) {
                    let setup = car_setup(car);
                    if self.setup.as_ref() != Some(&setup) {
                        self.setup = Some(setup);
                        outcome.setup = true;
                    }
                }
            }
            id::CAR_TELEMETRY => {
                if let Some(car) = car(id::CAR_TELEMETRY) {
                    self.telemetry = car_telemetry(car);
                    outcome.frame = true;
                }
            }
            id::CAR_STATUS => {
                self.field_status = Some(body.to_vec());
                outcome.field = true;
                if let Some(car) = car(id::CAR_STATUS) {
                    self.status = car_status(car);
                    outcome.frame = true;
                }
            }
            id::CAR_DAMAGE => {
                if let Some(car) = car(id::CAR_DAMAGE) {
                    self.damage = car_damage(car, header.format);
                    outcome.frame = true;
                }
            }
            _ => {}
        }
        outcome
    }

    /// The car's frame: every reading the game has sent, in the schema. `None`
    /// until a lap data or telemetry packet has been read (names and the
    /// weather alone are not a car on track).
    pub fn frame(&self) -> Option<Value> {
        if self.lap.is_empty() && self.telemetry.is_empty() {
            return None;
        }
        let mut frame = Map::new();
        for part in [
            &self.session,
            &self.names,
            &self.lap,
            &self.telemetry,
            &self.status,
            &self.damage,
        ] {
            frame.extend(part.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(best) = self.best_lap_time {
            frame.insert("best_lap_time".into(), rounded(best, 3));
        }
        // Race laps left, the lap being driven included: what the strategy's
        // fuel to the finish multiplies (PROTOCOL.md "Stints and strategy").
        let total = frame.get("total_laps").and_then(Value::as_u64);
        let lap = frame.get("lap").and_then(Value::as_u64);
        let race = frame
            .get("session_type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.starts_with("Race"));
        if let (true, Some(total), Some(lap)) = (race, total, lap)
            && total > 0
        {
            frame.insert("laps_left".into(), json!((total + 1).saturating_sub(lap)));
        }
        if let Some(format) = self.format {
            frame.insert("game".into(), json!(format!("F1 {}", format.year() % 100)));
        }
        Some(Value::Object(frame))
    }

    /// Every car on track (docs/field.schema.json), by position: `None` until
    /// a lap data packet has been read. Names and tyres join as their packets
    /// come. Cars the game marks invalid or inactive (empty grid slots) are
    /// not in it; retired ones are, with their status.
    pub fn field(&self) -> Option<Value> {
        let format = self.format?;
        let laps = Bytes(self.field_lap.as_deref()?);
        let names = self.field_names.as_deref().map(Bytes);
        let status = self.field_status.as_deref().map(Bytes);
        fn part(
            format: Format,
            packet: Option<Bytes<'_>>,
            packet_id: u8,
            i: usize,
        ) -> Option<Bytes<'_>> {
            let (size, start) = format.car_layout(packet_id)?;
            let at = start + i * size;
            packet?.0.get(at..at + size).map(Bytes)
        }
        let part = |packet, packet_id, i| part(format, packet, packet_id, i);
        let mut cars: Vec<(u8, usize, Value)> = Vec::with_capacity(CARS);
        for i in 0..CARS {
            let Some(lap) = part(Some(laps), id::LAP_DATA, i) else {
                continue;
            };
            // 0 invalid, 1 inactive: no car there.
            let result = lap.u8(45).unwrap_or(0);
            let position = lap.u8(32).unwrap_or(0);
            // A position past the grid is no position (a packet the game did
            // not fill, or not the game's).
            if result < 2 || position == 0 || usize::from(position) > CARS {
                continue;
            }
            let pit_status = lap.u8(34).unwrap_or(0);
            let in_garage = lap.u8(44) == Some(0);
            let state = match result {
                3 => "finished",
                4..=7 => "retired",
                _ if pit_status != 0 => "pitting",
                _ => "running",
            };
            let time = |ms: Option<u16>, min: Option<u8>| split_time(ms, min);
            let sector = |s: Option<Value>| s.filter(|v| v.as_f64() != Some(0.0));
            let last = lap.u32(0).filter(|ms| *ms > 0);
            let mut car = json!({
                "index": i,
                "position": position,
                "class": Value::Null,
                "class_position": position,
                "lap": lap.u8(33),
                "lap_distance": lap.f32(20).filter(|d| *d >= 0.0).map(|d| rounded(d, 1)),
                "last_lap": last.map(|ms| rounded(f64::from(ms) / 1000.0, 3)),
                "best_lap": self.best_laps[i].map(|t| rounded(t, 3)),
                "sector_times": [
                    sector(time(lap.u16(8), lap.u8(10))),
                    sector(time(lap.u16(11), lap.u8(13))),
                    Value::Null
                ],
                "gap_leader": time(lap.u16(17), lap.u8(19)),
                "interval": time(lap.u16(14), lap.u8(16)),
                "in_pits": pit_status != 0 || in_garage,
                "pit_stops": lap.u8(35),
                "penalties_s": lap.u8(38),
                "status": state,
                "player": i == self.player,
            });
            if let Some(p) = part(names, id::PARTICIPANTS, i) {
                // At most 64 bytes, as the field takes (a 48-byte name of
                // replacement characters would be 144).
                car["driver"] = p
                    .name(7, format.name_len())
                    .map_or(Value::Null, |n| Value::String(cut(n, 64)));
                car["team"] = p.u8(3).map_or(Value::Null, |t| json!(team(t)));
                car["race_number"] = p.u8(5).map_or(Value::Null, |n| json!(n));
            }
            if let Some(s) = part(status, id::CAR_STATUS, i) {
                car["tyre"] = s.u8(26).map_or(Value::Null, |c| json!(visual_compound(c)));
                car["tyre_age_laps"] = s.u8(27).map_or(Value::Null, |n| json!(n));
            }
            cars.push((position, i, car));
        }
        cars.sort_by_key(|(position, i, _)| (*position, *i));
        let mut field = json!({
            "game": format!("F1 {}", format.year() % 100),
            "cars": cars.into_iter().map(|(_, _, car)| car).collect::<Vec<_>>(),
        });
        if let Some(length) = self.session.get("track_length") {
            field["track_length"] = length.clone();
        }
        Some(field)
    }

    fn clear(&mut self) {
        let counts = self.counts;
        *self = Decoder {
            counts,
            ..Decoder::default()
        };
    }
}

enum Reject {
    OtherFormat,
    Malformed,
}

struct Header {
    format: Format,
    packet_id: u8,
    session_uid: u64,
    player: u8,
}

impl Header {
    fn parse(packet: &[u8]) -> Result<Self, Reject> {
        let bytes = Bytes(packet);
        let packet_format = bytes.u16(0).ok_or(Reject::Malformed)?;
        let format = Format::of(packet_format).ok_or(Reject::OtherFormat)?;
        if packet.len() < HEADER_LEN {
            return Err(Reject::Malformed);
        }
        Ok(Header {
            format,
            packet_id: bytes.u8(6).ok_or(Reject::Malformed)?,
            session_uid: bytes.u64(7).ok_or(Reject::Malformed)?,
            player: bytes.u8(27).ok_or(Reject::Malformed)?,
        })
    }
}

/// F1's own reads beside the shared ones.
impl Bytes<'_> {
    /// Four wheel values at `at`, `step` bytes apart, in the game's RL RR FL FR
    /// order, as schema corners.
    fn wheels(self, at: usize, step: usize, read: impl Fn(Self, usize) -> Option<Value>) -> Value {
        let wheel = |i: usize| read(self, at + i * step).unwrap_or(Value::Null);
        corners(wheel(2), wheel(3), wheel(0), wheel(1))
    }
    /// A NUL-terminated UTF-8 name of at most `len` bytes.
    fn name(self, at: usize, len: usize) -> Option<String> {
        let raw = self.0.get(at..at + len)?;
        let end = raw.iter().position(|b| *b == 0).unwrap_or(len);
        let name = String::from_utf8_lossy(&raw[..end]).trim().to_string();
        (!name.is_empty()).then_some(name)
    }
}

/// `text` cut to at most `max` bytes, at a character's edge.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut at = max;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
}

/// Milliseconds plus whole minutes (the spec splits longer times) as seconds.
fn split_time(ms: Option<u16>, minutes: Option<u8>) -> Option<Value> {
    let s = f64::from(ms?) / 1000.0 + f64::from(minutes?) * 60.0;
    Some(rounded(s, 3))
}

fn lap_data(car: Bytes) -> Map<String, Value> {
    let mut m = Map::new();
    let seconds = |ms: Option<u32>| ms.map(|ms| rounded(f64::from(ms) / 1000.0, 3));
    // 0 ms: no lap completed yet.
    let last = car.u32(0).filter(|ms| *ms > 0);
    m.insert("last_lap_time".into(), seconds(last).unwrap_or(Value::Null));
    put(&mut m, "lap_time", seconds(car.u32(4)));
    let (s1, s2) = (
        split_time(car.u16(8), car.u8(10)),
        split_time(car.u16(11), car.u8(13)),
    );
    // The running lap's sectors so far (0: not reached).
    let sector_time =
        |s: Option<Value>| s.filter(|v| v.as_f64() != Some(0.0)).unwrap_or(Value::Null);
    m.insert(
        "sector_times".into(),
        json!([sector_time(s1), sector_time(s2), Value::Null]),
    );
    put(&mut m, "gap_ahead", split_time(car.u16(14), car.u8(16)));
    put(&mut m, "gap_leader", split_time(car.u16(17), car.u8(19)));
    put(&mut m, "lap_distance", car.f32(20).map(|d| rounded(d, 1)));
    put(&mut m, "position", car.u8(32).map(|p| json!(p)));
    put(&mut m, "lap", car.u8(33).map(|l| json!(l)));
    let pit_status = car.u8(34);
    put(
        &mut m,
        "pit_status",
        pit_status.map(|p| {
            json!(
                ["none", "pitting", "in_pit_area"]
                    .get(usize::from(p))
                    .copied()
                    .unwrap_or("unknown")
            )
        }),
    );
    put(&mut m, "pit_stops", car.u8(35).map(|n| json!(n)));
    put(
        &mut m,
        "sector",
        car.u8(36).map(|s| json!(s.saturating_add(1))),
    );
    put(&mut m, "lap_invalid", car.u8(37).map(|b| json!(b != 0)));
    put(&mut m, "penalties_s", car.u8(38).map(|s| json!(s)));
    put(&mut m, "warnings", car.u8(39).map(|n| json!(n)));
    put(
        &mut m,
        "corner_cutting_warnings",
        car.u8(40).map(|n| json!(n)),
    );
    put(
        &mut m,
        "unserved_drive_throughs",
        car.u8(41).map(|n| json!(n)),
    );
    put(&mut m, "unserved_stop_gos", car.u8(42).map(|n| json!(n)));
    put(&mut m, "grid_position", car.u8(43).map(|n| json!(n)));
    let driver_status = car.u8(44);
    put(
        &mut m,
        "driver_status",
        driver_status.map(|d| {
            json!(
                ["in_garage", "flying_lap", "in_lap", "out_lap", "on_track"]
                    .get(usize::from(d))
                    .copied()
                    .unwrap_or("unknown")
            )
        }),
    );
    // In the pit lane (pitting or in the pit area) or in the garage.
    if let (Some(pit), Some(driver)) = (pit_status, driver_status) {
        m.insert("in_pits".into(), json!(pit != 0 || driver == 0));
    }
    put(
        &mut m,
        "pit_lane_time",
        car.u16(47).map(|ms| rounded(f64::from(ms) / 1000.0, 3)),
    );
    put(
        &mut m,
        "pit_stop_time",
        car.u16(49).map(|ms| rounded(f64::from(ms) / 1000.0, 3)),
    );
    put(
        &mut m,
        "speed_trap",
        car.f32(52)
            .filter(|s| *s > 0.0 && *s < 1000.0)
            .map(|s| rounded(s, 1)),
    );
    m
}

fn car_telemetry(car: Bytes) -> Map<String, Value> {
    let mut m = Map::new();
    put(&mut m, "speed", car.u16(0).map(|s| json!(s)));
    put(&mut m, "throttle", car.f32(2).map(|t| rounded(t, 3)));
    put(&mut m, "steering", car.f32(6).map(|t| rounded(t, 3)));
    put(&mut m, "brake", car.f32(10).map(|t| rounded(t, 3)));
    put(&mut m, "clutch", car.u8(14).map(|c| json!(c)));
    put(&mut m, "gear", car.i8(15).map(|g| json!(g)));
    put(&mut m, "rpm", car.u16(16).map(|r| json!(r)));
    put(&mut m, "drs", car.u8(18).map(|d| json!(d != 0)));
    m.insert(
        "brake_temps".into(),
        car.wheels(22, 2, |b, at| b.u16(at).map(|t| json!(t))),
    );
    m.insert(
        "tire_temps".into(),
        car.wheels(30, 1, |b, at| b.u8(at).map(|t| json!(t))),
    );
    m.insert(
        "tire_carcass_temps".into(),
        car.wheels(34, 1, |b, at| b.u8(at).map(|t| json!(t))),
    );
    put(&mut m, "engine_temp", car.u16(38).map(|t| json!(t)));
    m.insert(
        "tire_pressures".into(),
        car.wheels(40, 4, |b, at| b.f32(at).map(|p| rounded(p, 2))),
    );
    m
}

fn car_status(car: Bytes) -> Map<String, Value> {
    let mut m = Map::new();
    put(&mut m, "traction_control", car.u8(0).map(|n| json!(n)));
    put(&mut m, "abs", car.u8(1).map(|n| json!(n != 0)));
    put(
        &mut m,
        "fuel_mix",
        car.u8(2).map(|n| {
            json!(
                ["lean", "standard", "rich", "max"]
                    .get(usize::from(n))
                    .copied()
                    .unwrap_or("unknown")
            )
        }),
    );
    put(&mut m, "brake_bias", car.u8(3).map(|n| json!(n)));
    put(&mut m, "pit_limiter", car.u8(4).map(|n| json!(n != 0)));
    let litres = |kg: f64| rounded(kg / FUEL_DENSITY_KG_PER_L, 3);
    put(&mut m, "fuel", car.f32(5).map(litres));
    put(&mut m, "fuel_kg", car.f32(5).map(|kg| rounded(kg, 3)));
    put(&mut m, "fuel_capacity", car.f32(9).map(litres));
    put(
        &mut m,
        "fuel_capacity_kg",
        car.f32(9).map(|kg| rounded(kg, 3)),
    );
    put(
        &mut m,
        "fuel_laps_remaining",
        car.f32(13).map(|l| rounded(l, 2)),
    );
    put(&mut m, "max_rpm", car.u16(17).map(|n| json!(n)));
    put(&mut m, "drs_allowed", car.u8(22).map(|n| json!(n != 0)));
    put(
        &mut m,
        "tyre_compound_actual",
        car.u8(25).map(|c| json!(actual_compound(c))),
    );
    put(
        &mut m,
        "tyre_compound",
        car.u8(26).map(|c| json!(visual_compound(c))),
    );
    put(&mut m, "tyre_age_laps", car.u8(27).map(|n| json!(n)));
    put(
        &mut m,
        "flag",
        car.i8(28).map(|f| match f {
            0 => Value::Null,
            1 => json!("green"),
            2 => json!("blue"),
            3 => json!("yellow"),
            _ => Value::Null,
        }),
    );
    put(&mut m, "ers_store", car.f32(37).map(|j| rounded(j, 0)));
    m
}

fn car_damage(car: Bytes, format: Format) -> Map<String, Value> {
    let mut m = Map::new();
    // The game's wear is percent worn; the schema's is the tread left, 1 new.
    m.insert(
        "tire_wear".into(),
        car.wheels(0, 4, |b, at| {
            b.f32(at)
                .filter(|w| w.is_finite())
                .map(|w| rounded((1.0 - w / 100.0).clamp(0.0, 1.0), 4))
        }),
    );
    m.insert(
        "tire_damage_pct".into(),
        car.wheels(16, 1, |b, at| b.u8(at).map(|d| json!(d))),
    );
    m.insert(
        "brake_damage_pct".into(),
        car.wheels(20, 1, |b, at| b.u8(at).map(|d| json!(d))),
    );
    let parts = match format {
        Format::F1_24 => 24,
        Format::F1_25 => {
            m.insert(
                "tire_blisters".into(),
                car.wheels(24, 1, |b, at| b.u8(at).map(|d| json!(d))),
            );
            28
        }
    };
    let mut damage = Map::new();
    for (i, part) in [
        "front_left_wing",
        "front_right_wing",
        "rear_wing",
        "floor",
        "diffuser",
        "sidepod",
    ]
    .iter()
    .enumerate()
    {
        put(&mut damage, part, car.u8(parts + i).map(|d| json!(d)));
    }
    put(&mut damage, "gearbox", car.u8(parts + 8).map(|d| json!(d)));
    put(&mut damage, "engine", car.u8(parts + 9).map(|d| json!(d)));
    m.insert("damage_pct".into(), Value::Object(damage));
    m
}

fn participant(car: Bytes, format: Format) -> Map<String, Value> {
    let mut m = Map::new();
    put(
        &mut m,
        "player_name",
        car.name(7, format.name_len()).map(Value::String),
    );
    put(&mut m, "car_name", car.u8(3).map(|t| json!(team(t))));
    put(&mut m, "race_number", car.u8(5).map(|n| json!(n)));
    m
}

fn car_setup(car: Bytes) -> Value {
    let u8_ = |at| car.u8(at).map_or(Value::Null, |v| json!(v));
    let f32_ = |at, digits| car.f32(at).map_or(Value::Null, |v| rounded(v, digits));
    json!({
        "front_wing": u8_(0),
        "rear_wing": u8_(1),
        "diff_on_throttle": u8_(2),
        "diff_off_throttle": u8_(3),
        "front_camber": f32_(4, 2),
        "rear_camber": f32_(8, 2),
        "front_toe": f32_(12, 2),
        "rear_toe": f32_(16, 2),
        "front_suspension": u8_(20),
        "rear_suspension": u8_(21),
        "front_anti_roll_bar": u8_(22),
        "rear_anti_roll_bar": u8_(23),
        "front_ride_height": u8_(24),
        "rear_ride_height": u8_(25),
        "brake_pressure": u8_(26),
        "brake_bias": u8_(27),
        "engine_braking": u8_(28),
        "tire_pressures": car.wheels(29, 4, |b, at| b.f32(at).map(|p| rounded(p, 2))),
        "ballast": u8_(45),
        "fuel_load_kg": f32_(46, 2),
    })
}

fn session(body: Bytes) -> Map<String, Value> {
    let mut m = Map::new();
    put(
        &mut m,
        "weather",
        body.u8(0).map(|w| {
            json!(
                [
                    "clear",
                    "light_cloud",
                    "overcast",
                    "light_rain",
                    "heavy_rain",
                    "storm"
                ]
                .get(usize::from(w))
                .copied()
                .unwrap_or("unknown")
            )
        }),
    );
    put(&mut m, "track_temp", body.i8(1).map(|t| json!(t)));
    put(&mut m, "ambient_temp", body.i8(2).map(|t| json!(t)));
    put(&mut m, "total_laps", body.u8(3).map(|n| json!(n)));
    put(&mut m, "track_length", body.u16(4).map(|n| json!(n)));
    put(
        &mut m,
        "session_type",
        body.u8(6).map(|t| json!(session_type(t))),
    );
    put(&mut m, "track_name", body.i8(7).map(|t| json!(track(t))));
    put(&mut m, "session_time_left", body.u16(9).map(|s| json!(s)));
    put(&mut m, "session_duration", body.u16(11).map(|s| json!(s)));
    put(&mut m, "pit_speed_limit", body.u8(13).map(|s| json!(s)));
    put(
        &mut m,
        "safety_car",
        body.u8(124).map(|s| {
            json!(
                ["none", "full", "virtual", "formation_lap"]
                    .get(usize::from(s))
                    .copied()
                    .unwrap_or("unknown")
            )
        }),
    );
    // 0: no window (not a race, or no stop needed).
    let lap = |at| {
        body.u8(at)
            .map(|l| if l == 0 { Value::Null } else { json!(l) })
    };
    put(&mut m, "pit_window_ideal_lap", lap(653));
    put(&mut m, "pit_window_latest_lap", lap(654));
    m
}

fn team(id: u8) -> String {
    let name = match id {
        0 => "Mercedes",
        1 => "Ferrari",
        2 => "Red Bull Racing",
        3 => "Williams",
        4 => "Aston Martin",
        5 => "Alpine",
        6 => "RB",
        7 => "Haas",
        8 => "McLaren",
        9 => "Sauber",
        41 => "F1 Generic",
        104 => "F1 Custom Team",
        255 => "",
        _ => return format!("team {id}"),
    };
    name.to_string()
}

fn track(id: i8) -> String {
    let name = match id {
        0 => "Melbourne",
        1 => "Paul Ricard",
        2 => "Shanghai",
        3 => "Sakhir",
        4 => "Catalunya",
        5 => "Monaco",
        6 => "Montreal",
        7 => "Silverstone",
        8 => "Hockenheim",
        9 => "Hungaroring",
        10 => "Spa",
        11 => "Monza",
        12 => "Singapore",
        13 => "Suzuka",
        14 => "Abu Dhabi",
        15 => "Texas",
        16 => "Brazil",
        17 => "Austria",
        18 => "Sochi",
        19 => "Mexico",
        20 => "Baku",
        21 => "Sakhir Short",
        22 => "Silverstone Short",
        23 => "Texas Short",
        24 => "Suzuka Short",
        25 => "Hanoi",
        26 => "Zandvoort",
        27 => "Imola",
        28 => "Portimão",
        29 => "Jeddah",
        30 => "Miami",
        31 => "Las Vegas",
        32 => "Losail",
        39 => "Silverstone Reverse",
        40 => "Austria Reverse",
        41 => "Zandvoort Reverse",
        _ => return format!("track {id}"),
    };
    name.to_string()
}

fn session_type(id: u8) -> &'static str {
    match id {
        1 => "Practice 1",
        2 => "Practice 2",
        3 => "Practice 3",
        4 => "Short Practice",
        5 => "Qualifying 1",
        6 => "Qualifying 2",
        7 => "Qualifying 3",
        8 => "Short Qualifying",
        9 => "One-Shot Qualifying",
        10 => "Sprint Shootout 1",
        11 => "Sprint Shootout 2",
        12 => "Sprint Shootout 3",
        13 => "Short Sprint Shootout",
        14 => "One-Shot Sprint Shootout",
        15 => "Race",
        16 => "Race 2",
        17 => "Race 3",
        18 => "Time Trial",
        _ => "Unknown",
    }
}

fn visual_compound(id: u8) -> &'static str {
    match id {
        16 => "soft",
        17 => "medium",
        18 => "hard",
        7 => "inter",
        8 => "wet",
        9 => "classic dry",
        10 => "classic wet",
        15 => "wet",
        19 => "super soft",
        20 => "soft",
        21 => "medium",
        22 => "hard",
        _ => "unknown",
    }
}

fn actual_compound(id: u8) -> &'static str {
    match id {
        16 => "C5",
        17 => "C4",
        18 => "C3",
        19 => "C2",
        20 => "C1",
        21 => "C0",
        22 => "C6",
        7 => "inter",
        8 => "wet",
        9 => "classic dry",
        10 => "classic wet",
        11 => "super soft",
        12 => "soft",
        13 => "medium",
        14 => "hard",
        15 => "wet",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(path: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    /// Reads a capture set in the order the game sends a frame's packets.
    fn read_all(dir: &str, files: &[&str]) -> Decoder {
        let mut decoder = Decoder::new();
        for file in files {
            decoder.read(&capture(&format!("{dir}/{file}.bin")));
        }
        decoder
    }

    #[test]
    fn real_f1_24_packets_read_into_the_schema() {
        let d = read_all("f1-24", &["01", "02", "04", "05", "06", "07", "10", "00"]);
        assert_eq!(
            d.counts(),
            Counts {
                read: 7,
                ignored: 1,
                other_format: 0,
                malformed: 0
            }
        );
        assert_eq!(d.format(), Some(Format::F1_24));
        let f = d.frame().unwrap();
        for (key, want) in [
            ("game", json!("F1 24")),
            ("player_name", json!("LECLERC")),
            ("car_name", json!("Ferrari")),
            ("track_name", json!("Sakhir")),
            ("session_type", json!("Race")),
            ("lap", json!(1)),
            ("position", json!(1)),
            ("total_laps", json!(5)),
            ("laps_left", json!(5)),
            ("session_time_left", json!(7200)),
            ("fuel_kg", json!(13.2)),
            ("fuel", json!(17.6)),
            ("fuel_capacity", json!(146.667)),
            ("rpm", json!(3535)),
            ("tyre_compound", json!("soft")),
            ("tyre_compound_actual", json!("C3")),
            ("in_pits", json!(false)),
            ("last_lap_time", Value::Null),
        ] {
            assert_eq!(f[key], want, "{key}");
        }
        assert_eq!(
            f["tire_pressures"],
            json!({"fl": 29.5, "fr": 29.5, "rl": 26.5, "rr": 26.5})
        );
        let setup = d.setup().unwrap();
        assert_eq!(setup["fuel_load_kg"], 10.0);
        assert_eq!(setup["front_camber"], -3.5);
        assert_eq!(setup["tire_pressures"]["rl"], 26.5);
        crate::protocol::payload::validate_object(f.to_string().as_bytes(), 64 * 1024).unwrap();
    }

    #[test]
    fn real_f1_25_packets_read_into_the_schema_with_corners_in_order() {
        let d = read_all(
            "f1-25",
            &[
                "Session",
                "LapData",
                "Participants",
                "CarSetups",
                "CarTelemetry",
                "CarStatus",
                "CarDamage",
                "Motion",
            ],
        );
        assert_eq!(d.counts().read, 7);
        let f = d.frame().unwrap();
        assert_eq!(
            (
                &f["player_name"],
                &f["car_name"],
                &f["track_name"],
                &f["game"]
            ),
            (
                &json!("RUSSELL"),
                &json!("Mercedes"),
                &json!("Monza"),
                &json!("F1 25")
            )
        );
        assert_eq!(
            (&f["speed"], &f["gear"], &f["lap_time"]),
            (&json!(41), &json!(1), &json!(1.675))
        );
        assert_eq!(
            (&f["pit_window_ideal_lap"], &f["pit_window_latest_lap"]),
            (&json!(8), &json!(13))
        );
        // The game's RL RR FL FR: the rears run hotter and softer here.
        assert_eq!(
            f["tire_temps"],
            json!({"fl": 70, "fr": 70, "rl": 79, "rr": 79})
        );
        assert_eq!(
            f["tire_pressures"],
            json!({"fl": 24.45, "fr": 24.45, "rl": 21.96, "rr": 21.96})
        );
        assert_eq!(
            f["tire_wear"],
            json!({"fl": 1.0, "fr": 1.0, "rl": 0.9958, "rr": 0.9958})
        );
        assert_eq!(f["fuel_kg"], 38.789);
        assert_eq!(d.setup().unwrap()["fuel_load_kg"], 39.0);
    }

    #[test]
    fn real_packets_give_the_whole_field() {
        let mut fields = Vec::new();
        for (dir, files) in [
            ("f1-24", ["01", "02", "04", "07"]),
            ("f1-25", ["Session", "LapData", "Participants", "CarStatus"]),
        ] {
            let d = read_all(dir, &files);
            let field = d.field().unwrap();
            fields.push(field);
        }
        // The captures' grids: 20 cars (two of the 22 slots empty), by position.
        let row = |f: &Value, i: usize| {
            let c = &f["cars"][i];
            (
                c["position"].as_u64().unwrap(),
                c["index"].as_u64().unwrap(),
                c["driver"].as_str().unwrap().to_string(),
                c["race_number"].as_u64().unwrap(),
                c["player"].as_bool().unwrap(),
                c["tyre"].as_str().unwrap().to_string(),
            )
        };
        let f24 = &fields[0];
        assert_eq!(f24["cars"].as_array().unwrap().len(), 20);
        assert_eq!(
            (&f24["game"], &f24["track_length"]),
            (&json!("F1 24"), &json!(5408))
        );
        assert_eq!(
            row(f24, 0),
            (1, 19, "LECLERC".into(), 16, true, "soft".into())
        );
        assert_eq!(
            row(f24, 1),
            (2, 1, "SAINZ".into(), 55, false, "soft".into())
        );
        assert_eq!(row(f24, 19).2, "SARGEANT");
        let f25 = &fields[1];
        assert_eq!(f25["cars"].as_array().unwrap().len(), 20);
        assert_eq!(f25["track_length"], 5798);
        assert_eq!(
            row(f25, 2),
            (3, 17, "HAMILTON".into(), 44, false, "hard".into())
        );
        assert_eq!(
            row(f25, 3),
            (4, 19, "RUSSELL".into(), 63, true, "medium".into())
        );
        assert_eq!(row(f25, 19).2, "BEARMAN");
        for f in &fields {
            let positions: Vec<u64> = (0..20).map(|i| row(f, i).0).collect();
            assert_eq!(positions, (1..=20).collect::<Vec<_>>());
            assert!(
                f["cars"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| c["status"] == "running")
            );
        }
    }

    /// The race of tests/data/f1-25-race: packets built by f1-packets (an
    /// implementation of EA's layouts other than this one; how, in
    /// make-field.py there) and the field each tick should give, worked out
    /// by that script from the race it scripted, not from this decoder.
    #[test]
    fn a_race_built_by_f1_packets_gives_its_field_exactly() {
        let mut d = Decoder::new();
        for tick in 1..=3 {
            for packet in ["LapData", "Participants", "CarStatus"] {
                let outcome = d.read(&capture(&format!("f1-25-race/tick{tick}-{packet}.bin")));
                assert!(outcome.field, "tick {tick}: {packet} read");
            }
            let want: Value =
                serde_json::from_slice(&capture(&format!("f1-25-race/tick{tick}-field.json")))
                    .unwrap();
            let got = d.field().unwrap();
            // Car by car first, so a difference names its car.
            let (got_cars, want_cars) = (
                got["cars"].as_array().unwrap(),
                want["cars"].as_array().unwrap(),
            );
            assert_eq!(got_cars.len(), 22, "tick {tick}");
            for (g, w) in got_cars.iter().zip(want_cars) {
                assert_eq!(g, w, "tick {tick}, P{}", w["position"]);
            }
            assert_eq!(got, want, "tick {tick}");
            // And it is a field the processor keeps.
            crate::protocol::field::Field::parse(got.to_string().as_bytes()).unwrap();
        }
        assert_eq!(d.counts().read, 9);
        // f1-packets' own format (2026, 24 cars) is another game's: counted,
        // not read.
        d.read(&capture("f1-25-race/2026-LapData.bin"));
        assert_eq!((d.counts().read, d.counts().other_format), (9, 1));
    }

    #[test]
    fn a_field_needs_lap_data_and_follows_each_car() {
        let mut d = Decoder::new();
        assert!(d.read(&capture("f1-25/Participants.bin")).field);
        assert_eq!(d.field(), None, "names alone are not a field");
        let mut lap = capture("f1-25/LapData.bin");
        // Car 5 (P2) retires; car 11 (P1) pits after a 1:30.000 lap.
        let car = |i: usize| HEADER_LEN + i * 57;
        lap[car(5) + 45] = 7;
        lap[car(11) + 34] = 1;
        lap[car(11)..car(11) + 4].copy_from_slice(&90_000u32.to_le_bytes());
        assert!(d.read(&lap).field);
        let field = d.field().unwrap();
        let cars = field["cars"].as_array().unwrap();
        assert_eq!(cars[0]["index"], 11);
        assert_eq!(
            (
                &cars[0]["status"],
                &cars[0]["in_pits"],
                &cars[0]["best_lap"]
            ),
            (&json!("pitting"), &json!(true), &json!(90.0))
        );
        assert_eq!(
            (&cars[1]["index"], &cars[1]["status"]),
            (&json!(5), &json!("retired"))
        );
        assert_eq!(cars[0].get("tyre"), None, "no car status read yet");
    }

    #[test]
    fn garbage_is_counted_never_read() {
        let mut d = Decoder::new();
        let telemetry = capture("f1-25/CarTelemetry.bin");
        assert_eq!(d.read(&[]), Outcome::default());
        d.read(&[0xe9]);
        d.read(&telemetry[..100]);
        let mut f1_23 = telemetry.clone();
        f1_23[..2].copy_from_slice(&2023u16.to_le_bytes());
        d.read(&f1_23);
        let mut no_car = telemetry.clone();
        no_car[27] = 22;
        d.read(&no_car);
        let mut unknown = telemetry.clone();
        unknown[6] = 200;
        d.read(&unknown);
        d.read(b"hello, this is not a game");
        assert_eq!(
            d.counts(),
            Counts {
                read: 0,
                ignored: 0,
                other_format: 2,
                malformed: 5
            }
        );
        assert_eq!(d.frame(), None);
        assert!(d.read(&telemetry).frame);
        assert_eq!(d.frame().unwrap()["speed"], 41);
    }

    #[test]
    fn a_new_game_session_clears_the_car() {
        let mut d = Decoder::new();
        let lap = capture("f1-25/LapData.bin");
        assert!(!d.read(&lap).new_session);
        let mut other = capture("f1-25/CarTelemetry.bin");
        other[7..15].copy_from_slice(&42u64.to_le_bytes());
        let outcome = d.read(&other);
        assert!(outcome.new_session && outcome.frame);
        assert_eq!(d.session_uid(), Some(42));
        assert_eq!(
            d.frame().unwrap().get("lap"),
            None,
            "lap data of the old session is gone"
        );
    }
}
