//! Teams: a session's `team` and `car` labels, given at create, in the session
//! document and the list rows, and `sessions.list {"team"}` (live and archived),
//! on one processor and across partitions (#28 item 1).

use serde_json::{Value, json};

use crate::support::needs::{Group, on_path};
use crate::support::*;

async fn create_labelled(nats: &async_nats::Client, team: &str, car: &str) -> String {
    let body = json!({"team": team, "car": car}).to_string();
    let doc = ask(nats, "sessions.create", body).await.ok();
    assert_eq!(doc["team"], team);
    assert_eq!(doc["car"], car);
    doc["session_id"].as_str().unwrap().to_string()
}

fn ids_of(page: &Value) -> Vec<String> {
    page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["session_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_carry_their_team_and_car_and_lists_filter_by_team() {
    let mut app = spawn_app().await;
    let nats = app.client.clone();
    let blue = [
        create_labelled(&nats, "Blue", "#7").await,
        create_labelled(&nats, "Blue", "#8").await,
    ];
    let red = create_labelled(&nats, "Red", "#1").await;
    let plain = create(&nats).await;

    let doc = ask(&nats, &format!("sessions.get.{plain}"), String::new())
        .await
        .ok();
    assert_eq!((&doc["team"], &doc["car"]), (&Value::Null, &Value::Null));
    let page = ask(&nats, "sessions.list", json!({"team": "Blue"}).to_string())
        .await
        .ok();
    assert_eq!(ids_of(&page), blue.to_vec());
    assert_eq!(page["total"], 2);
    assert_eq!(page["sessions"][1]["car"], "#8");
    let all = ask(&nats, "sessions.list", "{}".into()).await.ok();
    assert_eq!(all["total"], 4);
    assert_eq!(all["sessions"][2]["team"], "Red");

    // Bad labels and bad list bodies: 400, nothing created.
    for body in [
        json!({"team": "<script>"}),
        json!({"team": ""}),
        json!({"car": "x".repeat(33)}),
        json!({"team": 7}),
    ] {
        ask(&nats, "sessions.create", body.to_string())
            .await
            .expect_error(400);
    }
    ask(
        &nats,
        "sessions.list",
        json!({"team": "Blue", "colour": 1}).to_string(),
    )
    .await
    .expect_error(400);
    assert_eq!(
        ask(&nats, "sessions.list", "".into()).await.ok()["total"],
        4
    );

    // Ops relabel: a label given is set, null clears, one not given is kept.
    let relabelled = ask(
        &nats,
        "sessions.label",
        json!({"session_id": plain, "team": "Blue", "car": "#9"}).to_string(),
    )
    .await
    .ok();
    assert_eq!(
        (&relabelled["team"], &relabelled["car"]),
        (&json!("Blue"), &json!("#9"))
    );
    let cleared = ask(
        &nats,
        "sessions.label",
        json!({"session_id": plain, "car": null}).to_string(),
    )
    .await
    .ok();
    assert_eq!(
        (&cleared["team"], &cleared["car"]),
        (&json!("Blue"), &Value::Null)
    );
    for body in [
        json!({"session_id": plain, "team": "<b>"}),
        json!({"session_id": plain, "team": 3}),
        json!({"session_id": plain}),
        json!({"team": "Blue"}),
    ] {
        ask(&nats, "sessions.label", body.to_string())
            .await
            .expect_error(400);
    }
    ask(
        &nats,
        "sessions.label",
        json!({"session_id": "00000000-0000-4000-8000-000000000000", "team": "X"}).to_string(),
    )
    .await
    .expect_error(404);
    let page = ask(&nats, "sessions.list", json!({"team": "Blue"}).to_string())
        .await
        .ok();
    assert_eq!(page["total"], 3);
    ask(
        &nats,
        "sessions.label",
        json!({"session_id": plain, "team": null}).to_string(),
    )
    .await
    .ok();

    // Kept through a restart (stored with the document), and in the archive.
    app.restart_processor(test_limits()).await;
    let doc = ask(&nats, &format!("sessions.get.{red}"), String::new())
        .await
        .ok();
    assert_eq!((&doc["team"], &doc["car"]), (&json!("Red"), &json!("#1")));
    // A relabel kept through the next restart. The session was recovered, so
    // nothing else of it waits to be written: a relabel never stored would
    // read back as it was (a session changed just before, still waiting for
    // the write-behind, would carry the new labels along and hide it).
    ask(
        &nats,
        "sessions.label",
        json!({"session_id": red, "car": "#2"}).to_string(),
    )
    .await
    .ok();
    app.restart_processor(test_limits()).await;
    let doc = ask(&nats, &format!("sessions.get.{red}"), String::new())
        .await
        .ok();
    assert_eq!(
        (&doc["team"], &doc["car"]),
        (&json!("Red"), &json!("#2")),
        "the relabel is stored: {doc}"
    );
    ask(&nats, "sessions.delete", id_body(&blue[0])).await.ok();
    let archived = ask(
        &nats,
        "sessions.archive.list",
        json!({"team": "Blue"}).to_string(),
    )
    .await
    .ok();
    assert_eq!(ids_of(&archived), vec![blue[0].clone()]);
    assert_eq!(archived["sessions"][0]["car"], "#7");
    let none = ask(
        &nats,
        "sessions.archive.list",
        json!({"team": "Red"}).to_string(),
    )
    .await
    .ok();
    assert_eq!(none["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_label_and_filter() {
    let server = NatsServer::start();
    let url = server.url();
    let _processor = serve_binary(&url, &[]);
    let nats = connect(&url).await;
    wait_for_processors(&nats, 1).await;
    let (code, stdout, stderr) = run_paddock(&[
        "monitor",
        "--nats-url",
        &url,
        "--team",
        "Blue",
        "--car",
        "#7",
        "--duration",
        "1s",
        "--progress",
        "0",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let id = stdout
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("session ")
        .to_string();
    let (code, stdout, stderr) = run_paddock(&[
        "sessions",
        "create",
        "--nats-url",
        &url,
        "--team",
        "Red",
        "--car",
        "#1",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let red = stdout.lines().next().unwrap().to_string();
    let (code, stdout, stderr) =
        run_paddock(&["sessions", "list", "--nats-url", &url, "--team", "Blue"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&id) && stdout.contains("#7"), "{stdout}");
    assert!(!stdout.contains(&red), "{stdout}");
    let (code, _, stderr) =
        run_paddock(&["sessions", "create", "--nats-url", &url, "--team", "<b>"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("team may hold letters"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_is_listed_whole_across_partitions() {
    let server = NatsServer::start_websocket_with(paddock::broker::mappings_config(2));
    let url = server.url();
    let _owners = [
        serve_binary(&url, &["--partitions", "2", "--owns", "0"]),
        serve_binary(&url, &["--partitions", "2", "--owns", "1"]),
    ];
    let nats = connect(&url).await;
    wait_for_processors(&nats, 2).await;
    let mut blue = Vec::new();
    for n in 0..16 {
        blue.push(create_labelled(&nats, "Blue", &format!("#{n}")).await);
        create_labelled(&nats, "Red", &format!("#{n}")).await;
    }
    let partitions: std::collections::HashSet<u32> = blue
        .iter()
        .map(|id| {
            paddock::protocol::subjects::partition(&paddock::SessionId::parse(id).unwrap(), 2)
        })
        .collect();
    assert_eq!(
        partitions.len(),
        2,
        "sixteen sessions fall in both partitions"
    );
    let page = ask(
        &nats,
        "sessions.list",
        json!({"team": "Blue", "limit": 4}).to_string(),
    )
    .await
    .ok();
    assert_eq!(page["total"], 16);
    assert_eq!(page["count"], 4);
    let mut seen = ids_of(&page);
    let rest = ask(
        &nats,
        "sessions.list",
        json!({"team": "Blue", "offset": 4}).to_string(),
    )
    .await
    .ok();
    seen.extend(ids_of(&rest));
    seen.sort();
    blue.sort();
    assert_eq!(seen, blue);

    // Relabelled from whichever processor takes the request: the owner does it.
    for id in &blue {
        let doc = ask(
            &nats,
            "sessions.label",
            json!({"session_id": id, "team": "Green"}).to_string(),
        )
        .await
        .ok();
        assert_eq!(doc["team"], "Green");
    }
    let green = ask(&nats, "sessions.list", json!({"team": "Green"}).to_string())
        .await
        .ok();
    assert_eq!(green["total"], 16);
}

/// `paddock watch --team`: the team's cars by position, no other team's, and a
/// car that stops sending turns STALE (#28 item 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_shows_a_teams_tower() {
    let server = NatsServer::start();
    let url = server.url();
    let _processor = serve_binary(&url, &[]);
    let nats = connect(&url).await;
    wait_for_processors(&nats, 1).await;
    let second = create_labelled(&nats, "Blue", "#8").await;
    let first = create_labelled(&nats, "Blue", "#7").await;
    let red = create_labelled(&nats, "Red", "#1").await;
    let send = |id: &str, position: u32, driver: &str| {
        let frame = json!({"lap": 5, "position": position, "player_name": driver, "fuel": 30.0});
        let (nats, subject) = (nats.clone(), format!("session.{id}.telemetry"));
        async move {
            nats.publish(subject, frame.to_string().into())
                .await
                .unwrap();
            nats.flush().await.unwrap();
        }
    };
    send(&second, 2, "B. Second").await;
    send(&red, 1, "R. Other").await;
    let watch = Running::spawn(&[
        "watch",
        "--team",
        "Blue",
        "--plain",
        "--stale-after",
        "2s",
        "--nats-url",
        &url,
    ]);
    // The first car joins after the watch started: found by the next listing
    // (at once, on its creation event) and shown from its frames.
    let sender = {
        let (nats, subject) = (nats.clone(), format!("session.{first}.telemetry"));
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let frame = json!({"lap": 5, "position": 1, "player_name": "A. First", "fuel": 31.0});
            loop {
                nats.publish(subject.clone(), frame.to_string().into())
                    .await
                    .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
        })
    };
    let lines = watch.lines_for(std::time::Duration::from_secs(4));
    sender.abort();
    let tower = |lines: &[String]| -> Vec<String> {
        let start = lines
            .iter()
            .rposition(|l| l.starts_with("team Blue"))
            .unwrap();
        lines[start..].iter().take(4).cloned().collect()
    };
    let last = tower(&lines);
    assert_eq!(last[0], "team Blue: 2 cars", "{lines:?}");
    assert!(
        last[2].starts_with("P1") && last[2].contains("A. First"),
        "{last:?}"
    );
    assert!(
        last[3].starts_with("P2") && last[3].contains("#8"),
        "{last:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("R. Other")), "{lines:?}");
    // #8 sent once, more than two seconds ago.
    assert!(
        last[3].ends_with("STALE") && last[2].ends_with("LIVE"),
        "{last:?}"
    );
}

/// The next tower message on `sub` that `want` accepts (the feed repeats every
/// half second), failing the test after ten seconds.
async fn tower_until(sub: &mut async_nats::Subscriber, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let message = next(sub).await;
        let doc: Value = serde_json::from_slice(&message.payload).unwrap();
        if want(&doc) {
            return doc;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tower never became as wanted: {doc}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tower_feed_carries_each_teams_cars_with_pits_stints_and_fuel() {
    let app = spawn_app().await;
    let nats = app.client.clone();
    // A label with a space and a dot: its subject token is percent-encoded.
    let (_watcher, mut feed) =
        subscriber(&app.server.url(), "team.Blue%20No%2E2.tower".into()).await;
    let (_red_watcher, mut red_feed) = subscriber(&app.server.url(), "team.Red.tower".into()).await;
    let seven = create_labelled(&nats, "Blue No.2", "#7").await;
    let eight = create_labelled(&nats, "Blue No.2", "#8").await;
    let red = create_labelled(&nats, "Red", "#1").await;
    let send = |id: &String, frame: Value| {
        let (app, subject) = (&app, format!("session.{id}.telemetry"));
        async move { app.publish(subject, frame.to_string()).await }
    };
    // #7: laps 1-4 burning 3 L each, on the sim's clock, then a stop.
    // The feed sees the car on its first lap (as it does a real one, whose
    // laps take minutes), then its laps.
    for (lap, fuel, t) in [
        (1, 60.0, 0.0),
        (2, 57.0, 100.0),
        (3, 54.0, 200.0),
        (4, 51.0, 300.0),
    ] {
        send(
            &seven,
            json!({"lap": lap, "fuel": fuel, "session_time": t, "in_pits": false,
            "position": 3, "player_name": "Ann", "gap_ahead": 1.5, "tyre_compound": "soft",
            "laps_left": 24 - lap, "fuel_capacity": 62.0}),
        )
        .await;
        if lap == 1 {
            tower_until(&mut feed, |doc| doc["cars"][0]["lap"] == 1.0).await;
        }
    }
    // #8's front-left brake past 700 °C: its alert rides in its row.
    send(
        &eight,
        json!({"lap": 4, "position": 2, "player_name": "Bob",
            "brake_temps": {"fl": 750, "fr": 500, "rl": 400, "rr": 400}}),
    )
    .await;
    send(&red, json!({"lap": 1, "position": 1})).await;
    let doc = tower_until(&mut feed, |doc| {
        doc["cars"]
            .as_array()
            .is_some_and(|cars| cars.len() == 2 && cars[1]["fuel"] == 51.0)
    })
    .await;
    assert_eq!(doc["team"], "Blue No.2");
    let cars = doc["cars"].as_array().unwrap();
    assert_eq!(cars[0]["session_id"], eight.as_str(), "by position: {doc}");
    assert_eq!(
        (&cars[0]["car"], &cars[0]["driver"]),
        (&json!("#8"), &json!("Bob"))
    );
    let ann = &cars[1];
    assert_eq!(ann["fuel_per_lap"], 3.0, "{ann}");
    assert_eq!(ann["fuel_laps"], 17.0);
    // The strategy's: 20 laps × 3 L + 1 lap's reserve − 51 L; 17 laps in the
    // tank less the reserve from lap 4.
    assert_eq!(
        (
            &ann["race_laps_left"],
            &ann["fuel_to_add"],
            &ann["last_lap_to_stop"]
        ),
        // Laps are JSON integers.
        (&json!(20), &json!(12.0), &json!(20))
    );
    // One stop does it: the tank less the reserve has room for 59 L.
    assert_eq!(
        (&ann["next_stop_fuel"], &ann["stops_needed"]),
        (&json!(12.0), &json!(1))
    );
    assert_eq!(
        (&ann["gap_ahead"], &ann["tyre_compound"]),
        (&json!(1.5), &json!("soft"))
    );
    assert_eq!(
        (&ann["stint_laps"], &ann["stint_s"], &ann["pit_stops"]),
        (&json!(3), &json!(300.0), &json!(0))
    );
    assert!(
        !doc.to_string().contains(red.as_str()),
        "another team's car: {doc}"
    );
    let red_doc = tower_until(&mut red_feed, |_| true).await;
    assert_eq!(red_doc["cars"][0]["session_id"], red.as_str());
    // Alerts are checked once a second, the tower every half: a later message.
    let doc = tower_until(&mut feed, |doc| doc["cars"][0]["alerts"].is_array()).await;
    assert_eq!(
        doc["cars"][0]["alerts"],
        json!([{"kind": "brake_hot", "level": "warning", "value": 750.0,
            "threshold": 700.0, "message": "FL brake at 750 °C"}]),
        "{doc}"
    );
    assert!(
        doc["cars"][1].get("alerts").is_none(),
        "a car without alerts has none listed: {doc}"
    );

    // In the pits for several ticks, as a real stop is (seconds, frames all
    // the while): one stop, however many ticks see it. Then out on lap 5 with
    // a full tank: a new stint.
    let in_pits = |t: f64| json!({"lap": 4, "fuel": 50.0, "session_time": t, "in_pits": true});
    send(&seven, in_pits(330.0)).await;
    for tick in 0..4 {
        if tick == 2 {
            send(&seven, in_pits(335.0)).await;
        }
        let doc = tower_until(&mut feed, |doc| doc["cars"][1]["in_pits"] == true).await;
        assert_eq!(
            doc["cars"][1]["pit_stops"], 1,
            "tick {tick} in the pits: {doc}"
        );
    }
    send(
        &seven,
        json!({"lap": 5, "fuel": 90.0, "session_time": 360.0, "in_pits": false}),
    )
    .await;
    let doc = tower_until(&mut feed, |doc| doc["cars"][1]["fuel"] == 90.0).await;
    let ann = &doc["cars"][1];
    assert_eq!(
        (&ann["pit_stops"], &ann["stint_laps"], &ann["stint_s"]),
        (&json!(1), &json!(0), &json!(0.0)),
        "{ann}"
    );

    // A deleted car leaves its team's next message.
    ask(
        &nats,
        "sessions.delete",
        json!({"session_id": eight}).to_string(),
    )
    .await
    .ok();
    let doc = tower_until(&mut feed, |doc| doc["cars"].as_array().unwrap().len() == 1).await;
    assert_eq!(doc["cars"][0]["session_id"], seven.as_str());
}

#[cfg(target_os = "linux")]
/// Runs `paddock <args>` in a terminal of its own (util-linux's `script` gives
/// it a pseudo-terminal, 100×30), waits until it shows `shows`, presses q and
/// answers how long it took to end, and its exit status.
fn in_a_terminal_press_q(args: &str, shows: &str) -> (std::time::Duration, bool) {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let command = format!(
        "stty cols 100 rows 30; exec '{}' {}",
        env!("CARGO_BIN_EXE_paddock"),
        args
    );
    /// Killed when the test ends, however it ends (its terminal closes with it).
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reaped(
        std::process::Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("util-linux's `script` runs (it gives watch a terminal)"),
    );
    let mut stdout = child.0.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let shown = || String::from_utf8_lossy(&seen.lock().unwrap()).contains(shows);
    let deadline = Instant::now() + PATIENCE;
    while !shown() {
        assert!(
            Instant::now() < deadline,
            "watch never showed {shows:?}: {}",
            String::from_utf8_lossy(&seen.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pressed = Instant::now();
    child.0.stdin.as_mut().unwrap().write_all(b"q").unwrap();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        if pressed.elapsed() > PATIENCE {
            panic!("watch did not end on q within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = pressed.elapsed();
    reader.join().unwrap();
    (took, status.success())
}

/// util-linux's `script` gives `watch` its terminal (BSD's takes other flags).
#[cfg(target_os = "linux")]
static TERMINAL_TEST: Group = Group::new(
    "teams::watch_in_a_terminal test",
    "sudo apt-get install bsdutils",
);

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_in_a_terminal_ends_on_q_for_a_team_and_for_one_car() {
    if on_path(&["script"]).is_none() {
        TERMINAL_TEST.left_out("script");
        return;
    }
    let server = NatsServer::start();
    let url = server.url();
    let _processor = serve_binary(&url, &[]);
    let nats = connect(&url).await;
    wait_for_processors(&nats, 1).await;
    let id = create_labelled(&nats, "Blue", "#7").await;
    let frame = json!({"lap": 5, "position": 1, "player_name": "A. First", "fuel": 31.0});
    nats.publish(format!("session.{id}.telemetry"), frame.to_string().into())
        .await
        .unwrap();
    nats.flush().await.unwrap();
    for (args, shows) in [
        // The screen is drawn a cell at a time: one word is looked for.
        (format!("watch --team Blue --nats-url {url}"), "Blue:"),
        (format!("watch {id} --nats-url {url}"), "First"),
    ] {
        let (took, ok) = tokio::task::spawn_blocking(move || in_a_terminal_press_q(&args, shows))
            .await
            .unwrap();
        assert!(ok, "{shows}: watch ended with a failure on q");
        assert!(
            took < std::time::Duration::from_secs(2),
            "{shows}: {took:?} after q"
        );
    }
}
