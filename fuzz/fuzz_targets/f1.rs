//! Any bytes as UDP datagrams to the EA F1 decoder (src/sources/f1.rs): it never
//! panics, counts every datagram once, and whatever it holds is a JSON object
//! frame, and its field is one the processor takes (protocol/field.rs). The input is cut into datagrams at each `\n\n`, so one input is a
//! sequence of packets; seeded (.ci/run) with the real captures in tests/data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paddock::protocol::field::Field;
use paddock::sources::f1::Decoder;

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
        if let Some(field) = decoder.field() {
            let bytes = serde_json::to_vec(&field).expect("a field serialises");
            if let Err(e) = Field::parse(&bytes) {
                panic!("the decoder's field is refused: {e}");
            }
        }
        match next {
            Some(next) => rest = next,
            None => break,
        }
    }
    let c = decoder.counts();
    assert_eq!(c.read + c.ignored + c.other_format + c.malformed, datagrams);
});
