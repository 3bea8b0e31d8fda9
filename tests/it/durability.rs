//! Sessions survive the processor: crashes (kill -9), graceful restarts, broker
//! restarts. State lives in JetStream key-value buckets on the test's own broker.

use std::time::Duration;

use crate::support::*;
use serde_json::Value;

async fn client_for(url: &str) -> async_nats::Client {
    connect(url).await
}

fn kill_9(mut processor: Running) {
    processor.child.kill().expect("SIGKILL");
    processor.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_every_session_is_back_with_its_setup_and_a_recent_frame() {
    let server = NatsServer::start();
    let url = server.url();
    let processor = serve_binary(&url, &[]);
    let client = client_for(&url).await;

    let mut ids = Vec::new();
    for n in 0..20 {
        let doc = ask(&client, "sessions.create", String::new()).await.ok();
        let id = doc["session_id"].as_str().unwrap().to_string();
        let setup = format!(r#"{{"car": {n}, "wing": 5}}"#);
        let ack = Answer::from(
            client
                .request(format!("session.{id}.setup"), setup.into())
                .await
                .unwrap(),
        );
        assert_eq!(ack.ok()["ok"], true);
        ids.push(id);
    }
    // 2 s of telemetry at 50 Hz per session, then a crash with no warning.
    const FRAMES: u64 = 100;
    for lap in 1..=FRAMES {
        for id in &ids {
            client
                .publish(format!("session.{id}.telemetry"), frame(lap).into())
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The processor answers a request only after applying every frame delivered
    // before it (docs/ARCHITECTURE.md): then every frame is in memory, and the
    // crash comes within the write-behind window.
    ask(&client, "sessions.stats", String::new()).await.ok();
    kill_9(processor);

    let processor = serve_binary(&url, &[]);
    for (n, id) in ids.iter().enumerate() {
        let doc = ask(&client, "sessions.get", id_body(id)).await.ok();
        assert_eq!(
            doc["setup"],
            serde_json::json!({"car": n, "wing": 5}),
            "{id}: the exact setup"
        );
        let lap = doc["telemetry"]["lap"].as_u64().expect("a stored frame");
        // At 50 Hz a 200 ms window is 10 frames; allow as much again for scheduling.
        assert!(
            lap >= FRAMES - 20,
            "{id}: stored frame {lap} is older than the window"
        );
    }
    let stats = ask(&client, "sessions.stats", String::new()).await.ok();
    assert_eq!(stats["live_sessions"], 20);
    // The monitors go on publishing to their old ids, and are served.
    for id in &ids {
        client
            .publish(format!("session.{id}.telemetry"), frame(FRAMES + 1).into())
            .await
            .unwrap();
    }
    sync(&client).await;
    for id in &ids {
        let doc = ask(&client, "sessions.get", id_body(id)).await.ok();
        assert_eq!(doc["telemetry"]["lap"], FRAMES + 1, "{id}");
    }
    assert_eq!(processor.stop("-TERM"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_keeps_the_exact_last_frame() {
    let server = NatsServer::start();
    let url = server.url();
    // Lifted: --max-frame-rate and --max-lap-rate. 500 frames at once to one
    // session, each a new lap, past the default burst of 300 frames and 30 lap
    // records a minute: a backlog of frames and laps for the stop to keep.
    let processor = serve_binary(&url, &["--max-frame-rate", "0", "--max-lap-rate", "0"]);
    let client = client_for(&url).await;
    let id = create(&client).await;
    for lap in 1..=500 {
        client
            .publish(format!("session.{id}.telemetry"), frame(lap).into())
            .await
            .unwrap();
    }
    sync(&client).await;
    assert_eq!(processor.stop("-TERM"), 0);

    let processor = serve_binary(&url, &[]);
    let doc = ask(&client, "sessions.get", id_body(&id)).await.ok();
    assert_eq!(doc["telemetry"]["lap"], 500);
    assert_eq!(doc["stats"]["telemetry_count"], 500);
    // Every completed lap too: the lap writer's queue is stored before exit.
    assert_eq!(doc["stats"]["laps"], 499);
    assert_eq!(processor.stop("-TERM"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_session_stays_deleted_after_a_crash() {
    let server = NatsServer::start();
    let url = server.url();
    let processor = serve_binary(&url, &[]);
    let client = client_for(&url).await;
    let id = create(&client).await;
    let kept = create(&client).await;
    ask(&client, "sessions.delete", id_body(&id)).await.ok();
    kill_9(processor);

    let processor = serve_binary(&url, &[]);
    let answer = ask(&client, "sessions.get", id_body(&id)).await;
    answer.expect_error(404);
    assert!(answer.reason.unwrap().contains("has ended (deleted)"));
    // Its monitor's data is still refused, and the other session is still there.
    let refused = Answer::from(
        client
            .request(format!("session.{id}.setup"), "{}".into())
            .await
            .unwrap(),
    );
    refused.expect_error(404);
    ask(&client, "sessions.get", id_body(&kept)).await.ok();
    assert_eq!(processor.stop("-TERM"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_a_broker_restart_and_a_processor_restart_together() {
    let mut server = NatsServer::start();
    let url = server.url();
    let processor = serve_binary(&url, &[]);
    let client = client_for(&url).await;
    let id = create(&client).await;
    let ack = Answer::from(
        client
            .request(format!("session.{id}.setup"), SETUP.into())
            .await
            .unwrap(),
    );
    ack.ok();
    kill_9(processor);
    // The broker goes down too; JetStream's file store keeps the buckets.
    server.kill();
    server.start_again();

    let processor = serve_binary(&url, &[]);
    let client = client_for(&url).await;
    let doc = ask(&client, "sessions.get", id_body(&id)).await.ok();
    assert_eq!(doc["setup"], serde_json::from_str::<Value>(SETUP).unwrap());
    client
        .publish(format!("session.{id}.telemetry"), frame(7).into())
        .await
        .unwrap();
    sync(&client).await;
    let doc = ask(&client, "sessions.get", id_body(&id)).await.ok();
    assert_eq!(doc["telemetry"]["lap"], 7, "the old id is served");
    assert_eq!(processor.stop("-TERM"), 0);
}

/// The write-behind retry: a change storage refuses stays dirty and is written
/// on a later tick, without another frame to prompt it. Storage is made to refuse
/// deterministically by removing the bucket's stream, then putting it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_storage_refused_is_kept_and_written_once_it_accepts_again() {
    let app = spawn_app().await;
    let id = app.new_session().await;
    let js = async_nats::jetstream::new(app.client.clone());
    let stored = |lap: u64| {
        let js = js.clone();
        let id = id.clone();
        async move {
            let deadline = std::time::Instant::now() + PATIENCE;
            loop {
                let value = match js.get_key_value("paddock_sessions").await {
                    Ok(kv) => kv.get(&id).await.ok().flatten(),
                    Err(_) => None,
                };
                if value.is_some_and(|v| {
                    let text = String::from_utf8_lossy(&v).to_string();
                    text.contains(&format!("\"lap\":{lap},"))
                }) {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "lap {lap} never stored"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    app.send_telemetry(&id, frame(1)).await;
    stored(1).await;

    let stream = "KV_paddock_sessions";
    let config = stream_info(&app.client, stream).await.config;
    js.delete_stream(stream).await.unwrap();
    app.send_telemetry(&id, frame(2)).await;
    // The flush is refused (and counted); the change stays in memory.
    let deadline = std::time::Instant::now() + PATIENCE;
    while app
        .app
        .metrics
        .storage_write_failures
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(std::time::Instant::now() < deadline, "no write was refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(app.app.metrics.storage_refusing().is_some());

    // Storage is back: the kept change lands by itself.
    js.create_stream(config).await.unwrap();
    stored(2).await;
    assert!(app.app.metrics.storage_refusing().is_none());
}

/// A crash between archiving a deleted session and removing its live copy leaves
/// both in storage. Recovery must take the archived one: the deletion stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_found_both_live_and_archived_comes_back_ended() {
    let server = NatsServer::start();
    let url = server.url();
    let processor = serve_binary(&url, &[]);
    let client = client_for(&url).await;
    let id = create(&client).await;
    let js = async_nats::jetstream::new(client.clone());
    let live = js.get_key_value("paddock_sessions").await.unwrap();
    // The create is stored before it is acknowledged.
    let stored = live.get(&id).await.unwrap().expect("the live copy");
    ask(&client, "sessions.delete", id_body(&id)).await.ok();
    let archive = js.get_key_value("paddock_sessions_archive").await.unwrap();
    assert!(
        archive.get(&id).await.unwrap().is_some(),
        "archived at delete"
    );
    kill_9(processor);
    // The state that crash would leave: the live copy is back beside the archive's.
    live.put(&id, stored).await.unwrap();

    let processor = serve_binary(&url, &[]);
    let answer = ask(&client, "sessions.get", id_body(&id)).await;
    answer.expect_error(404);
    assert!(
        answer
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("has ended (deleted)"),
        "{answer:?}"
    );
    let list = ask(&client, "sessions.list", String::new()).await.ok();
    assert_eq!(list["count"], 0, "{list}");
    assert_eq!(processor.stop("-TERM"), 0);
}

/// `/readyz` says when storage refuses writes, and recovers by itself: the live
/// bucket's stream is removed under a running processor (its flush is refused),
/// then put back (the kept change lands).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_says_while_storage_refuses_writes() {
    let server = NatsServer::start();
    let url = server.url();
    let http = format!("127.0.0.1:{}", free_port());
    let processor = serve_binary(&url, &["--http-addr", &http]);
    let client = client_for(&url).await;
    let id = create(&client).await;
    until_status(&http, "/readyz", 200).await;

    let js = async_nats::jetstream::new(client.clone());
    let stream = "KV_paddock_sessions";
    let config = stream_info(&client, stream).await.config;
    js.delete_stream(stream).await.unwrap();
    client
        .publish(format!("session.{id}.telemetry"), frame(2).into())
        .await
        .unwrap();
    let why = until_status(&http, "/readyz", 503).await;
    assert!(why.contains("storage refuses writes"), "{why}");

    js.create_stream(config.clone()).await.unwrap();
    assert_eq!(until_status(&http, "/readyz", 200).await, "ready\n");

    // Shutting down: SIGTERM while storage refuses again, so the final flush
    // keeps retrying (up to 15 s) and the stop is slow enough to be seen.
    js.delete_stream(stream).await.unwrap();
    client
        .publish(format!("session.{id}.telemetry"), frame(3).into())
        .await
        .unwrap();
    until_status(&http, "/readyz", 503).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &processor.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let why = until_status_saying(&http, "shutting down").await;
    assert!(why.starts_with("not ready"), "{why}");
    js.create_stream(config).await.unwrap();
    assert_eq!(processor.exit_code(), 0);
}

/// Polls `/readyz` until its answer says `what`; returns it.
async fn until_status_saying(http: &str, what: &str) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some((_, body)) = http_get(http, "/readyz").await
            && body.contains(what)
        {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never said {what:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
