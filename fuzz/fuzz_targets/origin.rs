//! Any bytes as what the Race Dashboard's monitor sends through the Socket.IO
//! gateway: `finite_json` never panics, changes nothing in strict JSON, and
//! what it gives for text with Python's non-finite numbers parses whenever the
//! same text with `null` in their place would; `to_schema` never panics and
//! keeps every key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paddock::gateway::origin::{finite_json, to_schema};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cleaned = finite_json(text);
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
        assert_eq!(cleaned, text, "strict JSON is left alone");
    }
    if let Ok(Value::Object(mut frame)) = serde_json::from_str::<Value>(&cleaned) {
        let keys: Vec<String> = frame.keys().cloned().collect();
        to_schema(&mut frame);
        assert_eq!(frame.keys().cloned().collect::<Vec<_>>(), keys);
    }
});
