//! Starting, stopping and surviving: signals, draining, broker and processor restarts.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use futures::StreamExt;
use serde_json::Value;

fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

async fn binary_exits_0_on(signal: &str) {
    let server = NatsServer::start();
    let log = std::env::temp_dir().join(format!(
        "paddock-signal-{}-{signal}.log",
        std::process::id()
    ));
    let mut child = paddock()
        .args(["serve", "--nats-url", &server.url()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("the paddock binary starts");
    let client = connect(&server.url()).await;
    let doc = wait_for_reply(&client, "sessions.create", String::new())
        .await
        .ok();
    assert!(is_uuid4(doc["session_id"].as_str().unwrap()));

    send_signal(child.id(), signal);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "paddock did not exit after {signal}; log:\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; log:\n{output}"
    );
    assert!(output.contains("shutdown complete"), "log:\n{output}");
}

#[tokio::test]
async fn sigterm_ends_the_binary_with_exit_0() {
    binary_exits_0_on("-TERM").await;
}

#[tokio::test]
async fn sigint_ends_the_binary_with_exit_0() {
    binary_exits_0_on("-INT").await;
}

#[tokio::test]
async fn shutdown_applies_every_frame_already_delivered() {
    // Lifted: --max-frame-rate. 2,000 frames at once to one session, past the
    // default burst of 300: a backlog for the stop to apply in full.
    let mut app = spawn_app_with(no_frame_rate(test_limits())).await;
    let id = app.new_session().await;
    // One lap throughout: no lap records to store, so the processor keeps up
    // and its last frames are still in the socket when it stops (what
    // async-nats' subscription drain dropped, one run in five), and 2,000
    // stored laps cannot outlast the drain's timeout on a loaded machine.
    for seq in 1..=2_000 {
        let mut f: Value = serde_json::from_str(&frame(1)).unwrap();
        f["seq"] = seq.into();
        app.send_telemetry(&id, f.to_string()).await;
    }
    // Once the broker has routed all of them to the processor, shutdown must
    // apply every one: the drain ends only after what the broker already sent.
    sync(&app.client).await;
    let state = app.app.clone();
    app.stop_processor().await;
    let snapshot = state.sessions.get(id.parse().unwrap()).unwrap();
    assert_eq!(snapshot.stats.telemetry_count, 2_000);
    let last: Value = serde_json::from_slice(&snapshot.telemetry.unwrap().body).unwrap();
    assert_eq!(last["seq"], 2_000);
}

#[tokio::test]
async fn the_processor_rides_out_a_broker_restart() {
    let mut app = spawn_app().await;
    let id = app.new_session().await;
    app.send_setup(&id, SETUP).await.ok();

    app.server.kill();
    until_disconnected(&app.client).await;
    app.server.start_again();

    // Both the processor and the test client reconnect by themselves; once the
    // processor has resubscribed, the session is still there with its setup.
    let doc = wait_for_reply(&app.client, "sessions.get", id_body(&id))
        .await
        .ok();
    assert_eq!(doc["setup"], serde_json::from_str::<Value>(SETUP).unwrap());
    // Data subscriptions came back too.
    let deadline = Instant::now() + PATIENCE;
    let mut lap = 0;
    loop {
        lap += 1;
        app.send_telemetry(&id, frame(lap)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let doc = app.get(&id).await.ok();
        if doc["telemetry"]["lap"] == lap {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "telemetry was not ingested after the restart"
        );
    }
}

#[tokio::test]
async fn with_a_memory_store_a_monitor_publishing_to_its_old_id_is_served_after_a_restart() {
    let mut app = spawn_app().await;
    let id = app.new_session().await;
    app.send_telemetry(&id, frame(1)).await;
    app.get_until(&id, "first frame", |d| d["telemetry"]["lap"] == 1)
        .await;

    let mut feed = app
        .client
        .subscribe("sessions.events.created")
        .await
        .unwrap();
    sync(&app.client).await;
    // A processor that keeps nothing (--store memory) comes back empty.
    let memory = paddock::server::store::StoreConfig {
        kind: paddock::server::store::StoreKind::Memory,
        ..test_store()
    };
    app.restart_processor_with(test_limits(), memory).await;
    app.get(&id).await.expect_error(404);

    app.send_telemetry(&id, frame(2)).await;
    let doc = app
        .get_until(&id, "session served again", |d| d["telemetry"]["lap"] == 2)
        .await;
    assert_eq!(doc["session_id"], id.as_str());
    let event = tokio::time::timeout(PATIENCE, feed.next())
        .await
        .unwrap()
        .unwrap();
    let body: Value = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(body["session_id"], id.as_str());
    assert_eq!(body["via"], "data");
}

#[tokio::test]
async fn the_binary_started_before_the_broker_waits_for_it() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    // Nothing else runs in this test, so the blocking helpers of `Running` are fine.
    let mut processor = Running::spawn(&["serve", "--nats-url", &url]);
    // Longer than async-nats's default request timeout (10 s): start-up must not
    // give up while the broker is missing, however long that is.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let still_running = processor.child.try_wait().unwrap().is_none();
    assert!(still_running, "paddock exited while waiting for the broker");
    let server = NatsServer::start_on(port);
    let client = connect(&server.url()).await;
    let doc = wait_for_reply(&client, "sessions.create", String::new())
        .await
        .ok();
    assert!(is_uuid4(doc["session_id"].as_str().unwrap()));
    assert_eq!(processor.stop("-TERM"), 0);
}

#[tokio::test]
async fn sigterm_while_waiting_for_the_broker_exits_0() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let processor = Running::spawn(&["serve", "--nats-url", &url, "--http-addr", &http]);
    // The HTTP side answers while the processor waits for its broker, and it starts
    // after the signal handlers are installed: from here a SIGTERM is handled.
    until_status(&http, "/healthz", 200).await;
    assert_eq!(processor.stop("-TERM"), 0);
}

/// The flags reach what they configure: `--max-payload` refuses a larger request
/// with 413, `--archive-retention` is the archive's and the laps' max_age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_limit_and_archive_retention_flags_take_effect() {
    let server = NatsServer::start();
    let url = server.url();
    let processor = serve_binary(
        &url,
        &["--max-payload", "1024", "--archive-retention", "2h"],
    );
    let client = connect(&url).await;
    let big = format!(r#"{{"pad": "{}"}}"#, "x".repeat(2000));
    ask(&client, "sessions.create", big).await.expect_error(413);
    ask(&client, "sessions.create", "{}".into()).await.ok();
    for stream in ["KV_paddock_sessions_archive", "KV_paddock_sessions_laps"] {
        let info = stream_info(&client, stream).await;
        assert_eq!(
            info.config.max_age,
            Duration::from_secs(2 * 3600),
            "{stream}"
        );
    }
    assert_eq!(processor.stop("-TERM"), 0);
}
