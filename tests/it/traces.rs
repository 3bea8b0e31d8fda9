//! Lap traces through a real broker: two scripted laps with `lap_distance` are
//! recorded by the trace writer in the trace stream, read back on a distance grid
//! (`sessions.trace`), compared (`sessions.compare`: the delta at known
//! distances), exported as CSV by the binary and read back; and a processor
//! that records nothing (`--store memory`) says so with 503.

use serde_json::{Value, json};

use crate::support::*;

/// The scripted laps, 2000 m each with a frame every 0.1 s: lap 1 at 50 m/s
/// throughout; lap 2 at 50 m/s to 1000 m and 40 m/s after, so it loses
/// (d − 1000)/40 − (d − 1000)/50 seconds past 1000 m: 2.5 s at 1500 m, 5 s at
/// 2000 m. Each lap's first frame gives the previous lap's time, as sims do.
fn scripted(lap: u64) -> Vec<String> {
    let frames = if lap == 1 { 400 } else { 450 };
    (0..=frames)
        .map(|k| {
            let (d, v) = if lap == 1 || k <= 200 {
                (5.0 * k as f64, 50.0)
            } else {
                (1000.0 + 4.0 * (k - 200) as f64, 40.0)
            };
            let mut frame = json!({
                "lap": lap, "lap_time": k as f64 / 10.0, "lap_distance": d,
                "speed": v * 3.6, "throttle": 1.0, "brake": 0.0, "steering": 0.0,
                "gear": if v > 45.0 { 5 } else { 4 }, "rpm": 8000.0,
            });
            if lap == 2 && k == 0 {
                frame["last_lap_time"] = json!(40.0);
            }
            frame.to_string()
        })
        .collect()
}

/// Drives laps 1 and 2 and the first frame of lap 3 (which completes lap 2)
/// into session `id`, and waits until the processor has both laps.
async fn drive_two_laps(app: &TestApp, id: &str) {
    for lap in [1, 2] {
        for frame in scripted(lap) {
            app.send_telemetry(id, frame).await;
        }
    }
    let next = json!({"lap": 3, "lap_time": 0.0, "lap_distance": 0.0, "last_lap_time": 45.0});
    app.send_telemetry(id, next.to_string()).await;
    sync(&app.client).await;
    app.get_until(id, "two laps completed", |d| d["stats"]["laps"] == 2)
        .await;
}

fn at(values: &Value, distances: &Value, distance: f64) -> f64 {
    let k = distances
        .as_array()
        .unwrap()
        .iter()
        .position(|d| d.as_f64() == Some(distance))
        .unwrap_or_else(|| panic!("no grid point at {distance} m"));
    values[k]
        .as_f64()
        .unwrap_or_else(|| panic!("null at {distance} m"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scripted_laps_compare_with_the_delta_their_speeds_give() {
    let app = spawn_app_with(no_frame_rate(test_limits())).await;
    let id = app.new_session().await;
    drive_two_laps(&app, &id).await;

    // The trace: lap 2 on a 5 m grid, its channels, no gap.
    let trace = app
        .request(
            &format!("sessions.trace.{id}"),
            r#"{"lap": 2, "channels": ["speed", "gear"], "step_m": 5}"#,
        )
        .await
        .ok();
    assert_eq!(trace["axis"], "distance");
    assert_eq!(trace["lap"], 2);
    assert_eq!(trace["frames"], 451);
    assert_eq!(trace["distance_m"].as_array().unwrap().len(), 401);
    assert_eq!(trace["gaps"], json!([]));
    let distances = &trace["distance_m"];
    assert!((at(&trace["elapsed_s"], distances, 1500.0) - 32.5).abs() < 0.01);
    assert!((at(&trace["channels"]["speed"], distances, 500.0) - 180.0).abs() < 1e-9);
    assert_eq!(at(&trace["channels"]["gear"], distances, 1500.0), 4.0);

    // The comparison: lap 2 against lap 1, + = slower.
    let compare = app
        .request(
            &format!("sessions.compare.{id}"),
            json!({"lap": 2, "against": {"session_id": id, "lap": 1}, "minisectors": 4})
                .to_string(),
        )
        .await
        .ok();
    let distances = &compare["distance_m"];
    for (distance, lost) in [(500.0, 0.0), (1000.0, 0.0), (1500.0, 2.5), (2000.0, 5.0)] {
        let delta = at(&compare["delta_s"], distances, distance);
        assert!(
            (delta - lost).abs() < 0.01,
            "delta at {distance} m: {delta}, not {lost}"
        );
    }
    let minisectors: Vec<f64> = compare["minisectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["delta_s"].as_f64().unwrap())
        .collect();
    assert_eq!(minisectors.len(), 4);
    assert!((minisectors[0]).abs() < 0.01 && (minisectors[3] - 2.5).abs() < 0.01);
    assert_eq!(compare["reference"]["lap"], 1);
    assert!(compare["lap"]["channels"]["speed"].is_array());
    // Against "best": lap 1 is the faster (40 s against 45 s), so the same
    // delta.
    let best = app
        .request(
            &format!("sessions.compare.{id}"),
            r#"{"lap": 2, "against": "best"}"#,
        )
        .await
        .ok();
    assert_eq!(best["reference"]["lap"], 1);
    assert_eq!(best["minisectors"].as_array().unwrap().len(), 25);

    // Errors: a lap not completed, a bad body, an unknown session.
    app.request(&format!("sessions.trace.{id}"), r#"{"lap": 9}"#)
        .await
        .expect_error(404);
    app.request(
        &format!("sessions.trace.{id}"),
        r#"{"lap": 1, "step_m": 0}"#,
    )
    .await
    .expect_error(400);
    app.request(&format!("sessions.trace.{id}"), r#"{"lap": 1, "nope": 1}"#)
        .await
        .expect_error(400);
    let unknown = uuid::Uuid::new_v4();
    app.request(&format!("sessions.trace.{unknown}"), r#"{"lap": 1}"#)
        .await
        .expect_error(404);

    // Export: the binary writes every frame as recorded, units in the header.
    let url = app.server.url();
    let (code, csv, stderr) = run_paddock(&[
        "sessions",
        "--nats-url",
        &url,
        "export",
        &id,
        "--lap",
        "all",
        "--format",
        "csv",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "lap,time_s,distance_m,speed_kmh,throttle_fraction,brake_fraction,\
             steering_fraction,gear,rpm_per_min"
        )
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 401 + 451, "every frame of laps 1 and 2");
    let lap2: Vec<&Vec<&str>> = rows.iter().filter(|r| r[0] == "2").collect();
    let last = lap2.last().unwrap();
    assert_eq!((last[1], last[2], last[3]), ("45", "2000", "144"));
    // And into a directory, one file per lap.
    let dir = fresh_dir("traces-export");
    let out = dir.to_str().unwrap();
    let (code, _, stderr) = run_paddock(&[
        "sessions",
        "--nats-url",
        &url,
        "export",
        &id,
        "--lap",
        "best",
        "--out",
        out,
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let written = std::fs::read_to_string(dir.join(format!("{id}-lap1.csv"))).unwrap();
    assert_eq!(written.lines().count(), 1 + 401);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_that_records_nothing_answers_traces_with_503() {
    let mut app = spawn_app_with(no_frame_rate(test_limits())).await;
    let memory = paddock::server::store::StoreConfig {
        kind: paddock::server::store::StoreKind::Memory,
        ..test_store()
    };
    app.restart_processor_with(no_frame_rate(test_limits()), memory)
        .await;
    let id = app.new_session().await;
    drive_two_laps(&app, &id).await;
    let answer = app
        .request(&format!("sessions.trace.{id}"), r#"{"lap": 1}"#)
        .await;
    answer.expect_error(503);
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap()
            .contains("--store memory"),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_stream_is_bounded_per_session_and_in_bytes() {
    let app = spawn_app().await;
    let js = async_nats::jetstream::new(app.client.clone());
    let mut stream = js.get_stream("paddock_sessions_traces").await.unwrap();
    let info = stream.info().await.unwrap();
    let config = &info.config;
    // Chunks of 64 KiB: 64 MiB a session.
    assert_eq!(
        config.max_messages_per_subject,
        (paddock::server::store::DEFAULT_TRACE_SESSION_BYTES / (64 * 1024)) as i64
    );
    // A full chunk, then the largest frame (--max-payload) that did not fit.
    assert_eq!(config.max_message_size, 4 + 64 * 1024 + 12 + 64 * 1024);
    // Only the processor's chunks: never the monitors' subjects.
    assert_eq!(config.subjects, ["paddock.trace.*"]);
    assert_eq!(
        config.max_age,
        std::time::Duration::from_secs(7 * 24 * 3600)
    );
    assert_eq!(
        config.discard,
        async_nats::jetstream::stream::DiscardPolicy::Old
    );
    // Compressed where the broker can (2.10 and later), not asked of 2.9.
    let version = app.client.server_info().version;
    let compresses = !version.starts_with("2.9.");
    assert_eq!(
        config.compression == Some(async_nats::jetstream::stream::Compression::S2),
        compresses,
        "nats-server {version}: {:?}",
        config.compression
    );
    // A quarter of what is left of 1 GiB after the alerts' and links' buckets.
    assert_eq!(config.max_bytes, (1024 - 16 - 8) * 1024 * 1024 / 4);
}

/// With partitioned ownership frames reach the processor on their mapped
/// subject (`session.<id>.telemetry.<p>`); it records them under the session's
/// own trace subject all the same, and the trace is read by the id form and
/// the body form alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_session_s_laps_are_recorded_and_read_back() {
    let dir = fresh_dir("traces-partitions");
    let config = dir.join("mappings.conf");
    std::fs::write(&config, paddock::broker::mappings_config(2)).unwrap();
    let server = NatsServer::start_with(&["-c", config.to_str().unwrap()]);
    let url = server.url();
    let _processor = serve_binary(&url, &["--partitions", "2", "--max-frame-rate", "0"]);
    let client = connect(&url).await;
    wait_for_processors(&client, 1).await;
    let id = create(&client).await;
    let mut announced = client.subscribe(format!("session.{id}.lap")).await.unwrap();
    for lap in [1, 2] {
        for frame in scripted(lap) {
            client
                .publish(format!("session.{id}.telemetry"), frame.into())
                .await
                .unwrap();
        }
    }
    let third = json!({"lap": 3, "lap_time": 0.0, "lap_distance": 0.0, "last_lap_time": 45.0});
    client
        .publish(format!("session.{id}.telemetry"), third.to_string().into())
        .await
        .unwrap();
    sync(&client).await;
    for _ in 0..2 {
        next(&mut announced).await;
    }
    let compare = ask(
        &client,
        &format!("sessions.compare.{id}"),
        r#"{"lap": 2, "against": {"lap": 1}, "minisectors": 4}"#.into(),
    )
    .await
    .ok();
    let delta = at(&compare["delta_s"], &compare["distance_m"], 2000.0);
    assert!((delta - 5.0).abs() < 0.01, "delta at 2000 m: {delta}");
    let body = json!({"session_id": id, "lap": 1}).to_string();
    let trace = ask(&client, "sessions.trace", body).await.ok();
    assert_eq!(trace["frames"], 401);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The record holds what the processor accepted and nothing else, and one
/// session's flood cannot push another's laps out of the stream: each keeps at
/// most `--trace-session-bytes` (here 512 KiB, eight chunks), its own oldest
/// going first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_records_only_what_was_accepted_and_leaves_other_sessions_laps() {
    let server = NatsServer::start();
    let url = server.url();
    let _processor = serve_binary(
        &url,
        &["--trace-session-bytes", "512KiB", "--max-frame-rate", "0"],
    );
    let client = connect(&url).await;
    wait_for_processors(&client, 1).await;
    let driven = create(&client).await;
    let mut announced = client
        .subscribe(format!("session.{driven}.lap"))
        .await
        .unwrap();
    for lap in [1, 2] {
        for frame in scripted(lap) {
            client
                .publish(format!("session.{driven}.telemetry"), frame.into())
                .await
                .unwrap();
        }
    }
    let third = json!({"lap": 3, "lap_time": 0.0, "lap_distance": 0.0, "last_lap_time": 45.0});
    client
        .publish(
            format!("session.{driven}.telemetry"),
            third.to_string().into(),
        )
        .await
        .unwrap();
    for _ in 0..2 {
        next(&mut announced).await;
    }
    // 4 MB of 0.5 KB frames on another session, 8 times its share, with
    // frames the processor refuses among them.
    let flooding = create(&client).await;
    let padding = "x".repeat(440);
    let mut sent = 0u64;
    for k in 0..8_000u64 {
        let frame = json!({"lap": 1 + k / 1000, "lap_distance": (k % 1000) as f64, "pad": padding});
        client
            .publish(
                format!("session.{flooding}.telemetry"),
                frame.to_string().into(),
            )
            .await
            .unwrap();
        sent += 1;
        if k % 1000 == 0 {
            for refused in ["{", "[1]", "null"] {
                client
                    .publish(format!("session.{flooding}.telemetry"), refused.into())
                    .await
                    .unwrap();
            }
        }
    }
    sync(&client).await;
    // Every accepted frame is recorded (the writer writes an idle session's
    // chunk within seconds), and only those.
    let accepted = sent + 853;
    let mut stats = Value::Null;
    for _ in 0..100 {
        stats = ask(&client, "sessions.stats", "{}".into()).await.ok();
        if stats["trace_frames_recorded"] == accepted {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(stats["telemetry_frames"], accepted, "{stats}");
    assert_eq!(stats["trace_frames_recorded"], accepted, "{stats}");
    assert_eq!(stats["trace_frames_unrecorded"], 0, "{stats}");
    // The flood kept at most its eight chunks; the driven laps are whole.
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream("paddock_sessions_traces").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    assert!(state.messages <= 8 + 8, "{state:?}");
    let trace = ask(
        &client,
        "sessions.trace",
        json!({"session_id": driven, "lap": 1}).to_string(),
    )
    .await
    .ok();
    assert_eq!(trace["frames"], 401, "{trace}");
    let compare = ask(
        &client,
        &format!("sessions.compare.{driven}"),
        r#"{"lap": 2, "against": {"lap": 1}, "minisectors": 4}"#.into(),
    )
    .await
    .ok();
    let delta = at(&compare["delta_s"], &compare["distance_m"], 2000.0);
    assert!((delta - 5.0).abs() < 0.01, "delta at 2000 m: {delta}");
}
