//! Any bytes as a setup or telemetry frame: the processor never panics, accepts
//! exactly the JSON objects within the size limit (serde_json is the reference),
//! a refused frame never replaces the session's last good one, and the lap field
//! is found where serde_json's pointer finds it.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use paddock::protocol::subjects::{self, DataKind};
use paddock::server::app::App;
use paddock::{Limits, SessionId};

const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let app = App::new(Limits {
        max_payload: LIMIT,
        max_sessions: 4,
        ..Default::default()
    });
    let id = SessionId::parse("0b6f3b8e-2c1a-4d5e-9f60-7a8b9c0d1e2f").unwrap();
    let kind = if data.first().is_some_and(|b| b & 1 == 1) {
        DataKind::Setup
    } else {
        DataKind::Telemetry
    };
    let subject = subjects::data(&id, kind);
    app.ingest(&subject, &Bytes::from_static(br#"{"lap":1}"#))
        .expect("the first frame is good");
    let frame = data.get(1..).unwrap_or_default();
    let accepted = app.ingest(&subject, &Bytes::copy_from_slice(frame)).is_ok();
    let reference = frame.len() <= LIMIT
        && std::str::from_utf8(frame).is_ok()
        && serde_json::from_slice::<serde::de::IgnoredAny>(frame).is_ok()
        && frame.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    // The one intended difference: nesting deeper than 128 levels is refused.
    if accepted != reference {
        assert!(
            reference && !accepted && nesting(frame) > 128,
            "{:?}",
            String::from_utf8_lossy(frame)
        );
    }
    let snapshot = app.sessions.get(id).unwrap();
    let stored = match kind {
        DataKind::Setup => snapshot.setup,
        DataKind::Telemetry => snapshot.telemetry,
        // A field is checked against its schema first (fuzz target f1 feeds
        // the decoder's fields to it); this target sends frames only.
        DataKind::Field => unreachable!("this target sends setup and telemetry"),
    }
    .unwrap();
    if accepted {
        assert_eq!(&stored.body[..], frame);
        // The lap field, found without a DOM, is what serde_json's pointer finds;
        // and a lap closes exactly when that value is not lap 1. (A frame with a
        // number beyond f64, which the check accepts as serde's IgnoredAny does,
        // has no serde_json::Value to compare with.)
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(frame) {
            let pointer = paddock::protocol::payload::Pointer::parse("/lap").unwrap();
            let ours = pointer
                .find(frame)
                .map(|r| serde_json::from_slice::<serde_json::Value>(&frame[r]).unwrap());
            assert_eq!(ours.as_ref(), value.pointer("/lap"), "{value}");
            if kind == DataKind::Telemetry {
                let closed = snapshot.laps == 1;
                let differs = ours.is_some_and(|lap| lap.as_f64() != Some(1.0));
                assert_eq!(closed, differs, "{value}");
            }
        }
    } else {
        assert_eq!(&stored.body[..], br#"{"lap":1}"#);
    }
});

/// How deep the containers of a (valid) JSON text nest, brackets inside strings
/// not counted.
fn nesting(frame: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for &b in frame {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}
