//! Real sims' telemetry turned into frames of the documented telemetry schema
//! (docs/telemetry.schema.json, PROTOCOL.md "Telemetry schema").
//!
//! Each decoder is pure — bytes in, schema frames out, no I/O and no clock of
//! its own — so it is tested on bytes (real captures under tests/data and
//! sequences built from the games' specs) and fuzzed (fuzz/). `paddock monitor`
//! (src/cmd/monitor.rs, f1.rs, datagrams.rs, shm.rs) does the I/O: a UDP socket for EA F1 and Forza, a UDP
//! socket and a heartbeat to the console for Gran Turismo 7, a file for iRacing,
//! the game's shared memory on Windows for ACC, AC, iRacing live and Le Mans
//! Ultimate.
//!
//! Units are converted here, once: what leaves a decoder is in the schema's
//! units (s, L, km/h, °C, psi, tread left as a fraction) with corners keyed
//! `fl fr rl rr`, whatever order and unit the game used.

pub mod acc;
pub mod acc_broadcast;
pub mod f1;
pub mod forza;
pub mod gt7;
pub mod ibt;
pub mod iracing_live;
pub mod lmu;
pub mod yaml;

use serde_json::{Map, Value};

/// Per-corner values in the schema's shape: `{"fl": …, "fr": …, "rl": …, "rr": …}`.
pub(crate) fn corners(fl: Value, fr: Value, rl: Value, rr: Value) -> Value {
    let mut map = Map::with_capacity(4);
    map.insert("fl".into(), fl);
    map.insert("fr".into(), fr);
    map.insert("rl".into(), rl);
    map.insert("rr".into(), rr);
    Value::Object(map)
}

/// A JSON number from a float, `null` when it is not finite (JSON has no NaN).
pub(crate) fn number(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// `value` rounded to `digits` decimals: the games send f32, whose noise
/// (23.899999618530273) is not worth the bytes on every frame.
pub(crate) fn rounded(value: f64, digits: i32) -> Value {
    let scale = 10f64.powi(digits);
    number((value * scale).round() / scale)
}

/// kPa to psi (1 psi = 6.894757 kPa): the one conversion, also the Socket.IO
/// gateway's for the Race Dashboard's LMU frames.
pub(crate) fn kpa_to_psi(kpa: f64) -> f64 {
    kpa * 0.145_037_737_73
}

/// Little-endian reads from a packet that say `None` past its end rather than
/// panic: every binary decoder's way into its bytes (the games all send
/// little-endian, packed).
#[derive(Clone, Copy)]
pub(crate) struct Le<'a>(pub(crate) &'a [u8]);

impl Le<'_> {
    pub(crate) fn array<const N: usize>(self, at: usize) -> Option<[u8; N]> {
        self.0.get(at..at.checked_add(N)?)?.try_into().ok()
    }
    pub(crate) fn u8(self, at: usize) -> Option<u8> {
        self.0.get(at).copied()
    }
    pub(crate) fn i8(self, at: usize) -> Option<i8> {
        self.u8(at).map(|b| b as i8)
    }
    pub(crate) fn u16(self, at: usize) -> Option<u16> {
        self.array(at).map(u16::from_le_bytes)
    }
    pub(crate) fn i16(self, at: usize) -> Option<i16> {
        self.array(at).map(i16::from_le_bytes)
    }
    pub(crate) fn u32(self, at: usize) -> Option<u32> {
        self.array(at).map(u32::from_le_bytes)
    }
    pub(crate) fn i32(self, at: usize) -> Option<i32> {
        self.array(at).map(i32::from_le_bytes)
    }
    pub(crate) fn u64(self, at: usize) -> Option<u64> {
        self.array(at).map(u64::from_le_bytes)
    }
    /// An `f32`, widened (what the schema's numbers are made from).
    pub(crate) fn f32(self, at: usize) -> Option<f64> {
        self.array(at).map(f32::from_le_bytes).map(f64::from)
    }
    pub(crate) fn f64(self, at: usize) -> Option<f64> {
        self.array(at).map(f64::from_le_bytes)
    }
}

/// Sets `key` when there is a reading: a field a packet could not give is
/// left out of the frame, not sent as a made-up value.
pub(crate) fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.into(), value);
    }
}
