//! Any bytes as UDP datagrams to the Forza Data Out decoder
//! (src/sources/forza.rs): it never panics, counts every datagram once, and
//! whatever it holds is a JSON object frame. The input is cut into datagrams
//! at each `\n\n`, so one input is a sequence of packets; seeded (.ci/run)
//! with packets of every layout built from the spec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paddock::sources::forza::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new();
    let mut datagrams = 0u64;
    let mut rest = data;
    loop {
        let (packet, next) = match rest.windows(2).position(|w| w == b"\n\n") {
            Some(at) => (&rest[..at], Some(&rest[at + 2..])),
            None => (rest, None),
        };
        decoder.read(packet);
        datagrams += 1;
        if let Some(frame) = decoder.frame() {
            assert!(frame.is_object());
            serde_json::to_vec(&frame).expect("a frame serialises");
        }
        match next {
            Some(next) => rest = next,
            None => break,
        }
    }
    let c = decoder.counts();
    assert_eq!(c.read + c.race_off + c.malformed, datagrams);
});
