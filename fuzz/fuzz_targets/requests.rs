//! Any bytes as the body of any `sessions.*` request (and, for the endpoints that
//! take one, with a subject id too): answered with a reply or a refusal carrying
//! one of the contract's codes, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paddock::protocol::subjects::{self, DataKind, Endpoint};
use paddock::server::app::App;
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
        &subjects::data(&id, DataKind::Telemetry),
        &bytes::Bytes::from_static(br#"{"lap":1}"#),
    )
    .expect("a good frame creates the session");
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let endpoint = Endpoint::ALL[selector as usize % Endpoint::ALL.len()];
    // The high bit: the form with the id in the subject, taken from the body's
    // first 36 bytes (mostly not an id, sometimes the known one).
    let subject_id = (selector & 0x80 != 0 && endpoint.one_session().is_some())
        .then(|| std::str::from_utf8(body.get(..36).unwrap_or(body)).unwrap_or("x"));
    if let Err(e) = app.handle_control_for(endpoint, subject_id, body) {
        assert!(
            [400, 403, 404, 413, 429, 503].contains(&e.code()),
            "{endpoint:?}: {e} ({})",
            e.code()
        );
    }
});
