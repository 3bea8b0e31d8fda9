//! Lap history: one record per completed lap, the data behind lap-time and fuel
//! charts, without the processor learning any sim's telemetry schema.
//!
//! The processor watches one field of each telemetry frame (`--lap-field`, a JSON
//! pointer, `/lap` by default). When a frame's value there differs from the
//! previous one (a new lap, or a lower one: a restarted session), the lap that was
//! running is complete. Its record keeps the last frame of that lap and the first
//! frame of the next, exactly as sent: sims report a finished lap's time in the
//! next frame (`last_lap_time`), and fuel and tyre wear at the line are in the
//! last. Frames without the field count toward the running lap but never close it;
//! rejected frames never reach this.
//!
//! Records are numbered per session (`n`: 1 for its first completed lap). The
//! number names the record's storage key, so processors that saw the same frames
//! store a lap once (a KV `create`) and only the one that stored it announces it.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::protocol::documents;
use crate::protocol::id::SessionId;

/// Laps kept per session when `--max-laps` is not given: a 24-hour race at
/// 1.5-minute laps is 960, with room to spare.
pub const DEFAULT_MAX_LAPS: usize = 1_200;

/// Records in one `sessions.laps` reply when the request names no `limit`.
pub const PAGE_DEFAULT_LIMIT: usize = 100;
/// Most records one request may ask for.
pub const PAGE_MAX_LIMIT: usize = 1_000;
/// Bytes of records per reply: a page stops before passing this, so it stays under
/// the broker's 1 MB default max_payload whatever the frames' size (each record
/// carries two frames of up to `--max-payload`).
const PAGE_MAX_BYTES: usize = 900 * 1024;

/// One completed lap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LapRecord {
    pub session_id: SessionId,
    /// Its place in the session's history, from 1.
    pub n: u64,
    /// The finished lap's value at the lap field, as raw JSON.
    pub lap: Bytes,
    /// When the lap's first frame arrived.
    pub started_at: DateTime<Utc>,
    /// When the next lap's first frame arrived (so a lap ends where the next starts).
    pub ended_at: DateTime<Utc>,
    /// Telemetry frames that arrived during the lap.
    pub frames: u64,
    /// The lap's last frame, exactly as sent.
    pub last_frame: Bytes,
    /// The next lap's first frame, exactly as sent.
    pub next_frame: Bytes,
    /// Whether a frame of the lap said `"in_pits": true` (see [`in_pits`]):
    /// a stop between the lines, which neither edge frame may show.
    pub pitted: bool,
}

/// The record as stored: the served shape plus whose and which it is.
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    session_id: std::borrow::Cow<'a, str>,
    n: u64,
    #[serde(borrow)]
    lap: &'a RawValue,
    started_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
    frames: u64,
    #[serde(borrow)]
    last_frame: &'a RawValue,
    #[serde(borrow)]
    next_frame: &'a RawValue,
    #[serde(default)]
    pitted: bool,
}

/// Borrows validated JSON bytes as a raw value.
fn raw(bytes: &Bytes) -> &RawValue {
    // Frames passed validation and the lap value was cut from one at a value
    // boundary, so this holds; "null" keeps a bad cut from taking the service down.
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::from_str::<&RawValue>("null").expect("null is JSON"))
}

impl LapRecord {
    /// The record as served and announced (the protocol's shape), borrowing the
    /// frames: they go out exactly as sent.
    pub fn wire(&self) -> documents::LapRecord<&RawValue> {
        documents::LapRecord {
            lap: raw(&self.lap),
            started_at: self.started_at,
            ended_at: self.ended_at,
            frames: self.frames,
            last_frame: raw(&self.last_frame),
            next_frame: raw(&self.next_frame),
            pitted: self.pitted,
        }
    }

    /// The record as served and announced on `session.<id>.lap`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.wire()).expect("a lap record serializes")
    }

    /// The record as stored (see [`LapRecord::from_stored`]).
    pub fn to_stored(&self) -> Vec<u8> {
        serde_json::to_vec(&Stored {
            session_id: self.session_id.to_string().into(),
            n: self.n,
            lap: raw(&self.lap),
            started_at: self.started_at,
            ended_at: self.ended_at,
            frames: self.frames,
            last_frame: raw(&self.last_frame),
            next_frame: raw(&self.next_frame),
            pitted: self.pitted,
        })
        .expect("a lap record serializes")
    }

    pub fn from_stored(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let s: Stored<'_> = serde_json::from_slice(bytes)?;
        let session_id = SessionId::parse(&s.session_id).map_err(|e| {
            <serde_json::Error as serde::de::Error>::custom(format!("session_id: {e}"))
        })?;
        let own = |r: &RawValue| Bytes::copy_from_slice(r.get().as_bytes());
        Ok(LapRecord {
            session_id,
            n: s.n,
            lap: own(s.lap),
            started_at: s.started_at,
            ended_at: s.ended_at,
            frames: s.frames,
            last_frame: own(s.last_frame),
            next_frame: own(s.next_frame),
            pitted: s.pitted,
        })
    }

    /// The storage key: `<session id>.<n>`.
    pub fn key(&self) -> String {
        key(&self.session_id, self.n)
    }

    /// The lap value as a number, when it is one (for paging by lap number).
    fn number(&self) -> Option<f64> {
        std::str::from_utf8(&self.lap).ok()?.trim().parse().ok()
    }
}

/// Most bytes of either edge frame a lap record keeps (`--max-lap-bytes` bounds
/// the history; this bounds one record): telemetry frames are 0.5-2 KB, so an
/// honest record is never touched, while a monitor sending 60 KB frames with a new
/// lap in each would otherwise make every record two of them. A larger frame is
/// kept summarised ([`fit`]).
pub const LAP_FRAME_MAX: usize = 8 * 1024;

/// Longest member value a summarised frame keeps, in bytes of JSON.
const SUMMARY_VALUE_MAX: usize = 256;

/// The key a summarised frame carries, set to the size of the frame it stands for.
pub const TRIMMED_KEY: &str = "paddock_trimmed_from_bytes";

/// An edge frame as a lap record keeps it: as sent when it is at most
/// [`LAP_FRAME_MAX`] bytes (a refcount, no copy); otherwise a summary: its
/// top-level members whose values are at most 256 bytes of JSON (numbers,
/// booleans, short strings, small objects such as per-corner temperatures), as
/// many as fit, plus `"paddock_trimmed_from_bytes": <the frame's size>`. What lap
/// tables and charts read (lap times, fuel, wear) survives; padding does not.
pub fn fit(frame: &Bytes) -> Bytes {
    if frame.len() <= LAP_FRAME_MAX {
        return frame.clone();
    }
    let Members(members) = serde_json::from_slice(frame).unwrap_or_default();
    let mut out = Vec::with_capacity(LAP_FRAME_MAX);
    out.push(b'{');
    // In the frame's order (sims put the lap and times first), with room left
    // for the marker.
    for (key, value) in members {
        let key = serde_json::to_vec(&key).expect("a string serializes");
        let value = value.get().as_bytes();
        if value.len() <= SUMMARY_VALUE_MAX
            && out.len() + key.len() + value.len() + 2 <= LAP_FRAME_MAX - 64
        {
            out.extend_from_slice(&key);
            out.push(b':');
            out.extend_from_slice(value);
            out.push(b',');
        }
    }
    out.extend_from_slice(format!("\"{TRIMMED_KEY}\":{}}}", frame.len()).as_bytes());
    Bytes::from(out)
}

/// A JSON object's members in order, their values left as raw JSON.
#[derive(Default)]
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// The storage key of a session's `n`th lap.
pub fn key(id: &SessionId, n: u64) -> String {
    format!("{id}.{n}")
}

/// Whether two raw lap values name the same lap: the same bytes, or the same number
/// spelled differently (`14` and `14.0`).
pub fn same_lap(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    let number = |v: &[u8]| -> Option<f64> { std::str::from_utf8(v).ok()?.trim().parse().ok() };
    matches!((number(a), number(b)), (Some(x), Some(y)) if x == y)
}

/// The running lap of a session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Running {
    /// Its value at the lap field (raw JSON); `None` until a frame has the field.
    pub value: Option<Bytes>,
    /// When its first frame arrived.
    pub started_at: Option<DateTime<Utc>>,
    /// Frames so far.
    pub frames: u64,
    /// Laps the session completed before it (the next record's `n` is this + 1).
    pub completed: u64,
    /// Whether one of its frames said `"in_pits": true`.
    pub pitted: bool,
}

/// Whether a frame says `"in_pits": true`: the first `"in_pits"` key in it, by
/// a byte search rather than a parse (every frame passes here; a parse of a
/// 2 KB frame would cost more than the rest of its ingest). The schema's
/// `in_pits` is top-level and no sim's frame nests another.
pub fn in_pits(frame: &[u8]) -> bool {
    let Some(at) = memchr::memmem::find(frame, b"\"in_pits\"") else {
        return false;
    };
    let rest = frame[at + 9..].trim_ascii_start();
    rest.strip_prefix(b":")
        .is_some_and(|value| value.trim_ascii_start().starts_with(b"true"))
}

impl Running {
    /// Takes one accepted frame (`value`: where its lap field is in it, if
    /// present). Returns the lap it completes, if any. `previous` is the frame
    /// before it.
    pub fn advance(
        &mut self,
        session_id: SessionId,
        value: Option<std::ops::Range<usize>>,
        frame: &Bytes,
        previous: Option<&Bytes>,
        now: DateTime<Utc>,
    ) -> Option<LapRecord> {
        let pits = in_pits(frame);
        let mut completed = None;
        if let Some(value) = value.and_then(|range| frame.get(range)) {
            match &self.value {
                Some(current) if same_lap(current, value) => {}
                Some(current) => {
                    self.completed += 1;
                    completed = Some(LapRecord {
                        session_id,
                        n: self.completed,
                        lap: current.clone(),
                        started_at: self.started_at.unwrap_or(now),
                        ended_at: now,
                        frames: self.frames,
                        // A running lap has had a frame, so there is a previous one.
                        last_frame: fit(previous.unwrap_or(frame)),
                        next_frame: fit(frame),
                        pitted: self.pitted,
                    });
                    self.start(value, now);
                }
                None => self.start(value, now),
            }
        }
        if self.value.is_some() {
            self.frames += 1;
            self.pitted |= pits;
        }
        completed
    }

    fn start(&mut self, value: &[u8], now: DateTime<Utc>) {
        // A copy, not a slice of the frame: a slice would keep the whole frame alive.
        self.value = Some(Bytes::copy_from_slice(value));
        self.started_at = Some(now);
        self.frames = 0;
        self.pitted = false;
    }
}

/// What one record costs in memory beyond its bytes of JSON (the record, its
/// `Arc`, its place in the history and the budget's queue), for the accounting.
const RECORD_OVERHEAD: usize = 192;

impl LapRecord {
    /// The bytes this record holds, as the budgets count them: its frames and lap
    /// value (counted even where a frame is shared with the session's latest, so
    /// the count never falls short) plus [`RECORD_OVERHEAD`].
    pub fn bytes(&self) -> usize {
        self.lap.len() + self.last_frame.len() + self.next_frame.len() + RECORD_OVERHEAD
    }
}

/// How many laps and bytes one session's history may keep (`--max-laps`,
/// `--max-lap-bytes`); the oldest go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    pub max_laps: usize,
    pub max_bytes: usize,
}

/// A session's kept laps, oldest first, within its [`HistoryLimits`].
#[derive(Debug, Clone, Default)]
pub struct History {
    laps: VecDeque<Arc<LapRecord>>,
    /// The records' [`LapRecord::bytes`] together.
    bytes: usize,
}

impl History {
    /// Adds a record in its place by `n` (replacing one with the same `n`: a peer's
    /// stored copy wins over this processor's), dropping the oldest past the
    /// limits (the newest record always stays, whatever its size: it is at most
    /// two [`LAP_FRAME_MAX`] frames). Returns whether the record was new here.
    pub fn insert(&mut self, record: Arc<LapRecord>, limits: HistoryLimits) -> bool {
        self.bytes += record.bytes();
        let new = match self.laps.binary_search_by_key(&record.n, |r| r.n) {
            Ok(i) => {
                self.bytes -= self.laps[i].bytes();
                self.laps[i] = record;
                false
            }
            Err(i) => {
                self.laps.insert(i, record);
                true
            }
        };
        while self.laps.len() > limits.max_laps.max(1)
            || (self.bytes > limits.max_bytes && self.laps.len() > 1)
        {
            self.pop_oldest();
        }
        new
    }

    /// Drops the oldest record, returning it.
    pub fn pop_oldest(&mut self) -> Option<Arc<LapRecord>> {
        let record = self.laps.pop_front()?;
        self.bytes -= record.bytes();
        Some(record)
    }

    /// The oldest record's number.
    pub fn oldest(&self) -> Option<u64> {
        self.laps.front().map(|r| r.n)
    }

    /// The records' bytes together, as the budgets count them.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.laps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.laps.is_empty()
    }

    pub fn records(&self) -> Vec<Arc<LapRecord>> {
        self.laps.iter().cloned().collect()
    }

    /// The last `n` records, oldest first.
    pub fn latest(&self, n: usize) -> Vec<Arc<LapRecord>> {
        self.laps
            .iter()
            .skip(self.laps.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}

/// A `sessions.laps` request body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageRequest {
    /// The first lap number to include (records whose lap is a number at least this).
    #[serde(default)]
    pub from_lap: Option<f64>,
    #[serde(default)]
    pub limit: Option<usize>,
    /// Allowed so `sessions.laps` can name the session in the body.
    #[serde(default)]
    #[allow(dead_code)]
    session_id: Option<serde::de::IgnoredAny>,
}

/// One page of a session's laps, as JSON:
/// `{"session_id", "laps": [...], "count", "next_from_lap"}`.
pub fn page(session_id: SessionId, laps: &[Arc<LapRecord>], request: &PageRequest) -> Vec<u8> {
    let limit = request
        .limit
        .unwrap_or(PAGE_DEFAULT_LIMIT)
        .clamp(1, PAGE_MAX_LIMIT);
    let mut selected = laps
        .iter()
        .filter(|r| match request.from_lap {
            None => true,
            Some(from) => r.number().is_some_and(|lap| lap >= from),
        })
        .peekable();
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(b"{\"session_id\":\"");
    out.extend_from_slice(session_id.to_string().as_bytes());
    out.extend_from_slice(b"\",\"laps\":[");
    let mut count = 0usize;
    while let Some(record) = selected.peek() {
        let json = record.to_json();
        if count == limit || (count > 0 && out.len() + json.len() > PAGE_MAX_BYTES) {
            break;
        }
        if count > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&json);
        count += 1;
        selected.next();
    }
    // The next page starts at the first record not sent: its lap number.
    let next = selected
        .next()
        .map(|r| String::from_utf8_lossy(&r.lap).into_owned());
    out.extend_from_slice(format!("],\"count\":{count},\"next_from_lap\":").as_bytes());
    out.extend_from_slice(next.as_deref().unwrap_or("null").as_bytes());
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_pits_is_read_without_a_parse() {
        assert!(in_pits(br#"{"lap":3,"in_pits":true}"#));
        assert!(in_pits(br#"{"in_pits" :  true, "x": 1}"#));
        assert!(!in_pits(br#"{"in_pits":false}"#));
        assert!(!in_pits(br#"{"lap":3}"#));
        assert!(!in_pits(br#"{"in_pits""#));
        assert!(!in_pits(br#"{"in_pits":"true"}"#));
    }

    #[test]
    fn a_lap_with_a_frame_in_the_pits_is_marked() {
        let id = SessionId::new_v4();
        let mut running = Running::default();
        let mut last: Option<Bytes> = None;
        let mut records = Vec::new();
        for (lap, pits) in [
            (1, false),
            (1, true),
            (1, false),
            (2, false),
            (2, false),
            (3, false),
        ] {
            let frame = Bytes::from(format!(r#"{{"lap":{lap},"in_pits":{pits}}}"#));
            let at = frame.iter().position(|b| b.is_ascii_digit()).unwrap();
            if let Some(r) =
                running.advance(id, Some(at..at + 1), &frame, last.as_ref(), Utc::now())
            {
                records.push(r.pitted);
            }
            last = Some(frame);
        }
        assert_eq!(records, [true, false]);
    }
    use serde_json::{Value, json};

    fn frame(lap: u64, fuel: f64) -> Bytes {
        Bytes::from(format!(r#"{{"lap": {lap}, "fuel": {fuel}}}"#))
    }

    /// Where the lap is in a frame made by `frame`.
    fn value(lap: u64) -> Option<std::ops::Range<usize>> {
        Some(8..8 + lap.to_string().len())
    }

    #[test]
    fn a_lap_closes_when_the_value_changes_and_keeps_its_edge_frames() {
        let id = SessionId::new_v4();
        let mut running = Running::default();
        let t = |s: i64| DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap();
        let mut previous: Option<Bytes> = None;
        let mut records = Vec::new();
        let frames = [
            (1, 0, true),
            (1, 1, true),
            (1, 2, false),
            (1, 3, true),
            (2, 4, true),
            (2, 5, true),
            (1, 6, true),
        ];
        for (lap, second, has_field) in frames {
            let f = if has_field {
                frame(lap, 50.0 - second as f64)
            } else {
                Bytes::from_static(b"{\"x\":1}")
            };
            let v = if has_field { value(lap) } else { None };
            records.extend(running.advance(id, v, &f, previous.as_ref(), t(second)));
            previous = Some(f);
        }
        assert_eq!(
            records.len(),
            2,
            "lap 1 ends at lap 2; lap 2 ends when it goes down"
        );
        let first = &records[0];
        assert_eq!((first.n, &first.lap[..], first.frames), (1, &b"1"[..], 4));
        assert_eq!((first.started_at, first.ended_at), (t(0), t(4)));
        assert_eq!(first.last_frame, frame(1, 47.0));
        assert_eq!(first.next_frame, frame(2, 46.0));
        let second = &records[1];
        assert_eq!(
            (second.n, &second.lap[..], second.frames),
            (2, &b"2"[..], 2)
        );
        assert_eq!(second.started_at, first.ended_at);
        assert_eq!(running.completed, 2);
    }

    #[test]
    fn the_same_number_spelled_twice_is_one_lap() {
        assert!(same_lap(b"14", b"14.0"));
        assert!(same_lap(b"\"out\"", b"\"out\""));
        assert!(!same_lap(b"14", b"15"));
        assert!(!same_lap(b"\"14\"", b"14"));
    }

    fn record(n: u64) -> Arc<LapRecord> {
        Arc::new(LapRecord {
            session_id: SessionId::new_v4(),
            n,
            lap: Bytes::from(n.to_string()),
            started_at: Utc::now(),
            ended_at: Utc::now(),
            frames: 10,
            last_frame: frame(n, 1.0),
            next_frame: frame(n + 1, 0.5),
            pitted: false,
        })
    }

    fn limits(max_laps: usize) -> HistoryLimits {
        HistoryLimits {
            max_laps,
            max_bytes: usize::MAX,
        }
    }

    #[test]
    fn small_frames_are_kept_as_sent_and_large_ones_summarised() {
        let small = frame(3, 1.5);
        assert_eq!(fit(&small), small);
        let members: Vec<String> = (0..2_000).map(|i| format!(r#""k{i}": {i}"#)).collect();
        let big = Bytes::from(format!(
            r#"{{"lap": 4, "fuel": 12.5, "pad": "{}", {}}}"#,
            "x".repeat(20_000),
            members.join(",")
        ));
        let summary = fit(&big);
        assert!(summary.len() <= LAP_FRAME_MAX, "{}", summary.len());
        let v: Value = serde_json::from_slice(&summary).unwrap();
        assert_eq!(
            (v["lap"].clone(), v["fuel"].clone()),
            (json!(4), json!(12.5))
        );
        assert_eq!(v[TRIMMED_KEY], json!(big.len()));
        assert!(v.get("pad").is_none());
    }

    #[test]
    fn history_keeps_order_drops_the_oldest_and_takes_a_peers_copy() {
        let mut history = History::default();
        for n in [2, 1, 3, 4] {
            assert!(history.insert(record(n), limits(3)));
        }
        let ns: Vec<u64> = history.records().iter().map(|r| r.n).collect();
        assert_eq!(ns, [2, 3, 4]);
        assert!(!history.insert(record(3), limits(3)));
    }

    #[test]
    fn pages_follow_lap_numbers_and_say_where_to_go_on() {
        let id = SessionId::new_v4();
        let laps: Vec<Arc<LapRecord>> = (1..=5).map(record).collect();
        let ask = |body: Value| -> Value {
            let request: PageRequest = serde_json::from_value(body).unwrap();
            serde_json::from_slice(&page(id, &laps, &request)).unwrap()
        };
        let all = ask(json!({}));
        assert_eq!(all["count"], 5);
        assert_eq!(all["next_from_lap"], Value::Null);
        assert_eq!(all["laps"][0]["lap"], 1);
        assert_eq!(all["laps"][0]["last_frame"], json!({"lap": 1, "fuel": 1}));
        let some = ask(json!({"from_lap": 2, "limit": 2}));
        assert_eq!(some["count"], 2);
        assert_eq!(some["laps"][1]["lap"], 3);
        assert_eq!(some["next_from_lap"], 4);
        assert_eq!(ask(json!({"from_lap": 9}))["count"], 0);
        assert!(serde_json::from_value::<PageRequest>(json!({"from_lap": "x"})).is_err());
        assert!(serde_json::from_value::<PageRequest>(json!({"offset": 1})).is_err());
    }

    #[test]
    fn stored_records_read_back_the_same() {
        let r = record(7);
        assert_eq!(LapRecord::from_stored(&r.to_stored()).unwrap(), *r);
    }
}
