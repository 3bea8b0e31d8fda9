//! Any bytes as an iRacing telemetry file (src/sources/ibt.rs, its session info
//! through src/sources/yaml.rs): parsing never panics, and a file that parses
//! gives a JSON object for its names, setup and every row read. Seeded (.ci/run)
//! with the head of the real file in tests/data/ibt.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paddock::sources::ibt::Ibt;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = Ibt::parse(data.to_vec()) else {
        return;
    };
    let _ = file.names();
    if let Some(setup) = file.setup() {
        assert!(setup.is_object());
    }
    for row in 0..file.rows().min(64) {
        let frame = file.frame(row, file.speed_kmh(row));
        assert!(frame.is_object());
        serde_json::to_vec(&frame).expect("a frame serialises");
    }
});
