//! The Socket.IO gateway as the Race Dashboard's (1Lap) monitor and pages use
//! it: the origin's own socket tests ported (ids, late join, broadcast to rooms,
//! order, bad input), plus what paddock adds (a gateway session is paddock's
//! own, NATS frames reach Socket.IO pages, units, `NaN`, a kill -9 of the
//! processor, the token, the old links). A real `paddock serve --http-addr`
//! and a real broker per test; the clients are Socket.IO over WebSocket and
//! the Engine.IO polling transport, both by hand (support/socketio.rs).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

fn telemetry_sample() -> Value {
    serde_json::from_str(TELEMETRY).unwrap()
}

fn setup_sample() -> Value {
    serde_json::from_str(include_str!("../data/setup.json")).unwrap()
}

async fn get(nats: &async_nats::Client, id: &str) -> Value {
    ask(nats, &format!("sessions.get.{id}"), String::new())
        .await
        .ok()
}

/// Polls `sessions.get` until `check` holds (a publish is not acknowledged).
async fn until_document(
    nats: &async_nats::Client,
    id: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = ask(nats, &format!("sessions.get.{id}"), String::new()).await;
        if answer.code.is_none() && check(&answer.body) {
            return answer.body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session never got there: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(events: &[(String, Value)], name: &str) -> usize {
    events.iter().filter(|(e, _)| e == name).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_gets_exactly_one_canonical_id_and_the_session_is_paddocks_own() {
    let g = gateway(&[]).await;
    let mut monitor = Sio::connect(&g.http).await;
    monitor.emit("request_session_id", json!({})).await;
    let assigned = monitor.next("session_id_assigned").await;
    let id = assigned["session_id"].as_str().unwrap().to_string();
    assert!(is_uuid4(&id), "{assigned}");
    assert_eq!(assigned.as_object().unwrap().len(), 1, "{assigned}");
    let more = monitor.during(Duration::from_millis(500)).await;
    assert_eq!(count(&more, "session_id_assigned"), 0, "{more:?}");

    // Setup and a frame, as the origin's monitor sends them.
    let setup = setup_sample();
    monitor
        .emit(
            "setup_data",
            json!({"session_id": id, "timestamp": "2026-12-04T10:00:00Z", "setup": setup}),
        )
        .await;
    let telemetry = telemetry_sample();
    monitor
        .emit(
            "telemetry_update",
            json!({"session_id": id, "telemetry": telemetry}),
        )
        .await;
    let doc = until_document(&g.nats, &id, |d| !d["telemetry"].is_null()).await;
    assert_eq!(doc["setup"], setup);
    assert_eq!(doc["telemetry"], telemetry);
    assert_eq!(doc["stats"]["telemetry_count"], 1);

    // `paddock watch` shows it like any other session.
    let url = g.server.url();
    let watch = Running::spawn(&["watch", &id, "--plain", "--nats-url", &url]);
    let line = watch.line();
    assert!(
        line.starts_with(&format!("lap {} ", telemetry["lap"])),
        "{line}"
    );

    // The gateway counts what it took.
    let metrics = until_status(&g.http, "/metrics", 200).await;
    for event in ["request_session_id", "setup_data", "telemetry_update"] {
        assert!(
            metrics.contains(&format!(
                "paddock_gateway_events_total{{event=\"{event}\"}} 1"
            )),
            "{event}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_gets_the_setup_then_the_telemetry_exactly_once() {
    let g = gateway(&[]).await;
    let mut monitor = Sio::connect(&g.http).await;
    let id = monitor.request_session_id().await;
    let (setup, telemetry) = (setup_sample(), telemetry_sample());
    monitor
        .emit(
            "setup_data",
            json!({"session_id": id, "timestamp": "t", "setup": setup}),
        )
        .await;
    monitor
        .emit(
            "telemetry_update",
            json!({"session_id": id, "telemetry": telemetry}),
        )
        .await;
    until_document(&g.nats, &id, |d| !d["telemetry"].is_null()).await;

    let mut page = Sio::connect(&g.http).await;
    page.emit("join_session", json!({"session_id": id})).await;
    let seen = page.during(Duration::from_secs(2)).await;
    let names: Vec<&str> = seen.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["setup_update", "telemetry_update"], "{seen:?}");
    assert_eq!(seen[0].1["session_id"], json!(id));
    assert_eq!(seen[0].1["setup"], setup);
    assert!(is_rfc3339_utc(&seen[0].1["timestamp"]), "{seen:?}");
    assert_eq!(seen[1].1, json!({"session_id": id, "telemetry": telemetry}));
}

/// Pages joining while the car sends (every 2 ms) each see its frames once and
/// in order from their snapshot on: the gap-free join gives a page neither a
/// frame twice (in the snapshot and again live), nor an older one after it, nor
/// misses one (arriving while its snapshot was asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_joining_mid_stream_see_no_frame_twice_nor_out_of_order() {
    // Lifted: --max-frame-rate. 500 frames a second, past the default 100, so
    // that frames keep arriving around every join.
    let g = gateway(&["--max-frame-rate", "0"]).await;
    let mut monitor = Sio::connect(&g.http).await;
    let id = monitor.request_session_id().await;
    // The frames in the order the broker routes them, which the room's
    // subscription sees too: what each page must see a run of, unbroken.
    let (_watcher, mut live) = subscriber(&g.server.url(), format!("session.{id}.telemetry")).await;
    let routed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let watcher = tokio::spawn({
        let routed = routed.clone();
        async move {
            while let Some(message) = futures::StreamExt::next(&mut live).await {
                let frame: Value = serde_json::from_slice(&message.payload).unwrap();
                routed.lock().unwrap().push(frame["lap"].as_u64().unwrap());
            }
        }
    });
    let sender = tokio::spawn({
        let id = id.clone();
        async move {
            for lap in 0..1_500u64 {
                let mut t = telemetry_sample();
                t["lap"] = json!(lap);
                monitor
                    .emit(
                        "telemetry_update",
                        json!({"session_id": id, "telemetry": t}),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    // Connected first, then joined four at a time: the room takes joins one
    // after the other, so frames wait in its subscription meanwhile.
    let mut pages = Vec::new();
    for _ in 0..12 {
        pages.push(Sio::connect(&g.http).await);
    }
    for batch in pages.chunks(4) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for page in batch {
            page.emit("join_session", json!({"session_id": id})).await;
        }
    }
    let mut seen_by_page = Vec::new();
    for page in pages.iter_mut() {
        let seen = page.during(Duration::from_millis(300)).await;
        let laps: Vec<u64> = seen
            .iter()
            .filter(|(event, _)| event == "telemetry_update")
            .map(|(_, update)| update["telemetry"]["lap"].as_u64().unwrap())
            .collect();
        seen_by_page.push(laps);
    }
    sender.abort();
    // Every frame a page saw has been seen routed too (a deadline, not a sleep).
    let last = seen_by_page.iter().flatten().copied().max().unwrap_or(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !routed.lock().unwrap().contains(&last) {
        assert!(
            std::time::Instant::now() < deadline,
            "lap {last} never routed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watcher.abort();
    let routed = routed.lock().unwrap().clone();
    let mut bad = Vec::new();
    for (n, laps) in seen_by_page.iter().enumerate() {
        // From its snapshot's frame on, the very frames routed, none left out.
        let unbroken = laps.first().and_then(|first| {
            let from = routed.iter().position(|lap| lap == first)?;
            Some(routed[from..].starts_with(laps))
        });
        if laps.len() < 10 || unbroken != Some(true) {
            let at = laps.windows(2).position(|w| w[1] != w[0] + 1).unwrap_or(0);
            bad.push(format!(
                "page {n}: {} frames, {:?} ...",
                laps.len(),
                &laps[at.saturating_sub(3)..laps.len().min(at + 4)]
            ));
        }
    }
    let metrics = until_status(&g.http, "/metrics", 200).await;
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("paddock_gateway_dropped"))
        .unwrap_or_default();
    assert!(bad.is_empty(), "{}\n({dropped})", bad.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_reach_one_and_three_dashboards_in_order_and_no_other_room() {
    let g = gateway(&[]).await;
    let mut monitor = Sio::connect(&g.http).await;
    let id = monitor.request_session_id().await;
    let other = monitor.request_session_id().await;

    let mut pages = Vec::new();
    for _ in 0..3 {
        let page = Sio::connect(&g.http).await;
        page.emit("join_session", json!({"session_id": id})).await;
        pages.push(page);
    }
    let mut elsewhere = Sio::connect(&g.http).await;
    elsewhere
        .emit("join_session", json!({"session_id": other}))
        .await;
    // Joined: each page's join went through (nothing to snapshot yet, so a
    // first frame tells).
    let mut first = telemetry_sample();
    first["lap"] = json!(0);
    monitor
        .emit(
            "telemetry_update",
            json!({"session_id": id, "telemetry": first}),
        )
        .await;
    for page in &mut pages {
        assert_eq!(page.next("telemetry_update").await["telemetry"]["lap"], 0);
    }

    for lap in 1..=10 {
        let mut t = telemetry_sample();
        t["lap"] = json!(lap);
        monitor
            .emit(
                "telemetry_update",
                json!({"session_id": id, "telemetry": t}),
            )
            .await;
    }
    for page in &mut pages {
        let mut laps = Vec::new();
        for _ in 1..=10 {
            let update = page.next("telemetry_update").await;
            assert_eq!(update["session_id"], json!(id));
            laps.push(update["telemetry"]["lap"].as_u64().unwrap());
        }
        assert_eq!(laps, (1..=10).collect::<Vec<_>>());
    }
    let leaked = elsewhere.during(Duration::from_millis(500)).await;
    assert!(leaked.is_empty(), "another room got {leaked:?}");

    // One dashboard alone, after the others left.
    for page in pages.drain(1..) {
        page.client.disconnect().await.unwrap();
    }
    monitor
        .emit(
            "telemetry_update",
            json!({"session_id": id, "telemetry": telemetry_sample()}),
        )
        .await;
    assert_eq!(
        pages[0].next("telemetry_update").await["session_id"],
        json!(id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_published_over_nats_reach_socketio_dashboards() {
    let g = gateway(&[]).await;
    let id = create(&g.nats).await;
    let mut page = Sio::connect(&g.http).await;
    page.emit("join_session", json!({"session_id": id})).await;
    // Sent at once, while the join may be anywhere on its way: a setup over
    // NATS is acknowledged, so whenever the join's subscription comes, the page
    // gets it, from the snapshot or live (the gap-free join). After it, the
    // page is in the room.
    let setup = setup_sample();
    let ack = ask(&g.nats, &format!("session.{id}.setup"), setup.to_string()).await;
    assert!(ack.code.is_none(), "{ack:?}");
    let update = page.next("setup_update").await;
    assert_eq!(update["setup"], setup);
    g.nats
        .publish(format!("session.{id}.telemetry"), frame(7).into())
        .await
        .unwrap();
    let update = page.next("telemetry_update").await;
    assert_eq!(update["telemetry"]["lap"], 7);
    // What the processor would refuse is not passed on either.
    g.nats
        .publish(format!("session.{id}.telemetry"), "[1,2]".into())
        .await
        .unwrap();
    g.nats
        .publish(format!("session.{id}.telemetry"), frame(8).into())
        .await
        .unwrap();
    assert_eq!(page.next("telemetry_update").await["telemetry"]["lap"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_unknown_or_missing_ids_and_bad_events_leave_every_client_connected() {
    let g = gateway(&[]).await;
    let mut monitor = Sio::connect(&g.http).await;
    let id = monitor.request_session_id().await;
    let mut page = Sio::connect(&g.http).await;
    page.emit("join_session", json!({"session_id": id})).await;
    let good = telemetry_sample();
    monitor
        .emit(
            "telemetry_update",
            json!({"session_id": id, "telemetry": good}),
        )
        .await;
    page.next("telemetry_update").await;
    // The frame may come twice (in the join's snapshot and live): both go.
    page.during(Duration::from_millis(300)).await;

    let bad: [(&str, Value); 9] = [
        (
            "telemetry_update",
            json!({"session_id": "not-an-id", "telemetry": {"lap": 99}}),
        ),
        ("telemetry_update", json!({"telemetry": {"lap": 99}})),
        (
            "telemetry_update",
            json!({"session_id": 42, "telemetry": {"lap": 99}}),
        ),
        (
            "telemetry_update",
            json!({"session_id": id, "telemetry": [1, 2, 3]}),
        ),
        (
            "telemetry_update",
            json!({"session_id": id, "telemetry": "lap 99"}),
        ),
        ("telemetry_update", json!("just a string")),
        ("setup_data", json!({"session_id": id, "setup": null})),
        ("join_session", json!({"session_id": "../../etc"})),
        ("no_such_event", json!({"session_id": id})),
    ];
    for (event, data) in &bad {
        monitor.emit(event, data.clone()).await;
        page.emit(event, data.clone()).await;
    }
    // Each was answered with paddock_error, in order, saying which event and
    // why, and nothing else changed.
    let why = [
        ("telemetry_update", "malformed_id"),
        ("telemetry_update", "malformed_id"),
        ("telemetry_update", "malformed_id"),
        ("telemetry_update", "not_object"),
        ("telemetry_update", "not_object"),
        ("telemetry_update", "not_object"),
        ("setup_data", "not_object"),
        ("join_session", "malformed_id"),
        ("no_such_event", "unknown_event"),
    ];
    // Both clients are told, each in the order it sent; an error is sent once
    // its refusal is counted, so /metrics below has them all.
    for client in [&mut monitor, &mut page] {
        let mut errors = Vec::new();
        for _ in &bad {
            errors.push(client.next("paddock_error").await);
        }
        let read: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| {
                (
                    e["event"].as_str().unwrap_or("?"),
                    e["reason"].as_str().unwrap_or("?"),
                )
            })
            .collect();
        assert_eq!(read, why, "{errors:?}");
        assert!(
            errors
                .iter()
                .all(|e| !e["message"].as_str().unwrap_or("").is_empty()),
            "{errors:?}"
        );
    }
    let doc = get(&g.nats, &id).await;
    assert_eq!(doc["telemetry"], good);
    assert_eq!(doc["setup"], Value::Null);

    // Both still connected and served.
    let mut next = good.clone();
    next["lap"] = json!(15);
    monitor
        .emit(
            "telemetry_update",
            json!({"session_id": id, "telemetry": next}),
        )
        .await;
    assert_eq!(page.next("telemetry_update").await["telemetry"]["lap"], 15);

    // A well-formed id nobody created: the session is made on demand, as for a
    // NATS frame, so a monitor that outlived its server keeps streaming.
    let unknown = uuid::Uuid::new_v4().to_string();
    monitor
        .emit(
            "telemetry_update",
            json!({"session_id": unknown, "telemetry": good}),
        )
        .await;
    until_document(&g.nats, &unknown, |d| d["telemetry"] == good).await;

    // Counted by reason: each bad event came from both clients.
    let metrics = until_status(&g.http, "/metrics", 200).await;
    for (reason, times) in [("malformed_id", 8), ("not_object", 8), ("unknown_event", 2)] {
        assert!(
            metrics.contains(&format!(
                "paddock_gateway_rejected_total{{reason=\"{reason}\"}} {times}\n"
            )),
            "{reason} {times} times: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_monitors_units_and_nan_arrive_in_the_schema() {
    let g = gateway(&[]).await;
    let id = create(&g.nats).await;
    let (_watcher, mut live) = subscriber(&g.server.url(), format!("session.{id}.telemetry")).await;

    // The real LMU capture (kPa, Kelvin), by hand over polling, with a NaN as
    // Python's json writes it.
    let capture: Value =
        serde_json::from_str(include_str!("../data/origin-telemetry-lmu.json")).unwrap();
    let mut telemetry = capture["telemetry"].clone();
    telemetry["tire_pressures"] = json!({"fl": 165.5, "fr": 166.0, "rl": 160.0, "rr": 161.0});
    let text = json!({"session_id": id, "telemetry": telemetry})
        .to_string()
        .replace("\"rpm\":0.0", "\"rpm\":NaN");
    assert!(text.contains("NaN"));
    let (polling, connected) = Polling::open(&g.http, "").await;
    assert!(connected.starts_with("40"), "{connected}");
    polling
        .send(&format!("42[\"telemetry_update\",{text}]"))
        .await;

    let message = next(&mut live).await;
    let frame: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(frame["rpm"], Value::Null);
    assert_eq!(frame["tire_pressures"]["fl"], json!(24.004));
    assert_eq!(frame["brake_temps"]["fl"], json!(34.43));
    assert_eq!(frame["tire_temps"]["fl"], Value::Null);
    assert_eq!(frame["tire_wear"]["fl"], json!(1.0));
    assert_eq!(frame["player_name"], capture["telemetry"]["player_name"]);

    // The origin's mock reader: psi, °C, percent worn.
    let monitor = Sio::connect(&g.http).await;
    let mock = json!({
        "lap": 2, "tire_pressures": {"rl": 23.95, "rr": 23.63, "fl": 24.20, "fr": 23.32},
        "brake_temps": {"rl": 611.19, "rr": 611.5, "fl": 474.79, "fr": 475.18},
        "tire_wear": {"rl": 14.35, "rr": 13.1, "fl": 15.83, "fr": 11.88}
    });
    monitor
        .emit(
            "telemetry_update",
            json!({"session_id": id, "telemetry": mock}),
        )
        .await;
    let frame: Value = serde_json::from_slice(&next(&mut live).await.payload).unwrap();
    assert_eq!(frame["tire_pressures"], mock["tire_pressures"]);
    assert_eq!(frame["brake_temps"], mock["brake_temps"]);
    assert_eq!(frame["tire_wear"]["rl"], json!(0.8565));
    monitor.client.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_of_the_processor_the_monitor_keeps_streaming_into_its_session() {
    let mut g = gateway(&[]).await;
    let mut monitor = Sio::connect(&g.http).await;
    let id = monitor.request_session_id().await;
    let mut t = telemetry_sample();
    t["lap"] = json!(1);
    monitor
        .emit(
            "telemetry_update",
            json!({"session_id": id, "telemetry": t}),
        )
        .await;
    until_document(&g.nats, &id, |d| d["telemetry"]["lap"] == 1).await;
    // Stored (the write-behind window is 200 ms in tests).
    tokio::time::sleep(Duration::from_millis(600)).await;

    g.processor.stop("-KILL");
    let http = g.http.clone();
    g.processor = serve_binary(&g.server.url(), &["--http-addr", &http]);
    until_status(&g.http, "/readyz", 200).await;

    // The origin's monitor reconnects by itself and sends to the id it has; it
    // never asks for a new one.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut lap = 2;
    loop {
        t["lap"] = json!(lap);
        let _ = monitor
            .client
            .emit(
                "telemetry_update",
                json!({"session_id": id, "telemetry": t}),
            )
            .await;
        let doc = get(&g.nats, &id).await;
        if doc["telemetry"]["lap"] == lap {
            assert!(
                doc["stats"]["telemetry_count"].as_u64().unwrap() >= 2,
                "{doc}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never streamed again: {doc}"
        );
        lap += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let listed = ask(&g.nats, "sessions.list", String::new()).await.ok();
    assert_eq!(listed["total"], 1, "still the one session: {listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_asked_for_and_the_old_links_open_the_page() {
    let g = gateway(&["--gateway-token", "s3cret"]).await;
    let (_, refused) = Polling::open(&g.http, "").await;
    assert!(
        refused.starts_with("44") && refused.contains("--gateway-token"),
        "{refused}"
    );
    let (_, refused) = Polling::open(&g.http, "token=wrong").await;
    assert!(
        refused.starts_with("44") && refused.contains("not this paddock"),
        "{refused}"
    );
    let (_, accepted) = Polling::open(&g.http, "token=s3cret").await;
    assert!(accepted.starts_with("40"), "{accepted}");
    let mut monitor = Sio::connect_url(&format!("http://{}?token=s3cret", g.http)).await;
    let id = monitor.request_session_id().await;

    // The origin's monitor prints `<server_url>/dashboard/<id>`: it leads to
    // that session's page, not merely to a page.
    let (status, to) = http_redirect(&g.http, &format!("/dashboard/{id}")).await;
    assert!((300..400).contains(&status), "{status}");
    assert_eq!(to, Some(format!("/session/{id}")));
    let (status, page) = http_get(&g.http, &format!("/dashboard/{id}"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        page.contains("<html") || page.contains("<!doctype"),
        "{page}"
    );
    let (status, _) = http_get(&g.http, "/dashboard/nope").await.unwrap();
    assert_eq!(status, 404);

    // --no-gateway: nothing at /socket.io/.
    drop(g);
    let g = gateway(&["--no-gateway"]).await;
    let (status, _) = http_get(&g.http, "/socket.io/?EIO=4&transport=polling")
        .await
        .unwrap();
    assert_eq!(status, 404);
}

/// The gateway's benchmark (docs/BENCHMARKS.md, "Socket.IO gateway"), by hand:
///
/// ```console
/// cargo test --release --test it gateway::benchmark -- --ignored --nocapture
/// ```
///
/// Beside each Socket.IO figure, the same one for NATS clients in the same run:
/// ingest (frames/s until the processor has counted them all) and monitor →
/// dashboard latency at 50 Hz.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by hand with --release"]
async fn benchmark() {
    const MONITORS: usize = 4;
    const FRAMES: usize = 5000;
    const LATENCY_FRAMES: usize = 1000;
    // serve's own bounds (the ingest queue, memory, buckets), as `paddock bench`.
    let g = gateway(&[]).await;
    let epoch = std::time::Instant::now();
    let base = telemetry_sample();

    // Ingest: MONITORS monitors, FRAMES frames each, as fast as they go.
    let mut socketio = Vec::new();
    for _ in 0..MONITORS {
        let mut monitor = Sio::connect(&g.http).await;
        let id = monitor.request_session_id().await;
        socketio.push((monitor, id));
    }
    let started = std::time::Instant::now();
    let sends = socketio.iter().map(|(monitor, id)| {
        let base = base.clone();
        async move {
            for n in 0..FRAMES {
                let mut t = base.clone();
                t["n"] = json!(n);
                monitor
                    .emit(
                        "telemetry_update",
                        json!({"session_id": id, "telemetry": t}),
                    )
                    .await;
            }
        }
    });
    futures::future::join_all(sends).await;
    let sio_ids: Vec<String> = socketio.iter().map(|(_, id)| id.clone()).collect();
    let (sio_counted, sio_took) = until_stable(&g.nats, &sio_ids, started).await;
    let sio_rate = sio_counted as f64 / sio_took.as_secs_f64();

    let mut nats_ids = Vec::new();
    for _ in 0..MONITORS {
        nats_ids.push(create(&g.nats).await);
    }
    let started = std::time::Instant::now();
    let sends = nats_ids.iter().map(|id| {
        let (base, url) = (base.clone(), g.server.url());
        async move {
            let monitor = connect(&url).await;
            for n in 0..FRAMES {
                let mut t = base.clone();
                t["n"] = json!(n);
                monitor
                    .publish(format!("session.{id}.telemetry"), t.to_string().into())
                    .await
                    .unwrap();
            }
            monitor.flush().await.unwrap();
        }
    });
    futures::future::join_all(sends).await;
    let (nats_counted, nats_took) = until_stable(&g.nats, &nats_ids, started).await;
    let nats_rate = nats_counted as f64 / nats_took.as_secs_f64();

    // Latency at 50 Hz: Socket.IO monitor → Socket.IO page, and NATS monitor →
    // NATS subscriber, each frame stamped with its send time.
    let stamp = |t: &mut Value| t["bench_sent_ns"] = json!(epoch.elapsed().as_nanos() as u64);
    let (monitor, id) = &socketio[0];
    let mut page = Sio::connect(&g.http).await;
    page.emit("join_session", json!({"session_id": id})).await;
    page.during(Duration::from_millis(500)).await;
    let mut sio_latencies = Vec::new();
    for _ in 0..LATENCY_FRAMES {
        let mut t = base.clone();
        stamp(&mut t);
        monitor
            .emit(
                "telemetry_update",
                json!({"session_id": id, "telemetry": t}),
            )
            .await;
        let update = page.next("telemetry_update").await;
        let sent = update["telemetry"]["bench_sent_ns"].as_u64().unwrap();
        sio_latencies.push(epoch.elapsed().as_nanos() as u64 - sent);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = &nats_ids[0];
    let (_sub_client, mut live) =
        subscriber(&g.server.url(), format!("session.{id}.telemetry")).await;
    let mut nats_latencies = Vec::new();
    for _ in 0..LATENCY_FRAMES {
        let mut t = base.clone();
        stamp(&mut t);
        g.nats
            .publish(format!("session.{id}.telemetry"), t.to_string().into())
            .await
            .unwrap();
        let frame: Value = serde_json::from_slice(&next(&mut live).await.payload).unwrap();
        let sent = frame["bench_sent_ns"].as_u64().unwrap();
        nats_latencies.push(epoch.elapsed().as_nanos() as u64 - sent);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let percentile = |v: &mut Vec<u64>, p: f64| {
        v.sort_unstable();
        v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1e6
    };
    let sent = MONITORS * FRAMES;
    println!("| what | Socket.IO (gateway) | NATS | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| ingest, {MONITORS} monitors flooding {FRAMES} 0.5 KB frames each: frames stored per second | {:.0} frames/s | {:.0} frames/s | {:.2} |",
        sio_rate,
        nats_rate,
        sio_rate / nats_rate
    );
    println!(
        "| … of which stored (the rest refused, counted: the gateway's per-connection queue) | {sio_counted} of {sent} | {nats_counted} of {sent} | |"
    );
    for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (s, n) = (
            percentile(&mut sio_latencies, p),
            percentile(&mut nats_latencies, p),
        );
        println!(
            "| monitor → dashboard {name} at 50 Hz | {s:.2} ms | {n:.2} ms | {:.1} |",
            s / n
        );
    }
}

/// Polls the sessions' telemetry counts until they stop moving (unchanged for
/// 500 ms): their total, and when it last moved, from `started`.
async fn until_stable(
    nats: &async_nats::Client,
    ids: &[String],
    started: std::time::Instant,
) -> (u64, Duration) {
    let (mut last, mut moved) = (u64::MAX, started.elapsed());
    let mut still = 0;
    while still < 5 {
        let mut total = 0;
        for id in ids {
            total += get(nats, id).await["stats"]["telemetry_count"]
                .as_u64()
                .unwrap();
        }
        if total == last {
            still += 1;
        } else {
            (last, moved, still) = (total, started.elapsed(), 0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (last, moved)
}
