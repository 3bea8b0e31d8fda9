//! Any bytes as the body of any `sessions.*` request: answered with a reply or a
//! refusal carrying one of the contract's codes, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paddock::app::App;
use paddock::subjects::ENDPOINTS;
use paddock::{Limits, SessionId};

fuzz_target!(|data: &[u8]| {
    let app = App::new(Limits {
        max_payload: 4096,
        max_sessions: 4,
        ..Default::default()
    });
    // One known session, so that get/delete can also succeed.
    let id = SessionId::parse("0b6f3b8e-2c1a-4d5e-9f60-7a8b9c0d1e2f").unwrap();
    app.ingest(
        &paddock::subjects::data(&id, paddock::subjects::DataKind::Telemetry),
        &bytes::Bytes::from_static(br#"{"lap":1}"#),
    )
    .expect("a good frame creates the session");
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let endpoint = ENDPOINTS[selector as usize % ENDPOINTS.len()];
    if let Err(e) = app.handle_control(endpoint, body) {
        assert!(
            [400, 404, 413, 429, 503].contains(&e.code()),
            "{endpoint}: {e} ({})",
            e.code()
        );
    }
});
