//! The Socket.IO gateway's bounds (docs/PROTOCOL.md, "Socket.IO gateway":
//! Limits and Refusals; src/gateway/mod.rs), each pushed past: connections,
//! rooms, the queue's bytes, 64 events and 256 packets per socket, 10 sessions
//! asked for per socket per minute, payloads over 1 MiB, ended ids; and the
//! gateway off in per-session mode unless `--gateway-creds` is given, with
//! `serve` saying so. A real `paddock serve --http-addr` and broker per test,
//! but for the per-socket queue (see its test).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// The value of a metric on `/metrics` (0 when not served yet: a counter with
/// labels appears on its first count).
async fn metric(http: &str, line_start: &str) -> u64 {
    let body = until_status(http, "/metrics", 200).await;
    body.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Events a socket receives until `done` holds for all of them, within 10 s.
async fn events_until(
    sio: &mut Sio,
    done: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        seen.extend(sio.during(Duration::from_millis(50)).await);
        if done(&seen) {
            return seen;
        }
        assert!(Instant::now() < deadline, "not there in 10 s: {seen:?}");
    }
}

fn count(events: &[(String, Value)], name: &str) -> usize {
    events.iter().filter(|(e, _)| e == name).count()
}

/// The `paddock_error`s among `events`, as (event, reason).
fn refusals(events: &[(String, Value)]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|(e, _)| e == "paddock_error")
        .map(|(_, v)| {
            (
                v["event"].as_str().unwrap_or_default().to_string(),
                v["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_gateway_max_connections_are_refused_until_one_leaves() {
    let g = gateway(&["--gateway-max-connections", "2"]).await;
    let first = Sio::connect(&g.http).await;
    let _second = Sio::connect(&g.http).await;
    let (_, refused) = Polling::open(&g.http, "").await;
    assert!(
        refused.starts_with("44") && refused.contains("--gateway-max-connections"),
        "{refused}"
    );
    assert_eq!(
        metric(
            &g.http,
            "paddock_gateway_rejected_total{reason=\"too_many\"}"
        )
        .await,
        1
    );
    assert_eq!(metric(&g.http, "paddock_gateway_connections ").await, 2);
    // A place freed is a place taken.
    first.client.disconnect().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, reply) = Polling::open(&g.http, "").await;
        if reply.starts_with("40") {
            break;
        }
        assert!(Instant::now() < deadline, "never let in again: {reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_past_gateway_max_rooms_are_refused() {
    let g = gateway(&["--gateway-max-rooms", "1"]).await;
    let (a, b) = (create(&g.nats).await, create(&g.nats).await);
    ask(
        &g.nats,
        &format!("session.{a}.telemetry"),
        r#"{"lap": 1}"#.into(),
    )
    .await
    .ok();
    let mut page = Sio::connect(&g.http).await;
    page.emit("join_session", json!({"session_id": a})).await;
    // The snapshot: the room is open.
    page.next("telemetry_update").await;
    let mut other = Sio::connect(&g.http).await;
    other.emit("join_session", json!({"session_id": b})).await;
    let refused = other.next("paddock_error").await;
    assert_eq!(
        (&refused["event"], &refused["reason"]),
        (&json!("join_session"), &json!("too_many")),
        "{refused}"
    );
    // The room followed already takes more dashboards.
    other.emit("join_session", json!({"session_id": a})).await;
    other.next("telemetry_update").await;
    assert_eq!(metric(&g.http, "paddock_gateway_rooms ").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_past_gateway_queue_bytes_are_refused_busy() {
    let g = gateway(&["--gateway-queue-bytes", "4KiB"]).await;
    let mut monitor = Sio::connect(&g.http).await;
    let id = monitor.request_session_id().await;
    // 6 KB: under --max-payload, over what may wait.
    let big = json!({"lap": 1, "pad": "x".repeat(6 * 1024)});
    monitor
        .emit(
            "telemetry_update",
            json!({"session_id": id, "telemetry": big}),
        )
        .await;
    let refused = monitor.next("paddock_error").await;
    assert_eq!(refused["reason"], "busy", "{refused}");
    // A small event still fits, and the socket is still served.
    monitor
        .emit(
            "telemetry_update",
            json!({"session_id": id, "telemetry": {"lap": 2}}),
        )
        .await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let doc = ask(&g.nats, &format!("sessions.get.{id}"), String::new()).await;
        if doc.body["telemetry"]["lap"] == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the small frame never came: {doc:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metric(&g.http, "paddock_gateway_rejected_total{reason=\"busy\"}").await,
        1
    );
}

/// 64 events may wait for one socket's task; the 65th is refused `busy`.
///
/// The gateway runs in-process here, with no processor: a plain subscriber on
/// `session.*.setup` takes the socket's first setup request and holds its
/// answer, as a processor stalled on storage would, so the socket's task is
/// known to be waiting while the test sends 100 more events. (With a processor
/// answering, how many wait at once depends on the scheduler.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sockets_65th_waiting_event_is_refused_busy() {
    let server = NatsServer::start();
    let url = server.url();
    let (layer, metrics) = paddock::gateway::layer(
        connect(&url).await,
        paddock::gateway::GatewayConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap().to_string();
    let web = paddock::web::WebConfig {
        gateway: Some((layer, metrics)),
        ..Default::default()
    };
    let health = Arc::new(paddock::server::health::Health::default());
    tokio::spawn(paddock::web::serve(
        listener,
        web,
        health,
        std::future::pending(),
    ));

    let (stalled, mut setups) = subscriber(&url, "session.*.setup".into()).await;
    let id = uuid::Uuid::new_v4().to_string();
    let (_tap, mut frames) = subscriber(&url, format!("session.{id}.telemetry")).await;
    let mut monitor = Sio::connect(&http).await;
    monitor
        .emit(
            "setup_data",
            json!({"session_id": id, "setup": {"wing": 1}}),
        )
        .await;
    let request = next(&mut setups).await;
    // The task waits for that answer (up to 3 s); meanwhile 100 events.
    for seq in 0..100 {
        monitor
            .emit(
                "telemetry_update",
                json!({"session_id": id, "telemetry": {"seq": seq}}),
            )
            .await;
    }
    for _ in 0..36 {
        let refused = monitor.next("paddock_error").await;
        assert_eq!(refused["reason"], "busy", "{refused}");
    }
    stalled
        .publish(request.reply.unwrap(), "{}".into())
        .await
        .unwrap();
    let mut seqs = Vec::new();
    for _ in 0..64 {
        let frame: Value = serde_json::from_slice(&next(&mut frames).await.payload).unwrap();
        seqs.push(frame["seq"].as_u64().unwrap());
    }
    assert_eq!(
        seqs,
        (0..64).collect::<Vec<u64>>(),
        "the first 64 waited, in order"
    );
    // One more, once they are out: it comes next, so no 65th had waited.
    monitor
        .emit(
            "telemetry_update",
            json!({"session_id": id, "telemetry": {"seq": 1000}}),
        )
        .await;
    let frame: Value = serde_json::from_slice(&next(&mut frames).await.payload).unwrap();
    assert_eq!(frame["seq"], 1000, "a 65th event waited");
}

/// A page that does not read (a long-poll client that stops polling) has at
/// most 256 packets waiting; the frames past them are dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_stops_reading_misses_frames_past_256_waiting() {
    let g = gateway(&[]).await;
    let id = create(&g.nats).await;
    ask(
        &g.nats,
        &format!("session.{id}.telemetry"),
        r#"{"seq": 0}"#.into(),
    )
    .await
    .ok();
    let (page, _) = Polling::open(&g.http, "").await;
    page.send(&format!(r#"42["join_session",{{"session_id":"{id}"}}]"#))
        .await;
    // The snapshot: the room is followed.
    assert!(page.next_message().await.contains("telemetry_update"));
    let subject = format!("session.{id}.telemetry");
    let mut seq = 0;
    let deadline = Instant::now() + PATIENCE;
    while metric(&g.http, "paddock_gateway_dropped_total ").await == 0 {
        assert!(Instant::now() < deadline, "{seq} frames, none dropped");
        for _ in 0..100 {
            seq += 1;
            g.nats
                .publish(subject.clone(), format!(r#"{{"seq": {seq}}}"#).into())
                .await
                .unwrap();
        }
        g.nats.flush().await.unwrap();
    }
    let waiting = page.poll().await;
    let frames = waiting
        .split('\u{1e}')
        .filter(|p| p.starts_with("42") && p.contains("telemetry_update"))
        .count();
    assert!(frames <= 256, "{frames} packets waited");
    assert!(frames >= 200, "only {frames} packets waited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eleventh_session_asked_for_in_a_minute_is_refused() {
    let g = gateway(&[]).await;
    let mut monitor = Sio::connect(&g.http).await;
    for _ in 0..11 {
        monitor.emit("request_session_id", json!({})).await;
    }
    let events = events_until(&mut monitor, |seen| {
        count(seen, "session_id_assigned") + count(seen, "paddock_error") >= 11
    })
    .await;
    assert_eq!(count(&events, "session_id_assigned"), 10, "{events:?}");
    assert_eq!(
        refusals(&events),
        [("request_session_id".to_string(), "rate_limited".to_string())]
    );
    let listed = ask(&g.nats, "sessions.list", String::new()).await.ok();
    assert_eq!(listed["total"], 10, "{listed}");
    // Per socket: another page's monitor is not held to this one's count.
    let mut another = Sio::connect(&g.http).await;
    another.request_session_id().await;
}

/// A WebSocket to the gateway joined to its namespace, by hand: the client of
/// support/socketio.rs reconnects when dropped, and this test wants to see the drop.
async fn raw_socket(
    http: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("ws://{http}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let open = ws.next().await.unwrap().unwrap();
    assert!(open.to_text().unwrap().starts_with('0'), "{open:?}");
    ws.send(Message::text("40")).await.unwrap();
    loop {
        let packet = ws.next().await.unwrap().unwrap().into_text().unwrap();
        match packet.as_str() {
            // Engine.IO's ping may come first.
            "2" => ws.send(Message::text("3")).await.unwrap(),
            joined => {
                assert!(joined.starts_with("40"), "{joined}");
                return ws;
            }
        }
    }
}

/// Over `--max-payload`, under 1 MiB: refused, the connection stays. Over
/// 1 MiB (the origin's own limit): the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_over_one_mib_close_the_connection() {
    let g = gateway(&[]).await;
    let id = create(&g.nats).await;
    let event = |pad: usize| {
        Message::text(format!(
            "42{}",
            json!(["telemetry_update", {"session_id": id, "telemetry": {"pad": "x".repeat(pad)}}])
        ))
    };
    let mut ws = raw_socket(&g.http).await;
    ws.send(event(900 * 1024)).await.unwrap();
    let reply = loop {
        let packet = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap();
        let packet = packet.unwrap().unwrap().into_text().unwrap();
        // Engine.IO's ping, which the gateway sends as the connection opens.
        if packet.as_str() == "2" {
            ws.send(Message::text("3")).await.unwrap();
            continue;
        }
        break packet;
    };
    assert!(
        reply.starts_with("42[\"paddock_error\"") && reply.contains("too_large"),
        "{reply}"
    );

    // The server may close the connection while the message is still being
    // written, as soon as it reads the frame's length: then the send fails.
    let sent = ws.send(event(1024 * 1024)).await;
    let deadline = Instant::now() + PATIENCE;
    if sent.is_ok() {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, ws.next()).await {
                Err(_) => panic!("the connection stayed open after a payload over 1 MiB"),
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => break,
                // Pings, or the "1" close packet before the socket closes.
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
    let doc = ask(&g.nats, &format!("sessions.get.{id}"), String::new())
        .await
        .ok();
    assert_eq!(doc["telemetry"], Value::Null, "{doc}");
}

/// An ended session's id stays refused through the gateway, as over NATS: its
/// setup is answered `refused`, its frames neither bring it back nor are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_sessions_id_stays_refused() {
    let g = gateway(&[]).await;
    let mut monitor = Sio::connect(&g.http).await;
    let id = monitor.request_session_id().await;
    ask(&g.nats, "sessions.delete", id_body(&id)).await.ok();
    monitor
        .emit(
            "setup_data",
            json!({"session_id": id, "setup": {"wing": 3}}),
        )
        .await;
    let refused = monitor.next("paddock_error").await;
    assert_eq!(
        (&refused["event"], &refused["reason"]),
        (&json!("setup_data"), &json!("refused")),
        "{refused}"
    );
    monitor
        .emit(
            "telemetry_update",
            json!({"session_id": id, "telemetry": {"lap": 9}}),
        )
        .await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = ask(&g.nats, "sessions.stats", "{}".into()).await.ok();
        // The setup, then the frame.
        if stats["rejected"]["ended_session"] == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the frame was not refused: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed = ask(&g.nats, "sessions.list", String::new()).await.ok();
    assert_eq!(listed["total"], 0, "the ended session came back: {listed}");
}

/// Per-session mode (operator mode, credentials issued at create): the
/// origin's monitor holds no session's credentials, so the gateway is off
/// unless it is given an identity of its own, and `serve` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_session_mode_has_no_gateway_without_gateway_creds_and_says_so() {
    let dir = fresh_dir("gateway-auth");
    let (code, _, stderr) = run_paddock(&["auth", "init", "--out", dir.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{stderr}");
    let server = NatsServer::start_with(&["-c", dir.join("nats-server.conf").to_str().unwrap()]);
    let url = server.url();
    let account = std::fs::read_to_string(dir.join("issuer.account")).unwrap();
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    // `serve` as serve_issuing starts it, with its stderr kept to read.
    let serve = |extra: &[&str], log: &str| {
        let http = format!("127.0.0.1:{}", free_port());
        let child = paddock()
            .args([
                "serve",
                "--nats-url",
                &url,
                "--creds",
                &path("processor.creds"),
            ])
            .args(["--issuer-account", account.trim()])
            .args(["--issuer-signing-seed", &path("issuer.seed")])
            .args(["--http-addr", &http])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(dir.join(log)).unwrap())
            .spawn()
            .unwrap();
        (Running::from_child(child), http)
    };
    let (off, http) = serve(&[], "off.log");
    until_status(&http, "/readyz", 200).await;
    let said = std::fs::read_to_string(dir.join("off.log")).unwrap();
    assert!(
        said.contains("the Socket.IO gateway is off") && said.contains("--gateway-creds"),
        "{said}"
    );
    let (status, _) = http_get(&http, "/socket.io/?EIO=4&transport=polling")
        .await
        .unwrap();
    assert_eq!(status, 404, "a gateway served in per-session mode");
    drop(off);

    // With an identity of its own it is served (here the processor's, which
    // the broker lets create sessions; a deployment makes a gateway user).
    let (_on, http) = serve(&["--gateway-creds", &path("processor.creds")], "on.log");
    until_status(&http, "/readyz", 200).await;
    let said = std::fs::read_to_string(dir.join("on.log")).unwrap();
    assert!(!said.contains("gateway is off"), "{said}");
    let (_, accepted) = Polling::open(&http, "").await;
    assert!(accepted.starts_with("40"), "{accepted}");
}
