//! The field (every car on track, `session.<id>.field`, docs/field.schema.json):
//! kept, bounded and served by the processor, delivered live, and filled from
//! a scripted EA F1 race of 22 cars over UDP and from a stand-in for ACC's
//! broadcasting API, each through a running `paddock monitor`.

use std::net::UdpSocket;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::*;

/// A field of `n` cars, leader first.
fn field_of(n: u16) -> Value {
    let cars: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "index": i, "position": i + 1, "driver": format!("D{i}"),
                "gap_leader": f64::from(i) * 1.5, "status": "running"
            })
        })
        .collect();
    json!({"game": "test", "cars": cars})
}

/// The field without the monitor's stamp.
fn unstamped(mut field: Value) -> Value {
    if let Some(map) = field.as_object_mut() {
        map.remove("timestamp");
    }
    field
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_is_kept_served_delivered_live_and_bad_ones_are_refused_and_counted() {
    let app = spawn_app().await;
    let id = app.new_session().await;
    let (_dashboard, mut live) = subscriber(&app.server.url(), format!("session.{id}.>")).await;
    let subject = format!("session.{id}.field");

    let field = field_of(22);
    app.request(&subject, field.to_string()).await.ok();
    let message = next(&mut live).await;
    assert_eq!(message.subject.as_str(), subject, "delivered live");
    let doc = app.get(&id).await.ok();
    assert_eq!(doc["field"], field);
    assert!(is_rfc3339_utc(&doc["field_timestamp"]));
    assert_eq!(doc["stats"]["field_count"], 1);
    assert_eq!(doc["telemetry"], Value::Null, "a field is not a frame");

    // Refused, answered 400 with the reason, counted; the last good field stays.
    let mut too_many = field_of(129);
    let twice = json!({"cars": [
        {"index": 1, "position": 1, "status": "running"},
        {"index": 1, "position": 2, "status": "running"}
    ]});
    too_many["game"] = json!("x");
    for (bad, says) in [
        (too_many.to_string(), "129 cars, at most 128"),
        (twice.to_string(), "car 1: listed twice"),
        (r#"{"cars": [{"index": 1}]}"#.to_string(), "missing field"),
        ("[1]".to_string(), "object"),
    ] {
        let answer = app.request(&subject, bad).await;
        answer.expect_error(400);
        let error = answer.body["error"].as_str().unwrap();
        assert!(error.contains(says), "{error}");
    }
    let doc = app.get(&id).await.ok();
    assert_eq!(doc["field"], field, "the last good field is kept");
    assert_eq!(doc["stats"]["rejected_count"], 4);

    // Bounded in bytes like frames: past --max-payload, 413.
    let mut big = field_of(1);
    big["pad"] = json!("x".repeat(70 * 1024));
    app.request(&subject, big.to_string())
        .await
        .expect_error(413);

    // A rate of its own (--max-field-rate 10, a burst of 20): a flood is
    // refused and counted, and the telemetry's allowance is untouched.
    let mut limited = 0;
    for _ in 0..40 {
        let answer = app.request(&subject, field.to_string()).await;
        if answer.code == Some(429) {
            limited += 1;
        }
    }
    assert!(limited >= 15, "{limited} of 40 refused");
    app.request(&format!("session.{id}.telemetry"), frame(1))
        .await
        .ok();
    let doc = app.get(&id).await.ok();
    assert_eq!(doc["stats"]["rate_limited_count"], limited);
    let stats = app.request("sessions.stats", "{}").await.ok();
    assert!(stats["field_frames"].as_u64().unwrap() >= 2, "{stats}");
}

/// One car of the scripted F1 race, as the game's lap data, participants and
/// car status packets carry it.
#[derive(Clone)]
struct F1Car {
    position: u8,
    lap: u8,
    last_lap_ms: u32,
    gap_ms: u16,
    interval_ms: u16,
    pit_status: u8,
    pit_stops: u8,
    result: u8,
    compound: u8,
    tyre_age: u8,
}

const PLAYER: usize = 3;
const CARS: usize = 22;

fn f1_packet(id: u8, len: usize, fill: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0..2].copy_from_slice(&2024u16.to_le_bytes());
    p[2] = 24;
    p[5] = 1;
    p[6] = id;
    p[7..15].copy_from_slice(&0x4242u64.to_le_bytes());
    p[27] = PLAYER as u8;
    p[28] = 255;
    fill(&mut p[29..]);
    p
}

/// One tick of the game for every car: session, lap data, participants, car status.
fn f1_tick(cars: &[F1Car]) -> Vec<Vec<u8>> {
    let session = f1_packet(1, 753, |b| {
        b[3] = 50;
        b[4..6].copy_from_slice(&5412u16.to_le_bytes());
        b[6] = 15;
    });
    let laps = f1_packet(2, 1285, |b| {
        for (i, car) in cars.iter().enumerate() {
            let c = &mut b[i * 57..(i + 1) * 57];
            c[0..4].copy_from_slice(&car.last_lap_ms.to_le_bytes());
            c[8..10].copy_from_slice(&30_250u16.to_le_bytes());
            c[14..16].copy_from_slice(&car.interval_ms.to_le_bytes());
            c[17..19].copy_from_slice(&car.gap_ms.to_le_bytes());
            c[20..24].copy_from_slice(&(1000.5f32 + i as f32).to_le_bytes());
            c[32] = car.position;
            c[33] = car.lap;
            c[34] = car.pit_status;
            c[35] = car.pit_stops;
            c[38] = if i == 9 { 5 } else { 0 };
            c[44] = 4;
            c[45] = car.result;
        }
    });
    let names = f1_packet(4, 1350, |b| {
        b[0] = CARS as u8;
        for i in 0..CARS {
            let c = &mut b[1 + i * 60..1 + (i + 1) * 60];
            c[3] = (i % 10) as u8;
            c[5] = 10 + i as u8;
            let name = format!("DRIVER{i}");
            c[7..7 + name.len()].copy_from_slice(name.as_bytes());
        }
    });
    let status = f1_packet(7, 1239, |b| {
        for (i, car) in cars.iter().enumerate() {
            let c = &mut b[i * 55..(i + 1) * 55];
            c[26] = car.compound;
            c[27] = car.tyre_age;
        }
    });
    vec![session, laps, names, status]
}

const TEAMS: [&str; 10] = [
    "Mercedes",
    "Ferrari",
    "Red Bull Racing",
    "Williams",
    "Aston Martin",
    "Alpine",
    "RB",
    "Haas",
    "McLaren",
    "Sauber",
];

/// The field the monitor must send for `cars`, worked out by hand from the
/// packets' meaning (not from the decoder), with each car's best lap so far.
fn f1_expected(cars: &[F1Car], best: &[f64]) -> Value {
    let mut order: Vec<usize> = (0..CARS).collect();
    order.sort_by_key(|i| (cars[*i].position, *i));
    let rows: Vec<Value> = order
        .into_iter()
        .map(|i| {
            let c = &cars[i];
            let status = match c.result {
                3 => "finished",
                4..=7 => "retired",
                _ if c.pit_status != 0 => "pitting",
                _ => "running",
            };
            json!({
                "index": i, "position": c.position, "class": null, "class_position": c.position,
                "lap": c.lap, "lap_distance": 1000.5 + i as f64,
                "last_lap": f64::from(c.last_lap_ms) / 1000.0, "best_lap": best[i],
                "sector_times": [30.25, null, null],
                "gap_leader": f64::from(c.gap_ms) / 1000.0,
                "interval": f64::from(c.interval_ms) / 1000.0,
                "in_pits": c.pit_status != 0, "pit_stops": c.pit_stops,
                "penalties_s": if i == 9 { 5 } else { 0 }, "status": status,
                "player": i == PLAYER, "driver": format!("DRIVER{i}"),
                "team": TEAMS[i % 10], "race_number": 10 + i,
                "tyre": match c.compound { 16 => "soft", 17 => "medium", _ => "hard" },
                "tyre_age_laps": c.tyre_age,
            })
        })
        .collect();
    json!({"game": "F1 24", "track_length": 5412, "cars": rows})
}

/// Sends `cars` every 40 ms until the session's field is `want` (the last
/// live message too), and returns the document.
async fn f1_until(
    app: &TestApp,
    id: &str,
    live: &mut async_nats::Subscriber,
    socket: &UdpSocket,
    to: &str,
    cars: &[F1Car],
    want: &Value,
) -> Value {
    let deadline = Instant::now() + PATIENCE;
    let mut last_live = Value::Null;
    loop {
        for p in f1_tick(cars) {
            socket.send_to(&p, to).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(1), live.next()).await {
            last_live = unstamped(serde_json::from_slice(&m.payload).unwrap());
        }
        let doc = app.get(id).await.ok();
        if unstamped(doc["field"].clone()) == *want && last_live == *want {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "the field never became\n{want}\nlast in the document:\n{}\nlast live:\n{last_live}",
            unstamped(doc["field"].clone())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_f1_race_of_22_cars_gives_the_field_exactly_live_and_in_the_document() {
    let app = spawn_app().await;
    let (monitor, to, _) = crate::sims::f1_monitor(&app.server.url(), 20, &["--field-hz", "20"]);
    let id = monitor.line().strip_prefix("session ").unwrap().to_string();
    let (_dashboard, mut live) = subscriber(&app.server.url(), format!("session.{id}.field")).await;
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();

    // Lap 5, in grid order, a second and a half apart, on mediums.
    let mut cars: Vec<F1Car> = (0..CARS)
        .map(|i| F1Car {
            position: i as u8 + 1,
            lap: 5,
            last_lap_ms: 90_000 + 100 * i as u32,
            gap_ms: 1_500 * i as u16,
            interval_ms: if i == 0 { 0 } else { 1_500 },
            pit_status: 0,
            pit_stops: 0,
            result: 2,
            compound: 17,
            tyre_age: 5,
        })
        .collect();
    let mut best: Vec<f64> = cars
        .iter()
        .map(|c| f64::from(c.last_lap_ms) / 1000.0)
        .collect();
    let want = f1_expected(&cars, &best);
    f1_until(&app, &id, &mut live, &socket, &to, &cars, &want).await;

    // Lap 6: car 5 passes car 4 (a faster lap), car 7 dives into the pits,
    // car 21 retires.
    for car in cars.iter_mut() {
        car.lap = 6;
        car.last_lap_ms += 500;
    }
    cars[5].position = 5;
    cars[5].last_lap_ms = 88_000;
    cars[4].position = 6;
    cars[7].pit_status = 1;
    cars[21].result = 7;
    for (i, b) in best.iter_mut().enumerate() {
        *b = b.min(f64::from(cars[i].last_lap_ms) / 1000.0);
    }
    let want = f1_expected(&cars, &best);
    f1_until(&app, &id, &mut live, &socket, &to, &cars, &want).await;

    // Out of the pits on softs, two places down.
    cars[7].pit_status = 0;
    cars[7].pit_stops = 1;
    cars[7].compound = 16;
    cars[7].tyre_age = 0;
    // Cars 8 and 9 (ninth and tenth) move up past it: car 7 is tenth.
    cars[7].position = 10;
    cars[8].position = 8;
    cars[9].position = 9;
    let want = f1_expected(&cars, &best);
    let doc = f1_until(&app, &id, &mut live, &socket, &to, &cars, &want).await;
    let field = &doc["field"]["cars"];
    assert_eq!(field.as_array().unwrap().len(), 22);
    assert_eq!(field[9]["driver"], "DRIVER7");
    assert_eq!(field[9]["pit_stops"], 1);
    assert_eq!(field[21]["status"], "retired");
    assert_eq!(
        doc["telemetry"]["player_name"], "DRIVER3",
        "the player's car as frames"
    );
    // Where a stop now rejoins, by hand: the player (car 3) is 4.5 s behind
    // the leader; no stop of its own yet, so serve's --pit-loss (25 s): out
    // at 29.5 s, behind car 19 (#29, 28.5 s: 1.0 s) and ahead of car 20 (#30,
    // 30.0 s: 0.5 s); 19 cars ahead (cars 0-19 but itself; car 21 retired).
    let rejoin = &doc["rejoin"];
    assert_eq!(
        rejoin["message"], "stop now: rejoin P20, 1.0 s behind #29",
        "{rejoin}"
    );
    assert_eq!(
        (&rejoin["pit_loss"], &rejoin["pit_loss_from"]),
        (&json!(25.0), &json!("default"))
    );
    assert_eq!(
        (&rejoin["behind"]["race_number"], &rejoin["behind"]["gap"]),
        (&json!(30), &json!(0.5))
    );
    // The car behind now (car 4, 1.5 s back) is closer than a stop costs.
    assert_eq!(rejoin["undercut_window"], false);

    // `paddock sessions field`: the table, --json and --csv.
    let url = app.server.url();
    let (code, table, err) = run_paddock(&["sessions", "field", &id, "--nats-url", &url]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("POS"), "{table}");
    assert!(
        lines[4].starts_with("4*"),
        "the player's car is marked: {table}"
    );
    assert!(
        lines[10].contains("DRIVER7") && lines[10].contains("soft (0)"),
        "{table}"
    );
    assert!(lines[22].contains("retired"), "{table}");
    let (code, json_out, _) =
        run_paddock(&["sessions", "field", &id, "--json", "--nats-url", &url]).await;
    assert_eq!(code, 0);
    assert_eq!(
        unstamped(serde_json::from_str(&json_out).unwrap()),
        want,
        "--json prints the field as sent"
    );
    let (code, csv, _) =
        run_paddock(&["sessions", "field", &id, "--csv", "--nats-url", &url]).await;
    assert_eq!(code, 0);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 23);
    assert!(
        rows[0].starts_with("position,class,class_position,index"),
        "{csv}"
    );
    assert!(rows[10].starts_with("10,,10,7,17,DRIVER7,Haas,6,"), "{csv}");
    assert_eq!(monitor.stop("-INT"), 0);
}

/// A stand-in for ACC's broadcasting endpoint, built from the SDK's message
/// layouts (src/sources/acc_broadcast.rs `fixtures`).
mod fake_acc {
    pub use paddock::sources::acc_broadcast::fixtures::*;
}

/// `paddock monitor --source acc-broadcast` to the game at `host`, plus `extra`.
fn acc_monitor(url: &str, host: &str, extra: &[&str], stderr: Stdio) -> Running {
    Running::from_child(
        paddock()
            .args(["monitor", "--nats-url", url, "--source", "acc-broadcast"])
            .args(["--acc-host", host, "--progress", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    )
}

async fn recv_from(socket: &tokio::net::UdpSocket) -> (Vec<u8>, std::net::SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(PATIENCE, socket.recv_from(&mut buf))
        .await
        .expect("the monitor sent nothing")
        .unwrap();
    buf.truncate(n);
    (buf, from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acc_broadcasting_session_gives_the_field_and_the_monitor_registers_again_after_a_restart()
 {
    use fake_acc::*;
    let app = spawn_app().await;
    let acc = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let host = acc.local_addr().unwrap().to_string();
    let monitor = acc_monitor(
        &app.server.url(),
        &host,
        &["--acc-password", "secret", "--hz", "20", "--field-hz", "20"],
        Stdio::null(),
    );
    let id = monitor.line().strip_prefix("session ").unwrap().to_string();

    // The registration, as the SDK lays it out; then the entry list and track.
    let (register, monitor_at) = recv_from(&acc).await;
    assert_eq!(
        register,
        paddock::sources::acc_broadcast::register("paddock", "secret", 250, "")
    );
    acc.send_to(&registration_result(17, true, ""), monitor_at)
        .await
        .unwrap();
    let mut asked = vec![recv_from(&acc).await.0, recv_from(&acc).await.0];
    asked.sort();
    assert_eq!(
        asked,
        vec![vec![10, 17, 0, 0, 0], vec![11, 17, 0, 0, 0]],
        "entry list and track data asked with the connection id"
    );
    let entries = [
        entry_list(17, &[1, 2, 3]),
        entry_list_car(1, 30, "Team Alpha", 98, &[("Ann", "Alpha")]),
        entry_list_car(2, 32, "Team Beta", 71, &[("Bob", "Beta"), ("Cy", "Beta")]),
        entry_list_car(3, 55, "Team Gamma", 12, &[("Dee", "Gamma")]),
        track_data(17, "Spa", 7004),
    ];
    for e in &entries {
        acc.send_to(e, monitor_at).await.unwrap();
    }
    // Ann leads Bob by a tenth of a lap, Dee (GT4) a lap down; the camera on Bob.
    let car = |car: u16, position: u16, laps: u16, spline: f32, location: u8| CarUpdate {
        car,
        location,
        kmh: 180,
        position,
        spline,
        laps,
        best_ms: Some(140_000),
        last_ms: Some(141_000),
        last_splits: [Some(40_000), Some(60_000), Some(41_000)],
    };
    let round = |bob_location: u8| {
        vec![
            realtime_update(10, 600_000.0, 3_600_000.0, 2),
            realtime_car_update(&car(1, 1, 10, 0.5, 1)),
            realtime_car_update(&car(2, 2, 10, 0.4, bob_location)),
            realtime_car_update(&car(3, 3, 9, 0.9, 1)),
        ]
    };
    let deadline = Instant::now() + PATIENCE;
    let doc = loop {
        for d in round(1) {
            acc.send_to(&d, monitor_at).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let doc = app.get(&id).await.ok();
        if doc["field"]["cars"]
            .as_array()
            .is_some_and(|c| c.len() == 3)
            && doc["telemetry"]["player_name"] == "Bob Beta"
        {
            break doc;
        }
        assert!(Instant::now() < deadline, "no field: {doc}");
    };
    let cars = &doc["field"]["cars"];
    assert_eq!(doc["field"]["game"], "ACC");
    assert_eq!(doc["field"]["track_length"], 7004.0);
    assert_eq!(
        (
            &cars[0]["driver"],
            &cars[0]["class"],
            &cars[0]["race_number"]
        ),
        (&json!("Ann Alpha"), &json!("GT3"), &json!(98))
    );
    // A tenth of a lap at Bob's best (140 s): 14 s; Dee half a lap behind
    // Bob, 0.6 behind Ann: 70 s and 84 s.
    assert_eq!(cars[1]["interval"], 14.0);
    assert_eq!(cars[1]["player"], true);
    assert_eq!(
        (&cars[2]["interval"], &cars[2]["gap_leader"]),
        (&json!(70.0), &json!(84.0))
    );
    assert_eq!(
        (&cars[2]["class"], &cars[2]["class_position"]),
        (&json!("GT4"), &json!(1))
    );
    assert_eq!(cars[0]["sector_times"], json!([40.0, 60.0, 41.0]));
    assert_eq!(doc["telemetry"]["track_name"], "Spa");

    // Bob enters the pit lane: pitting, one stop.
    let deadline = Instant::now() + PATIENCE;
    loop {
        for d in round(2) {
            acc.send_to(&d, monitor_at).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let doc = app.get(&id).await.ok();
        let bob = &doc["field"]["cars"][1];
        if bob["status"] == "pitting" {
            assert_eq!(
                (&bob["in_pits"], &bob["pit_stops"]),
                (&json!(true), &json!(1))
            );
            assert_eq!(doc["telemetry"]["in_pits"], true);
            break;
        }
        assert!(Instant::now() < deadline, "Bob never pitted: {doc}");
    }

    // ACC restarts: quiet, then the monitor registers again and is answered.
    let drained = Instant::now();
    let again = loop {
        let (datagram, _) = recv_from(&acc).await;
        if datagram.first() == Some(&1) {
            break datagram;
        }
    };
    assert_eq!(again, register, "the same registration, again");
    assert!(
        drained.elapsed() >= Duration::from_secs(2),
        "only after a silence"
    );
    acc.send_to(&registration_result(18, true, ""), monitor_at)
        .await
        .unwrap();
    let mut asked = vec![];
    while asked.len() < 2 {
        let (d, _) = recv_from(&acc).await;
        if d[0] != 1 {
            asked.push(d);
        }
    }
    asked.sort();
    assert_eq!(asked, vec![vec![10, 18, 0, 0, 0], vec![11, 18, 0, 0, 0]]);
    assert_eq!(monitor.stop("-INT"), 0);
    // Unregistered on the way out.
    let (bye, _) = recv_from(&acc).await;
    assert_eq!(bye, vec![9, 18, 0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_acc_registration_stops_the_monitor_with_the_game_s_reason() {
    let app = spawn_app().await;
    let acc = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let host = acc.local_addr().unwrap().to_string();
    let log = fresh_dir("acc-refused").join("stderr");
    let stderr = std::fs::File::create(&log).unwrap();
    let monitor = acc_monitor(&app.server.url(), &host, &[], stderr.into());
    let (_, monitor_at) = recv_from(&acc).await;
    acc.send_to(
        &fake_acc::registration_result(-1, false, "Password incorrect"),
        monitor_at,
    )
    .await
    .unwrap();
    assert_ne!(monitor.exit_code(), 0);
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(
        err.contains("ACC refused the registration") && err.contains("Password incorrect"),
        "{err}"
    );
}

/// Per-session access (operator mode): a session's monitor credentials publish
/// its field (and no other session's), its dashboard credentials read it live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_own_credentials_publish_and_read_its_field() {
    use crate::isolation::{client_with, issuing_with_ttl};
    let (dir, _server, url, _processor, _ops) = issuing_with_ttl("field-creds", 3600).await;
    let (id, _) = create_with_creator(&url, &dir).await;
    let (other, _) = create_with_creator(&url, &dir).await;
    let read = |role: &str| std::fs::read_to_string(dir.join(format!("{id}-{role}.creds")));
    let inbox = format!("_INBOX_{id}");
    let (monitor, _) = client_with(&url, &read("monitor").unwrap(), &inbox).await;
    let (dashboard, _) = client_with(&url, &read("dashboard").unwrap(), &inbox).await;
    let mut live = dashboard
        .subscribe(format!("session.{id}.>"))
        .await
        .unwrap();
    // A round trip it may make: the broker has its subscription after it.
    dashboard
        .request(format!("sessions.get.{id}"), "{}".into())
        .await
        .unwrap();
    let field = field_of(3);
    let ack = monitor
        .request(format!("session.{id}.field"), field.to_string().into())
        .await
        .expect("the monitor's credentials publish the field");
    assert_eq!(Answer::from(ack).ok()["kind"], "field");
    let message = next(&mut live).await;
    assert_eq!(message.subject.as_str(), format!("session.{id}.field"));
    let got: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(got, field);
    // Another session's field is not this monitor's to write.
    let refused = tokio::time::timeout(
        Duration::from_secs(2),
        monitor.request(format!("session.{other}.field"), field.to_string().into()),
    )
    .await;
    assert!(!matches!(refused, Ok(Ok(_))), "{refused:?}");
}

/// The undercut window as an alert of its own: raised on `session.<id>.alerts`
/// when the car behind is further back than a stop costs (serve's --pit-loss,
/// 25 s, before the car has stopped), and listed by `sessions.get`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_undercut_window_is_an_alert_of_its_own() {
    let app = spawn_app().await;
    let id = app.new_session().await;
    let (_dashboard, mut alerts) =
        subscriber(&app.server.url(), format!("session.{id}.alerts")).await;
    let field = |behind: f64| {
        json!({"cars": [
            {"index": 0, "position": 1, "race_number": 1, "gap_leader": 0.0, "status": "running"},
            {"index": 1, "position": 2, "race_number": 7, "gap_leader": 10.0,
             "status": "running", "player": true},
            {"index": 2, "position": 3, "race_number": 44, "gap_leader": 10.0 + behind,
             "status": "running"}
        ]})
        .to_string()
    };
    app.request(&format!("session.{id}.telemetry"), frame(1))
        .await
        .ok();
    app.request(&format!("session.{id}.field"), field(30.0))
        .await
        .ok();
    let raised: Value = serde_json::from_slice(&next(&mut alerts).await.payload).unwrap();
    assert_eq!(
        (&raised["state"], &raised["kind"]),
        (&json!("raised"), &json!("undercut_window")),
        "{raised}"
    );
    assert_eq!(
        raised["message"],
        "undercut window: #44 is 30.0 s behind, a stop costs 25.0 s"
    );
    let doc = app.get(&id).await.ok();
    assert_eq!(doc["alerts"][0]["kind"], "undercut_window");
    // Out at 35 s: behind the leader, 5 s ahead of #44.
    assert_eq!(
        doc["rejoin"]["message"],
        "stop now: rejoin P2, 35.0 s behind #1"
    );
    assert_eq!(doc["rejoin"]["behind"]["gap"], 5.0);
    // #44 closes in to 10 s: the window shuts.
    app.request(&format!("session.{id}.field"), field(10.0))
        .await
        .ok();
    let cleared: Value = serde_json::from_slice(&next(&mut alerts).await.payload).unwrap();
    assert_eq!(
        (&cleared["state"], &cleared["kind"]),
        (&json!("cleared"), &json!("undercut_window"))
    );
}

/// `paddock watch --plain` shows where a stop rejoins (the document's
/// `rejoin`), and follows the field: a new one moves the line within a
/// second or two, not at the next 5 s refresh of the numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_shows_where_a_stop_rejoins_and_follows_the_field() {
    let app = spawn_app().await;
    let url = app.server.url();
    let id = app.new_session().await;
    app.send_telemetry(&id, TELEMETRY).await;
    let subject = format!("session.{id}.field");
    // Car 2 is ours, 3.0 s behind the leader (cars 1.5 s apart); the default
    // 25 s stop puts it 28.0 s back: behind all five others, 20.5 s behind
    // the last (D5, 7.5 s), in P6.
    let mut field = field_of(6);
    field["cars"][2]["player"] = json!(true);
    app.request(&subject, field.to_string()).await.ok();
    app.get_until(&id, "the rejoin", |d| !d["rejoin"].is_null())
        .await;

    let watch = Running::spawn(&["watch", &id, "--plain", "--nats-url", &url]);
    let first = watch.line();
    assert!(
        first.contains(" | stop now: rejoin P6, 20.5 s behind D5"),
        "{first}"
    );
    // D5 drops to 30.0 s behind the leader: a stop now comes out ahead of
    // it, 22.0 s behind D4 (6.0 s), in P5.
    field["cars"][5]["gap_leader"] = json!(30.0);
    app.request(&subject, field.to_string()).await.ok();
    let later = watch.lines_for(Duration::from_millis(3000));
    assert!(
        later
            .iter()
            .any(|l| l.contains(" | stop now: rejoin P5, 22.0 s behind D4")),
        "{later:?}"
    );
    assert_eq!(watch.stop("-INT"), 0);
}
