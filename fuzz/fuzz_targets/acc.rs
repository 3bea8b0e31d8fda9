//! Any bytes as the three shared-memory pages of ACC and AC to their decoder
//! (src/sources/acc.rs): it never panics, counts every read once, sees a torn
//! page as torn, and whatever it holds is a JSON object frame. The input is
//! the physics, graphics and static pages, each after its length (`u32` LE,
//! cut to what is left); seeded (.ci/run) with the pages the decoder's tests
//! build from the layout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paddock::sources::acc::{Decoder, Pages, packet_id};

/// The next length-prefixed page, and the rest.
fn page(data: &[u8]) -> (&[u8], &[u8]) {
    let Some(len) = data.get(..4) else {
        return (data, &[]);
    };
    let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
    let rest = &data[4..];
    rest.split_at(len.min(rest.len()))
}

fuzz_target!(|data: &[u8]| {
    let (physics, rest) = page(data);
    let (graphics, rest) = page(rest);
    let (statics, _) = page(rest);
    let mut decoder = Decoder::new("Assetto Corsa Competizione");
    let ids = (packet_id(physics), packet_id(graphics));
    let pages = Pages {
        physics,
        physics_id_after: ids.0.unwrap_or(0),
        graphics,
        graphics_id_after: ids.1.unwrap_or(0),
        statics,
    };
    decoder.read(pages);
    // The same pages again: nothing new, or not readable as before.
    assert!(!decoder.read(pages));
    // A physics step under the copy.
    let before = decoder.counts();
    let torn = Pages {
        physics_id_after: pages.physics_id_after.wrapping_add(1),
        ..pages
    };
    assert!(!decoder.read(torn));
    let after = decoder.counts();
    if before.read == 1 {
        assert_eq!(after.torn, before.torn + 1);
    }
    assert_eq!(after.read + after.unchanged + after.off + after.torn + after.short, 3);
    if let Some(frame) = decoder.frame() {
        assert!(frame.is_object());
        serde_json::to_vec(&frame).expect("a frame serialises");
    }
});
