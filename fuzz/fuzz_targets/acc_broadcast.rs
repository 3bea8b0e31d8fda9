//! Any bytes as datagrams from ACC's broadcasting API to its decoder
//! (src/sources/acc_broadcast.rs): it never panics, counts every datagram
//! once, its frame is a JSON object and its field one the processor takes
//! (protocol/field.rs). The input is a sequence of datagrams, each after a
//! `u16` little-endian length (a length past the end takes the rest); seeded
//! (.ci/run) with a whole session built from the SDK's layouts
//! (tests/data/acc-broadcast/session.bin).
#![no_main]

use libfuzzer_sys::fuzz_target;
use paddock::protocol::field::Field;
use paddock::sources::acc_broadcast::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new();
    let mut datagrams = 0u64;
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        let (datagram, next) = rest[2..].split_at(len.min(rest.len() - 2));
        decoder.read(datagram);
        datagrams += 1;
        rest = next;
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
    }
    let c = decoder.counts();
    assert_eq!(c.read + c.malformed, datagrams);
});
