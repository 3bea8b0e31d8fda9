//! The engineer's numbers over the broker (#29): a race scripted frame by frame
//! (known fuel use, a pit stop with a refuel between the lines, a driver
//! change, a race clock counting down) gives exact stints, fuel to the finish,
//! and CSV that reads back.

use serde_json::{Value, json};

use crate::support::*;

/// Lap times 100 s, 3 L a lap, 4 frames a lap; on lap 5 the car stops mid-lap
/// (two frames `in_pits`, fuel to 60 L, lap time 130 s) and Bob takes over from
/// Ann. Bob's first two laps, on cold tyres, take 110 s and 4 L: his stint's
/// means are not its last five laps', so the strategy's five-lap window
/// shows. The race is 3,600 s. Ends with the car on lap 13's first frame.
async fn scripted_race(app: &TestApp, id: &str) {
    for frame in scripted_race_frames() {
        app.send_telemetry(id, frame.to_string()).await;
    }
    sync(&app.client).await;
}

/// [`scripted_race`]'s frames, in order (docs.rs captures the same race).
pub(crate) fn scripted_race_frames() -> Vec<Value> {
    let mut frames = Vec::new();
    let lap_time = |lap: u64| match lap {
        5 => 130.0,
        6 | 7 => 110.0,
        _ => 100.0,
    };
    let burn = |lap: u64| if lap == 6 || lap == 7 { 4.0 } else { 3.0 };
    let mut fuel = 50.0_f64;
    let mut clock = 0.0_f64;
    let mut last_lap_time: Option<f64> = None;
    for lap in 1..=12u64 {
        let pit_lap = lap == 5;
        let time = lap_time(lap);
        for step in 0..4u64 {
            let driver = if lap < 5 || (pit_lap && step < 2) {
                "Ann"
            } else {
                "Bob"
            };
            let in_pits = pit_lap && (step == 1 || step == 2);
            if pit_lap && step == 2 {
                fuel = 60.0 + 0.75 * 3.0; // refuelled; the lap's last quarter still burns
            }
            let frame = json!({
                "lap": lap,
                "fuel": fuel,
                "fuel_capacity": 75.0,
                "player_name": driver,
                "in_pits": in_pits,
                "last_lap_time": last_lap_time,
                "session_time": clock,
                "session_time_left": 3600.0 - clock,
                "tire_temps": {"fl": 80.0 + lap as f64, "fr": 81.0, "rl": 82.0, "rr": 83.0},
            });
            frames.push(frame);
            // A lap's line is its last frame, so the quarter after it is
            // burned on the next lap: line to line, each lap burns its own.
            fuel -= burn(if step == 3 { lap + 1 } else { lap }) / 4.0;
            clock += time / 4.0;
        }
        // The line: the next frame carries this lap's time.
        last_lap_time = Some(time);
    }
    // The car on lap 13's first frame, so lap 12 is complete too.
    frames.push(
        json!({"lap": 13, "fuel": fuel, "fuel_capacity": 75.0, "player_name": "Bob",
        "in_pits": false, "last_lap_time": 100.0, "session_time": clock,
        "session_time_left": 3600.0 - clock}),
    );
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_race_gives_stints_fuel_to_the_finish_and_csv() {
    let app = spawn_app().await;
    let id = app.new_session().await;
    scripted_race(&app, &id).await;

    let reply = app.request(&format!("sessions.stints.{id}"), "").await.ok();
    let stints = reply["stints"].as_array().unwrap();
    assert_eq!(stints.len(), 2, "{reply:#}");
    let (ann, bob) = (&stints[0], &stints[1]);
    assert_eq!(ann["driver"], "Ann");
    assert_eq!(
        (ann["first_lap"].as_f64(), ann["last_lap"].as_f64()),
        (Some(1.0), Some(5.0))
    );
    assert_eq!(ann["ended_by"], "pit_stop");
    assert_eq!(ann["green_laps"], 4);
    assert_eq!(ann["best_lap_time"], 100.0);
    assert_eq!(ann["duration_s"], 530.0);
    // The lines of laps 1-4 are 3 L apart: laps 2-4 burned 9 L.
    assert_eq!(
        (ann["fuel_used"].as_f64(), ann["fuel_per_lap"].as_f64()),
        (Some(9.0), Some(3.0))
    );
    assert_eq!(bob["driver"], "Bob");
    assert_eq!(
        (bob["first_lap"].as_f64(), bob["laps"].as_u64()),
        (Some(6.0), Some(7))
    );
    assert_eq!(bob["ended_by"], Value::Null);
    // The whole stint: 2 × 4 L + 5 × 3 L over 7 laps, 2 × 110 s + 5 × 100 s.
    assert_eq!(
        (bob["fuel_per_lap"].as_f64(), bob["mean_lap_time"].as_f64()),
        (Some(3.286), Some(102.857))
    );
    assert_eq!(bob["start_time_s"], 530.0);

    // Fuel to the finish, on lap 13's first frame, from the stint's last 5
    // laps (3 L, 100 s), not its first two: 3,600 - 1,250 = 2,350 s left at
    // 100 s a lap is 24 laps; 72 L to the flag plus 3 L of reserve.
    let doc = app.get(&id).await.ok();
    let s = &doc["strategy"];
    let fuel = doc["telemetry"]["fuel"].as_f64().unwrap();
    assert_eq!(s["fuel_per_lap"], 3.0, "the last 5 laps' pace: {s}");
    assert_eq!(s["fuel_per_lap_from"], "stint");
    assert_eq!(s["lap_time"], 100.0, "the last 5 laps' pace: {s}");
    assert_eq!(s["race_laps_left"], 24.0);
    assert_eq!(s["fuel_to_finish"], 72.0);
    let expected = ((72.0 + 3.0 - fuel) * 100.0_f64).round() / 100.0;
    assert_eq!(
        s["fuel_to_add"].as_f64(),
        Some(expected),
        "{s} with {fuel} L"
    );
    assert_eq!(s["reserve_laps"], 1.0);
    assert_eq!(
        s["last_lap_to_stop"].as_f64(),
        Some(13.0 + (fuel / 3.0 - 1.0).floor())
    );

    // The same as CSV from the command, read back.
    let url = app.server.url();
    let (code, stdout, stderr) =
        run_paddock(&["sessions", "laps", &id, "--csv", "--nats-url", &url]).await;
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<Vec<&str>> = stdout
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').collect())
        .collect();
    let header = &rows[0];
    assert_eq!(rows.len(), 13, "a header and 12 laps: {stdout}");
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("{name} in {header:?}"))
    };
    let (lap, time, driver, used, pits, temp) = (
        col("lap"),
        col("lap_time_s"),
        col("driver"),
        col("fuel_used_l"),
        col("in_pits"),
        col("tyre_temp_fl_c"),
    );
    assert_eq!(rows[3][lap], "3");
    // Whole numbers as integers, as the page's CSV writes them.
    assert_eq!(rows[3][time], "100");
    assert_eq!(rows[3][used], "3");
    assert_eq!(rows[3][temp], "83");
    assert_eq!(
        (rows[5][driver], rows[5][pits], rows[5][time]),
        ("Bob", "true", "130")
    );
    assert_eq!(
        rows[5][used], "",
        "a refuelled lap burned nothing countable"
    );
    assert_eq!(
        (rows[6][driver], rows[6][time], rows[6][used]),
        ("Bob", "110", "4")
    );
    let (code, stdout, stderr) =
        run_paddock(&["sessions", "stints", &id, "--csv", "--nats-url", &url]).await;
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("stint,driver,first_lap"), "{stdout}");
    assert!(lines[1].starts_with("1,Ann,1,5,5,"), "{stdout}");
    assert!(lines[1].ends_with(",pit_stop"), "{stdout}");
    let (code, stdout, _) = run_paddock(&["sessions", "stints", &id, "--nats-url", &url]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("running"), "{stdout}");

    // Stints stay readable once the session ends; unknown ids are 404.
    app.request("sessions.delete", id_body(&id)).await.ok();
    let reply = app.request(&format!("sessions.stints.{id}"), "").await.ok();
    assert_eq!(reply["stints"].as_array().unwrap().len(), 2);
    // Its last stint no longer runs on: the session's end ended it.
    assert_eq!(reply["stints"][0]["ended_by"], "pit_stop");
    assert_eq!(reply["stints"][1]["ended_by"], "session_end");
    let (code, stdout, _) = run_paddock(&["sessions", "stints", &id, "--nats-url", &url]).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("session_end") && !stdout.contains("running"),
        "{stdout}"
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    app.request(&format!("sessions.stints.{unknown}"), "")
        .await
        .expect_error(404);
}

/// Alerts (#29 item 3) over the broker: each raised once on
/// `session.<id>.alerts` and listed in the document while active, each
/// cleared once; checked once a second, so a burst of frames raises nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_raised_and_cleared_once_and_listed_in_the_document() {
    use futures::StreamExt;
    let mut limits = test_limits();
    limits.alerts.stale_s = 2.0;
    let app = spawn_app_with(limits).await;
    let id = app.new_session().await;
    let mut alerts = app
        .client
        .subscribe(format!("session.{id}.alerts"))
        .await
        .unwrap();
    sync(&app.client).await;
    let frame = |lap: u64, fuel: f64, brake: f64| {
        json!({"lap": lap, "fuel": fuel, "last_lap_time": 100.0,
            "brake_temps": {"fl": brake, "fr": 500, "rl": 400, "rr": 400}})
        .to_string()
    };
    // Four laps at 3 L a lap: the pace the fuel alerts read.
    for lap in 1..=5u64 {
        app.send_telemetry(&id, frame(lap, 50.0 - 3.0 * lap as f64, 500.0))
            .await;
    }
    // 5 L is under 2 laps; a brake at 750 °C; sent many times within a second.
    for _ in 0..20 {
        app.send_telemetry(&id, frame(5, 5.0, 750.0)).await;
    }
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut next_event = async || {
        let message = tokio::time::timeout(std::time::Duration::from_secs(5), alerts.next())
            .await
            .expect("an alert event")
            .unwrap();
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(event["session_id"], id.as_str());
        (
            event["state"].as_str().unwrap().to_string(),
            event["kind"].as_str().unwrap().to_string(),
            event,
        )
    };
    for _ in 0..2 {
        let (state, kind, event) = next_event().await;
        if kind == "fuel_low" {
            assert_eq!(
                (event["value"].as_f64(), event["threshold"].as_f64()),
                (Some(1.67), Some(2.0))
            );
            assert_eq!(event["level"], "warning");
        }
        seen.push((state, kind));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("raised".to_string(), "brake_hot".to_string()),
            ("raised".to_string(), "fuel_low".to_string())
        ]
    );
    let doc = app.get(&id).await.ok();
    let mut active: Vec<&str> = doc["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    active.sort();
    assert_eq!(active, ["brake_hot", "fuel_low"], "{doc:#}");

    // Refuelled and cooled: both clear, once.
    for _ in 0..10 {
        app.send_telemetry(&id, frame(6, 60.0, 500.0)).await;
    }
    let mut cleared = vec![next_event().await, next_event().await]
        .into_iter()
        .map(|(state, kind, _)| (state, kind))
        .collect::<Vec<_>>();
    cleared.sort();
    assert_eq!(
        cleared,
        [
            ("cleared".to_string(), "brake_hot".to_string()),
            ("cleared".to_string(), "fuel_low".to_string())
        ]
    );
    let doc = app.get(&id).await.ok();
    assert_eq!(doc["alerts"], json!([]));

    // Silence past the stale window (2 s here), then a frame again.
    let (state, kind, _) = next_event().await;
    assert_eq!((state.as_str(), kind.as_str()), ("raised", "stale"));
    app.send_telemetry(&id, frame(6, 60.0, 500.0)).await;
    let (state, kind, _) = next_event().await;
    assert_eq!((state.as_str(), kind.as_str()), ("cleared", "stale"));
    // Nothing else is announced while the car keeps reporting. Frames keep
    // coming meanwhile: silence past the 2 s window would rightly raise stale
    // again, and a loaded machine may see the clear late.
    let sender = {
        let (client, subject) = (app.client.clone(), format!("session.{id}.telemetry"));
        let body = frame(6, 60.0, 500.0);
        tokio::spawn(async move {
            loop {
                client
                    .publish(subject.clone(), body.clone().into())
                    .await
                    .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        })
    };
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(1500), alerts.next()).await;
    sender.abort();
    assert!(quiet.is_err(), "announced again: {quiet:?}");
}

#[tokio::test]
async fn a_teams_own_thresholds_hold_for_its_cars_only() {
    let mut limits = test_limits();
    let blue = limits.alerts.with("brake_max=800").unwrap();
    limits.team_alerts.insert("Blue".into(), blue);
    let app = spawn_app_with(limits).await;
    let body = json!({"team": "Blue", "car": "#7"}).to_string();
    let blues = app.request("sessions.create", body).await.ok()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = app.new_session().await;
    // 750 °C: past the serve-wide 700, inside Blue's 800.
    let frame = json!({"lap": 1, "brake_temps": {"fl": 750, "fr": 500, "rl": 400, "rr": 400}});
    for id in [&blues, &other] {
        app.send_telemetry(id, frame.to_string()).await;
    }
    let kinds = |doc: &Value| -> Vec<String> {
        doc["alerts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["kind"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let doc = app
        .get_until(&other, "brake_hot on the unlabelled car", |d| {
            kinds(d) == ["brake_hot"]
        })
        .await;
    assert_eq!(doc["alerts"][0]["threshold"], 700.0);
    // The same check ran for Blue's car in the same second.
    assert!(kinds(&app.get(&blues).await.ok()).is_empty());
    app.send_telemetry(&blues, frame.to_string().replace("750", "850"))
        .await;
    let doc = app
        .get_until(&blues, "brake_hot past Blue's 800", |d| {
            kinds(d) == ["brake_hot"]
        })
        .await;
    assert_eq!(doc["alerts"][0]["threshold"], 800.0);
}
