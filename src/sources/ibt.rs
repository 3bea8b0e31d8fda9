//! iRacing telemetry files (`.ibt`): the file's bytes in, the car's setup,
//! names and one schema frame per row out.
//!
//! The layout is iRacing's SDK (`irsdk_defines.h`), the same the live sim
//! writes to its memory-mapped file on Windows; the reader is held to a real
//! file from teamjorge/ibt (tests/data/ibt, Apache-2.0). All integers little-endian:
//!
//! - header (112 bytes): `ver`, `status`, `tickRate`, `sessionInfoUpdate`,
//!   `sessionInfoLen`, `sessionInfoOffset`, `numVars`, `varHeaderOffset`,
//!   `numBuf`, `bufLen` (i32 each), 2 pad, then 4 × {`tickCount`, `bufOffset`, 2 pad};
//! - disk sub-header (at 112, 32 bytes): start date (i64), start and end time
//!   (f64), lap count, record count (i32);
//! - `numVars` variable headers of 144 bytes: `type`, `offset`, `count` (i32),
//!   `countAsTime` (+3 pad), name\[32\], description\[64\], unit\[32\];
//! - the session info, YAML (sources::yaml);
//! - rows of `bufLen` bytes from the first buffer's offset, `tickRate` a second.
//!
//! Conversions to the schema: Speed m/s → km/h, pressures kPa → psi, wear and
//! temperatures as the three readings across the tread averaged per corner.

use serde_json::{Map, Value, json};

use super::{corners, kpa_to_psi, rounded};

const HEADER_LEN: usize = 112;
const DISK_HEADER_LEN: usize = 32;
const VAR_HEADER_LEN: usize = 144;
/// More variables than any iRacing build writes (some 300): a bound on a
/// hostile header, not a limit of the format.
const MAX_VARS: usize = 4096;
/// iRacing's "unlimited" session time (a week, s) and laps.
const UNLIMITED_TIME: f64 = 604_800.0;
const UNLIMITED_LAPS: f64 = 32_767.0;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IbtError {
    #[error("not an iRacing telemetry file: {0}")]
    NotIbt(&'static str),
    #[error("the file is cut short: {0}")]
    Truncated(&'static str),
    #[error("the file holds no telemetry rows")]
    NoRows,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Char,
    Bool,
    Int,
    BitField,
    Float,
    Double,
}

impl Kind {
    fn of(code: i32) -> Option<Self> {
        Some(match code {
            0 => Kind::Char,
            1 => Kind::Bool,
            2 => Kind::Int,
            3 => Kind::BitField,
            4 => Kind::Float,
            5 => Kind::Double,
            _ => return None,
        })
    }
    fn size(self) -> usize {
        match self {
            Kind::Char | Kind::Bool => 1,
            Kind::Int | Kind::BitField | Kind::Float => 4,
            Kind::Double => 8,
        }
    }
}

#[derive(Debug, Clone)]
struct Var {
    name: String,
    kind: Kind,
    offset: usize,
}

/// A parsed file, holding its bytes.
#[derive(Debug)]
pub struct Ibt {
    bytes: Vec<u8>,
    /// Rows per second as recorded.
    pub tick_rate: u32,
    /// The session info (YAML) as JSON.
    pub session_info: Value,
    vars: Vec<Var>,
    row_len: usize,
    first_row: usize,
    rows: usize,
}

fn i32_at(bytes: &[u8], at: usize) -> Option<i32> {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_le_bytes)
}

fn usize_at(bytes: &[u8], at: usize) -> Option<usize> {
    i32_at(bytes, at).and_then(|v| usize::try_from(v).ok())
}

fn text(raw: &[u8]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    // iRacing writes Windows-1252; its ASCII part is what names hold.
    raw[..end].iter().map(|b| char::from(*b)).collect()
}

/// What a file and the live map share: the header's fields, the variables and
/// the session info's place. The live reader (sources::iracing_live) reads the
/// map with it, the file reader a file.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub(super) tick_rate: usize,
    /// `sessionInfoUpdate`: bumped by the sim each time it rewrites the YAML.
    pub(super) info_update: i32,
    info_len: usize,
    info_offset: usize,
    vars: Vec<Var>,
    pub(super) row_len: usize,
    /// The first buffer's offset: a file's first row.
    first_buffer: usize,
}

impl Layout {
    /// The header and variable headers at the start of `bytes`.
    pub(super) fn read(bytes: &[u8]) -> Result<Self, IbtError> {
        if bytes.len() < HEADER_LEN {
            return Err(IbtError::Truncated("shorter than its headers"));
        }
        let field = |n: usize| usize_at(bytes, n * 4);
        let version = i32_at(bytes, 0).unwrap_or(0);
        if !(1..=2).contains(&version) {
            return Err(IbtError::NotIbt("unknown header version"));
        }
        let tick_rate = field(2).filter(|t| (1..=1000).contains(t));
        let (info_len, info_offset) = (field(4), field(5));
        let (num_vars, var_offset, row_len) = (field(6), field(7), field(9));
        let first_buffer = usize_at(bytes, 48 + 4);
        let (
            Some(tick_rate),
            Some(info_len),
            Some(info_offset),
            Some(num_vars),
            Some(var_offset),
            Some(row_len),
            Some(first_buffer),
        ) = (
            tick_rate,
            info_len,
            info_offset,
            num_vars,
            var_offset,
            row_len,
            first_buffer,
        )
        else {
            return Err(IbtError::NotIbt("a header field is out of range"));
        };
        if num_vars == 0 || num_vars > MAX_VARS || row_len == 0 {
            return Err(IbtError::NotIbt("no variables, or no row length"));
        }
        let var_end = var_offset + num_vars * VAR_HEADER_LEN;
        let headers = bytes
            .get(var_offset..var_end)
            .ok_or(IbtError::Truncated("variable headers"))?;
        let mut vars = Vec::with_capacity(num_vars);
        for raw in headers.chunks_exact(VAR_HEADER_LEN) {
            let (Some(kind), Some(offset), Some(count)) = (
                i32_at(raw, 0).and_then(Kind::of),
                usize_at(raw, 4),
                usize_at(raw, 8),
            ) else {
                continue;
            };
            // A variable that does not fit its row is not read.
            if offset + kind.size() * count.max(1) > row_len {
                continue;
            }
            vars.push(Var {
                name: text(&raw[16..48]),
                kind,
                offset,
            });
        }
        Ok(Layout {
            tick_rate,
            info_update: i32_at(bytes, 12).unwrap_or(0),
            info_len,
            info_offset,
            vars,
            row_len,
            first_buffer,
        })
    }

    /// The session info (YAML) in `bytes`, as JSON.
    pub(super) fn session_info(&self, bytes: &[u8]) -> Result<Value, IbtError> {
        let info = bytes
            .get(self.info_offset..self.info_offset.saturating_add(self.info_len))
            .ok_or(IbtError::Truncated("session info"))?;
        Ok(super::yaml::parse(&text(info)))
    }
}

impl Ibt {
    pub fn parse(bytes: Vec<u8>) -> Result<Self, IbtError> {
        if bytes.len() < HEADER_LEN + DISK_HEADER_LEN {
            return Err(IbtError::Truncated("shorter than its headers"));
        }
        let layout = Layout::read(&bytes)?;
        let session_info = layout.session_info(&bytes)?;
        let (row_len, first_row) = (layout.row_len, layout.first_buffer);
        // The disk sub-header's record count, where it is sane; else what the file holds.
        let held = bytes.len().saturating_sub(first_row) / row_len;
        let recorded = usize_at(&bytes, HEADER_LEN + 28).unwrap_or(0);
        let rows = if recorded > 0 && recorded <= held {
            recorded
        } else {
            held
        };
        if rows == 0 || first_row < HEADER_LEN {
            return Err(IbtError::NoRows);
        }
        Ok(Ibt {
            bytes,
            tick_rate: layout.tick_rate as u32,
            session_info,
            vars: layout.vars,
            row_len,
            first_row,
            rows,
        })
    }

    /// One row of the live map (its bytes alone) read as a file of one row,
    /// so that it becomes a frame as a file's row does.
    pub(super) fn of_row(layout: &Layout, session_info: Value, row: Vec<u8>) -> Self {
        Ibt {
            bytes: row,
            tick_rate: layout.tick_rate as u32,
            session_info,
            vars: layout.vars.clone(),
            row_len: layout.row_len,
            first_row: 0,
            rows: 1,
        }
    }

    /// The session info, given back (the live reader lends its own to [`Ibt::of_row`]).
    pub(super) fn into_session_info(self) -> Value {
        self.session_info
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The car setup from the session info (`CarSetup`), as the setup.
    pub fn setup(&self) -> Option<Value> {
        self.session_info
            .get("CarSetup")
            .filter(|s| s.is_object())
            .cloned()
    }

    /// The driver of the recorded car, its car and the track.
    pub fn names(&self) -> Map<String, Value> {
        let info = &self.session_info;
        let mut names = Map::new();
        let car_idx = info["DriverInfo"]["DriverCarIdx"].as_i64();
        let driver = info["DriverInfo"]["Drivers"]
            .as_array()
            .and_then(|ds| ds.iter().find(|d| d["CarIdx"].as_i64() == car_idx));
        if let Some(driver) = driver {
            for (key, field) in [
                ("player_name", "UserName"),
                ("car_name", "CarScreenName"),
                ("team_name", "TeamName"),
            ] {
                // A name of digits reads as a YAML number; it is still a name.
                let name = match &driver[field] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => continue,
                };
                if !name.is_empty() {
                    names.insert(key.into(), Value::String(name));
                }
            }
        }
        if let Some(track) = info["WeekendInfo"]["TrackDisplayName"].as_str() {
            names.insert("track_name".into(), json!(track));
        }
        names
    }

    fn fuel_capacity(&self) -> Option<f64> {
        let driver = &self.session_info["DriverInfo"];
        let max = driver["DriverCarFuelMaxLtr"].as_f64()?;
        let pct = driver["DriverCarMaxFuelPct"].as_f64().unwrap_or(1.0);
        Some(max * pct)
    }

    /// A variable's value in a row (the first element of an array variable).
    pub fn value(&self, row: usize, name: &str) -> Option<f64> {
        let var = self.vars.iter().find(|v| v.name == name)?;
        self.read(row, var)
    }

    fn read(&self, row: usize, var: &Var) -> Option<f64> {
        if row >= self.rows {
            return None;
        }
        let at = self.first_row + row * self.row_len + var.offset;
        let raw = self.bytes.get(at..at + var.kind.size())?;
        Some(match var.kind {
            Kind::Char | Kind::Bool => f64::from(raw[0]),
            Kind::Int => f64::from(i32::from_le_bytes(raw.try_into().ok()?)),
            Kind::BitField => f64::from(u32::from_le_bytes(raw.try_into().ok()?)),
            Kind::Float => f64::from(f32::from_le_bytes(raw.try_into().ok()?)),
            Kind::Double => f64::from_le_bytes(raw.try_into().ok()?),
        })
        .filter(|v| v.is_finite())
    }

    /// The row's sim time (`SessionTime`, s), which paces a replay.
    pub fn time(&self, row: usize) -> Option<f64> {
        self.value(row, "SessionTime")
    }

    /// The row's speed in km/h.
    pub fn speed_kmh(&self, row: usize) -> Option<f64> {
        self.value(row, "Speed").map(|s| s * 3.6)
    }

    /// Row `row` as a schema frame (without `timestamp`, which the sender sets).
    /// `top_speed` is the fastest the car went up to this row (km/h), which
    /// the caller keeps across the rows it does not send.
    pub fn frame(&self, row: usize, top_speed: Option<f64>) -> Value {
        let get = |name: &str| self.value(row, name);
        let mut f = self.names();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                f.insert(key.into(), value);
            }
        };
        put("game", Some(json!("iRacing")));
        put("session_time", get("SessionTime").map(|t| rounded(t, 3)));
        put(
            "session_time_left",
            get("SessionTimeRemain")
                .filter(|t| (0.0..UNLIMITED_TIME).contains(t))
                .map(|t| rounded(t, 3)),
        );
        put(
            "laps_left",
            get("SessionLapsRemainEx")
                .filter(|l| (0.0..UNLIMITED_LAPS).contains(l))
                .map(|l| json!(l as i64)),
        );
        put("lap", get("Lap").map(|l| json!(l as i64)));
        put(
            "position",
            get("PlayerCarPosition").map(|p| json!(p as i64)),
        );
        put("lap_time", get("LapCurrentLapTime").map(|t| rounded(t, 3)));
        // Metres from the line along this lap; negative before the first crossing.
        put(
            "lap_distance",
            get("LapDist").filter(|d| *d >= 0.0).map(|d| rounded(d, 1)),
        );
        // -1: no lap yet.
        let positive = |t: Option<f64>| {
            Some(
                t.filter(|t| *t > 0.0)
                    .map_or(Value::Null, |t| rounded(t, 3)),
            )
        };
        put("last_lap_time", positive(get("LapLastLapTime")));
        put("best_lap_time", positive(get("LapBestLapTime")));
        put("fuel", get("FuelLevel").map(|l| rounded(l, 3)));
        put("fuel_pct", get("FuelLevelPct").map(|p| rounded(p, 4)));
        put("fuel_capacity", self.fuel_capacity().map(|l| rounded(l, 3)));
        put("speed", get("Speed").map(|s| rounded(s * 3.6, 2)));
        put("top_speed", top_speed.map(|s| rounded(s, 2)));
        put("gear", get("Gear").map(|g| json!(g as i64)));
        put("rpm", get("RPM").map(|r| rounded(r, 0)));
        put("throttle", get("Throttle").map(|t| rounded(t, 3)));
        put("brake", get("Brake").map(|t| rounded(t, 3)));
        let in_pits = [
            get("OnPitRoad"),
            get("PlayerCarInPitStall"),
            get("IsInGarage"),
        ];
        if in_pits.iter().any(Option::is_some) {
            put(
                "in_pits",
                Some(json!(in_pits.iter().flatten().any(|v| *v != 0.0))),
            );
        }
        // Per corner: iRacing's LF RF LR RR.
        let corner = |read: &dyn Fn(&str) -> Option<Value>| {
            let [fl, fr, rl, rr] = ["LF", "RF", "LR", "RR"].map(|c| read(c).unwrap_or(Value::Null));
            corners(fl, fr, rl, rr)
        };
        let mean = |names: [String; 3]| -> Option<f64> {
            let values: Vec<f64> = names.iter().filter_map(|n| get(n)).collect();
            (values.len() == 3).then(|| values.iter().sum::<f64>() / 3.0)
        };
        let has = |name: &str| self.vars.iter().any(|v| v.name == name);
        if has("LFtempCM") {
            put(
                "tire_temps",
                Some(corner(&|c| {
                    mean([
                        format!("{c}tempCL"),
                        format!("{c}tempCM"),
                        format!("{c}tempCR"),
                    ])
                    .map(|t| rounded(t, 1))
                })),
            );
        }
        if has("LFtempM") {
            put(
                "tire_surface_temps",
                Some(corner(&|c| {
                    mean([
                        format!("{c}tempL"),
                        format!("{c}tempM"),
                        format!("{c}tempR"),
                    ])
                    .map(|t| rounded(t, 1))
                })),
            );
        }
        let pressure = if has("LFpressure") {
            "pressure"
        } else {
            "coldPressure"
        };
        if has(&format!("LF{pressure}")) {
            put(
                "tire_pressures",
                Some(corner(&|c| {
                    get(&format!("{c}{pressure}")).map(|kpa| rounded(kpa_to_psi(kpa), 2))
                })),
            );
        }
        if has("LFwearM") {
            put(
                "tire_wear",
                Some(corner(&|c| {
                    mean([
                        format!("{c}wearL"),
                        format!("{c}wearM"),
                        format!("{c}wearR"),
                    ])
                    .map(|w| rounded(w.clamp(0.0, 1.0), 4))
                })),
            );
        }
        put("engine_water_temp", get("WaterTemp").map(|t| rounded(t, 1)));
        put("engine_oil_temp", get("OilTemp").map(|t| rounded(t, 1)));
        put(
            "track_temp",
            get("TrackTempCrew")
                .or(get("TrackTemp"))
                .map(|t| rounded(t, 1)),
        );
        put("ambient_temp", get("AirTemp").map(|t| rounded(t, 1)));
        put("flag", get("SessionFlags").map(|bits| flag(bits as u32)));
        let session = get("SessionNum").map(|n| n as i64);
        let session_type = self.session_info["SessionInfo"]["Sessions"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["SessionNum"].as_i64() == session))
            .and_then(|s| s["SessionType"].as_str());
        put("session_type", session_type.map(|t| json!(t)));
        Value::Object(f)
    }
}

/// The flag a driver sees, from `SessionFlags` (irsdk_Flags), most urgent first.
fn flag(bits: u32) -> Value {
    const CHECKERED: u32 = 0x1;
    const WHITE: u32 = 0x2;
    const GREEN: u32 = 0x4;
    const YELLOW: u32 = 0x8 | 0x100 | 0x4000 | 0x8000;
    const RED: u32 = 0x10;
    const BLUE: u32 = 0x20;
    const BLACK: u32 = 0x10000;
    let name = if bits & CHECKERED != 0 {
        "checkered"
    } else if bits & RED != 0 {
        "red"
    } else if bits & BLACK != 0 {
        "black"
    } else if bits & YELLOW != 0 {
        "yellow"
    } else if bits & BLUE != 0 {
        "blue"
    } else if bits & WHITE != 0 {
        "white"
    } else if bits & GREEN != 0 {
        "green"
    } else {
        return Value::Null;
    };
    json!(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/ibt/valid_test_file.ibt"
        ))
        .unwrap()
    }

    #[test]
    fn a_real_file_reads_into_names_setup_and_frames() {
        let bytes = file();
        let ibt = Ibt::parse(bytes).unwrap();
        assert_eq!((ibt.tick_rate, ibt.rows()), (60, 390));
        let names = ibt.names();
        assert_eq!(names["track_name"], "Red Bull Ring");
        let setup = ibt.setup().unwrap();
        assert_eq!(setup["UpdateCount"], 11);
        assert_eq!(
            setup["TiresAero"]["LeftFrontTire"]["StartingPressure"],
            "165.5 kPa"
        );
        assert_eq!(setup["Chassis"]["Rear"]["FuelLevel"], "45 Kg");
        let first = ibt.frame(0, None);
        assert_eq!(first["lap"], 9);
        assert_eq!(first["last_lap_time"], Value::Null);
        assert_eq!(first["best_lap_time"], 68.671);
        assert_eq!(first["fuel"], 60.0);
        assert_eq!(first["in_pits"], true);
        assert_eq!(first["laps_left"], Value::Null, "32767 is unlimited");
        assert_eq!(
            first["session_time_left"],
            Value::Null,
            "a week is unlimited"
        );
        // 165.474 kPa is 24.0 psi.
        assert_eq!(first["tire_pressures"]["fl"], 24.0);
        assert_eq!(
            first["tire_wear"]["fl"]
                .as_f64()
                .map(|w| w > 0.9 && w <= 1.0),
            Some(true)
        );
        let last = ibt.frame(389, Some(7.0));
        assert_eq!(
            (last["gear"].clone(), last["rpm"].clone()),
            (json!(1), json!(4000.0))
        );
        assert_eq!(last["session_time"], 938.483);
        assert_eq!(last["top_speed"], 7.0);
        crate::protocol::payload::validate_object(last.to_string().as_bytes(), 64 * 1024).unwrap();
    }

    #[test]
    fn bad_files_are_refused_plainly() {
        assert_eq!(
            Ibt::parse(Vec::new()).unwrap_err(),
            IbtError::Truncated("shorter than its headers")
        );
        let mut bytes = file();
        bytes[0] = 9;
        assert_eq!(
            Ibt::parse(bytes).unwrap_err(),
            IbtError::NotIbt("unknown header version")
        );
        let bytes = file();
        assert!(matches!(
            Ibt::parse(bytes[..50_000].to_vec()).unwrap_err(),
            IbtError::Truncated(_) | IbtError::NoRows
        ));
    }
}
