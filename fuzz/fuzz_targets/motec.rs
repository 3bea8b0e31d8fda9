//! Any bytes as the laps `POST /export/motec` converts (what a page posts,
//! or anyone who reaches the HTTP side): MoTeC files or a refusal with the
//! reason, within `MAX_SAMPLES`, never a panic and never an allocation the
//! bound does not cover.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paddock::export::motec::{self, Details, MAX_SAMPLES};
use paddock::protocol::trace::Trace;

fuzz_target!(|data: &[u8]| {
    let Ok(traces) = serde_json::from_slice::<Vec<Trace>>(data) else {
        return;
    };
    if let Ok(files) = motec::write(&traces, &Details::default()) {
        assert!(files.samples * motec::CHANNELS.len() <= MAX_SAMPLES);
        assert!(files.ld.len() < 8 * 1024 + 4 * MAX_SAMPLES);
        assert!((1..=1000).contains(&files.hz));
    }
});
