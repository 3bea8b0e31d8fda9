//! Assetto Corsa Competizione's broadcasting API: datagrams in, the field
//! (every car on track, docs/field.schema.json) and the focused car as a frame
//! out; the requests the API answers built as bytes. Sans-I/O: the monitor
//! (cmd/acc_broadcast.rs) owns the socket, the pacing and re-registering.
//!
//! Not ACC's shared memory (sources/acc.rs, Windows beside the game): this is
//! UDP to the game, any OS, enabled in the game's `broadcasting.json`
//! (`updListenerPort`, 9000 by default; `connectionPassword`). Written from the
//! message layouts of Kunos' broadcasting SDK (`BroadcastingNetworkProtocol`,
//! protocol version 4), little-endian, strings as a `u16` byte count and UTF-8:
//!
//! | to the game | bytes |
//! |---|---|
//! | register (1) | `u8` 1, `u8` version 4, string display name, string connection password, `i32` update interval (ms), string command password |
//! | unregister (9) | `u8` 9, `i32` connection id |
//! | entry list (10), track data (11) | `u8` 10 or 11, `i32` connection id |
//!
//! | from the game | bytes after the `u8` type |
//! |---|---|
//! | registration result (1) | `i32` connection id, `u8` success, `u8` writable, string error |
//! | realtime update (2) | `u16` event, `u16` session, `u8` session type, `u8` phase, `f32` session time (ms), `f32` end time (ms), `i32` focused car, 3 strings (camera set, camera, HUD page), `u8` replay (then 2 `f32`), `f32` time of day, `u8` ambient °C, `u8` track °C, `u8` clouds, rain, wetness (tenths), lap |
//! | realtime car update (3) | `u16` car, `u16` driver index, `u8` driver count, `u8` gear (+2), `f32` x, y, yaw, `u8` location (1 track, 2 pit lane, 3 pit entry, 4 pit exit), `u16` km/h, `u16` position, cup position, track position, `f32` spline (0-1), `u16` laps, `i32` delta (ms), lap best, last, current |
//! | entry list (4) | `i32` connection id, `u16` n, n × `u16` car id |
//! | track data (5) | `i32` connection id, string track, `i32` track id, `i32` metres, camera sets and HUD pages (not read) |
//! | entry list car (6) | `u16` car id, `u8` model, string team, `i32` race number, `u8` cup, `u8` current driver, `u16` nationality, `u8` n, n × (first, last, short name strings, `u8` category, `u16` nationality) |
//! | broadcasting event (7) | `u8` type, string message, `i32` time (ms), `i32` car id |
//!
//! A lap is `i32` ms (`i32::MAX`: none), `u16` car, `u16` driver, `u8` n,
//! n × `i32` split (ms; `i32::MAX`: none), `u8` invalid, `u8` valid for best,
//! `u8` out-lap, `u8` in-lap.
//!
//! The API gives positions and distances, not gaps: the field's gaps here are
//! the distance between two cars along the track (laps and spline) at the
//! pace of the car behind (its best lap, else its last), an estimate that a
//! pit wall reads as ACC's own standings do. It says nothing of tyres or
//! retirements; pit stops are counted here, one each time a car goes from the
//! track into the pit lane.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{put, rounded};

/// The protocol version this reads (the SDK's `BROADCASTING_PROTOCOL_VERSION`).
pub const PROTOCOL_VERSION: u8 = 4;
/// Cars kept at most: entries past it are not read (the field holds 128).
pub const MAX_CARS: usize = 128;
/// Longest string read into a name (bytes); longer ones are cut.
const MAX_NAME: usize = 64;

mod inbound {
    pub(super) const REGISTRATION_RESULT: u8 = 1;
    pub(super) const REALTIME_UPDATE: u8 = 2;
    pub(super) const REALTIME_CAR_UPDATE: u8 = 3;
    pub(super) const ENTRY_LIST: u8 = 4;
    pub(super) const TRACK_DATA: u8 = 5;
    pub(super) const ENTRY_LIST_CAR: u8 = 6;
    pub(super) const BROADCASTING_EVENT: u8 = 7;
}

mod outbound {
    pub(super) const REGISTER: u8 = 1;
    pub(super) const UNREGISTER: u8 = 9;
    pub(super) const REQUEST_ENTRY_LIST: u8 = 10;
    pub(super) const REQUEST_TRACK_DATA: u8 = 11;
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The registration the game answers with a connection id: `interval_ms`
/// is how often it sends every car's realtime update.
pub fn register(
    display_name: &str,
    connection_password: &str,
    interval_ms: i32,
    command_password: &str,
) -> Vec<u8> {
    let mut out = vec![outbound::REGISTER, PROTOCOL_VERSION];
    put_string(&mut out, display_name);
    put_string(&mut out, connection_password);
    out.extend_from_slice(&interval_ms.to_le_bytes());
    put_string(&mut out, command_password);
    out
}

fn with_connection(kind: u8, connection_id: i32) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&connection_id.to_le_bytes());
    out
}

/// Asks for the entry list (the cars, then each car's entry).
pub fn request_entry_list(connection_id: i32) -> Vec<u8> {
    with_connection(outbound::REQUEST_ENTRY_LIST, connection_id)
}

/// Asks for the track's name and length.
pub fn request_track_data(connection_id: i32) -> Vec<u8> {
    with_connection(outbound::REQUEST_TRACK_DATA, connection_id)
}

/// Ends the registration (the game stops sending).
pub fn unregister(connection_id: i32) -> Vec<u8> {
    with_connection(outbound::UNREGISTER, connection_id)
}

/// A reader over one datagram that says `None` past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f32(&mut self) -> Option<f32> {
        self.take(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Option<String> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        let text = String::from_utf8_lossy(&bytes[..len.min(4 * MAX_NAME)]);
        let mut text = text.trim().to_string();
        if text.len() > MAX_NAME {
            let mut at = MAX_NAME;
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.truncate(at);
        }
        Some(text)
    }
    /// A lap: its time and splits, in seconds (`None`: no time).
    fn lap(&mut self) -> Option<Lap> {
        let time = ms(self.i32()?);
        let _car = self.u16()?;
        let _driver = self.u16()?;
        let n = self.u8()?;
        let mut splits = Vec::with_capacity(usize::from(n).min(8));
        for _ in 0..n {
            let split = ms(self.i32()?);
            if splits.len() < 8 {
                splits.push(split);
            }
        }
        let invalid = self.u8()? != 0;
        // Valid for best, out-lap, in-lap: not read.
        self.take(3)?;
        Some(Lap {
            time,
            splits,
            invalid,
        })
    }
}

/// Milliseconds as seconds; `i32::MAX` (the API's "none") and negatives are none.
fn ms(ms: i32) -> Option<f64> {
    (ms > 0 && ms != i32::MAX).then(|| f64::from(ms) / 1000.0)
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Lap {
    time: Option<f64>,
    splits: Vec<Option<f64>>,
    invalid: bool,
}

/// One car's entry (entry list car).
#[derive(Debug, Clone, Default)]
struct Entry {
    model: u8,
    team: String,
    race_number: i32,
    /// Driver names in the order the game indexes them.
    drivers: Vec<String>,
    current_driver: u8,
}

/// One car's latest realtime update.
#[derive(Debug, Clone, Default)]
struct Realtime {
    driver: u16,
    gear: i32,
    location: u8,
    kmh: u16,
    position: u16,
    spline: f32,
    laps: u16,
    best: Lap,
    last: Lap,
    current: Lap,
}

#[derive(Debug, Clone, Default)]
struct Car {
    entry: Option<Entry>,
    realtime: Option<Realtime>,
    /// Stops counted here: the API gives none.
    pit_stops: u32,
}

/// What the game says the session is (realtime update).
#[derive(Debug, Clone, Default)]
struct Session {
    session_type: u8,
    focused: i32,
    ambient: u8,
    track_temp: u8,
    session_time_left: Option<f64>,
}

/// What the decoder has seen, for the monitor's progress line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Messages read.
    pub read: u64,
    /// Cut short, of an unknown type, or past the cars kept.
    pub malformed: u64,
}

/// What one datagram changed, and what the monitor should do about it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// The game answered the registration: its connection id, or why it refused.
    pub registered: Option<Result<i32, String>>,
    /// A car or the session changed: the field may be sent.
    pub field: bool,
    /// The focused car changed: its frame may be sent.
    pub frame: bool,
    /// A car the entry list does not know sent an update (a car joined): ask
    /// for the entry list again.
    pub wants_entry_list: bool,
}

/// ACC's cars as the broadcasting API last described them.
#[derive(Debug, Default)]
pub struct Decoder {
    counts: Counts,
    connection_id: Option<i32>,
    track: Option<(String, f64)>,
    session: Option<Session>,
    cars: BTreeMap<u16, Car>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The connection id of the last successful registration.
    pub fn connection_id(&self) -> Option<i32> {
        self.connection_id
    }

    /// Cars the entry list or the updates named.
    pub fn cars(&self) -> usize {
        self.cars.len()
    }

    /// Reads one datagram from the game.
    pub fn read(&mut self, datagram: &[u8]) -> Outcome {
        let mut outcome = Outcome::default();
        let mut r = Reader {
            bytes: datagram,
            at: 0,
        };
        let read = match r.u8() {
            Some(inbound::REGISTRATION_RESULT) => self.registration(&mut r, &mut outcome),
            Some(inbound::REALTIME_UPDATE) => self.realtime_update(&mut r, &mut outcome),
            Some(inbound::REALTIME_CAR_UPDATE) => self.car_update(&mut r, &mut outcome),
            Some(inbound::ENTRY_LIST) => self.entry_list(&mut r, &mut outcome),
            Some(inbound::TRACK_DATA) => self.track_data(&mut r),
            Some(inbound::ENTRY_LIST_CAR) => self.entry_list_car(&mut r, &mut outcome),
            Some(inbound::BROADCASTING_EVENT) => (|| {
                r.u8()?;
                r.string()?;
                r.i32()?;
                r.i32()
            })()
            .map(|_| ()),
            _ => None,
        };
        match read {
            Some(()) => self.counts.read += 1,
            None => {
                self.counts.malformed += 1;
                return Outcome::default();
            }
        }
        outcome
    }

    fn registration(&mut self, r: &mut Reader, outcome: &mut Outcome) -> Option<()> {
        let id = r.i32()?;
        let success = r.u8()? != 0;
        let _writable = r.u8()?;
        let error = r.string()?;
        if success {
            // A new registration (the game restarted, or we registered again):
            // what the old connection said is stale.
            *self = Decoder {
                counts: self.counts,
                connection_id: Some(id),
                ..Decoder::default()
            };
            outcome.registered = Some(Ok(id));
        } else {
            outcome.registered = Some(Err(if error.is_empty() {
                "refused".into()
            } else {
                error
            }));
        }
        Some(())
    }

    fn realtime_update(&mut self, r: &mut Reader, outcome: &mut Outcome) -> Option<()> {
        let _event = r.u16()?;
        let _session_index = r.u16()?;
        let session_type = r.u8()?;
        let _phase = r.u8()?;
        let time = r.f32()?;
        let end_time = r.f32()?;
        let focused = r.i32()?;
        for _ in 0..3 {
            r.string()?;
        }
        if r.u8()? != 0 {
            r.f32()?;
            r.f32()?;
        }
        let _time_of_day = r.f32()?;
        let ambient = r.u8()?;
        let track_temp = r.u8()?;
        for _ in 0..3 {
            r.u8()?;
        }
        r.lap()?;
        let left = f64::from(end_time - time) / 1000.0;
        self.session = Some(Session {
            session_type,
            focused,
            ambient,
            track_temp,
            session_time_left: (left.is_finite() && left >= 0.0).then_some(left),
        });
        outcome.frame = true;
        Some(())
    }

    fn car_update(&mut self, r: &mut Reader, outcome: &mut Outcome) -> Option<()> {
        let index = r.u16()?;
        let driver = r.u16()?;
        let _drivers = r.u8()?;
        let gear = i32::from(r.u8()?) - 2;
        for _ in 0..3 {
            r.f32()?;
        }
        let location = r.u8()?;
        let kmh = r.u16()?;
        let position = r.u16()?;
        let _cup_position = r.u16()?;
        let _track_position = r.u16()?;
        let spline = r.f32()?;
        let laps = r.u16()?;
        let _delta = r.i32()?;
        let best = r.lap()?;
        let last = r.lap()?;
        let current = r.lap()?;
        if !self.cars.contains_key(&index) && self.cars.len() >= MAX_CARS {
            return None;
        }
        let car = self.cars.entry(index).or_default();
        if car.entry.is_none() {
            outcome.wants_entry_list = true;
        }
        let was_in_pits = car.realtime.as_ref().map(|rt| in_pits(rt.location));
        if was_in_pits == Some(false) && in_pits(location) {
            car.pit_stops += 1;
        }
        car.realtime = Some(Realtime {
            driver,
            gear,
            location,
            kmh,
            position,
            spline: if spline.is_finite() {
                spline.clamp(0.0, 1.0)
            } else {
                0.0
            },
            laps,
            best,
            last,
            current,
        });
        outcome.field = true;
        outcome.frame |= self
            .session
            .as_ref()
            .is_some_and(|s| s.focused == i32::from(index));
        Some(())
    }

    fn entry_list(&mut self, r: &mut Reader, outcome: &mut Outcome) -> Option<()> {
        let _connection = r.i32()?;
        let n = r.u16()?;
        let mut ids = Vec::with_capacity(usize::from(n).min(MAX_CARS));
        for _ in 0..n {
            let id = r.u16()?;
            if ids.len() < MAX_CARS {
                ids.push(id);
            }
        }
        // The list is whole: cars not on it left the server.
        self.cars.retain(|id, _| ids.contains(id));
        for id in ids {
            self.cars.entry(id).or_default();
        }
        outcome.field = true;
        Some(())
    }

    fn track_data(&mut self, r: &mut Reader) -> Option<()> {
        let _connection = r.i32()?;
        let name = r.string()?;
        let _id = r.i32()?;
        let metres = r.i32()?;
        // Camera sets and HUD pages follow; they are not read.
        self.track = Some((name, f64::from(metres.max(0))));
        Some(())
    }

    fn entry_list_car(&mut self, r: &mut Reader, outcome: &mut Outcome) -> Option<()> {
        let index = r.u16()?;
        let model = r.u8()?;
        let team = r.string()?;
        let race_number = r.i32()?;
        let _cup = r.u8()?;
        let current_driver = r.u8()?;
        let _nationality = r.u16()?;
        let n = r.u8()?;
        let mut drivers = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let first = r.string()?;
            let last = r.string()?;
            let _short = r.string()?;
            let _category = r.u8()?;
            let _nationality = r.u16()?;
            let mut name = format!("{first} {last}").trim().to_string();
            if name.len() > MAX_NAME {
                name = last;
            }
            drivers.push(name);
        }
        if !self.cars.contains_key(&index) && self.cars.len() >= MAX_CARS {
            return None;
        }
        self.cars.entry(index).or_default().entry = Some(Entry {
            model,
            team,
            race_number,
            drivers,
            current_driver,
        });
        outcome.field = true;
        Some(())
    }

    /// The metres of one lap, when the track data has come.
    fn track_metres(&self) -> Option<f64> {
        self.track.as_ref().map(|(_, m)| *m).filter(|m| *m > 0.0)
    }

    /// Every car that has sent an update, by position (docs/field.schema.json);
    /// `None` before any has.
    pub fn field(&self) -> Option<Value> {
        let metres = self.track_metres();
        let mut running: Vec<(u16, &Car, &Realtime)> = self
            .cars
            .iter()
            .filter_map(|(id, car)| Some((*id, car, car.realtime.as_ref()?)))
            .filter(|(_, _, rt)| rt.position > 0 && usize::from(rt.position) <= MAX_CARS)
            .collect();
        if running.is_empty() {
            return None;
        }
        running.sort_by_key(|(id, _, rt)| (rt.position, *id));
        // Laps covered, as a number: what the gaps are measured on.
        let covered = |rt: &Realtime| f64::from(rt.laps) + f64::from(rt.spline);
        let leader = covered(running[0].2);
        let mut class_counts: BTreeMap<&str, u16> = BTreeMap::new();
        let mut cars = Vec::with_capacity(running.len());
        for (i, (id, car, rt)) in running.iter().enumerate() {
            let entry = car.entry.as_ref();
            let class = entry.map(|e| class_of(e.model));
            let class_position = class.map(|c| {
                let n = class_counts.entry(c).or_default();
                *n += 1;
                *n
            });
            // The pace the gap is turned into seconds at: this car's.
            let pace = rt.best.time.or(rt.last.time);
            let gap = |ahead: f64| {
                let laps = (ahead - covered(rt)).max(0.0);
                pace.map(|p| rounded(laps * p, 3)).unwrap_or(Value::Null)
            };
            let interval = match i {
                0 => json!(0.0),
                _ => gap(covered(running[i - 1].2)),
            };
            let driver = entry.and_then(|e| {
                e.drivers
                    .get(usize::from(rt.driver))
                    .or_else(|| e.drivers.get(usize::from(e.current_driver)))
            });
            let pitting = in_pits(rt.location);
            let mut m = Map::new();
            m.insert("index".into(), json!(id));
            put(
                &mut m,
                "race_number",
                entry.map(|e| json!(e.race_number.max(0))),
            );
            m.insert("driver".into(), json!(driver));
            put(
                &mut m,
                "team",
                entry.map(|e| json!(e.team)).filter(|t| t != ""),
            );
            m.insert("class".into(), json!(class));
            m.insert("position".into(), json!(rt.position));
            m.insert("class_position".into(), json!(class_position));
            m.insert("lap".into(), json!(u32::from(rt.laps) + 1));
            put(
                &mut m,
                "lap_distance",
                metres.map(|len| rounded(f64::from(rt.spline) * len, 1)),
            );
            m.insert("last_lap".into(), json!(rt.last.time));
            m.insert("best_lap".into(), json!(rt.best.time));
            m.insert("sector_times".into(), json!(rt.last.splits));
            m.insert(
                "gap_leader".into(),
                if i == 0 { json!(0.0) } else { gap(leader) },
            );
            m.insert("interval".into(), interval);
            m.insert("in_pits".into(), json!(pitting));
            m.insert("pit_stops".into(), json!(car.pit_stops));
            m.insert(
                "status".into(),
                json!(if pitting { "pitting" } else { "running" }),
            );
            let focused = self.session.as_ref().map(|s| s.focused);
            m.insert("player".into(), json!(focused == Some(i32::from(*id))));
            cars.push(Value::Object(m));
        }
        let mut field = json!({ "game": "ACC", "cars": cars });
        if let Some(metres) = metres {
            field["track_length"] = json!(metres);
        }
        Some(field)
    }

    /// The focused car (by default the player's, in the game) as a telemetry
    /// frame: what the API says of it. `None` until the session and that
    /// car's update have come.
    pub fn frame(&self) -> Option<Value> {
        let session = self.session.as_ref()?;
        let index = u16::try_from(session.focused).ok()?;
        let car = self.cars.get(&index)?;
        let rt = car.realtime.as_ref()?;
        let mut m = Map::new();
        m.insert("game".into(), json!("ACC"));
        m.insert("lap".into(), json!(u32::from(rt.laps) + 1));
        m.insert("position".into(), json!(rt.position));
        m.insert("speed".into(), json!(rt.kmh));
        m.insert("gear".into(), json!(rt.gear.clamp(-1, 12)));
        m.insert("in_pits".into(), json!(in_pits(rt.location)));
        m.insert("pit_stops".into(), json!(car.pit_stops));
        m.insert("last_lap_time".into(), json!(rt.last.time));
        m.insert("best_lap_time".into(), json!(rt.best.time));
        m.insert("lap_time".into(), json!(rt.current.time));
        m.insert("lap_invalid".into(), json!(rt.current.invalid));
        m.insert("ambient_temp".into(), json!(session.ambient));
        m.insert("track_temp".into(), json!(session.track_temp));
        put(
            &mut m,
            "session_type",
            session_type(session.session_type).map(|t| json!(t)),
        );
        put(
            &mut m,
            "session_time_left",
            session.session_time_left.map(|s| rounded(s, 0)),
        );
        if let Some((track, metres)) = &self.track {
            m.insert("track_name".into(), json!(track));
            m.insert(
                "lap_distance".into(),
                rounded(f64::from(rt.spline) * metres, 1),
            );
        }
        if let Some(entry) = &car.entry {
            put(
                &mut m,
                "player_name",
                entry.drivers.get(usize::from(rt.driver)).map(|d| json!(d)),
            );
            m.insert("car_name".into(), json!(entry.team));
            m.insert("car_class".into(), json!(class_of(entry.model)));
        }
        Some(Value::Object(m))
    }
}

/// In the pit lane, its entry or its exit.
fn in_pits(location: u8) -> bool {
    matches!(location, 2..=4)
}

/// The class of an ACC car model id (the game's car list: GT3 up to 36, GT4
/// 50-61, GT2 80-86, and the one-make series between).
fn class_of(model: u8) -> &'static str {
    match model {
        9 | 28 => "CUP",
        18 | 29 => "ST",
        26 => "CHL",
        27 => "TCX",
        50..=61 => "GT4",
        80..=86 => "GT2",
        _ => "GT3",
    }
}

fn session_type(id: u8) -> Option<&'static str> {
    Some(match id {
        0 => "Practice",
        4 => "Qualifying",
        9 => "Superpole",
        10 => "Race",
        11 => "Hotlap",
        12 => "Hotstint",
        13 => "Hotlap Superpole",
        14 => "Replay",
        _ => return None,
    })
}

/// Datagrams as the game sends them, built from the layouts above: the tests'
/// and the fuzzer's fixtures, and the loopback test's fake game.
pub mod fixtures {
    use super::inbound;

    /// A string as the API writes it.
    pub fn string(out: &mut Vec<u8>, s: &str) {
        super::put_string(out, s);
    }

    /// A lap: its time (ms, `None`: none) and splits.
    pub fn lap(out: &mut Vec<u8>, car: u16, ms: Option<i32>, splits: &[Option<i32>]) {
        out.extend_from_slice(&ms.unwrap_or(i32::MAX).to_le_bytes());
        out.extend_from_slice(&car.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.push(splits.len() as u8);
        for s in splits {
            out.extend_from_slice(&s.unwrap_or(i32::MAX).to_le_bytes());
        }
        out.extend_from_slice(&[0, 1, 0, 0]);
    }

    pub fn registration_result(id: i32, success: bool, error: &str) -> Vec<u8> {
        let mut out = vec![inbound::REGISTRATION_RESULT];
        out.extend_from_slice(&id.to_le_bytes());
        out.push(u8::from(success));
        out.push(1);
        string(&mut out, error);
        out
    }

    pub fn entry_list(connection: i32, cars: &[u16]) -> Vec<u8> {
        let mut out = vec![inbound::ENTRY_LIST];
        out.extend_from_slice(&connection.to_le_bytes());
        out.extend_from_slice(&(cars.len() as u16).to_le_bytes());
        for car in cars {
            out.extend_from_slice(&car.to_le_bytes());
        }
        out
    }

    pub fn track_data(connection: i32, name: &str, metres: i32) -> Vec<u8> {
        let mut out = vec![inbound::TRACK_DATA];
        out.extend_from_slice(&connection.to_le_bytes());
        string(&mut out, name);
        out.extend_from_slice(&7i32.to_le_bytes());
        out.extend_from_slice(&metres.to_le_bytes());
        out.push(1);
        string(&mut out, "set1");
        out.push(1);
        string(&mut out, "cam1");
        out.push(1);
        string(&mut out, "Basic HUD");
        out
    }

    /// An entry: car id, model, team, race number and drivers (first, last).
    pub fn entry_list_car(
        car: u16,
        model: u8,
        team: &str,
        number: i32,
        drivers: &[(&str, &str)],
    ) -> Vec<u8> {
        let mut out = vec![inbound::ENTRY_LIST_CAR];
        out.extend_from_slice(&car.to_le_bytes());
        out.push(model);
        string(&mut out, team);
        out.extend_from_slice(&number.to_le_bytes());
        out.push(0);
        out.push(0);
        out.extend_from_slice(&0u16.to_le_bytes());
        out.push(drivers.len() as u8);
        for (first, last) in drivers {
            string(&mut out, first);
            string(&mut out, last);
            string(&mut out, &last[..last.len().min(3)]);
            out.push(2);
            out.extend_from_slice(&0u16.to_le_bytes());
        }
        out
    }

    /// The session: type (10 race), time and end time (ms), the focused car.
    pub fn realtime_update(session_type: u8, time_ms: f32, end_ms: f32, focused: i32) -> Vec<u8> {
        let mut out = vec![inbound::REALTIME_UPDATE];
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.push(session_type);
        out.push(5);
        out.extend_from_slice(&time_ms.to_le_bytes());
        out.extend_from_slice(&end_ms.to_le_bytes());
        out.extend_from_slice(&focused.to_le_bytes());
        for s in ["set1", "cam1", "Basic HUD"] {
            string(&mut out, s);
        }
        out.push(0);
        out.extend_from_slice(&50_000_000f32.to_le_bytes());
        out.push(22);
        out.push(31);
        out.extend_from_slice(&[1, 0, 0]);
        lap(&mut out, 0, Some(101_000), &[]);
        out
    }

    /// One car's update: where it is, its laps, best and last lap (ms).
    pub struct CarUpdate {
        pub car: u16,
        pub location: u8,
        pub kmh: u16,
        pub position: u16,
        pub spline: f32,
        pub laps: u16,
        pub best_ms: Option<i32>,
        pub last_ms: Option<i32>,
        pub last_splits: [Option<i32>; 3],
    }

    pub fn realtime_car_update(c: &CarUpdate) -> Vec<u8> {
        let mut out = vec![inbound::REALTIME_CAR_UPDATE];
        out.extend_from_slice(&c.car.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.push(1);
        out.push(5); // 3rd gear
        for v in [1.0f32, 2.0, 0.5] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(c.location);
        out.extend_from_slice(&c.kmh.to_le_bytes());
        out.extend_from_slice(&c.position.to_le_bytes());
        out.extend_from_slice(&c.position.to_le_bytes());
        out.extend_from_slice(&c.position.to_le_bytes());
        out.extend_from_slice(&c.spline.to_le_bytes());
        out.extend_from_slice(&c.laps.to_le_bytes());
        out.extend_from_slice(&(-120i32).to_le_bytes());
        lap(&mut out, c.car, c.best_ms, &[]);
        lap(&mut out, c.car, c.last_ms, &c.last_splits);
        lap(&mut out, c.car, Some(12_345), &[Some(12_345)]);
        out
    }

    pub fn broadcasting_event(car: i32) -> Vec<u8> {
        let mut out = vec![inbound::BROADCASTING_EVENT];
        out.push(6);
        string(&mut out, "Best lap");
        out.extend_from_slice(&90_000i32.to_le_bytes());
        out.extend_from_slice(&car.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    fn update(car: u16, position: u16, laps: u16, spline: f32, location: u8) -> Vec<u8> {
        realtime_car_update(&CarUpdate {
            car,
            location,
            kmh: 200,
            position,
            spline,
            laps,
            best_ms: Some(100_000),
            last_ms: Some(101_000),
            last_splits: [Some(30_000), Some(40_000), Some(31_000)],
        })
    }

    #[test]
    fn a_registered_session_reads_into_the_field_with_gaps_and_a_pit_stop() {
        let mut d = Decoder::new();
        assert_eq!(
            d.read(&registration_result(7, true, "")).registered,
            Some(Ok(7))
        );
        d.read(&track_data(7, "Spa", 7004));
        d.read(&entry_list(7, &[3, 11]));
        d.read(&entry_list_car(3, 30, "BMW Team", 98, &[("Ann", "Alpha")]));
        d.read(&entry_list_car(11, 55, "GT4 Team", 7, &[("Bob", "Beta")]));
        d.read(&realtime_update(10, 60_000.0, 3_660_000.0, 11));
        d.read(&update(3, 1, 10, 0.5, 1));
        let outcome = d.read(&update(11, 2, 10, 0.25, 1));
        assert!(outcome.field && outcome.frame && !outcome.wants_entry_list);
        let field = d.field().unwrap();
        let cars = field["cars"].as_array().unwrap();
        assert_eq!(field["track_length"], 7004.0);
        assert_eq!(cars[0]["driver"], "Ann Alpha");
        assert_eq!(cars[0]["class"], "GT3");
        assert_eq!(cars[1]["class"], "GT4");
        assert_eq!(cars[1]["class_position"], 1);
        assert_eq!(cars[0]["lap"], 11);
        // A quarter of a lap at Bob's best (100 s): 25 s.
        assert_eq!(cars[1]["gap_leader"], 25.0);
        assert_eq!(cars[1]["interval"], 25.0);
        assert_eq!(cars[1]["player"], true);
        assert_eq!(cars[0]["sector_times"], json!([30.0, 40.0, 31.0]));
        assert_eq!(cars[1]["lap_distance"], 1751.0);
        // Bob enters the pit lane: one stop, pitting.
        d.read(&update(11, 2, 10, 0.9, 3));
        d.read(&update(11, 2, 10, 0.95, 2));
        let car = &d.field().unwrap()["cars"][1];
        assert_eq!(
            (&car["status"], &car["in_pits"], &car["pit_stops"]),
            (&json!("pitting"), &json!(true), &json!(1))
        );
        let frame = d.frame().unwrap();
        assert_eq!(frame["player_name"], "Bob Beta");
        assert_eq!(frame["track_name"], "Spa");
        assert_eq!(frame["in_pits"], true);
        assert_eq!(frame["session_time_left"], 3600.0);
        // A car the entry list does not know: ask again.
        assert!(d.read(&update(20, 3, 9, 0.1, 1)).wants_entry_list);
        // A new registration forgets the old connection's cars.
        d.read(&registration_result(8, true, ""));
        assert_eq!((d.cars(), d.connection_id()), (0, Some(8)));
        assert_eq!(d.counts().malformed, 0);
    }

    #[test]
    fn a_refusal_says_why_and_garbage_is_counted() {
        let mut d = Decoder::new();
        assert_eq!(
            d.read(&registration_result(-1, false, "Password incorrect"))
                .registered,
            Some(Err("Password incorrect".into()))
        );
        let good = update(3, 1, 1, 0.5, 1);
        for cut in 0..good.len() {
            assert_eq!(d.read(&good[..cut]), Outcome::default());
        }
        d.read(&[99, 1, 2]);
        assert_eq!(d.counts().malformed, good.len() as u64 + 1);
        d.read(&broadcasting_event(3));
        assert_eq!(d.counts().read, 2);
    }

    /// A whole session as the game sends it (registration, track, entry list,
    /// the session, each car's update, an event), each datagram after its
    /// `u16` length: the fuzzer's seed (.ci/run), held to these builders;
    /// `PADDOCK_WRITE_FIXTURES=1` rewrites it after a change to them.
    #[test]
    fn the_fuzz_seed_is_the_builders_session() {
        let datagrams = [
            registration_result(7, true, ""),
            track_data(7, "Spa", 7004),
            entry_list(7, &[3, 11]),
            entry_list_car(3, 30, "BMW Team", 98, &[("Ann", "Alpha")]),
            entry_list_car(11, 55, "GT4 Team", 7, &[("Bob", "Beta"), ("Cy", "Beta")]),
            realtime_update(10, 60_000.0, 3_660_000.0, 11),
            update(3, 1, 10, 0.5, 1),
            update(11, 2, 10, 0.25, 2),
            broadcasting_event(3),
        ];
        let mut built = Vec::new();
        let mut d = Decoder::new();
        for datagram in &datagrams {
            built.extend_from_slice(&(datagram.len() as u16).to_le_bytes());
            built.extend_from_slice(datagram);
            d.read(datagram);
        }
        assert_eq!(d.counts().read, datagrams.len() as u64);
        assert_eq!(d.field().unwrap()["cars"].as_array().unwrap().len(), 2);
        let dir = format!("{}/tests/data/acc-broadcast", env!("CARGO_MANIFEST_DIR"));
        let path = format!("{dir}/session.bin");
        if std::env::var_os("PADDOCK_WRITE_FIXTURES").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &built).unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), built, "{path}");
    }

    #[test]
    fn requests_are_laid_out_as_the_sdk_sends_them() {
        let r = register("paddock", "asd", 250, "");
        assert_eq!(&r[..4], &[1, 4, 7, 0]);
        assert_eq!(&r[4..11], b"paddock");
        assert_eq!(&r[11..16], &[3, 0, b'a', b's', b'd']);
        assert_eq!(&r[16..20], &250i32.to_le_bytes());
        assert_eq!(&r[20..], &[0, 0]);
        assert_eq!(request_entry_list(5), vec![10, 5, 0, 0, 0]);
        assert_eq!(request_track_data(5), vec![11, 5, 0, 0, 0]);
        assert_eq!(unregister(5), vec![9, 5, 0, 0, 0]);
    }
}
