//! `sessions.trace` and `sessions.compare`: a lap's frames read back from the
//! broker's trace stream (store/traces.rs) and put on a distance grid
//! (protocol/trace.rs).
//!
//! Split in two so the ordered loop never waits on a stream read: [`App::plan`]
//! runs in the loop (it reads the request and finds each lap's record in the
//! map: microseconds, like `sessions.laps`), and [`answer`] runs on a task of
//! its own, reading the stream and resampling, while frames keep flowing.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration as Span, Utc};
use serde_json::Value;

use crate::protocol::id::SessionId;
use crate::protocol::payload::validate_object;
use crate::protocol::subjects::{self, Endpoint};
use crate::protocol::trace::{
    self, Against, Best, CompareRequest, LapRef, MAX_CHANNELS, MAX_MINISECTORS, MAX_REPLY_BYTES,
    Sample, TraceError, TraceRequest,
};
use crate::server::app::App;
use crate::server::error::ServiceError;
use crate::server::laps::LapRecord;
use crate::server::race;
use crate::server::sessions::SessionError;
use crate::server::store::{BEST_LAP_BYTES, Recorded, Traces};

/// Frames read before a lap's first and after its last. Frames are stamped by
/// the processor that accepted them (the lap records' clock), but chunks are
/// found by when the broker stored them, and a broker on another machine has
/// another clock; a replica's record, read by another, has its clock too.
/// Frames of other laps in the window are left out by their lap field.
const MARGIN: Span = Span::seconds(5);

/// Frames one lap read takes at most: 60 Hz for half an hour. A lap with more
/// is refused (413) rather than read without end.
const MAX_FRAMES: usize = 108_000;

/// One lap to read: whose, which, and when its frames arrived.
#[derive(Debug, Clone)]
pub struct LapWindow {
    pub session_id: SessionId,
    /// The lap field's value, as the frames carry it.
    pub lap: Value,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Frames the processor counted in the lap: a read of the trace stream
    /// with fewer lost some to its turnover, and the best-lap copy may have them.
    pub frames: u64,
    /// The next lap's first frame, just past the line: where the lap ends.
    pub next: Bytes,
}

impl LapWindow {
    fn of(record: &LapRecord) -> Self {
        LapWindow {
            session_id: record.session_id,
            lap: serde_json::from_slice(&record.lap).unwrap_or(Value::Null),
            from: record.started_at,
            to: record.ended_at,
            frames: record.frames,
            next: record.next_frame.clone(),
        }
    }
}

/// What a request asks, its laps found: the part that needs the stream.
#[derive(Debug, Clone)]
pub enum Plan {
    Trace {
        lap: LapWindow,
        channels: Vec<String>,
        step_m: f64,
        raw: bool,
    },
    Compare {
        lap: LapWindow,
        reference: LapWindow,
        channels: Vec<String>,
        step_m: f64,
        minisectors: usize,
    },
}

/// The lap of `records` a request names: the last with that number, or the
/// fastest by the sim's own lap time (the next lap's `last_lap_time`), else by
/// when its frames arrived.
fn pick(
    id: SessionId,
    records: &[Arc<LapRecord>],
    which: LapRef,
) -> Result<LapWindow, ServiceError> {
    let found = match which {
        LapRef::Number(n) => records
            .iter()
            .rev()
            .find(|r| serde_json::from_slice::<Value>(&r.lap).ok() == Some(Value::from(n))),
        LapRef::Named(Best::Best) => records
            .iter()
            .filter_map(|r| {
                let time = race::Lap::of(r).time.or_else(|| {
                    let took = r.ended_at - r.started_at;
                    (took > Span::zero()).then(|| took.num_milliseconds() as f64 / 1000.0)
                })?;
                Some((time, r))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, r)| r),
    };
    found.map(|r| LapWindow::of(r)).ok_or_else(|| {
        let which = match which {
            LapRef::Number(n) => format!("lap {n}"),
            LapRef::Named(_) => "a best lap".into(),
        };
        ServiceError::UnknownLap(format!(
            "session {id} has no completed {which}: sessions.laps lists the laps kept"
        ))
    })
}

fn channels(asked: Option<Vec<String>>) -> Result<Vec<String>, ServiceError> {
    let names = asked.unwrap_or_else(|| trace::DEFAULT_CHANNELS.map(String::from).to_vec());
    if names.is_empty() || names.len() > MAX_CHANNELS || names.iter().any(|n| n.len() > 64) {
        return Err(ServiceError::BadRequest(format!(
            "channels: 1 to {MAX_CHANNELS} telemetry keys"
        )));
    }
    Ok(names)
}

fn step(asked: Option<f64>) -> Result<f64, ServiceError> {
    let step = asked.unwrap_or(trace::DEFAULT_STEP_M);
    if (0.1..=1000.0).contains(&step) {
        Ok(step)
    } else {
        Err(ServiceError::BadRequest(TraceError::BadStep.to_string()))
    }
}

impl App {
    /// A session's team label as a subject token, live or ended: a team
    /// link may compare its car's laps with its teammates' (the endurance
    /// use: a driver against the car's other drivers, or a sister car).
    pub fn team_token_of(&self, id: SessionId) -> Option<String> {
        let label = match self.sessions.get(id) {
            Ok(snapshot) => snapshot.label,
            Err(_) => self.sessions.ended(id)?.last.label,
        };
        label.team.as_deref().map(subjects::team_token)
    }

    /// A session's completed laps, live or ended.
    fn lap_records(&self, id: SessionId) -> Result<Vec<Arc<LapRecord>>, ServiceError> {
        match self.sessions.laps(id) {
            Ok(records) => Ok(records),
            Err(SessionError::Ended(..)) | Err(SessionError::NotFound(_)) => {
                match self.sessions.ended(id) {
                    Some(ended) => Ok(ended.laps.records()),
                    None => Err(SessionError::NotFound(id).into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a trace or compare request and finds its laps (in the loop).
    pub fn plan(
        &self,
        endpoint: Endpoint,
        subject_id: Option<&str>,
        body: &[u8],
    ) -> Result<Plan, ServiceError> {
        let subject_id = subject_id.map(SessionId::parse).transpose()?;
        validate_object(body, self.limits.max_payload)?;
        let hint = |e: serde_json::Error| {
            ServiceError::BadRequest(match endpoint {
                Endpoint::Compare => format!(
                    r#"{e}: send {{"lap": <n>|"best", "against": "best"|{{"session_id", "lap"}}, "minisectors": <1..{MAX_MINISECTORS}>}}"#
                ),
                _ => format!(
                    r#"{e}: send {{"lap": <n>|"best", "channels": [..], "step_m": <0.1..1000>}}"#
                ),
            })
        };
        let missing_id = || {
            ServiceError::BadRequest(r#"missing session_id: ask sessions.<endpoint>.<id>"#.into())
        };
        match endpoint {
            Endpoint::Compare => {
                let request: CompareRequest = serde_json::from_slice(body).map_err(hint)?;
                let id = subject_id.or(request.session_id).ok_or_else(missing_id)?;
                let lap = pick(id, &self.lap_records(id)?, request.lap)?;
                let reference = match request.against {
                    Against::Named(Best::Best) => {
                        pick(id, &self.lap_records(id)?, LapRef::Named(Best::Best))?
                    }
                    Against::Lap { session_id, lap } => {
                        let other = session_id.unwrap_or(id);
                        pick(other, &self.lap_records(other)?, lap)?
                    }
                };
                let minisectors = request.minisectors.unwrap_or(trace::DEFAULT_MINISECTORS);
                if !(1..=MAX_MINISECTORS).contains(&minisectors) {
                    return Err(ServiceError::BadRequest(format!(
                        "minisectors: 1 to {MAX_MINISECTORS}"
                    )));
                }
                Ok(Plan::Compare {
                    lap,
                    reference,
                    channels: channels(request.channels)?,
                    step_m: step(request.step_m)?,
                    minisectors,
                })
            }
            _ => {
                let request: TraceRequest = serde_json::from_slice(body).map_err(hint)?;
                let id = subject_id.or(request.session_id).ok_or_else(missing_id)?;
                let which = request.lap.ok_or_else(|| {
                    ServiceError::BadRequest(r#"missing lap: send {"lap": <n>|"best"}"#.into())
                })?;
                Ok(Plan::Trace {
                    lap: pick(id, &self.lap_records(id)?, which)?,
                    channels: channels(request.channels)?,
                    step_m: step(request.step_m)?,
                    raw: request.raw,
                })
            }
        }
    }

    /// The session a body-form trace or compare names, for forwarding it to
    /// that session's partition.
    pub fn trace_session(&self, endpoint: Endpoint, body: &[u8]) -> Option<SessionId> {
        match endpoint {
            Endpoint::Compare => {
                serde_json::from_slice::<CompareRequest>(body)
                    .ok()?
                    .session_id
            }
            _ => {
                serde_json::from_slice::<TraceRequest>(body)
                    .ok()?
                    .session_id
            }
        }
    }
}

/// What reading a trace needs besides the plan.
#[derive(Clone)]
pub struct Reader {
    /// The trace stream; `None` with `--store memory`.
    pub traces: Option<Traces>,
    /// The lap field, to tell a lap's frames from its neighbours'.
    pub lap_field: Option<crate::protocol::payload::Pointer>,
    /// Reads at once: each holds a lap's frames (up to [`MAX_FRAMES`]) in
    /// memory, so a burst of requests waits here rather than multiplying that.
    pub permits: Arc<tokio::sync::Semaphore>,
}

/// Trace reads at once per processor.
pub const READS_AT_ONCE: usize = 2;

impl Reader {
    /// One lap's frames as samples of `channels`, in the order received.
    async fn samples(
        &self,
        lap: &LapWindow,
        channels: &[String],
    ) -> Result<Vec<Sample>, ServiceError> {
        let Some(traces) = &self.traces else {
            return Err(ServiceError::NoRecording(
                "this processor records no traces (paddock serve --store memory keeps no \
                 JetStream stream): run it with --store jetstream"
                    .into(),
            ));
        };
        let frames = self.lap_frames(traces, lap, true).await?;
        // Parsing a lap's frames takes milliseconds (4,000 frames of 1 KB):
        // not on the runtime's thread, which the processor's loop shares.
        let (channels, lap) = (channels.to_vec(), lap.clone());
        tokio::task::spawn_blocking(move || samples_of(frames, &channels, &lap))
            .await
            .map_err(|e| ServiceError::NoRecording(format!("the trace read failed: {e}")))?
    }

    /// `lap`'s frames as recorded in the trace stream; with `or_kept`, from
    /// the best-lap copy instead when the stream has dropped some of them
    /// (its oldest go first) and the copy holds more.
    async fn lap_frames(
        &self,
        traces: &Traces,
        lap: &LapWindow,
        or_kept: bool,
    ) -> Result<Vec<Recorded>, ServiceError> {
        let cannot = |e| ServiceError::NoRecording(format!("cannot read the trace stream: {e}"));
        let (from, to) = (lap.from - MARGIN, lap.to + MARGIN);
        let frames = traces
            .read(lap.session_id, from, to, MAX_FRAMES)
            .await
            .map_err(cannot)?;
        let frames = of_lap(self.lap_field.as_ref(), frames, &lap.lap)?;
        if !or_kept || frames.len() as u64 >= lap.frames {
            return Ok(frames);
        }
        let kept = traces
            .read_best(lap.session_id, from, to, MAX_FRAMES)
            .await
            .map_err(cannot)?;
        let kept = of_lap(self.lap_field.as_ref(), kept, &lap.lap)?;
        Ok(if kept.len() > frames.len() {
            kept
        } else {
            frames
        })
    }

    async fn trace(
        &self,
        lap: &LapWindow,
        channels: &[String],
        step_m: f64,
        raw: bool,
    ) -> Result<trace::Trace, ServiceError> {
        let samples = self.samples(lap, channels).await?;
        let made = if raw {
            trace::recorded(lap.session_id, lap.lap.clone(), &samples, channels)
        } else {
            trace::resample(lap.session_id, lap.lap.clone(), &samples, channels, step_m)
        };
        made.map_err(|e| match e {
            TraceError::TooManyPoints { .. } => ServiceError::TooLarge(e.to_string()),
            TraceError::BadStep => ServiceError::BadRequest(e.to_string()),
        })
    }

    /// Reads and resamples what `plan` asks: the reply's body.
    pub async fn answer(&self, plan: Plan) -> Result<Bytes, ServiceError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ServiceError::NoRecording("the processor is stopping".into()))?;
        let body = match plan {
            Plan::Trace {
                lap,
                channels,
                step_m,
                raw,
            } => serde_json::to_vec(&self.trace(&lap, &channels, step_m, raw).await?),
            Plan::Compare {
                lap,
                reference,
                channels,
                step_m,
                minisectors,
            } => {
                let mine = self.trace(&lap, &channels, step_m, false).await?;
                let theirs = self.trace(&reference, &channels, step_m, false).await?;
                if mine.axis != trace::Axis::Distance || theirs.axis != trace::Axis::Distance {
                    return Err(ServiceError::BadRequest(
                        "a comparison needs lap_distance in both laps' frames".into(),
                    ));
                }
                serde_json::to_vec(&trace::compare(mine, theirs, minisectors))
            }
        }
        .expect("traces serialize");
        if body.len() > MAX_REPLY_BYTES {
            return Err(ServiceError::TooLarge(format!(
                "the reply would be {} bytes, more than {MAX_REPLY_BYTES}: ask fewer channels or a larger step_m",
                body.len()
            )));
        }
        Ok(body.into())
    }
}

/// The frames of `read` that are `lap`'s, by the lap field as the ingest
/// reads it (the same pointer); too many is refused.
fn of_lap(
    pointer: Option<&crate::protocol::payload::Pointer>,
    read: Vec<Recorded>,
    lap: &Value,
) -> Result<Vec<Recorded>, ServiceError> {
    if read.len() > MAX_FRAMES {
        return Err(ServiceError::TooLarge(format!(
            "the lap has more than {MAX_FRAMES} recorded frames"
        )));
    }
    let Some(pointer) = pointer else {
        return Ok(read);
    };
    Ok(read
        .into_iter()
        .filter(|recorded| {
            let at = pointer.find(&recorded.payload);
            at.and_then(|r| serde_json::from_slice::<Value>(&recorded.payload[r]).ok())
                .as_ref()
                == Some(lap)
        })
        .collect())
}

/// A lap's frames as samples of `channels`, in the order received.
fn samples_of(
    frames: Vec<Recorded>,
    channels: &[String],
    lap: &LapWindow,
) -> Result<Vec<Sample>, ServiceError> {
    // Each frame is read down to its sample at once: the parsed trees of a
    // lap's frames would hold several times the frames' own bytes.
    let mut read = Vec::with_capacity(frames.len());
    for recorded in frames {
        let Ok(frame) = serde_json::from_slice::<Value>(&recorded.payload) else {
            continue;
        };
        let sample = Sample {
            time_s: 0.0,
            distance_m: frame.get(trace::DISTANCE).and_then(Value::as_f64),
            values: channels
                .iter()
                .map(|c| frame.get(c).and_then(Value::as_f64))
                .collect(),
        };
        let lap_time = frame.get(trace::LAP_TIME).and_then(Value::as_f64);
        read.push((recorded.at, lap_time, sample));
    }
    if read.is_empty() {
        return Err(ServiceError::UnknownLap(format!(
            "no recorded frames for lap {} of session {} (older than the trace stream keeps, \
             or recorded before it existed)",
            lap.lap, lap.session_id
        )));
    }
    // The sim's own lap clock when every frame has one; else when the
    // broker received each, from the lap's first.
    let sim_clock = read.iter().all(|(_, lap_time, _)| lap_time.is_some());
    let first = read[0].0;
    let mut samples: Vec<Sample> = read
        .into_iter()
        .map(|(at, lap_time, sample)| Sample {
            time_s: match lap_time {
                Some(t) if sim_clock => t,
                _ => (at - first).num_microseconds().unwrap_or_default() as f64 / 1e6,
            },
            ..sample
        })
        .collect();
    if sim_clock && let Some(line) = at_the_line(&lap.next, channels, samples.last()) {
        samples.push(line);
    }
    Ok(samples)
}

/// The lap's end as a sample: at the line (`track_length`), at the lap's own
/// time (the next lap's `last_lap_time`), with the next lap's first frame's
/// channels. A lap's last frame comes up to a frame's distance before the
/// line (130 m at 20 Hz and 230 km/h): without it a comparison stopped short
/// of the line, and its delta there was not the laps' time difference. Only
/// when the next frame says both, and the lap's frames stop short of the line.
fn at_the_line(next: &[u8], channels: &[String], last: Option<&Sample>) -> Option<Sample> {
    let next = serde_json::from_slice::<Value>(next).ok()?;
    let length = next.get(trace::TRACK_LENGTH).and_then(Value::as_f64)?;
    let time = next.get(trace::LAST_LAP_TIME).and_then(Value::as_f64)?;
    let last = last?;
    (last.distance_m.is_some_and(|d| d < length) && time > last.time_s).then(|| Sample {
        time_s: time,
        distance_m: Some(length),
        values: channels
            .iter()
            .map(|c| next.get(c).and_then(Value::as_f64))
            .collect(),
    })
}

/// Laps waiting to be looked at by the best-lap keeper: laps complete at most
/// `--max-lap-rate` a session, and one not looked at (the queue full) only
/// means an earlier best stays kept until the next best. Each is a refcount
/// on a record the session already holds (about 3 KB with its two edge
/// frames), so the queue adds no more than that while a session lives.
const BEST_QUEUE: usize = 256;

/// The best lap kept: a copy of each session's fastest lap in a stream of its
/// own (`<bucket>_best`), so that the live delta and comparisons against the
/// best still have it after the trace stream, which drops its oldest chunks
/// first, has let it go. With the defaults the trace stream keeps about an
/// hour per car and a few car-hours in all: a 30-car race filled it within
/// seven minutes of race time (tests/load/race24h.py), so at hour 18 of a
/// 24-hour race a best lap of hour 2 was gone, and with it the live delta.
///
/// On every completed lap the keeper (a task of its own, never the loop) asks
/// whether the lap is now its session's best by the rule `{"lap": "best"}`
/// reads with ([`pick`]); if so it reads the lap back from the trace stream
/// and keeps each frame's numbers and lap field (what a trace can read of it;
/// about a third of a 1 KB frame) in place of the previous copy, at most
/// [`BEST_LAP_BYTES`] a lap. Replicas each keep their own copy, as they
/// record.
#[derive(Clone)]
pub struct BestLaps {
    laps: tokio::sync::mpsc::Sender<Arc<LapRecord>>,
}

impl BestLaps {
    /// Starts the keeper; `None` when the processor records no traces.
    pub fn start(reader: Reader, app: Arc<App>) -> Option<Self> {
        let traces = reader.traces.clone()?;
        let (laps, mut queued) = tokio::sync::mpsc::channel::<Arc<LapRecord>>(BEST_QUEUE);
        tokio::spawn(async move {
            let log = crate::server::ratelimit::LogThrottle::default();
            while let Some(record) = queued.recv().await {
                if let Err(e) = keep_if_best(&reader, &traces, &app, &record).await
                    && let Some(unlogged) = log.allow(std::time::Duration::from_secs(10))
                {
                    tracing::warn!(session_id = %record.session_id, error = %e, unlogged, "could not keep a best lap");
                }
            }
        });
        Some(BestLaps { laps })
    }

    /// Hands a completed lap to the keeper (never waits).
    pub fn offer(&self, record: Arc<LapRecord>) {
        let _ = self.laps.try_send(record);
    }
}

/// Keeps `record`'s lap as its session's best lap if it is that.
async fn keep_if_best(
    reader: &Reader,
    traces: &Traces,
    app: &App,
    record: &LapRecord,
) -> Result<(), String> {
    let id = record.session_id;
    // A session ended meanwhile keeps the copy it had.
    let Ok(records) = app.sessions.laps(id) else {
        return Ok(());
    };
    // Reading every lap record's time parses each one's edge frame: off the
    // runtime's thread, as is the copy below.
    let best = tokio::task::spawn_blocking(move || pick(id, &records, LapRef::Named(Best::Best)))
        .await
        .map_err(|e| e.to_string())?;
    let Ok(best) = best else {
        return Ok(());
    };
    if best.from != record.started_at || best.to != record.ended_at {
        return Ok(());
    }
    let _permit = reader
        .permits
        .acquire()
        .await
        .map_err(|_| "the processor is stopping".to_string())?;
    // From the trace stream only: the lap has just been completed.
    let frames = reader
        .lap_frames(traces, &best, false)
        .await
        .map_err(|e| e.to_string())?;
    let lap_field = reader.lap_field.clone();
    let kept = tokio::task::spawn_blocking(move || {
        let keep = lap_field.as_ref().map(|p| p.first_token());
        frames
            .iter()
            .filter_map(|f| Some((f.at, numbers_of(&f.payload, keep)?)))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| e.to_string())?;
    if kept.is_empty() {
        return Ok(());
    }
    if !traces
        .keep_best(id, &kept)
        .await
        .map_err(|e| e.to_string())?
    {
        return Err(format!(
            "lap {} has more than {BEST_LAP_BYTES} bytes of numbers; the previous best stays kept",
            best.lap
        ));
    }
    tracing::debug!(session_id = %id, lap = %best.lap, frames = kept.len(), "kept the best lap");
    Ok(())
}

/// `frame` with only its top-level numbers and the member `keep` (the lap
/// field's): all a trace reads of it (its channels are top-level numbers).
fn numbers_of(frame: &[u8], keep: Option<&str>) -> Option<Vec<u8>> {
    let mut members = serde_json::from_slice::<serde_json::Map<String, Value>>(frame).ok()?;
    members.retain(|key, value| value.is_number() || Some(key.as_str()) == keep);
    serde_json::to_vec(&members).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64, lap: u64, next_lap_time: Option<f64>, seconds: i64) -> Arc<LapRecord> {
        let id = SessionId::parse("3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b").unwrap();
        let start = DateTime::from_timestamp(1_000 + 100 * n as i64, 0).unwrap();
        let next = match next_lap_time {
            Some(t) => format!(r#"{{"lap": {}, "last_lap_time": {t}}}"#, lap + 1),
            None => format!(r#"{{"lap": {}}}"#, lap + 1),
        };
        Arc::new(LapRecord {
            session_id: id,
            n,
            lap: Bytes::from(lap.to_string()),
            started_at: start,
            ended_at: start + Span::seconds(seconds),
            frames: 10,
            last_frame: Bytes::from(format!(r#"{{"lap": {lap}}}"#)),
            next_frame: Bytes::from(next),
            pitted: false,
        })
    }

    fn id() -> SessionId {
        SessionId::parse("3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b").unwrap()
    }

    #[test]
    fn a_lap_ends_at_the_line_when_the_next_frame_says_where_and_when() {
        let channels = ["speed".to_string()];
        let last = Sample {
            time_s: 209.0,
            distance_m: Some(13_500.0),
            values: vec![Some(300.0)],
        };
        let next = br#"{"lap": 4, "lap_distance": 40.0, "lap_time": 0.5, "speed": 296.0,
                        "last_lap_time": 209.6, "track_length": 13626.0}"#;
        let line = at_the_line(next, &channels, Some(&last)).unwrap();
        assert_eq!(
            (line.time_s, line.distance_m, line.values),
            (209.6, Some(13_626.0), vec![Some(296.0)])
        );
        // Without the track's length, or with frames already at the line: nothing.
        let unknown = br#"{"lap": 4, "last_lap_time": 209.6}"#;
        assert!(at_the_line(unknown, &channels, Some(&last)).is_none());
        let at_line = Sample {
            distance_m: Some(13_626.0),
            ..last
        };
        assert!(at_the_line(next, &channels, Some(&at_line)).is_none());
    }

    #[test]
    fn a_kept_best_lap_frame_holds_its_numbers_and_lap_field() {
        let frame = br#"{"lap":{"n":3},"speed":201.5,"gear":4,"driver":"Ann","tyres":{"fl":80},"lap_distance":1200}"#;
        let kept = numbers_of(frame, Some("lap")).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&kept).unwrap(),
            serde_json::json!({"lap": {"n": 3}, "speed": 201.5, "gear": 4, "lap_distance": 1200})
        );
        assert_eq!(numbers_of(b"[1,2]", None), None);
    }

    #[test]
    fn best_is_the_fastest_by_the_sim_s_lap_time_else_by_arrival() {
        let records = [
            record(1, 1, Some(95.0), 90),
            record(2, 2, Some(91.5), 99),
            record(3, 3, Some(93.0), 80),
        ];
        let best = pick(id(), &records, LapRef::Named(Best::Best)).unwrap();
        assert_eq!(best.lap, Value::from(2));
        // Without the sim's times, the lap whose frames took the least time.
        let records = [record(1, 1, None, 90), record(2, 2, None, 80)];
        let best = pick(id(), &records, LapRef::Named(Best::Best)).unwrap();
        assert_eq!(best.lap, Value::from(2));
    }

    #[test]
    fn a_lap_number_is_the_last_lap_with_it_and_a_missing_one_is_404() {
        // A monitor that restarted its count: lap 1 twice, the later wins.
        let records = [record(1, 1, None, 90), record(2, 1, None, 80)];
        let lap = pick(id(), &records, LapRef::Number(1)).unwrap();
        assert_eq!(lap.from, records[1].started_at);
        let missing = pick(id(), &records, LapRef::Number(7)).unwrap_err();
        assert_eq!(missing.code(), 404);
        assert_eq!(missing.reason(), "unknown_lap");
    }
}
