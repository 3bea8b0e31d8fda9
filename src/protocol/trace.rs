//! Laps as traces: a lap's recorded frames put on a distance grid, and two laps
//! compared along it (`sessions.trace`, `sessions.compare`; docs/PROTOCOL.md
//! "Traces"). Pure: samples in, documents out; the processor reads the frames
//! from the broker's trace stream (server/traces.rs) and `paddock sessions
//! export` writes what it gets as CSV.
//!
//! Nothing is invented: a stretch of the lap with no frame closer than
//! [`gap_threshold`] is a gap, reported and left `null`, never interpolated over.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::protocol::id::SessionId;

/// The channels a trace carries when the request names none: what an engineer
/// overlays first (docs/PROTOCOL.md "Telemetry schema" gives their units).
pub const DEFAULT_CHANNELS: [&str; 6] = ["speed", "throttle", "brake", "steering", "gear", "rpm"];
/// Grid step along the lap when the request gives none: 5 m is a car length,
/// about a frame at 20 Hz and 100 m/s; Le Mans' 13.6 km is 2,720 points.
pub const DEFAULT_STEP_M: f64 = 5.0;
/// Grid step in time for a source without `lap_distance`.
pub const DEFAULT_STEP_S: f64 = 0.1;
/// Points one trace may have: 20,000 is a 100 km lap at 5 m, or a recorded lap
/// of 5.5 minutes at 60 Hz. Beyond it the request is refused (413), not cut.
pub const MAX_POINTS: usize = 20_000;
/// Channels one request may name.
pub const MAX_CHANNELS: usize = 16;
/// Minisectors a comparison may be split into.
pub const MAX_MINISECTORS: usize = 200;
/// A reply must fit the broker's default 1 MB `max_payload` with room to spare;
/// the processor refuses a larger one with 413 and says what to ask instead.
pub const MAX_REPLY_BYTES: usize = 900 * 1024;

/// The channel that gives a frame's place on the lap, in metres from the line.
pub const DISTANCE: &str = "lap_distance";
/// The channel that gives a frame's time into the lap, in seconds (the sim's
/// own clock: a replay at any speed gives the times the race gave).
pub const LAP_TIME: &str = "lap_time";
/// The member of a lap's next frame that gives the lap's time, in seconds.
pub const LAST_LAP_TIME: &str = "last_lap_time";
/// The member that gives the lap's length, in metres: with it and the lap's
/// time a trace ends at the line.
pub const TRACK_LENGTH: &str = "track_length";
/// A channel read as the nearest sample, never interpolated (there is no gear
/// 3.5).
pub const NEAREST: [&str; 1] = ["gear"];

/// A distance between two consecutive frames beyond which the stretch between
/// them is a gap: five grid steps, and at least 50 m (a frame lost at 60 Hz and
/// 300 km/h is 1.4 m; 50 m is several frames lost in a row at any rate).
pub fn gap_threshold(step_m: f64) -> f64 {
    (5.0 * step_m).max(50.0)
}

/// [`gap_threshold`] for frames `distances` apart (in order), or three times
/// their median spacing when that is more: a gap is frames missing at the
/// lap's own rate. A car at 60 Hz is a metre or two apart and keeps the 50 m;
/// the demo's car, 10 frames a second of a race run 30 times faster, is some
/// 130 m apart, and every stretch of its laps would otherwise be a gap (a
/// blank Laps view, no live delta).
pub fn gap_threshold_for(step_m: f64, distances: impl Iterator<Item = f64>) -> f64 {
    let mut spacing: Vec<f64> = Vec::new();
    let mut last: Option<f64> = None;
    for d in distances {
        if let Some(prev) = last
            && d > prev
        {
            spacing.push(d - prev);
        }
        last = Some(d);
    }
    if spacing.is_empty() {
        return gap_threshold(step_m);
    }
    let middle = spacing.len() / 2;
    let (_, median, _) = spacing.select_nth_unstable_by(middle, f64::total_cmp);
    gap_threshold(step_m).max(3.0 * *median)
}

/// Which lap: its number (the lap field's value) or the session's fastest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LapRef {
    Number(u64),
    Named(Best),
}

/// `"best"`: the session's fastest completed lap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Best {
    Best,
}

/// The body of `sessions.trace.<id>` (or `sessions.trace` with `session_id`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    pub lap: Option<LapRef>,
    /// Channels by their telemetry key; [`DEFAULT_CHANNELS`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Grid step in metres ([`DEFAULT_STEP_M`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_m: Option<f64>,
    /// `true`: every frame as recorded, not resampled (what `export` writes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw: bool,
}

/// The other lap of a comparison: a lap of any session, or this session's best.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Against {
    Lap {
        session_id: Option<SessionId>,
        lap: LapRef,
    },
    Named(Best),
}

/// The body of `sessions.compare.<id>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    pub lap: LapRef,
    pub against: Against,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minisectors: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_m: Option<f64>,
}

/// Minisectors when the request gives none.
pub const DEFAULT_MINISECTORS: usize = 25;

/// One recorded frame, read for a trace: its time into the lap, its place on
/// the lap (if the source sends one) and the asked channels' values.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub time_s: f64,
    pub distance_m: Option<f64>,
    pub values: Vec<Option<f64>>,
}

/// What the axis of a trace is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Axis {
    /// A grid every `step_m` metres of `lap_distance`.
    Distance,
    /// A grid every [`DEFAULT_STEP_S`] seconds: the source sends no `lap_distance`.
    Time,
    /// Every frame as recorded (`"raw": true`).
    Recorded,
}

/// A lap's trace: what `sessions.trace` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub session_id: SessionId,
    /// The lap field's value.
    pub lap: serde_json::Value,
    pub axis: Axis,
    /// The grid's step, metres (distance) or seconds (time); absent as recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<f64>,
    /// Frames read from the recording for this lap.
    pub frames: usize,
    pub distance_m: Vec<Option<f64>>,
    pub elapsed_s: Vec<Option<f64>>,
    pub channels: BTreeMap<String, Vec<Option<f64>>>,
    /// `[from_m, to_m]` (seconds on a time axis) with no frame: left `null`.
    pub gaps: Vec<[f64; 2]>,
}

/// A minisector's share of the delta.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Minisector {
    pub n: usize,
    pub from_m: f64,
    pub to_m: f64,
    /// Time lost (+) or gained (−) in it against the reference, seconds; `null`
    /// where either lap has a gap at its ends.
    pub delta_s: Option<f64>,
}

/// What `sessions.compare` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub step_m: f64,
    pub distance_m: Vec<f64>,
    /// The lap's time at each distance minus the reference's: + = slower.
    pub delta_s: Vec<Option<f64>>,
    pub minisectors: Vec<Minisector>,
    pub lap: Trace,
    pub reference: Trace,
}

/// Why samples cannot make a trace.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TraceError {
    #[error("the trace would have {points} points, more than {MAX_POINTS}: ask a larger step_m")]
    TooManyPoints { points: usize },
    #[error("step_m must be a number from 0.1 to 1000")]
    BadStep,
}

/// Rounds for the wire: millimetres and milliseconds are more than a sim
/// gives, and fewer digits keep a lap's reply a few hundred KB.
fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn lerp(a: f64, b: f64, t: f64) -> f64 {
    a + (b - a) * t
}

/// The samples that move forward along the lap: a frame behind the last kept
/// one (the car reversed, or a frame from before the line) is left out, so
/// distance is increasing and time reads back from it. A lap whose first frames
/// still carry the previous lap's distance starts again at the first frame
/// that drops back.
pub fn forward(samples: &[Sample]) -> Vec<&Sample> {
    let mut kept: Vec<&Sample> = Vec::with_capacity(samples.len());
    for s in samples {
        let Some(d) = s.distance_m else { continue };
        match kept.last().and_then(|k| k.distance_m) {
            Some(last) if d <= last => {
                // A wrap from the previous lap: few frames, far along.
                if kept.len() <= 2 && last - d > 100.0 {
                    kept.clear();
                    kept.push(s);
                }
            }
            _ => kept.push(s),
        }
    }
    kept
}

/// A grid, the time and each channel at its points, and the gaps.
type Resampled = (
    Vec<f64>,
    Vec<Option<f64>>,
    Vec<Vec<Option<f64>>>,
    Vec<[f64; 2]>,
);

/// Resamples onto a grid `0, step, 2·step, …` up to the last sample's
/// position: each channel linear between the two frames around a point (a
/// [`NEAREST`] channel takes the nearer frame), `null` where either is missing
/// or the frames are more than [`gap_threshold`] apart. `positions` gives each
/// kept sample's position on the axis (distance or time).
fn resample_on(
    kept: &[(f64, &Sample)],
    names: &[String],
    step: f64,
    threshold: f64,
) -> Result<Resampled, TraceError> {
    let Some(&(last, _)) = kept.last() else {
        return Ok((
            Vec::new(),
            Vec::new(),
            vec![Vec::new(); names.len()],
            Vec::new(),
        ));
    };
    let points = (last / step).floor() as usize + 1;
    if points > MAX_POINTS {
        return Err(TraceError::TooManyPoints { points });
    }
    let nearest: Vec<bool> = names
        .iter()
        .map(|n| NEAREST.contains(&n.as_str()))
        .collect();
    let mut gaps = Vec::new();
    let first = kept[0].0;
    if first > threshold {
        gaps.push([0.0, round(first)]);
    }
    for pair in kept.windows(2) {
        if pair[1].0 - pair[0].0 > threshold {
            gaps.push([round(pair[0].0), round(pair[1].0)]);
        }
    }
    let mut grid = Vec::with_capacity(points);
    let mut times = Vec::with_capacity(points);
    let mut channels = vec![Vec::with_capacity(points); names.len()];
    let mut i = 0;
    for k in 0..points {
        let x = k as f64 * step;
        grid.push(round(x));
        while i + 1 < kept.len() && kept[i + 1].0 < x {
            i += 1;
        }
        // The frames around x: kept[i] at or before, kept[i + 1] after (or x
        // is exactly a frame's position).
        let around = if kept[i].0 == x {
            Some((kept[i], kept[i], 0.0))
        } else if kept[i].0 < x && i + 1 < kept.len() && kept[i + 1].0 - kept[i].0 <= threshold {
            let (a, b) = (kept[i], kept[i + 1]);
            Some((a, b, (x - a.0) / (b.0 - a.0)))
        } else if i + 1 < kept.len() && kept[i + 1].0 == x {
            Some((kept[i + 1], kept[i + 1], 0.0))
        } else {
            None
        };
        match around {
            Some(((_, a), (_, b), t)) => {
                times.push(Some(round(lerp(a.time_s, b.time_s, t))));
                for (c, values) in channels.iter_mut().enumerate() {
                    let v = match (a.values[c], b.values[c]) {
                        (Some(va), Some(vb)) if nearest[c] => Some(if t < 0.5 { va } else { vb }),
                        (Some(va), Some(vb)) => Some(round(lerp(va, vb, t))),
                        _ => None,
                    };
                    values.push(v);
                }
            }
            None => {
                times.push(None);
                channels.iter_mut().for_each(|v| v.push(None));
            }
        }
    }
    Ok((grid, times, channels, gaps))
}

/// The lap's samples on a grid every `step_m` metres of `lap_distance`, or,
/// when fewer than half the frames carry one, every [`DEFAULT_STEP_S`] of
/// their time (`"axis": "time"`).
pub fn resample(
    session_id: SessionId,
    lap: serde_json::Value,
    samples: &[Sample],
    names: &[String],
    step_m: f64,
) -> Result<Trace, TraceError> {
    if !(0.1..=1000.0).contains(&step_m) {
        return Err(TraceError::BadStep);
    }
    let with_distance = samples.iter().filter(|s| s.distance_m.is_some()).count();
    let by_distance = with_distance * 2 >= samples.len() && with_distance > 0;
    let (axis, step, threshold, kept): (Axis, f64, f64, Vec<(f64, &Sample)>) = if by_distance {
        let kept: Vec<(f64, &Sample)> = forward(samples)
            .into_iter()
            .map(|s| (s.distance_m.unwrap_or_default(), s))
            .collect();
        let threshold = gap_threshold_for(step_m, kept.iter().map(|(d, _)| *d));
        (Axis::Distance, step_m, threshold, kept)
    } else {
        let mut kept: Vec<(f64, &Sample)> = Vec::with_capacity(samples.len());
        for s in samples {
            if kept.last().is_none_or(|(t, _)| s.time_s > *t) {
                kept.push((s.time_s, s));
            }
        }
        // Time from the lap's first frame; gaps of a second or more (20
        // frames lost at 20 Hz) are not bridged.
        let start = kept.first().map_or(0.0, |(t, _)| *t);
        kept.iter_mut().for_each(|(t, _)| *t -= start);
        (Axis::Time, DEFAULT_STEP_S, 1.0, kept)
    };
    let (grid, times, values, gaps) = resample_on(&kept, names, step, threshold)?;
    let (distance_m, elapsed_s) = match axis {
        Axis::Distance => (grid.into_iter().map(Some).collect(), times),
        _ => {
            // On a time axis the grid is the time; distance where there is one.
            let d = distance_on_time(&kept, &grid, threshold);
            (d, grid.into_iter().map(Some).collect())
        }
    };
    Ok(Trace {
        session_id,
        lap,
        axis,
        step: Some(step),
        frames: samples.len(),
        distance_m,
        elapsed_s,
        channels: names.iter().cloned().zip(values).collect(),
        gaps,
    })
}

/// `lap_distance` at each time of a time grid, where frames have it.
fn distance_on_time(kept: &[(f64, &Sample)], grid: &[f64], threshold: f64) -> Vec<Option<f64>> {
    let mut i = 0;
    grid.iter()
        .map(|&x| {
            while i + 1 < kept.len() && kept[i + 1].0 < x {
                i += 1;
            }
            let (a, b) = (kept.get(i)?, kept.get(i + 1).unwrap_or(&kept[i]));
            if a.0 > x || b.0 - a.0 > threshold {
                return None;
            }
            let t = if b.0 > a.0 {
                (x - a.0) / (b.0 - a.0)
            } else {
                0.0
            };
            Some(round(lerp(a.1.distance_m?, b.1.distance_m?, t)))
        })
        .collect()
}

/// Every sample as recorded, in the order received: what `export` writes.
pub fn recorded(
    session_id: SessionId,
    lap: serde_json::Value,
    samples: &[Sample],
    names: &[String],
) -> Result<Trace, TraceError> {
    if samples.len() > MAX_POINTS {
        return Err(TraceError::TooManyPoints {
            points: samples.len(),
        });
    }
    let channels = names
        .iter()
        .enumerate()
        .map(|(c, name)| (name.clone(), samples.iter().map(|s| s.values[c]).collect()))
        .collect();
    Ok(Trace {
        session_id,
        lap,
        axis: Axis::Recorded,
        step: None,
        frames: samples.len(),
        distance_m: samples.iter().map(|s| s.distance_m).collect(),
        elapsed_s: samples.iter().map(|s| Some(s.time_s)).collect(),
        channels,
        gaps: Vec::new(),
    })
}

/// `lap` against `reference`, both on the same distance grid: the delta at
/// each point over the distance both cover, and its change across each of
/// `minisectors` equal parts of that distance.
pub fn compare(lap: Trace, reference: Trace, minisectors: usize) -> Comparison {
    let step_m = lap.step.unwrap_or(DEFAULT_STEP_M);
    let len = lap.elapsed_s.len().min(reference.elapsed_s.len());
    let distance_m: Vec<f64> = (0..len).map(|k| round(k as f64 * step_m)).collect();
    let delta_s: Vec<Option<f64>> = (0..len)
        .map(|k| Some(round(lap.elapsed_s[k]? - reference.elapsed_s[k]?)))
        .collect();
    let minisectors = split(&delta_s, step_m, minisectors.max(1));
    Comparison {
        step_m,
        distance_m,
        delta_s,
        minisectors,
        lap,
        reference,
    }
}

/// The delta's change across each of `parts` equal stretches of the grid.
fn split(delta_s: &[Option<f64>], step_m: f64, parts: usize) -> Vec<Minisector> {
    let Some(last) = delta_s.len().checked_sub(1) else {
        return Vec::new();
    };
    let parts = parts.min(last.max(1));
    (0..parts)
        .map(|n| {
            let (from, to) = (last * n / parts, last * (n + 1) / parts);
            let delta = match (delta_s[from], delta_s[to]) {
                (Some(a), Some(b)) => Some(round(b - a)),
                _ => None,
            };
            Minisector {
                n: n + 1,
                from_m: round(from as f64 * step_m),
                to_m: round(to as f64 * step_m),
                delta_s: delta,
            }
        })
        .collect()
}

/// The best lap as a live delta's reference: its elapsed time along its
/// distance grid, from a `sessions.trace` on a distance axis. A client fetches
/// it once per new best lap and then reads each frame against it
/// ([`LiveReference::delta`]), so the processor does nothing per frame for
/// it. The page's script does the same arithmetic (src/web/page/view.js
/// `liveDelta`).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveReference {
    /// The reference lap's lap field.
    pub lap: serde_json::Value,
    /// `(distance_m, elapsed_s)` by increasing distance; `None` in a gap.
    points: Vec<(f64, Option<f64>)>,
}

impl LiveReference {
    /// The reference in a trace: `None` for a trace that is not on a distance
    /// axis (the source sends no `lap_distance`) or has no point.
    pub fn of(trace: &Trace) -> Option<LiveReference> {
        if trace.axis != Axis::Distance {
            return None;
        }
        let points: Vec<(f64, Option<f64>)> = trace
            .distance_m
            .iter()
            .zip(&trace.elapsed_s)
            .filter_map(|(d, t)| Some(((*d)?, *t)))
            .collect();
        if points.iter().all(|(_, t)| t.is_none()) {
            return None;
        }
        Some(LiveReference {
            lap: trace.lap.clone(),
            points,
        })
    }

    /// The reference's time at `distance_m`: linear between the two grid
    /// points around it; `None` before the line, past the reference's last
    /// point, or where either point is in a gap (never invented).
    pub fn time_at(&self, distance_m: f64) -> Option<f64> {
        if !distance_m.is_finite() {
            return None;
        }
        // The first point at or after the distance.
        let k = self.points.partition_point(|(d, _)| *d < distance_m);
        let (d1, t1) = *self.points.get(k)?;
        if d1 == distance_m {
            return t1;
        }
        let (d0, t0) = *self.points.get(k.checked_sub(1)?)?;
        Some(lerp(t0?, t1?, (distance_m - d0) / (d1 - d0)))
    }

    /// The running lap's time at `distance_m` minus the reference's there, +
    /// = slower: `None` without both (a frame before the line, a negative
    /// `lap_time` before the first crossing, past the reference's end), and
    /// `None` for a delta of more than half the reference lap: not a car
    /// that lost time but a frame whose distance and time belong to
    /// different laps (a sim's first frame after the line that still
    /// carries the previous lap's distance).
    pub fn delta(&self, distance_m: f64, lap_time_s: f64) -> Option<f64> {
        if !(lap_time_s.is_finite() && lap_time_s >= 0.0) {
            return None;
        }
        let delta = lap_time_s - self.time_at(distance_m)?;
        let lap = self.points.iter().rev().find_map(|(_, t)| *t)?;
        (delta.abs() <= lap / 2.0).then(|| round(delta))
    }

    /// The delta of a telemetry frame: its `lap_distance` and `lap_time`.
    pub fn delta_of(&self, frame: &serde_json::Value) -> Option<f64> {
        self.delta(frame[DISTANCE].as_f64()?, frame[LAP_TIME].as_f64()?)
    }
}

/// A delta as the car page and `watch` show it: "−0.234 s" (a minus sign, not
/// a hyphen), "+1.020 s".
pub fn delta_text(delta_s: f64) -> String {
    let sign = if delta_s < 0.0 { '\u{2212}' } else { '+' };
    format!("{sign}{:.3} s", delta_s.abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lap driven at `speed(d)` m/s, a frame every `dt` s, to `length` m;
    /// speed and gear (from speed) as channels.
    fn lap(length: f64, dt: f64, speed: impl Fn(f64) -> f64) -> Vec<Sample> {
        let (mut t, mut d) = (0.0, 0.0);
        let mut samples = Vec::new();
        while d <= length {
            let v = speed(d);
            samples.push(Sample {
                time_s: t,
                distance_m: Some(d),
                values: vec![Some(v), Some((v / 15.0).floor())],
            });
            // Exact steps: a breakpoint of the profile falls on a frame.
            t += dt;
            d += v * dt;
        }
        samples
    }

    fn names() -> Vec<String> {
        vec!["speed".into(), "gear".into()]
    }

    fn id() -> SessionId {
        SessionId::parse("3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b").unwrap()
    }

    fn trace(samples: &[Sample], step: f64) -> Trace {
        resample(id(), 1.into(), samples, &names(), step).unwrap()
    }

    fn at(trace: &Trace, values: &[Option<f64>], distance: f64) -> f64 {
        let k = trace
            .distance_m
            .iter()
            .position(|d| *d == Some(distance))
            .unwrap();
        values[k].unwrap()
    }

    #[test]
    fn a_constant_speed_lap_reads_back_its_times_at_every_metre() {
        let a = trace(&lap(4000.0, 0.05, |_| 50.0), 5.0);
        assert_eq!(a.axis, Axis::Distance);
        assert_eq!(a.distance_m.len(), 801);
        assert!((at(&a, &a.elapsed_s, 1000.0) - 20.0).abs() < 1e-9);
        assert!((at(&a, &a.elapsed_s, 2500.0) - 50.0).abs() < 1e-9);
        assert_eq!(at(&a, &a.channels["speed"], 3000.0), 50.0);
        assert!(a.gaps.is_empty());
    }

    #[test]
    fn the_delta_is_exact_where_the_profile_is_known() {
        // A at 50 m/s; B at 50 then 40 m/s after 1000 m: B loses
        // (d - 1000)/40 - (d - 1000)/50 past 1000 m.
        let a = trace(&lap(4000.0, 0.05, |_| 50.0), 5.0);
        let b = trace(
            &lap(4000.0, 0.05, |d| if d < 1000.0 { 50.0 } else { 40.0 }),
            5.0,
        );
        let c = compare(b, a, 4);
        let delta = |d: f64| c.delta_s[(d / 5.0) as usize].unwrap();
        assert_eq!(delta(500.0), 0.0);
        assert_eq!(delta(1000.0), 0.0);
        assert!((delta(2000.0) - (1000.0 / 40.0 - 1000.0 / 50.0)).abs() < 1e-9);
        assert!((delta(3000.0) - 10.0).abs() < 1e-9);
        // Minisectors of 1000 m: nothing lost in the first, 5 s in each after.
        let lost: Vec<f64> = c.minisectors.iter().map(|m| m.delta_s.unwrap()).collect();
        assert_eq!(lost.len(), 4);
        assert_eq!(lost[0], 0.0);
        assert!(
            lost[1..3].iter().all(|l| (l - 5.0).abs() < 1e-9),
            "{lost:?}"
        );
        assert_eq!(c.minisectors[1].from_m, 1000.0);
    }

    #[test]
    fn a_gap_is_reported_and_left_null_never_invented() {
        let mut samples = lap(2000.0, 0.05, |_| 50.0);
        // Frames from 1000 to 1200 m lost.
        samples.retain(|s| !(1000.0 < s.distance_m.unwrap() && s.distance_m.unwrap() < 1200.0));
        let t = trace(&samples, 5.0);
        assert_eq!(t.gaps, vec![[1000.0, 1200.0]]);
        let k = (1100.0 / 5.0) as usize;
        assert_eq!(t.elapsed_s[k], None);
        assert_eq!(t.channels["speed"][k], None);
        assert!(t.elapsed_s[(1000.0 / 5.0) as usize].is_some());
        assert!(t.elapsed_s[(1200.0 / 5.0) as usize].is_some());
        // A small hole (one frame, 2.5 m) is bridged.
        let mut one = lap(2000.0, 0.05, |_| 50.0);
        one.remove(10);
        assert!(trace(&one, 5.0).gaps.is_empty());
    }

    #[test]
    fn sparse_frames_are_a_lap_not_a_row_of_gaps() {
        // A frame every 125 m (the demo's car: 10 Hz of a race run 30 times
        // faster): no gaps, a value at every grid point; a hole of four frames
        // in it is still one.
        let mut sparse = lap(2000.0, 2.5, |_| 50.0);
        let t = trace(&sparse, 5.0);
        assert!(t.gaps.is_empty(), "{:?}", t.gaps);
        assert!(t.elapsed_s.iter().all(Option::is_some));
        assert!((at(&t, &t.elapsed_s, 1000.0) - 20.0).abs() < 1e-9);
        sparse.retain(|s| !(500.0 < s.distance_m.unwrap() && s.distance_m.unwrap() < 1000.0));
        assert_eq!(trace(&sparse, 5.0).gaps, vec![[500.0, 1000.0]]);
    }

    #[test]
    fn gear_is_the_nearest_frame_s_not_a_blend() {
        // 14 m/s (gear 0) then 16 m/s (gear 1) from 100 m.
        let t = trace(
            &lap(300.0, 0.25, |d| if d < 100.0 { 14.0 } else { 16.0 }),
            1.0,
        );
        assert!(
            t.channels["gear"]
                .iter()
                .flatten()
                .all(|g| *g == 0.0 || *g == 1.0)
        );
        assert!(
            t.channels["speed"]
                .iter()
                .flatten()
                .any(|s| *s > 14.0 && *s < 16.0)
        );
    }

    #[test]
    fn frames_from_before_the_line_and_reversing_are_left_out() {
        let mut samples = lap(500.0, 0.05, |_| 50.0);
        // The first frame still says the previous lap's 13.6 km, one goes back.
        samples[0].distance_m = Some(13_600.0);
        samples[20].distance_m = Some(10.0);
        let kept = forward(&samples);
        assert_eq!(kept.len(), samples.len() - 2);
        assert!(kept.windows(2).all(|w| w[0].distance_m < w[1].distance_m));
    }

    #[test]
    fn a_source_without_distance_gets_a_time_axis() {
        let samples: Vec<Sample> = (0..50)
            .map(|k| Sample {
                time_s: 10.0 + k as f64 * 0.05,
                distance_m: None,
                values: vec![Some(k as f64), Some(1.0)],
            })
            .collect();
        let t = trace(&samples, 5.0);
        assert_eq!(t.axis, Axis::Time);
        assert_eq!(t.elapsed_s[0], Some(0.0));
        assert_eq!(t.elapsed_s[10], Some(1.0));
        assert_eq!(t.channels["speed"][10], Some(20.0));
        assert!(t.distance_m.iter().all(Option::is_none));
    }

    #[test]
    fn too_many_points_are_refused_not_cut() {
        let samples = lap(200_000.0, 1.0, |_| 1000.0);
        assert_eq!(
            resample(id(), 1.into(), &samples, &names(), 5.0),
            Err(TraceError::TooManyPoints { points: 40_001 })
        );
        assert!(resample(id(), 1.into(), &samples, &names(), 20.0).is_ok());
        assert_eq!(
            resample(id(), 1.into(), &samples, &names(), 0.0),
            Err(TraceError::BadStep)
        );
    }

    #[test]
    fn requests_read_as_the_protocol_writes_them() {
        let r: CompareRequest =
            serde_json::from_str(r#"{"lap": 3, "against": "best", "minisectors": 25}"#).unwrap();
        assert_eq!(r.lap, LapRef::Number(3));
        assert_eq!(r.against, Against::Named(Best::Best));
        let r: CompareRequest = serde_json::from_str(
            r#"{"lap": "best", "against": {"session_id": "3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b", "lap": 2}}"#,
        )
        .unwrap();
        assert_eq!(
            r.against,
            Against::Lap {
                session_id: Some(id()),
                lap: LapRef::Number(2)
            }
        );
        assert!(serde_json::from_str::<TraceRequest>(r#"{"lap": 1, "nope": 1}"#).is_err());
    }
    #[test]
    fn the_live_delta_reads_the_running_lap_against_the_reference_at_its_distance() {
        // Reference at 50 m/s; the running lap at 40 m/s after 1000 m: at
        // 1500 m it is 2.5 s down, at 1000 m level, between grid points too.
        let reference = LiveReference::of(&trace(&lap(2000.0, 0.05, |_| 50.0), 5.0)).unwrap();
        assert_eq!(reference.lap, serde_json::Value::from(1));
        assert_eq!(reference.time_at(1000.0), Some(20.0));
        assert!((reference.time_at(1002.5).unwrap() - 20.05).abs() < 1e-9);
        assert_eq!(reference.delta(1000.0, 20.0), Some(0.0));
        assert_eq!(reference.delta(1500.0, 20.0 + 500.0 / 40.0), Some(2.5));
        assert_eq!(reference.delta(1501.0, 32.4), Some(2.38));
        let frame = serde_json::json!({"lap_distance": 2000.0, "lap_time": 37.5});
        assert_eq!(reference.delta_of(&frame), Some(-2.5));
        // Nothing to say before the line, before the first crossing, past the
        // reference's end, or without the keys.
        assert_eq!(reference.delta(-3.0, 1.0), None);
        assert_eq!(reference.delta(100.0, -0.5), None);
        assert_eq!(reference.delta(2100.0, 40.0), None);
        assert_eq!(
            reference.delta_of(&serde_json::json!({"lap_time": 3.0})),
            None
        );
        // The new lap's first frame with the old lap's distance: not -39.9 s.
        assert_eq!(reference.delta(1995.0, 0.0), None);
        assert_eq!(reference.delta(1000.0, 39.9), Some(19.9));
        assert_eq!(delta_text(-0.234), "\u{2212}0.234 s");
        assert_eq!(delta_text(1.02), "+1.020 s");
    }

    #[test]
    fn a_live_delta_in_the_reference_s_gap_is_none_and_a_time_trace_is_no_reference() {
        let mut samples = lap(2000.0, 0.05, |_| 50.0);
        samples.retain(|s| !(1000.0 < s.distance_m.unwrap() && s.distance_m.unwrap() < 1200.0));
        let reference = LiveReference::of(&trace(&samples, 5.0)).unwrap();
        assert_eq!(reference.time_at(1100.0), None);
        assert_eq!(reference.delta(1100.0, 22.0), None);
        assert!(reference.time_at(1300.0).is_some());
        let timed: Vec<Sample> = samples
            .iter()
            .map(|s| Sample {
                distance_m: None,
                ..s.clone()
            })
            .collect();
        assert_eq!(LiveReference::of(&trace(&timed, 5.0)), None);
    }
}
