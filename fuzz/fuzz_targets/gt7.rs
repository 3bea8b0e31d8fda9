//! Any bytes to the Gran Turismo 7 decoder (src/sources/gt7.rs), two ways:
//! as the encrypted datagram itself (almost never decrypting: the garbage
//! path), and as a plaintext that the target encrypts as the console would, so
//! the fuzzer reaches the field reads behind the cipher. It never panics,
//! counts every datagram once, and whatever it holds is a JSON object frame.
//! Seeded (.ci/run) with plaintexts of every format built from the layout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paddock::sources::gt7::{Decoder, Format, MAGIC, encrypt};

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new();
    decoder.read(data);
    // The plaintext: the input cut or padded to the nearest format's length,
    // the magic in place (else the decoder stops there), the seed from the
    // input's own bytes at 0x40.
    let format = match data.len() {
        0..=305 => Format::A,
        306..=329 => Format::B,
        _ => Format::Tilde,
    };
    let mut plain = data.to_vec();
    plain.resize(format.length(), 0);
    plain[..4].copy_from_slice(&MAGIC.to_le_bytes());
    let iv1 = u32::from_le_bytes(plain[0x40..0x44].try_into().unwrap());
    decoder.read(&encrypt(&plain, iv1, format));
    if let Some(frame) = decoder.frame() {
        assert!(frame.is_object());
        serde_json::to_vec(&frame).expect("a frame serialises");
    }
    let c = decoder.counts();
    assert_eq!(c.read + c.off_track + c.wrong_magic + c.malformed, 2);
    // The console's own encryption always decrypts, whatever the seed.
    assert!(c.rejected() <= 1, "{c:?}");
});
