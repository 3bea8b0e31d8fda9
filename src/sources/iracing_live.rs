//! iRacing live: a copy of the sim's memory-mapped file
//! (`Local\IRSDKMemMapFileName`) in, the latest row as a schema frame out.
//!
//! The map has the layout of a telemetry file (sources::ibt, iRacing's
//! `irsdk_defines.h`) without the disk sub-header: the 112-byte header
//! (`ver`, `status`, `tickRate`, `sessionInfoUpdate`, `sessionInfoLen`,
//! `sessionInfoOffset`, `numVars`, `varHeaderOffset`, `numBuf`, `bufLen`, 2
//! pad, then `varBuf[4]` = {`tickCount`, `bufOffset`, 2 pad}), the variable
//! headers, the session info (YAML) and `numBuf` (3) rotating buffers of one row
//! each. The sim writes the next row into the buffer after the newest and then
//! raises that buffer's `tickCount`; the newest row is the buffer with the
//! highest `tickCount`. `status` bit 0 (`irsdk_stConnected`) is set while the
//! sim is on track or in the garage, clear in its menus or once it has quit.
//!
//! The sim writes while the map is copied, with no lock: the reader copies the
//! whole map, then copies the header again and hands the decoder both. A row
//! whose buffer's `tickCount` moved under the copy is torn: counted and
//! skipped, the next tick takes a whole one (the SDK's own `irsdk_getNewData`
//! checks the same way). Session info rewritten during the copy
//! (`sessionInfoUpdate` moved) is not read; the last whole one stays.
//!
//! Each row becomes a frame with the replay's mapping ([`Ibt::frame`]):
//! names and the car setup from the session info, speed in km/h, pressures in
//! psi, tyre temperatures and wear averaged across the tread, `LapDist` as
//! `lap_distance`. The setup is handed out again whenever the session info's
//! `CarSetup` changes (the driver changed it in the garage).

use serde_json::Value;

use super::Le;
use super::ibt::{Ibt, Layout};

/// The header's length, all the reader copies a second time.
pub const HEADER_LEN: usize = 112;
/// `irsdk_stConnected`.
const CONNECTED: i32 = 1;
/// `IRSDK_MAX_BUFS`.
const MAX_BUFS: usize = 4;

/// What the decoder has seen, for the monitor's progress line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Rows read into the car's frame.
    pub read: u64,
    /// Reads with no newer row than the last (the sim paused, or between ticks).
    pub unchanged: u64,
    /// The sim not connected (menus, or quit): no row to read.
    pub off: u64,
    /// The newest row written while it was copied: skipped.
    pub torn: u64,
    /// A map whose header or variables make no sense, or cut short.
    pub malformed: u64,
}

/// The player's car as the sim last described it.
#[derive(Debug, Default)]
pub struct Decoder {
    counts: Counts,
    /// The session info as JSON and the `sessionInfoUpdate` it was read at.
    session_info: Value,
    info_update: Option<i32>,
    /// The tickCount of the last row read.
    last_tick: Option<i32>,
    /// The fastest the car has gone in the rows read (km/h).
    top_speed: Option<f64>,
    frame: Option<Value>,
    /// The car setup not yet handed out, and the last one that was.
    setup: Option<Value>,
    setup_given: Option<Value>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Reads a copy of the whole map, with the header as copied again after
    /// it (`header_after`, [`HEADER_LEN`] bytes); true when the car's frame
    /// changed.
    pub fn read(&mut self, map: &[u8], header_after: &[u8]) -> bool {
        let (m, after) = (Le(map), Le(header_after));
        let Some(status) = m.i32(4) else {
            self.counts.malformed += 1;
            return false;
        };
        if status & CONNECTED == 0 {
            self.counts.off += 1;
            return false;
        }
        let Ok(layout) = Layout::read(map) else {
            self.counts.malformed += 1;
            return false;
        };
        // The newest buffer: the highest tickCount of the first numBuf.
        let bufs = m
            .i32(32)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (1..=MAX_BUFS).contains(n));
        let newest = bufs.and_then(|n| (0..n).filter_map(|i| Some((m.i32(48 + 16 * i)?, i))).max());
        let Some((tick, buf)) = newest else {
            self.counts.malformed += 1;
            return false;
        };
        let row = m
            .i32(48 + 16 * buf + 4)
            .and_then(|at| usize::try_from(at).ok())
            .and_then(|at| map.get(at..at.checked_add(layout.row_len)?));
        let Some(row) = row else {
            self.counts.malformed += 1;
            return false;
        };
        if after.i32(48 + 16 * buf) != Some(tick) {
            self.counts.torn += 1;
            return false;
        }
        if self.last_tick == Some(tick) {
            self.counts.unchanged += 1;
            return false;
        }
        // The YAML again only when the sim has rewritten it, and only whole.
        if self.info_update != Some(layout.info_update)
            && after.i32(12) == Some(layout.info_update)
            && let Ok(info) = layout.session_info(map)
        {
            self.session_info = info;
            self.info_update = Some(layout.info_update);
        }
        self.last_tick = Some(tick);
        self.counts.read += 1;
        let ibt = Ibt::of_row(
            &layout,
            std::mem::take(&mut self.session_info),
            row.to_vec(),
        );
        if let Some(speed) = ibt.speed_kmh(0) {
            self.top_speed = Some(self.top_speed.map_or(speed, |top| top.max(speed)));
        }
        self.frame = Some(ibt.frame(0, self.top_speed));
        let setup = ibt.setup();
        self.session_info = ibt.into_session_info();
        if setup.is_some() && setup != self.setup_given {
            self.setup.clone_from(&setup);
            self.setup_given = setup;
        }
        true
    }

    /// The car's frame: `None` until a row was read.
    pub fn frame(&self) -> Option<Value> {
        self.frame.clone()
    }

    /// The car setup (the session info's `CarSetup`), once each time it
    /// changes.
    pub fn take_setup(&mut self) -> Option<Value> {
        self.setup.take()
    }
}

/// A live map as the sim writes it, each field at its documented offset: the
/// decoder's tests and the fuzzer's seeds build from this.
pub mod build {
    /// A variable: its name, `irsdk_VarType` (1 bool, 2 int, 3 bitfield,
    /// 4 float, 5 double) and its value in each buffer's row.
    pub struct Var {
        pub name: String,
        pub kind: i32,
        pub values: Vec<f64>,
    }

    impl Var {
        pub fn new(name: impl Into<String>, kind: i32, values: &[f64]) -> Self {
            Var {
                name: name.into(),
                kind,
                values: values.to_vec(),
            }
        }
    }

    fn size(kind: i32) -> usize {
        match kind {
            0 | 1 => 1,
            5 => 8,
            _ => 4,
        }
    }

    /// The map: header, variable headers from 144, the session info, then a
    /// row per buffer, each buffer with its tickCount (`ticks.len()` buffers).
    pub fn map(vars: &[Var], session_info: &str, ticks: &[i32]) -> Vec<u8> {
        const VAR_HEADERS: usize = 144;
        let row_len: usize = vars
            .iter()
            .map(|v| size(v.kind))
            .sum::<usize>()
            .next_multiple_of(16);
        let info_at = VAR_HEADERS + 144 * vars.len();
        // Room for the sim to write longer session info later, as it does.
        let info_len = session_info.len() + 64;
        let first_buf = (info_at + info_len).next_multiple_of(16);
        let mut m = vec![0u8; first_buf + row_len * ticks.len()];
        fn i32_at(m: &mut [u8], at: usize, v: i32) {
            m[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        for (field, value) in [
            2,  // ver
            1,  // status: connected
            60, // tickRate
            1,  // sessionInfoUpdate
            info_len as i32,
            info_at as i32,
            vars.len() as i32,
            VAR_HEADERS as i32,
            ticks.len() as i32,
            row_len as i32,
        ]
        .into_iter()
        .enumerate()
        {
            i32_at(&mut m, 4 * field, value);
        }
        for (b, tick) in ticks.iter().enumerate() {
            i32_at(&mut m, 48 + 16 * b, *tick);
            i32_at(&mut m, 48 + 16 * b + 4, (first_buf + row_len * b) as i32);
        }
        let mut offset = 0;
        for (n, var) in vars.iter().enumerate() {
            let at = VAR_HEADERS + 144 * n;
            i32_at(&mut m, at, var.kind);
            i32_at(&mut m, at + 4, offset as i32);
            i32_at(&mut m, at + 8, 1);
            m[at + 16..at + 16 + var.name.len()].copy_from_slice(var.name.as_bytes());
            for (b, value) in var.values.iter().enumerate().take(ticks.len()) {
                let row = first_buf + row_len * b + offset;
                let raw: Vec<u8> = match var.kind {
                    0 | 1 => vec![*value as u8],
                    2 => (*value as i32).to_le_bytes().to_vec(),
                    3 => (*value as u32).to_le_bytes().to_vec(),
                    4 => (*value as f32).to_le_bytes().to_vec(),
                    _ => value.to_le_bytes().to_vec(),
                };
                m[row..row + raw.len()].copy_from_slice(&raw);
            }
            offset += size(var.kind);
        }
        m[info_at..info_at + session_info.len()].copy_from_slice(session_info.as_bytes());
        m
    }

    /// A race at Spa: three buffers, the newest (tickCount 302) the second.
    pub fn race() -> Vec<u8> {
        let corners = |what: &str, values: [f64; 4]| -> Vec<(String, f64)> {
            ["LF", "RF", "LR", "RR"]
                .iter()
                .zip(values)
                .flat_map(|(c, v)| {
                    // Three readings across the tread: L, M, R.
                    if let Some(base) = what.strip_suffix('M') {
                        vec![
                            (format!("{c}{base}L"), v - 1.0),
                            (format!("{c}{base}M"), v),
                            (format!("{c}{base}R"), v + 1.0),
                        ]
                    } else {
                        vec![(format!("{c}{what}"), v)]
                    }
                })
                .collect()
        };
        // Each buffer's row: the newest buffer (1) holds these values; the
        // others older ones, so reading the wrong buffer shows.
        let three = |v: f64| [v - 1.0, v, v - 2.0];
        let mut vars = vec![
            Var::new("SessionTime", 5, &three(1234.5)),
            Var::new("SessionTimeRemain", 5, &three(2400.25)),
            Var::new("SessionLapsRemainEx", 2, &three(32767.0)),
            Var::new("SessionNum", 2, &[2.0, 2.0, 2.0]),
            Var::new("SessionFlags", 3, &[4.0, 8.0, 4.0]),
            Var::new("Lap", 2, &three(7.0)),
            Var::new("LapDist", 4, &three(1523.5)),
            Var::new("PlayerCarPosition", 2, &three(4.0)),
            Var::new("LapCurrentLapTime", 4, &three(41.5)),
            Var::new("LapLastLapTime", 4, &three(138.25)),
            Var::new("LapBestLapTime", 4, &three(137.75)),
            Var::new("FuelLevel", 4, &three(61.5)),
            Var::new("FuelLevelPct", 4, &three(0.5)),
            Var::new("Speed", 4, &[50.0, 62.5, 70.0]),
            Var::new("Gear", 2, &three(5.0)),
            Var::new("RPM", 4, &three(7654.0)),
            Var::new("Throttle", 4, &three(0.75)),
            Var::new("Brake", 4, &[0.0, 0.25, 0.0]),
            Var::new("OnPitRoad", 1, &[1.0, 0.0, 1.0]),
            Var::new("PlayerCarInPitStall", 1, &[0.0, 0.0, 0.0]),
            Var::new("IsInGarage", 1, &[0.0, 0.0, 0.0]),
            Var::new("WaterTemp", 4, &three(91.5)),
            Var::new("OilTemp", 4, &three(104.25)),
            Var::new("TrackTempCrew", 4, &three(33.5)),
            Var::new("AirTemp", 4, &three(21.5)),
        ];
        for (what, values, kind) in [
            ("tempCM", [90.0, 88.0, 85.0, 84.0], 4),
            ("tempM", [80.0, 78.0, 75.0, 74.0], 4),
            ("pressure", [186.0, 184.0, 172.0, 170.0], 4),
            ("wearM", [0.9, 0.8, 0.7, 0.6], 4),
        ] {
            for (name, v) in corners(what, values) {
                vars.push(Var::new(name, kind, &three(v)));
            }
        }
        map(&vars, SESSION_INFO, &[301, 302, 300])
    }

    pub const SESSION_INFO: &str = "---
WeekendInfo:
 TrackDisplayName: Circuit de Spa-Francorchamps
SessionInfo:
 Sessions:
 - SessionNum: 0
   SessionType: Practice
 - SessionNum: 2
   SessionType: Race
DriverInfo:
 DriverCarIdx: 1
 DriverCarFuelMaxLtr: 110.0
 DriverCarMaxFuelPct: 1.000
 Drivers:
 - CarIdx: 0
   UserName: Someone Else
 - CarIdx: 1
   UserName: Jons Agren
   CarScreenName: Porsche 963
   TeamName: Blue
CarSetup:
 UpdateCount: 3
 TiresAero:
  LeftFront:
   StartingPressure: 152.0 kPa
...
";
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::build::{SESSION_INFO, Var, map, race};
    use super::*;

    fn header(map: &[u8]) -> &[u8] {
        &map[..HEADER_LEN]
    }

    #[test]
    fn the_newest_row_reads_into_the_schema_with_the_replays_mapping() {
        let m = race();
        let mut d = Decoder::new();
        assert!(d.read(&m, header(&m)));
        let f = d.frame().unwrap();
        let want = json!({
            "game": "iRacing",
            "player_name": "Jons Agren", "car_name": "Porsche 963", "team_name": "Blue",
            "track_name": "Circuit de Spa-Francorchamps",
            "session_time": 1234.5, "session_time_left": 2400.25,
            "lap": 7, "lap_distance": 1523.5, "position": 4,
            "lap_time": 41.5, "last_lap_time": 138.25, "best_lap_time": 137.75,
            "fuel": 61.5, "fuel_pct": 0.5, "fuel_capacity": 110.0,
            "speed": 225.0, "top_speed": 225.0, "gear": 5, "rpm": 7654.0,
            "throttle": 0.75, "brake": 0.25, "in_pits": false,
            "tire_temps": {"fl": 90.0, "fr": 88.0, "rl": 85.0, "rr": 84.0},
            "tire_surface_temps": {"fl": 80.0, "fr": 78.0, "rl": 75.0, "rr": 74.0},
            "tire_pressures": {"fl": 26.98, "fr": 26.69, "rl": 24.95, "rr": 24.66},
            "tire_wear": {"fl": 0.9, "fr": 0.8, "rl": 0.7, "rr": 0.6},
            "engine_water_temp": 91.5, "engine_oil_temp": 104.3,
            "track_temp": 33.5, "ambient_temp": 21.5,
            "flag": "yellow", "session_type": "Race",
        });
        assert_eq!(f, want);
        crate::protocol::payload::validate_object(f.to_string().as_bytes(), 64 * 1024).unwrap();
        let setup = d.take_setup().unwrap();
        assert_eq!(setup["UpdateCount"], 3);
        assert_eq!(d.take_setup(), None, "handed out once");
    }

    #[test]
    fn a_row_written_during_the_copy_is_counted_and_skipped() {
        let m = race();
        let mut after = header(&m).to_vec();
        // The sim raised the newest buffer's tickCount under the copy.
        after[64..68].copy_from_slice(&303i32.to_le_bytes());
        let mut d = Decoder::new();
        assert!(!d.read(&m, &after));
        assert_eq!(d.frame(), None);
        // Another buffer's tick moving does not tear the newest row.
        let mut after = header(&m).to_vec();
        after[48..52].copy_from_slice(&304i32.to_le_bytes());
        assert!(d.read(&m, &after));
        assert!(!d.read(&m, header(&m)), "the same row again");
        assert_eq!(
            d.counts(),
            Counts {
                read: 1,
                unchanged: 1,
                torn: 1,
                ..Counts::default()
            }
        );
    }

    #[test]
    fn the_next_buffer_is_the_next_row_and_top_speed_keeps() {
        let mut m = race();
        let mut d = Decoder::new();
        assert!(d.read(&m, header(&m)));
        // The sim writes buffer 2 (Speed 70 m/s) and raises its tick.
        m[80..84].copy_from_slice(&303i32.to_le_bytes());
        assert!(d.read(&m, header(&m)));
        assert_eq!(d.frame().unwrap()["speed"], 252.0);
        // Then buffer 0 (Speed 50 m/s): the top speed stays.
        m[48..52].copy_from_slice(&304i32.to_le_bytes());
        assert!(d.read(&m, header(&m)));
        let f = d.frame().unwrap();
        assert_eq!(
            (&f["speed"], &f["top_speed"]),
            (&json!(180.0), &json!(252.0))
        );
        assert_eq!(d.take_setup().unwrap()["UpdateCount"], 3);
        assert_eq!(d.take_setup(), None, "the setup did not change");
    }

    #[test]
    fn a_changed_setup_is_handed_out_again_once_its_info_is_whole() {
        let mut m = race();
        let mut d = Decoder::new();
        d.read(&m, header(&m));
        d.take_setup();
        let info_at = usize::try_from(Le(&m).i32(20).unwrap()).unwrap();
        let changed = SESSION_INFO.replace("UpdateCount: 3", "UpdateCount: 4");
        m[info_at..info_at + changed.len()].copy_from_slice(changed.as_bytes());
        m[12..16].copy_from_slice(&2i32.to_le_bytes());
        m[64..68].copy_from_slice(&310i32.to_le_bytes());
        // Rewritten again during the copy: not read yet.
        let mut after = header(&m).to_vec();
        after[12..16].copy_from_slice(&3i32.to_le_bytes());
        assert!(d.read(&m, &after));
        assert_eq!(d.take_setup(), None);
        m[64..68].copy_from_slice(&311i32.to_le_bytes());
        assert!(d.read(&m, header(&m)));
        assert_eq!(d.take_setup().unwrap()["UpdateCount"], 4);
    }

    #[test]
    fn the_menus_and_garbage_are_counted_never_read() {
        let mut d = Decoder::new();
        assert!(!d.read(&[], &[]));
        assert!(!d.read(&[0xff; 500], &[0xff; 112]));
        let mut m = race();
        m[4..8].copy_from_slice(&0i32.to_le_bytes());
        assert!(!d.read(&m, header(&m)), "not connected");
        let m = race();
        assert!(!d.read(&m[..2000], header(&m)), "cut short");
        let mut bad = race();
        bad[32..36].copy_from_slice(&9i32.to_le_bytes()); // numBuf 9
        assert!(!d.read(&bad, header(&bad)));
        let mut bad = race();
        bad[52..56].copy_from_slice(&i32::MAX.to_le_bytes()); // a buffer past the end
        bad[48..52].copy_from_slice(&999i32.to_le_bytes());
        assert!(!d.read(&bad, header(&bad)));
        assert_eq!(
            d.counts(),
            Counts {
                off: 1,
                malformed: 5,
                ..Counts::default()
            }
        );
        assert_eq!(d.frame(), None);
        // A map of one variable, no session info: a frame of what there is.
        let m = map(&[Var::new("Speed", 4, &[10.0])], "", &[1]);
        assert!(d.read(&m, header(&m)));
        assert_eq!(d.frame().unwrap()["speed"], 36.0);
        assert_eq!(d.take_setup(), None);
    }

    /// The fuzzer's seed (.ci/run copies it into its corpus): the builder's
    /// map, held to it here; `PADDOCK_WRITE_FIXTURES=1` rewrites it.
    #[test]
    fn the_fuzz_seeds_are_the_builders_map() {
        let dir = format!("{}/tests/data/iracing-live", env!("CARGO_MANIFEST_DIR"));
        let path = format!("{dir}/race.bin");
        let built = race();
        if std::env::var_os("PADDOCK_WRITE_FIXTURES").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &built).unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), built, "{path}");
    }
}
