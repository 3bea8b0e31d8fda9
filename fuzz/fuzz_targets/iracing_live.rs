//! Any bytes as a copy of iRacing's live map to its decoder
//! (src/sources/iracing_live.rs): it never panics, counts every read once,
//! sees a row whose tickCount moved under the copy as torn, and whatever it
//! holds is a JSON object frame. Seeded (.ci/run) with the map the decoder's
//! tests build from the layout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paddock::sources::iracing_live::{Decoder, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new();
    let header = &data[..data.len().min(HEADER_LEN)];
    let read = decoder.read(data, header);
    // The same copy again: nothing newer.
    assert!(!decoder.read(data, header));
    // Every buffer's tickCount moved under the copy: torn, or not readable.
    let mut moved = header.to_vec();
    for at in (48..moved.len().saturating_sub(3)).step_by(16) {
        let tick = i32::from_le_bytes(moved[at..at + 4].try_into().unwrap());
        moved[at..at + 4].copy_from_slice(&tick.wrapping_add(1).to_le_bytes());
    }
    assert!(!decoder.read(data, &moved));
    let c = decoder.counts();
    if read {
        assert_eq!(c.torn, 1);
    }
    assert_eq!(c.read + c.unchanged + c.off + c.torn + c.malformed, 3);
    if let Some(frame) = decoder.frame() {
        assert!(frame.is_object());
        serde_json::to_vec(&frame).expect("a frame serialises");
    }
    let _ = decoder.take_setup();
});
