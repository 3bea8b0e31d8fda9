//! Any bytes as Le Mans Ultimate's two rF2 plugin buffers to their decoder
//! (src/sources/lmu.rs): it never panics, counts every read once, sees a copy
//! whose version block moved as torn, and whatever it holds is a JSON object
//! frame. The input is the telemetry and scoring buffers, each after its
//! length (`u32` LE, cut to what is left); seeded (.ci/run) with the buffers
//! the decoder's tests build from the layout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paddock::sources::lmu::{Buffers, Decoder, Read, Versions};

/// The next length-prefixed buffer, and the rest.
fn buffer(data: &[u8]) -> (&[u8], &[u8]) {
    let Some(len) = data.get(..4) else {
        return (data, &[]);
    };
    let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
    let rest = &data[4..];
    rest.split_at(len.min(rest.len()))
}

fuzz_target!(|data: &[u8]| {
    let (telemetry, rest) = buffer(data);
    let (scoring, _) = buffer(rest);
    let mut decoder = Decoder::new();
    let buffers = Buffers {
        telemetry,
        telemetry_after: Versions::of(telemetry).unwrap_or_default(),
        scoring,
        scoring_after: Versions::of(scoring).unwrap_or_default(),
    };
    let first = decoder.read(buffers);
    // The same buffers again: nothing new, or not readable as before.
    let again = decoder.read(buffers);
    assert_ne!(again, Read::Frame);
    if first == Read::Frame {
        assert_eq!(again, Read::Unchanged);
    }
    // A telemetry write begun under the copy.
    let moved = Versions {
        begin: buffers.telemetry_after.begin.wrapping_add(1),
        ..buffers.telemetry_after
    };
    let torn = decoder.read(Buffers {
        telemetry_after: moved,
        ..buffers
    });
    if first == Read::Frame {
        assert_eq!(torn, Read::Torn);
    }
    let c = decoder.counts();
    assert_eq!(c.read + c.unchanged + c.torn + c.off + c.short, 3);
    if let Some(frame) = decoder.frame() {
        assert!(frame.is_object());
        serde_json::to_vec(&frame).expect("a frame serialises");
    }
});
