//! MoTeC i2 files from recorded laps: the `.ld` (logged data: a header, the
//! event, venue and vehicle blocks, one metadata block per channel, then each
//! channel's samples) and its `.ldx` (XML beside it: the lap beacons).
//!
//! Written from the layout the community reverse-engineered and publishes
//! (gotzl/ldparser, whose exports i2 opens, and the motec-i2 crate's reader):
//! little-endian, fixed-size blocks linked by file offsets. Not through the
//! `motec-i2` crate (MIT, 0.2.0): it writes no `.ldx`, leaves the header's
//! offsets and channel count for the caller to compute, ignores short writes
//! (`write`, not `write_all`) and copies a 13 KB header out of a sample log.
//! Its reader is independent of this writer, so the tests read our files
//! back with it.
//!
//! MoTeC channels are sampled at one fixed rate; a recorded lap is frames as
//! they came. Each channel is resampled on a grid at the frames' own rate
//! (the median interval, 1 to 1000 Hz): linear between the two frames around
//! a point, `gear` the nearer frame's. MoTeC has no "no value": where a frame
//! lacks a channel, or frames are more than a second apart, the last value
//! holds (the CSV export keeps the gaps).

use std::fmt::Write as _;

use crate::protocol::trace::{Axis, Trace};

/// A channel as MoTeC users know it: paddock's telemetry key, i2's name and
/// short name, its unit, and the factor from paddock's unit to it.
pub struct Channel {
    pub key: &'static str,
    pub name: &'static str,
    pub short: &'static str,
    pub unit: &'static str,
    pub factor: f64,
}

/// What an export carries, in i2's names (docs/PROTOCOL.md "Traces" gives the
/// mapping): the channel names i2's standard maths and worksheets look for.
pub const CHANNELS: [Channel; 7] = [
    Channel {
        key: "lap_distance",
        name: "Lap Distance",
        short: "LapDist",
        unit: "m",
        factor: 1.0,
    },
    Channel {
        key: "speed",
        name: "Ground Speed",
        short: "Speed",
        unit: "km/h",
        factor: 1.0,
    },
    Channel {
        key: "throttle",
        name: "Throttle Pos",
        short: "Thr",
        unit: "%",
        factor: 100.0,
    },
    Channel {
        key: "brake",
        name: "Brake Pos",
        short: "Brk",
        unit: "%",
        factor: 100.0,
    },
    Channel {
        key: "steering",
        name: "Steering Pos",
        short: "Steer",
        unit: "%",
        factor: 100.0,
    },
    Channel {
        key: "gear",
        name: "Gear",
        short: "Gear",
        unit: "",
        factor: 1.0,
    },
    Channel {
        key: "rpm",
        name: "Engine RPM",
        short: "RPM",
        unit: "rpm",
        factor: 1.0,
    },
];

/// The telemetry keys an export asks `sessions.trace` for (`lap_distance`
/// comes with every trace).
pub fn keys() -> Vec<&'static str> {
    CHANNELS.iter().skip(1).map(|c| c.key).collect()
}

/// Samples one file may hold in all channels: 7 channels of a 24-hour race
/// at 60 Hz would be 36 M; 16 M samples (64 MB of f32) is hours of a car at
/// 60 Hz, and a bound on what one request can make the HTTP side allocate.
pub const MAX_SAMPLES: usize = 16 * 1024 * 1024;

/// Who, what and where, for the header and the event block.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Details {
    pub driver: Option<String>,
    pub vehicle: Option<String>,
    pub venue: Option<String>,
    /// The session (its id), written as the event's session.
    pub session: Option<String>,
    /// When the first lap started, for the header's date and time.
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Why laps cannot be written as MoTeC files.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MotecError {
    #[error("no recorded frames to write")]
    Empty,
    #[error("a MoTeC export needs laps as recorded (\"raw\": true), not resampled")]
    NotRecorded,
    #[error("{samples} samples, more than {max}: export fewer laps at once")]
    TooLarge { samples: usize, max: usize },
}

/// The `.ld` and `.ldx` of one export.
#[derive(Debug, Clone)]
pub struct Files {
    pub ld: Vec<u8>,
    pub ldx: String,
    /// The rate every channel is sampled at, Hz.
    pub hz: u16,
    /// Samples per channel.
    pub samples: usize,
}

/// One recorded frame on the export's timeline.
struct Point {
    /// Seconds from the file's start.
    t: f64,
    values: Vec<Option<f64>>,
}

/// The laps, one after the other, as one log: each lap's frames at their
/// time into the lap, the next lap starting one frame interval after the
/// last frame of the one before (a lap's frames end a frame before its line).
fn timeline(traces: &[Trace]) -> (Vec<Point>, Vec<f64>, f64) {
    let mut points = Vec::new();
    // The first lap's line too: what is before the first beacon i2 takes
    // for an out lap.
    let mut beacons = vec![0.0];
    let mut intervals = Vec::new();
    for trace in traces {
        let times: Vec<f64> = trace
            .elapsed_s
            .iter()
            .map(|t| t.unwrap_or(f64::NAN))
            .collect();
        intervals.extend(
            times
                .windows(2)
                .map(|w| w[1] - w[0])
                .filter(|d| d.is_finite() && *d > 0.0),
        );
    }
    intervals.sort_by(f64::total_cmp);
    let dt = intervals.get(intervals.len() / 2).copied().unwrap_or(0.05);
    let mut offset = 0.0;
    for trace in traces {
        let mut last = 0.0;
        for k in 0..trace.elapsed_s.len() {
            let Some(t) = trace.elapsed_s[k].filter(|t| t.is_finite()) else {
                continue;
            };
            let values = CHANNELS
                .iter()
                .map(|c| {
                    let v = if c.key == "lap_distance" {
                        trace.distance_m.get(k).copied().flatten()
                    } else {
                        trace
                            .channels
                            .get(c.key)
                            .and_then(|v| v.get(k).copied().flatten())
                    };
                    v.filter(|v| v.is_finite()).map(|v| v * c.factor)
                })
                .collect();
            // A frame before the one kept (time going back) is left out: the
            // log's time only moves on.
            if points.last().is_some_and(|p: &Point| offset + t <= p.t) {
                continue;
            }
            points.push(Point {
                t: offset + t,
                values,
            });
            last = t;
        }
        offset += last + dt;
        beacons.push(offset);
    }
    (points, beacons, dt)
}

/// How many samples a channel has on a grid every `1/hz` s from 0 to the
/// last frame. Saturating: a last frame days away (any float a page may post)
/// is refused by the bound, never an overflow.
fn samples(points: &[Point], hz: f64) -> usize {
    let end = points.last().map_or(0.0, |p| p.t);
    // `as` saturates (and takes NaN and negatives to 0).
    ((end * hz).floor() as usize).saturating_add(1)
}

/// Each channel's `n` samples on a grid every `1/hz` s from 0 to the last
/// frame ([`samples`]).
fn resample(points: &[Point], hz: f64, n: usize) -> Vec<Vec<f32>> {
    let mut out = vec![Vec::with_capacity(n); CHANNELS.len()];
    let mut held: Vec<f64> = vec![0.0; CHANNELS.len()];
    let mut i = 0;
    for k in 0..n {
        let x = k as f64 / hz;
        while i + 1 < points.len() && points[i + 1].t <= x {
            i += 1;
        }
        let (a, b) = (&points[i], points.get(i + 1));
        for (c, channel) in CHANNELS.iter().enumerate() {
            let v = match (a.values[c], b.and_then(|b| b.values[c].map(|v| (b.t, v)))) {
                (Some(va), Some((tb, vb))) if tb - a.t <= 1.0 && x >= a.t => {
                    let f = (x - a.t) / (tb - a.t);
                    if channel.key == "gear" {
                        if f < 0.5 { va } else { vb }
                    } else {
                        va + (vb - va) * f
                    }
                }
                (Some(va), _) if x >= a.t => va,
                _ => held[c],
            };
            held[c] = v;
            out[c].push(v as f32);
        }
    }
    out
}

/// The header block: 0x6E2 bytes, then the event at `EVENT`.
const HEADER: usize = 0x6E2;
const EVENT: usize = HEADER;
const EVENT_LEN: usize = 64 + 64 + 1024 + 2;
const VENUE: usize = EVENT + EVENT_LEN;
const VENUE_LEN: usize = 64 + 1034 + 2;
const VEHICLE: usize = VENUE + VENUE_LEN;
const VEHICLE_LEN: usize = 64 + 128 + 4 + 32 + 32;
const META: usize = VEHICLE + VEHICLE_LEN;
/// One channel's metadata block.
const META_LEN: usize = 124;
/// The header's first word, what readers check.
const MARKER: u32 = 0x40;

/// Little-endian writes into a buffer, strings padded with zeros to their
/// field (and cut to it: MoTeC's fields are ASCII, anything else becomes '?').
struct Out(Vec<u8>);

impl Out {
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i16(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn zeros(&mut self, n: usize) {
        self.0.resize(self.0.len() + n, 0);
    }
    fn text(&mut self, field: usize, s: &str) {
        let ascii: Vec<u8> = s
            .chars()
            .map(|c| {
                if c.is_ascii() && !c.is_ascii_control() {
                    c as u8
                } else {
                    b'?'
                }
            })
            .take(field)
            .collect();
        self.0.extend_from_slice(&ascii);
        self.zeros(field - ascii.len());
    }
}

/// The laps' `.ld` and `.ldx`: `traces` as recorded, in the order driven,
/// within [`MAX_SAMPLES`].
pub fn write(traces: &[Trace], details: &Details) -> Result<Files, MotecError> {
    write_within(traces, details, MAX_SAMPLES)
}

/// [`write`] within `max_samples` in all channels, refused before anything
/// is allocated for them.
pub fn write_within(
    traces: &[Trace],
    details: &Details,
    max_samples: usize,
) -> Result<Files, MotecError> {
    if traces.iter().any(|t| t.axis != Axis::Recorded) {
        return Err(MotecError::NotRecorded);
    }
    let (points, beacons, dt) = timeline(traces);
    if points.is_empty() {
        return Err(MotecError::Empty);
    }
    let hz = (1.0 / dt).round().clamp(1.0, 1000.0);
    let n = samples(&points, hz);
    if n.saturating_mul(CHANNELS.len()) > max_samples {
        return Err(MotecError::TooLarge {
            samples: n.saturating_mul(CHANNELS.len()),
            max: max_samples,
        });
    }
    let data = resample(&points, hz, n);
    let hz = hz as u16;
    let started = details.started_at.unwrap_or_default();
    let data_at = META + META_LEN * CHANNELS.len();

    let mut out = Out(Vec::with_capacity(data_at + n * 4 * CHANNELS.len()));
    // The header.
    out.u32(MARKER);
    out.zeros(4);
    out.u32(META as u32);
    out.u32(data_at as u32);
    out.zeros(20);
    out.u32(EVENT as u32);
    out.zeros(24);
    // Three words every logger writes the same (what readers skip).
    out.u16(1);
    out.u16(0x4240);
    out.u16(0xF);
    out.u32(0x1F44); // device serial
    out.text(8, "ADL"); // device type
    out.u16(420); // device version
    out.u16(0xADB0);
    out.u32(CHANNELS.len() as u32);
    out.zeros(4);
    out.text(16, &started.format("%d/%m/%Y").to_string());
    out.zeros(16);
    out.text(16, &started.format("%H:%M:%S").to_string());
    out.zeros(16);
    out.text(64, details.driver.as_deref().unwrap_or_default());
    out.text(64, details.vehicle.as_deref().unwrap_or_default());
    out.zeros(64);
    out.text(64, details.venue.as_deref().unwrap_or_default());
    out.zeros(64);
    out.zeros(1024);
    // "Pro logging": the value the community's exports carry.
    out.u32(0xC81A4);
    out.zeros(2);
    out.text(64, details.session.as_deref().unwrap_or_default());
    out.text(64, "paddock");
    out.zeros(126);
    debug_assert_eq!(out.0.len(), EVENT);
    // The event, then its venue and the venue's vehicle.
    out.text(64, "paddock");
    out.text(64, details.session.as_deref().unwrap_or_default());
    out.text(1024, "exported by paddock sessions export");
    out.u16(VENUE as u16);
    out.text(64, details.venue.as_deref().unwrap_or_default());
    out.zeros(1034);
    out.u16(VEHICLE as u16);
    out.text(64, details.vehicle.as_deref().unwrap_or_default());
    out.zeros(128);
    out.u32(0); // weight
    out.text(32, "");
    out.text(32, "");
    debug_assert_eq!(out.0.len(), META);
    // The channels' metadata, a doubly linked list, then their samples (f32:
    // scale 1, no decimal shift, so a reader gets the values as written).
    for (c, channel) in CHANNELS.iter().enumerate() {
        let at = |k: usize| (META + META_LEN * k) as u32;
        out.u32(if c == 0 { 0 } else { at(c - 1) });
        out.u32(if c + 1 == CHANNELS.len() {
            0
        } else {
            at(c + 1)
        });
        out.u32((data_at + 4 * n * c) as u32);
        out.u32(n as u32);
        out.u16(0x2EE1 + c as u16); // a counter the loggers write
        out.u16(7); // float
        out.u16(4); // 4 bytes
        out.u16(hz);
        out.i16(0); // shift
        out.i16(1); // mul
        out.i16(1); // scale
        out.i16(0); // decimal places of the raw value
        out.text(32, channel.name);
        out.text(8, channel.short);
        out.text(12, channel.unit);
        out.zeros(40);
    }
    debug_assert_eq!(out.0.len(), data_at);
    for channel in &data {
        for v in channel {
            out.0.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(Files {
        ld: out.0,
        ldx: ldx(&beacons, hz),
        hz,
        samples: n,
    })
}

/// The `.ldx`: a beacon at each line crossing, the first lap's start and
/// every lap's end (microseconds from the log's start), which i2 reads as the
/// lap markers.
fn ldx(beacons: &[f64], hz: u16) -> String {
    let mut markers = String::new();
    for (k, t) in beacons.iter().enumerate() {
        let _ = writeln!(
            markers,
            r#"     <Marker Version="100" ClassName="BCN" Name="Manual.{}" Flags="77" Time="{:.6}"/>"#,
            k + 1,
            (t * 1e6).round()
        );
    }
    format!(
        r#"<?xml version="1.0"?>
<LDXFile Locale="English_United States.1252" DefaultLocale="C" Version="1.6">
 <Layers>
  <Layer>
   <MarkerBlock>
    <MarkerGroup Name="Beacons" Index="3">
{markers}    </MarkerGroup>
   </MarkerBlock>
   <RangeBlock/>
  </Layer>
  <Details>
   <String Id="Total Laps" Value="{count}"/>
   <String Id="Log Rate" Value="{hz} Hz"/>
  </Details>
 </Layers>
</LDXFile>
"#,
        count = beacons.len().saturating_sub(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::id::SessionId;
    use std::collections::BTreeMap;

    /// A recorded lap: a frame every `dt` s for `seconds`, at 50 m/s, the
    /// throttle a ramp, gear 4 then 5 from halfway.
    fn lap(lap: u64, seconds: f64, dt: f64) -> Trace {
        let n = (seconds / dt).round() as usize;
        let times: Vec<f64> = (0..n).map(|k| k as f64 * dt).collect();
        let mut channels = BTreeMap::new();
        channels.insert("speed".into(), times.iter().map(|_| Some(180.0)).collect());
        channels.insert(
            "throttle".into(),
            times.iter().map(|t| Some(t / seconds)).collect(),
        );
        channels.insert("brake".into(), times.iter().map(|_| Some(0.0)).collect());
        channels.insert("steering".into(), times.iter().map(|_| None).collect());
        channels.insert(
            "gear".into(),
            times
                .iter()
                .map(|t| Some(if *t < seconds / 2.0 { 4.0 } else { 5.0 }))
                .collect(),
        );
        channels.insert("rpm".into(), times.iter().map(|_| Some(8000.0)).collect());
        Trace {
            session_id: SessionId::parse("3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b").unwrap(),
            lap: lap.into(),
            axis: Axis::Recorded,
            step: None,
            frames: n,
            distance_m: times.iter().map(|t| Some(50.0 * t)).collect(),
            elapsed_s: times.iter().map(|t| Some(*t)).collect(),
            channels,
            gaps: vec![],
        }
    }

    #[test]
    fn an_export_reads_back_with_an_independent_reader() {
        use motec_i2::{Datatype, LDReader};
        let details = Details {
            driver: Some("A. Driver".into()),
            vehicle: Some("GT3 #7".into()),
            venue: Some("Le Mans".into()),
            session: Some("3f2b8c1e".into()),
            started_at: "2026-12-07T12:30:05Z".parse().ok(),
        };
        // Two laps of 10 s at 20 Hz.
        let files = write(&[lap(1, 10.0, 0.05), lap(2, 10.0, 0.05)], &details).unwrap();
        assert_eq!(files.hz, 20);
        // 20.0 s of log (lap 2 starts a frame after lap 1's last), the last
        // frame at 19.95 s: 400 samples.
        assert_eq!(files.samples, 400);
        let mut source = std::io::Cursor::new(files.ld.clone());
        let mut reader = LDReader::new(&mut source);
        let header = reader.read_header().unwrap();
        assert_eq!(header.num_channels, 7);
        assert_eq!(header.driver, "A. Driver");
        assert_eq!(header.vehicleid, "GT3 #7");
        assert_eq!(header.venue, "Le Mans");
        assert_eq!(header.date_string, "07/12/2026");
        assert_eq!(header.time_string, "12:30:05");
        assert_eq!(reader.read_event().unwrap().unwrap().session, "3f2b8c1e");
        assert_eq!(reader.read_venue().unwrap().unwrap().name, "Le Mans");
        assert_eq!(reader.read_vehicle().unwrap().unwrap().id, "GT3 #7");
        let channels = reader.read_channels().unwrap();
        let names: Vec<(&str, &str)> = channels
            .iter()
            .map(|c| (c.name.as_str(), c.unit.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("Lap Distance", "m"),
                ("Ground Speed", "km/h"),
                ("Throttle Pos", "%"),
                ("Brake Pos", "%"),
                ("Steering Pos", "%"),
                ("Gear", ""),
                ("Engine RPM", "rpm"),
            ]
        );
        for c in &channels {
            assert_eq!((c.data_count, c.sample_rate), (400, 20), "{}", c.name);
            assert_eq!(c.datatype, Datatype::F32);
        }
        let mut values = |k: usize| -> Vec<f64> {
            let c = &channels[k];
            reader
                .channel_data(c)
                .unwrap()
                .iter()
                .map(|s| s.decode_f64(c))
                .collect()
        };
        // The throttle ramps 0 to 99.5 % in each lap; the distance starts
        // again at the line; gear 4 then 5; the missing steering holds 0.
        let throttle = values(2);
        assert_eq!(throttle[0], 0.0);
        assert!((throttle[100] - 50.0).abs() < 1e-4, "{}", throttle[100]);
        assert!((throttle[199] - 99.5).abs() < 1e-4, "{}", throttle[199]);
        assert_eq!(throttle[200], 0.0);
        let distance = values(0);
        assert!((distance[199] - 497.5).abs() < 1e-3);
        assert_eq!(distance[200], 0.0);
        assert_eq!(values(5)[99], 4.0);
        assert_eq!(values(5)[100], 5.0);
        assert!(values(4).iter().all(|v| *v == 0.0));
        assert!(values(1).iter().all(|v| *v == 180.0));
        // Beacons at the line: the start, and each lap's end.
        assert!(
            files
                .ldx
                .contains(r#"Name="Manual.1" Flags="77" Time="0.000000""#)
        );
        assert!(
            files
                .ldx
                .contains(r#"Name="Manual.2" Flags="77" Time="10000000.000000""#)
        );
        assert!(
            files
                .ldx
                .contains(r#"Name="Manual.3" Flags="77" Time="20000000.000000""#)
        );
        assert!(files.ldx.contains(r#"<String Id="Total Laps" Value="2"/>"#));
    }

    #[test]
    fn what_cannot_be_written_is_refused_with_the_reason() {
        let empty = Trace {
            elapsed_s: vec![],
            distance_m: vec![],
            ..lap(1, 1.0, 0.05)
        };
        assert_eq!(
            write(&[empty], &Details::default()).unwrap_err(),
            MotecError::Empty
        );
        let resampled = Trace {
            axis: Axis::Distance,
            ..lap(1, 1.0, 0.05)
        };
        assert_eq!(
            write(&[resampled], &Details::default()).unwrap_err(),
            MotecError::NotRecorded
        );
        // Frames a day apart at 1 kHz: refused before anything is allocated.
        let mut far = lap(1, 0.005, 0.001);
        far.elapsed_s[4] = Some(86_400.0);
        assert!(matches!(
            write(&[far], &Details::default()).unwrap_err(),
            MotecError::TooLarge { .. }
        ));
        // Any float a page may post: a frame 1e207 s in (found by the fuzz
        // target `motec`), or beyond what f64 holds once laps are added up.
        for t in [5.5e207, f64::MAX] {
            let mut far = lap(1, 1.0, 0.05);
            far.elapsed_s[0] = Some(t);
            let twice = [far.clone(), far];
            assert!(matches!(
                write(&twice, &Details::default()).unwrap_err(),
                MotecError::TooLarge { .. }
            ));
        }
        // Names outside ASCII become '?' in MoTeC's fixed fields.
        let files = write(
            &[lap(1, 1.0, 0.05)],
            &Details {
                driver: Some("Léa".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let mut source = std::io::Cursor::new(files.ld);
        let header = motec_i2::LDReader::new(&mut source).read_header().unwrap();
        assert_eq!(header.driver, "L?a");
    }
}
