//! The commands for every role, run as a user would: the real binary against a
//! real broker and processor.

use std::time::Duration;

use crate::support::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_list_prints_a_table_and_json() {
    let app = spawn_app().await;
    let a = app.new_session().await;
    let b = app.new_session().await;
    let url = app.server.url();

    let (code, out, err) = run_paddock(&["sessions", "list", "--nats-url", &url]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("SESSION") && lines[0].contains("LAST UPDATE"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&a) && lines[2].starts_with(&b),
        "oldest first:\n{out}"
    );
    assert_eq!(lines[3], "2 live sessions");

    let (code, out, _) = run_paddock(&["sessions", "list", "--json", "--nats-url", &url]).await;
    assert_eq!(code, 0);
    let json: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(json["total"], 2);
    assert_eq!(json["sessions"][0]["session_id"], a.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_create_prints_the_new_id() {
    let app = spawn_app().await;
    let url = app.server.url();
    let (code, out, err) = run_paddock(&["sessions", "create", "--nats-url", &url]).await;
    assert_eq!(code, 0, "{err}");
    // Without per-session credentials, the id alone (scripts read one line).
    let id = out.trim();
    assert_eq!(out.lines().count(), 1, "{out}");
    let doc = app.get(id).await.ok();
    assert_eq!(doc["session_id"], id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_get_delete_and_stats() {
    let app = spawn_app().await;
    let id = app.new_session().await;
    app.send_setup(&id, SETUP).await.ok();
    app.send_telemetry(&id, TELEMETRY).await;
    app.get_until(&id, "frame stored", |d| !d["telemetry"].is_null())
        .await;
    let url = app.server.url();

    let (code, out, _) = run_paddock(&["sessions", "get", &id, "--nats-url", &url]).await;
    assert_eq!(code, 0);
    assert!(out.contains(&format!("session      {id}")), "{out}");
    assert!(
        out.contains("telemetry    lap 14, P3, fuel 41.2/75 L, A. Driver"),
        "{out}"
    );
    assert!(
        out.contains("frames       1 telemetry, 1 setup, 0 rejected"),
        "{out}"
    );

    let (code, out, _) = run_paddock(&["sessions", "get", &id, "--json", "--nats-url", &url]).await;
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["telemetry"]["lap"], 14);

    let (code, out, _) = run_paddock(&["sessions", "stats", "--json", "--nats-url", &url]).await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["live_sessions"],
        1
    );
    let (_, out, _) = run_paddock(&["sessions", "stats", "--nats-url", &url]).await;
    assert!(out.contains("live sessions      1"), "{out}");

    let (code, out, _) = run_paddock(&["sessions", "delete", &id, "--nats-url", &url]).await;
    assert_eq!(code, 0);
    assert_eq!(out, format!("deleted {id} (1 telemetry frames)\n"));
    let (code, _, err) = run_paddock(&["sessions", "get", &id, "--nats-url", &url]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("has ended (deleted)") && err.contains("404"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_commands_fail_with_the_reason() {
    let app = spawn_app().await;
    let url = app.server.url();
    let unknown = uuid::Uuid::new_v4().to_string();
    let (code, out, err) = run_paddock(&["sessions", "get", &unknown, "--nats-url", &url]).await;
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        format!("paddock: unknown session {unknown} (error 404)\n")
    );

    let (code, _, err) =
        run_paddock(&["sessions", "delete", "not-an-id", "--nats-url", &url]).await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with("paddock: malformed session id") && err.contains("(error 400)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_processor_the_commands_say_so() {
    let server = NatsServer::start();
    let url = server.url();
    let (code, _, err) = run_paddock(&["sessions", "list", "--nats-url", &url]).await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!("paddock: no paddock processor is answering on {url}\n")
    );

    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    let (code, _, err) = run_paddock(&["sessions", "stats", "--nats-url", &nowhere]).await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!(
            "paddock: no NATS broker is reachable at {nowhere}"
        )),
        "{err}"
    );
    // The cause once, not once per link of its chain.
    assert_eq!(err.matches("refused").count(), 1, "{err}");
    // A URL that is not a NATS one is named as such, not as an unreachable broker.
    let (code, _, err) =
        run_paddock(&["sessions", "stats", "--nats-url", "http://127.0.0.1:4222"]).await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with("paddock: http://127.0.0.1:4222 is not a NATS URL"),
        "{err}"
    );
    // Wrong credentials: said once, as a refusal, not as an unreachable broker.
    // The long-running commands too: a broker that answers and refuses will not
    // change its mind, so they stop at once instead of retrying forever.
    let guarded = NatsServer::start_with(&["--user", "ops", "--pass", "right"]);
    let guarded_url = guarded.url();
    let refusal = format!(
        "paddock: the NATS broker at {guarded_url} refused these credentials \
         (authorization violation)\n"
    );
    let commands: [&[&str]; 4] = [
        &["sessions", "stats"],
        &["serve"],
        &["monitor"],
        &["watch", "--plain", "0b0e7a3c-5f43-4d2c-9a51-8d2f1c3e4b5a"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.extend(["--nats-url", &guarded_url, "--user", "ops"]);
        args.extend(["--password", "wrong"]);
        let (code, _, err) = run_paddock(&args).await;
        assert_eq!(code, 1, "{command:?}: {err}");
        // The processor logs its start first; the refusal is its last line.
        assert!(err.ends_with(&refusal), "{command:?}: {err}");
        assert_eq!(err.matches("refused").count(), 1, "{command:?}: {err}");
    }
    // No credentials at all: the broker wants some, and the error says which flags.
    let (code, _, err) = run_paddock(&["sessions", "stats", "--nats-url", &guarded_url]).await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!(
            "paddock: the NATS broker at {guarded_url} needs credentials"
        )) && err.contains("--creds"),
        "{err}"
    );
    // A missing CA file is named before any connection is tried.
    let (code, _, err) = run_paddock(&[
        "sessions",
        "stats",
        "--nats-url",
        &url,
        "--tls-ca",
        "/nonexistent/ca.pem",
    ])
    .await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with("paddock: cannot read /nonexistent/ca.pem"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_creates_a_session_sends_its_setup_and_streams() {
    let app = spawn_app().await;
    let url = app.server.url();
    let (code, out, err) = run_paddock(&[
        "monitor",
        "--nats-url",
        &url,
        "--hz",
        "50",
        "--duration",
        "1s",
        "--time-scale",
        "30",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let id = out
        .lines()
        .next()
        .unwrap()
        .strip_prefix("session ")
        .expect("prints the id first")
        .to_string();
    assert!(
        out.lines().nth(1).unwrap().contains(&format!("watch {id}")),
        "{out}"
    );
    assert!(err.contains("frames sent"), "a closing summary: {err}");
    let doc = app.get(&id).await.ok();
    assert_eq!(doc["setup"]["aerodynamics"]["rear_wing"], 8);
    let frames = doc["stats"]["telemetry_count"].as_u64().unwrap();
    assert!(
        (30..=60).contains(&frames),
        "about 50 frames in 1 s at 50 Hz: {frames}"
    );
    for field in [
        "lap",
        "position",
        "fuel",
        "tire_temps",
        "tire_pressures",
        "tire_wear",
        "lap_time",
    ] {
        assert!(
            !doc["telemetry"][field].is_null(),
            "{field} missing: {}",
            doc["telemetry"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_runs_many_sessions_or_reuses_one() {
    let app = spawn_app().await;
    let url = app.server.url();
    let (code, out, _) = run_paddock(&[
        "monitor",
        "--nats-url",
        &url,
        "--sessions",
        "5",
        "--duration",
        "300ms",
    ])
    .await;
    assert_eq!(code, 0);
    assert_eq!(out.lines().filter(|l| l.starts_with("session ")).count(), 5);
    assert_eq!(app.request("sessions.list", "").await.ok()["total"], 5);

    let id = app.new_session().await;
    let (code, out, _) = run_paddock(&[
        "monitor",
        "--nats-url",
        &url,
        "--session",
        &id,
        "--hz",
        "20",
        "--duration",
        "300ms",
    ])
    .await;
    assert_eq!(code, 0);
    assert_eq!(out.lines().next().unwrap(), format!("session {id}"));
    app.get_until(&id, "frames for the reused id", |d| {
        d["stats"]["telemetry_count"].as_u64() > Some(0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_keeps_its_session_across_a_broker_restart() {
    let mut app = spawn_app().await;
    let url = app.server.url();
    let monitor = Running::spawn(&["monitor", "--nats-url", &url, "--hz", "20"]);
    let id = monitor.line().strip_prefix("session ").unwrap().to_string();
    let streaming = app
        .get_until(&id, "streaming", |d| {
            d["stats"]["telemetry_count"].as_u64() > Some(5)
        })
        .await;
    let before = streaming["stats"]["telemetry_count"].as_u64().unwrap();
    let setup_at = streaming["setup_timestamp"].as_str().unwrap().to_string();

    app.server.kill();
    until_disconnected(&app.client).await;
    app.server.start_again();

    // Same id, more frames, and still only that one session.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(Ok(reply)) = tokio::time::timeout(
            Duration::from_millis(500),
            app.client.request("sessions.get", id_body(&id).into()),
        )
        .await
        {
            let doc = Answer::from(reply).ok();
            // Frames resumed, and the setup was sent again after the reconnect
            // (a broker restart may have cost the processor's subscription it).
            if doc["stats"]["telemetry_count"].as_u64().unwrap() > before + 10
                && doc["setup_timestamp"].as_str() > Some(setup_at.as_str())
            {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the monitor did not resume"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.request("sessions.list", "").await.ok()["total"], 1);
    assert!(
        monitor
            .lines_for(Duration::from_millis(200))
            .iter()
            .all(|l| !l.starts_with("session "))
    );
    assert_eq!(monitor.stop("-INT"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_stops_saying_so_when_its_session_is_deleted() {
    let server = NatsServer::start();
    let url = server.url();
    let _processor = serve_binary(&url, &[]);
    let nc = connect(&url).await;
    wait_for_processors(&nc, 1).await;
    let id = create(&nc).await;
    let mut monitor = paddock()
        .args(["monitor", "--session", &id, "--hz", "20", "--progress", "0"])
        .args(["--nats-url", &url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Streaming: frames arrive.
    let deadline = std::time::Instant::now() + PATIENCE;
    while ask(&nc, &format!("sessions.get.{id}"), String::new())
        .await
        .ok()["stats"]["telemetry_count"]
        .as_u64()
        == Some(0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no frames from the monitor"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ask(&nc, "sessions.delete", id_body(&id)).await.ok();
    // It says so once and stops with exit 1, instead of streaming into the void.
    let output = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + PATIENCE;
        while monitor.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the monitor kept running"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        monitor.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("was deleted").count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_does_not_crash_a_command() {
    // `paddock monitor 2>&1 | head -1`, then ctrl-c: what is left to say goes
    // nowhere, and the monitor still stops cleanly (exit 0, not a panic's 101).
    let app = spawn_app().await;
    let url = app.server.url();
    let mut monitor = paddock()
        .args([
            "monitor",
            "--nats-url",
            &url,
            "--hz",
            "20",
            "--progress",
            "1s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = monitor.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line
    })
    .await
    .unwrap();
    assert!(first.starts_with("session "), "{first}");
    // Both pipes closed: every later write fails with EPIPE.
    drop(monitor.stderr.take());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let code = tokio::task::spawn_blocking(move || {
        // SAFETY: kill(2) on the child this test started.
        unsafe { libc::kill(monitor.id() as i32, libc::SIGINT) };
        monitor.wait().unwrap().code()
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0));
}

/// The one-shot commands print through the same non-panicking writes: with both
/// pipes closed before they start (`paddock sessions list | head -0`), each still
/// does its work, and none panics (101). `sessions` answers 1: its output is what
/// was asked for, and it could not be delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_commands_survive_closed_pipes() {
    let app = spawn_app().await;
    let url = app.server.url();
    let auth = fresh_dir("closed-pipes").join("auth");
    let auth = auth.to_str().unwrap();
    let commands: [(&[&str], i32); 4] = [
        (&["broker", "which"], 0),
        (&["sessions", "create", "--nats-url", &url], 1),
        (&["sessions", "list", "--nats-url", &url], 1),
        (&["auth", "init", "--out", auth], 0),
    ];
    for (args, expected) in commands {
        let closed = || {
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            writer
        };
        let code = tokio::task::spawn_blocking({
            let mut command = paddock();
            command.args(args).stdout(closed()).stderr(closed());
            move || command.status().unwrap().code()
        })
        .await
        .unwrap();
        assert_eq!(code, Some(expected), "paddock {}", args.join(" "));
    }
    // They did their work: the session was created, the directory written.
    let list = app.request("sessions.list", "").await.ok();
    assert_eq!(list["count"], 1, "{list}");
    assert!(std::path::Path::new(auth).join("ops.creds").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_replays_a_recording() {
    let app = spawn_app().await;
    let url = app.server.url();
    let path = std::env::temp_dir().join(format!("paddock-recording-{}.jsonl", std::process::id()));
    let frames: Vec<String> = (1..=5)
        .map(|lap| format!(r#"{{"timestamp": "2026-06-14T15:42:0{lap}.000Z", "lap": {lap}}}"#))
        .collect();
    std::fs::write(
        &path,
        format!("{{\"setup\": {{\"wing\": 3}}}}\n{}\n", frames.join("\n")),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (code, out, err) = run_paddock(&[
        "monitor",
        "--nats-url",
        &url,
        "--replay",
        path.to_str().unwrap(),
        "--time-scale",
        "4",
    ])
    .await;
    std::fs::remove_file(&path).unwrap();
    assert_eq!(code, 0, "{err}");
    // Four gaps of 1 s recorded, replayed four times as fast.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains("replay finished (5 frames per session)"),
        "{err}"
    );
    let id = out
        .lines()
        .next()
        .unwrap()
        .strip_prefix("session ")
        .unwrap();
    let doc = app
        .get_until(id, "all frames", |d| d["stats"]["telemetry_count"] == 5)
        .await;
    assert_eq!(doc["telemetry"]["lap"], 5);
    assert_eq!(doc["setup"]["wing"], 3);
}

/// What changed while a watch was away reaches it when it comes back: it takes a
/// fresh snapshot after every reconnect. The watch is paused (SIGSTOP) through a
/// broker restart and a new frame, so it cannot have seen that frame live: the
/// broker it had subscribed on is gone, and the new one has no subscription of
/// its until it reconnects after SIGCONT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_takes_a_fresh_snapshot_after_a_reconnect() {
    let mut app = spawn_app().await;
    let url = app.server.url();
    let id = app.new_session().await;
    app.send_telemetry(&id, frame(1)).await;
    app.get_until(&id, "frame stored", |d| d["telemetry"]["lap"] == 1)
        .await;
    let watch = Running::spawn(&["watch", &id, "--plain", "--nats-url", &url]);
    assert!(watch.line().starts_with("lap 1 "));
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &watch.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    app.server.kill();
    until_disconnected(&app.client).await;
    app.server.start_again();
    // The processor is back (it answers), and stores a frame the watch cannot see.
    wait_for_reply(&app.client, "sessions.get", id_body(&id))
        .await
        .ok();
    app.send_telemetry(&id, frame(2)).await;
    app.get_until(&id, "frame 2 stored", |d| d["telemetry"]["lap"] == 2)
        .await;
    signal("-CONT");
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut after = Vec::new();
    while !after.iter().any(|l: &String| l.starts_with("lap 2 ")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the watch never showed the frame stored while it was away: {after:?}"
        );
        after.extend(watch.lines_for(Duration::from_millis(250)));
    }
    assert_eq!(watch.stop("-INT"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_plain_shows_the_session_then_goes_stale() {
    let app = spawn_app().await;
    let url = app.server.url();
    let id = app.new_session().await;
    app.send_setup(&id, SETUP).await.ok();
    app.send_telemetry(&id, TELEMETRY).await;
    app.get_until(&id, "frame stored", |d| !d["telemetry"].is_null())
        .await;

    let watch = Running::spawn(&[
        "watch",
        &id,
        "--plain",
        "--stale-after",
        "1500ms",
        "--nats-url",
        &url,
    ]);
    let first = watch.line();
    assert!(
        first.starts_with("lap 14 P3 | 3:33.456 | Δ best no reference lap yet | fuel 41.2 L"),
        "{first}"
    );
    assert!(first.contains("FL 85°C 28.5psi"), "{first}");
    let later = watch.lines_for(Duration::from_millis(2500));
    assert!(
        later.iter().any(|l| l.starts_with("STALE lap 14 P3")),
        "{later:?}"
    );
    app.send_telemetry(&id, frame(15)).await;
    let fresh = watch.lines_for(Duration::from_millis(1500));
    assert!(fresh.iter().any(|l| l.starts_with("lap 15 ")), "{fresh:?}");
    assert_eq!(watch.stop("-INT"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_rejects_a_malformed_id() {
    let (code, _, err) = run_paddock(&["watch", "nope", "--plain"]).await;
    assert_eq!(code, 1);
    assert!(err.starts_with("paddock: malformed session id"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_once_with_the_reason_when_its_session_is_deleted() {
    let app = spawn_app().await;
    let url = app.server.url();
    let id = app.new_session().await;
    app.send_telemetry(&id, TELEMETRY).await;
    let mut watch = paddock()
        .args(["watch", &id, "--plain", "--nats-url", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut stdout = std::io::BufReader::new(watch.stdout.take().unwrap());
    // The reader is kept open (returned), or the watch would see a closed pipe.
    let stdout_thread = tokio::task::spawn_blocking(move || {
        std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
        (first, stdout)
    });
    let (first, _stdout) = stdout_thread.await.unwrap();
    assert!(first.starts_with("lap 14"), "{first}");
    app.request("sessions.delete", id_body(&id)).await.ok();
    let out = tokio::task::spawn_blocking(move || watch.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Live ("was deleted") or by a fresh snapshot ("has ended (deleted)"),
    // whichever reached the view first: said once, and the view ends.
    assert_eq!(stderr.matches("deleted").count(), 1, "said once: {stderr}");
    // A deleted session watched afresh: the same, at once.
    let (code, _, err) = run_paddock(&["watch", &id, "--plain", "--nats-url", &url]).await;
    assert_eq!(code, 1);
    assert!(err.contains("has ended (deleted)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_without_a_terminal_says_to_use_plain_and_a_closed_pipe_ends_it_quietly() {
    let app = spawn_app().await;
    let url = app.server.url();
    let id = app.new_session().await;
    app.send_telemetry(&id, TELEMETRY).await;
    let (code, _, err) = run_paddock(&["watch", &id, "--nats-url", &url]).await;
    assert_eq!(code, 1);
    assert!(err.contains("use --plain"), "{err}");
    // `watch --plain | head -1`: the reader goes away after one line.
    let mut child = paddock()
        .args(["watch", &id, "--plain", "--nats-url", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// In open mode `sessions share` prints the plain link and costs the processor
/// nothing it would count as a refusal: it asks for credentials only where the
/// processor's discovery says it issues them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_in_open_mode_is_not_a_refused_request() {
    let server = NatsServer::start();
    let url = server.url();
    let http = format!("127.0.0.1:{}", free_port());
    let _processor = serve_binary(&url, &["--http-addr", &http]);
    let client = connect(&url).await;
    wait_for_processors(&client, 1).await;
    let id = create(&client).await;
    for _ in 0..2 {
        let (code, out, err) =
            run_paddock(&["sessions", "share", &id, "--no-qr", "--nats-url", &url]).await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), format!("http://{http}/session/{id}"));
        // A loopback link is said to be one (a phone cannot open it).
        assert!(err.contains("loopback address"), "{err}");
    }
    // With its QR code, which fits an 80-column terminal (#39 item 5.7).
    let (code, out, err) = run_paddock(&["sessions", "share", &id, "--nats-url", &url]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().count() > 15 && out.contains('█'), "{out}");
    let widest = out.lines().map(|l| l.chars().count()).max().unwrap();
    assert!(widest <= 80, "{widest} columns:\n{out}");
    let stats = ask(&client, "sessions.stats", "{}".into()).await.ok();
    assert_eq!(stats["rejected_total"], 0, "{stats}");
}

/// `watch` beside a broker that answers but no processor says that no processor
/// answers, not that the broker is unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_a_broker_and_no_processor_says_no_processor_answers() {
    let server = NatsServer::start();
    let id = paddock::SessionId::new_v4().to_string();
    let watch = Running::spawn(&["watch", &id, "--plain", "--nats-url", &server.url()]);
    let lines = watch.lines_for(Duration::from_secs(4));
    let said = lines.join("\n");
    assert!(said.contains("no paddock processor is answering"), "{said}");
    assert!(!said.contains("unreachable"), "{said}");
    assert_eq!(watch.stop("-INT"), 0);
}

/// What the README walk missed (#39 item 5.9): `sessions get` shows the
/// labels, the strategy and the alerts; `stats` the memory and lap counters;
/// an ended session is found in `sessions archive list|get`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_get_stats_and_archive_show_what_the_json_has() {
    let app = spawn_app().await;
    let url = app.server.url();
    let id = labelled_session_with_a_frame(&app, "Blue").await;

    let (code, out, err) = run_paddock(&["sessions", "get", &id, "--nats-url", &url]).await;
    assert_eq!(code, 0, "{err}");
    for line in [
        "team         Blue",
        "car          #7",
        "strategy     ",
        "alerts       none",
    ] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }

    let (code, out, err) = run_paddock(&["sessions", "stats", "--nats-url", &url]).await;
    assert_eq!(code, 0, "{err}");
    for line in [
        "laps dropped",
        "laps trimmed",
        "memory             ",
        " MiB of 1024.0 MiB",
    ] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }

    let (code, _, err) = run_paddock(&["sessions", "delete", &id, "--nats-url", &url]).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run_paddock(&["sessions", "archive", "list", "--nats-url", &url]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("SESSION") && lines[0].contains("ENDED"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&id) && lines[1].contains("Blue") && lines[1].contains("deleted"),
        "{out}"
    );
    assert_eq!(lines[2], "1 archived session");
    let (code, out, _) = run_paddock(&[
        "sessions",
        "archive",
        "list",
        "--team",
        "Red",
        "--json",
        "--nats-url",
        &url,
    ])
    .await;
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["total"], 0);

    let (code, out, err) =
        run_paddock(&["sessions", "archive", "get", &id, "--nats-url", &url]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ended        "), "{out}");
    assert!(out.contains("(deleted)"), "{out}");
    assert!(out.contains(&format!("session      {id}")), "{out}");
    assert!(out.contains("lap 14, P3"), "{out}");
    let (code, out, _) = run_paddock(&[
        "sessions",
        "archive",
        "get",
        &id,
        "--json",
        "--nats-url",
        &url,
    ])
    .await;
    assert_eq!(code, 0);
    let archived: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(archived["reason"], "deleted");
    assert_eq!(archived["session"]["team"], "Blue");
    let unknown = uuid::Uuid::new_v4().to_string();
    let (code, _, err) =
        run_paddock(&["sessions", "archive", "get", &unknown, "--nats-url", &url]).await;
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
}

/// A session labelled `team`, car `#7`, with the sample frame stored.
async fn labelled_session_with_a_frame(app: &TestApp, team: &str) -> String {
    let doc = app
        .request(
            "sessions.create",
            serde_json::json!({"team": team, "car": "#7"}).to_string(),
        )
        .await
        .ok();
    let id = doc["session_id"].as_str().unwrap().to_string();
    app.send_telemetry(&id, TELEMETRY).await;
    app.get_until(&id, "frame stored", |d| !d["telemetry"].is_null())
        .await;
    id
}

/// Messages that point the way (#39 item 5.8): `get` and `laps` of an ended
/// session name the archive, not `sessions.create`; a team label in another
/// case is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_session_and_a_miscased_team_are_pointed_to() {
    let app = spawn_app().await;
    let url = app.server.url();
    let id = labelled_session_with_a_frame(&app, "Blue").await;
    let (code, out, err) =
        run_paddock(&["sessions", "list", "--team", "blue", "--nats-url", &url]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("case-sensitive: did you mean Blue?"), "{out}");
    let (_, out, _) = run_paddock(&["sessions", "list", "--team", "Red", "--nats-url", &url]).await;
    assert!(out.contains("teams with live sessions: Blue"), "{out}");

    let (code, _, err) = run_paddock(&["sessions", "delete", &id, "--nats-url", &url]).await;
    assert_eq!(code, 0, "{err}");
    for command in ["get", "laps"] {
        let (code, _, err) = run_paddock(&["sessions", command, &id, "--nats-url", &url]).await;
        assert_eq!(code, 1, "{command}");
        assert!(
            err.contains("has ended (deleted)")
                && err.contains(&format!("paddock sessions archive get {id}"))
                && err.contains(&format!("paddock sessions laps {id} --archived"))
                && !err.contains("sessions.create"),
            "{command}: {err}"
        );
    }
}

/// `watch` and `share` without a session name `--team` as the other way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_share_without_an_id_mention_team() {
    for args in [&["watch"][..], &["sessions", "share"][..]] {
        let (code, _, err) = run_paddock(args).await;
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("--team"), "{args:?}: {err}");
    }
}
