//! Lap traces through a real broker: two scripted laps with `lap_distance` are
//! recorded by the trace writer in the trace stream, read back on a distance grid
//! (`sessions.trace`), compared (`sessions.compare`: the delta at known
//! distances), exported as CSV by the binary and read back; and a processor
//! that records nothing (`--store memory`) says so with 503.

use serde_json::{Value, json};

use crate::support::*;

/// The scripted laps (support's `scripted_lap`): lap 2 loses 2.5 s to lap 1
/// at 1500 m and 5 s at 2000 m.
fn scripted(lap: u64) -> Vec<String> {
    scripted_lap(lap).iter().map(|f| f.to_string()).collect()
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

/// Publishes laps 1 and 2 and the first frame of lap 3 into session `id`
/// over a plain client (fire and forget), and waits for both laps' announcements.
async fn publish_two_laps(client: &async_nats::Client, id: &str) {
    let mut announced = client.subscribe(format!("session.{id}.lap")).await.unwrap();
    let next_lap = json!({"lap": 3, "lap_time": 0.0, "lap_distance": 0.0, "last_lap_time": 45.0});
    let frames = scripted(1)
        .into_iter()
        .chain(scripted(2))
        .chain([next_lap.to_string()]);
    for frame in frames {
        client
            .publish(format!("session.{id}.telemetry"), frame.into())
            .await
            .unwrap();
    }
    sync(client).await;
    for _ in 0..2 {
        next(&mut announced).await;
    }
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
    publish_two_laps(&client, &id).await;
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

/// A broker and `paddock serve` whose trace stream keeps 512 KiB (eight
/// chunks) a session, so a few MB of laps turn it over, and a client once the
/// processor answers. The frame rate is not limited: the tests send 8,000
/// frames at once, which the default 100 a second would refuse.
async fn keeping_eight_chunks() -> (NatsServer, Running, async_nats::Client) {
    let server = NatsServer::start();
    let url = server.url();
    let processor = serve_binary(
        &url,
        &["--trace-session-bytes", "512KiB", "--max-frame-rate", "0"],
    );
    let client = connect(&url).await;
    wait_for_processors(&client, 1).await;
    (server, processor, client)
}

/// `sessions.stats` once `frames` frames are recorded (the writer writes an
/// idle session's chunk within seconds), or after 20 s.
async fn recorded(client: &async_nats::Client, frames: u64) -> Value {
    let mut stats = Value::Null;
    for _ in 0..100 {
        stats = ask(client, "sessions.stats", "{}".into()).await.ok();
        if stats["trace_frames_recorded"] == frames {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    stats
}

/// The record holds what the processor accepted and nothing else, and one
/// session's flood cannot push another's laps out of the stream: each keeps at
/// most `--trace-session-bytes` (here 512 KiB, eight chunks), its own oldest
/// going first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_records_only_what_was_accepted_and_leaves_other_sessions_laps() {
    let (_server, _processor, client) = keeping_eight_chunks().await;
    let driven = create(&client).await;
    publish_two_laps(&client, &driven).await;
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
    let stats = recorded(&client, accepted).await;
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

/// A session's best lap outlives the trace stream's turnover: the processor
/// keeps a copy of it in the best-lap stream, so at hour 18 the live delta and
/// a comparison against the best still read the best lap of hour 2. Here the
/// session keeps 8 chunks in the trace stream, and 4 MB of later laps push
/// both scripted laps out of it: lap 1 (the best) is read back whole from its
/// copy, lap 2 is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_best_lap_outlives_the_trace_stream_s_turnover() {
    let (_server, _processor, client) = keeping_eight_chunks().await;
    let id = create(&client).await;
    publish_two_laps(&client, &id).await;
    // Lap 1 (40 s) is the best: its copy is kept once lap 1 completes.
    let js = async_nats::jetstream::new(client.clone());
    let mut best = js.get_stream("paddock_sessions_best").await.unwrap();
    let mut kept = 0;
    for _ in 0..100 {
        kept = best.info().await.unwrap().state.messages;
        if kept > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(kept > 0, "no copy of the best lap in paddock_sessions_best");
    let config = best.info().await.unwrap().config.clone();
    assert_eq!(config.subjects, ["paddock.best.*"]);
    assert_eq!(
        config.max_messages_per_subject,
        (paddock::server::store::BEST_LAP_BYTES / (64 * 1024)) as i64
    );
    // 8,000 frames of slower laps (99 s each by the sim's clock).
    let padding = "x".repeat(440);
    for k in 0..8_000u64 {
        let frame = json!({"lap": 3 + k / 1000, "lap_distance": (k % 1000) as f64,
                           "last_lap_time": 99.0, "pad": padding});
        client
            .publish(format!("session.{id}.telemetry"), frame.to_string().into())
            .await
            .unwrap();
    }
    sync(&client).await;
    let stats = recorded(&client, 8_000 + 853).await;
    assert_eq!(stats["trace_frames_recorded"], 8_000 + 853, "{stats}");
    // Lap 2 is gone from the trace stream, and was never the best.
    let gone = ask(
        &client,
        &format!("sessions.trace.{id}"),
        r#"{"lap": 2}"#.into(),
    )
    .await;
    gone.expect_error(404);
    // Lap 1, the best, is read back whole, by number and as "best".
    for lap in [json!(1), json!("best")] {
        let trace = ask(
            &client,
            &format!("sessions.trace.{id}"),
            json!({"lap": lap, "channels": ["speed", "gear"]}).to_string(),
        )
        .await
        .ok();
        assert_eq!(trace["lap"], 1, "{trace}");
        assert_eq!(trace["frames"], 401, "{trace}");
        assert_eq!(trace["gaps"], json!([]), "{trace}");
        assert!(
            (at(&trace["channels"]["speed"], &trace["distance_m"], 500.0) - 180.0).abs() < 1e-9
        );
    }
    // And compared against the best (itself): read from the copy both times.
    let compare = ask(
        &client,
        &format!("sessions.compare.{id}"),
        r#"{"lap": 1, "against": "best", "minisectors": 4}"#.into(),
    )
    .await
    .ok();
    assert_eq!(compare["reference"]["lap"], 1, "{compare}");
    let delta = at(&compare["delta_s"], &compare["distance_m"], 2000.0);
    assert!(delta.abs() < 1e-9, "delta at 2000 m: {delta}");
}

/// A `.ld` read with the motec-i2 crate's reader (not paddock's writer):
/// each channel's name, unit, rate and values.
fn read_ld(bytes: &[u8]) -> Vec<(String, String, u16, Vec<f64>)> {
    let mut source = std::io::Cursor::new(bytes.to_vec());
    let mut reader = motec_i2::LDReader::new(&mut source);
    let header = reader.read_header().unwrap();
    let channels = reader.read_channels().unwrap();
    assert_eq!(header.num_channels as usize, channels.len());
    channels
        .iter()
        .map(|c| {
            let values = reader
                .channel_data(c)
                .unwrap()
                .iter()
                .map(|s| s.decode_f64(c))
                .collect();
            (c.name.clone(), c.unit.clone(), c.sample_rate, values)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scripted_laps_export_as_motec_files_that_an_independent_reader_reads() {
    let app = spawn_app_with(no_frame_rate(test_limits())).await;
    let id = app.new_session().await;
    drive_two_laps(&app, &id).await;
    let dir = fresh_dir("traces-motec");
    let out = dir.to_str().unwrap();
    let url = app.server.url();
    let (code, said, stderr) = run_paddock(&[
        "sessions",
        "--nats-url",
        &url,
        "export",
        &id,
        "--lap",
        "all",
        "--format",
        "motec",
        "--out",
        out,
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(said.contains("2 laps, 7 channels"), "{said}");
    let ld = std::fs::read(dir.join(format!("{id}.ld"))).unwrap();
    let channels = read_ld(&ld);
    let names: Vec<(&str, &str, u16)> = channels
        .iter()
        .map(|(n, u, hz, _)| (n.as_str(), u.as_str(), *hz))
        .collect();
    assert_eq!(
        names,
        [
            ("Lap Distance", "m", 10),
            ("Ground Speed", "km/h", 10),
            ("Throttle Pos", "%", 10),
            ("Brake Pos", "%", 10),
            ("Steering Pos", "%", 10),
            ("Gear", "", 10),
            ("Engine RPM", "rpm", 10)
        ]
    );
    // Lap 1: 40 s at 180 km/h; lap 2 from 40.1 s, 144 km/h after 1000 m:
    // 85.1 s of log at 10 Hz.
    let (distance, speed, gear) = (&channels[0].3, &channels[1].3, &channels[5].3);
    assert!((851..=852).contains(&speed.len()), "{}", speed.len());
    assert!(channels.iter().all(|c| c.3.len() == speed.len()));
    assert_eq!(
        (speed[0], speed[200], *speed.last().unwrap()),
        (180.0, 180.0, 144.0)
    );
    assert_eq!((distance[100], distance[400]), (500.0, 2000.0));
    assert_eq!(distance[401], 0.0, "lap 2 starts at the line");
    assert_eq!((gear[0], *gear.last().unwrap()), (5.0, 4.0));
    assert!(
        channels[2].3.iter().all(|v| *v == 100.0),
        "full throttle, in %"
    );
    let ldx = std::fs::read_to_string(dir.join(format!("{id}.ldx"))).unwrap();
    for beacon in ["0.000000", "40100000.000000", "85200000.000000"] {
        assert!(ldx.contains(&format!(r#"Time="{beacon}""#)), "{ldx}");
    }
    assert!(
        ldx.contains(r#"<String Id="Total Laps" Value="2"/>"#),
        "{ldx}"
    );

    // The page's way: the lap it read, posted to the HTTP side, comes back
    // as a zip of the same two files.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let web = tokio::spawn(paddock::web::serve(
        listener,
        Default::default(),
        Default::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let trace = app
        .request(
            &format!("sessions.trace.{id}"),
            json!({"lap": 1, "raw": true, "channels": ["speed", "throttle", "brake", "steering", "gear", "rpm"]})
                .to_string(),
        )
        .await
        .ok();
    let body = json!({"traces": [trace], "details": {"driver": "A. Driver"}, "name": format!("{id}-lap1")});
    let (status, zipped) = http_post(&http, "/export/motec", body.to_string().into_bytes()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&zipped));
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(zipped)).unwrap();
    let mut ld = Vec::new();
    std::io::Read::read_to_end(&mut zip.by_name(&format!("{id}-lap1.ld")).unwrap(), &mut ld)
        .unwrap();
    let lap1 = read_ld(&ld);
    assert_eq!(lap1[1].3.len(), 401, "lap 1: 40 s at 10 Hz");
    assert!(zip.by_name(&format!("{id}-lap1.ldx")).is_ok());
    // What cannot be converted says why; a body larger than a trace reply
    // is refused before it is read whole.
    let (status, why) = http_post(&http, "/export/motec", b"{\"traces\": 1}".to_vec()).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&why));
    // Refused as it arrives: the answer is 413, or, when the client is still
    // writing as the server closes, the connection reset under it.
    match http_post_refusable(&http, "/export/motec", vec![b' '; 2 * 1024 * 1024]).await {
        Ok(status) => assert_eq!(status, 413),
        Err(e) => assert!(
            ["reset", "pipe", "closed", "aborted"]
                .iter()
                .any(|w| e.to_lowercase().contains(w)),
            "{e}"
        ),
    }
    // A small body that names 50 minutes at 1 kHz: refused before the
    // 21 M samples are made.
    let mut long = trace.clone();
    long["elapsed_s"] = json!([0.0, 0.001, 0.002, 3000.0]);
    long["distance_m"] = json!([0.0, 1.0, 2.0, 3.0]);
    long["channels"] = json!({});
    let body = json!({"traces": [long]}).to_string().into_bytes();
    let (status, why) = http_post(&http, "/export/motec", body).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&why));
    assert!(String::from_utf8_lossy(&why).contains("more than 2097152"));
    let _ = stop.send(());
    web.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `paddock watch` reads each frame against the best lap's trace: lap 3 at
/// 500 m after 10.234 s is 0.234 s behind lap 1 (50 m/s), at 1000 m after
/// 19.9 s 0.1 s ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_shows_the_live_delta_to_the_best_lap() {
    let app = spawn_app_with(no_frame_rate(test_limits())).await;
    let id = app.new_session().await;
    drive_two_laps(&app, &id).await;
    let url = app.server.url();
    let watch = Running::spawn(&["watch", &id, "--plain", "--nats-url", &url]);
    let first = watch.line();
    assert!(first.starts_with("lap 3 "), "{first}");
    for (d, t, shown) in [
        (500.0, 10.234, "Δ best +0.234 s"),
        (1000.0, 19.9, "Δ best \u{2212}0.100 s"),
    ] {
        let deadline = std::time::Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        while !seen.iter().any(|l: &String| l.contains(shown)) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {shown:?} in {seen:?}"
            );
            let frame = json!({"lap": 3, "lap_distance": d, "lap_time": t});
            app.send_telemetry(&id, frame.to_string()).await;
            seen.extend(watch.lines_for(std::time::Duration::from_millis(1200)));
        }
    }
}

/// A team link's car page may lay its lap over a teammate's (both sessions
/// in its team), not over another team's car; a session's own credentials
/// compare its own laps only. Told apart by the reply inbox those
/// credentials must use (an open broker lets the test pick it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_link_compares_against_a_teammate_s_best_and_no_other_team_s() {
    let app = spawn_app_with(no_frame_rate(test_limits())).await;
    let mut ids = Vec::new();
    for team in ["Blue", "Blue", "Red"] {
        let created = ask(
            &app.client,
            "sessions.create",
            json!({"team": team}).to_string(),
        )
        .await
        .ok();
        let id = created["session_id"].as_str().unwrap().to_string();
        drive_two_laps(&app, &id).await;
        ids.push(id);
    }
    let (mine, teammate, rival) = (&ids[0], &ids[1], &ids[2]);
    let inboxed = |prefix: String| {
        let url = app.server.url();
        async move {
            async_nats::ConnectOptions::new()
                .custom_inbox_prefix(prefix)
                .connect(url)
                .await
                .unwrap()
        }
    };
    let against = |other: &str| {
        json!({"lap": 2, "against": {"session_id": other, "lap": "best"}, "channels": ["speed"]})
            .to_string()
    };
    let team = inboxed("_INBOX_team_Blue".into()).await;
    let compare = ask(
        &team,
        &format!("sessions.compare.{mine}"),
        against(teammate),
    )
    .await
    .ok();
    assert_eq!(compare["reference"]["session_id"], json!(teammate));
    assert!((at(&compare["delta_s"], &compare["distance_m"], 2000.0) - 5.0).abs() < 0.01);
    ask(&team, &format!("sessions.compare.{mine}"), against(rival))
        .await
        .expect_error(403);
    let session = inboxed(format!("_INBOX_{mine}")).await;
    ask(
        &session,
        &format!("sessions.compare.{mine}"),
        against(teammate),
    )
    .await
    .expect_error(403);
    ask(&session, &format!("sessions.compare.{mine}"), against(mine))
        .await
        .ok();
}
