//! Real sims into sessions: EA F1 24/25 packets over UDP to a running
//! `paddock monitor --source f1`, and an iRacing file replayed with
//! `paddock monitor --replay FILE.ibt`.
//!
//! The F1 packets are built here from EA's specs (the captures under
//! tests/data/f1-* never cross a lap line): a race with a lap change, a pit
//! stop (fuel up, new tyres, in the pit lane), a driver change and a new game
//! session, every wheel's value distinct so the corner order shows.

use std::net::UdpSocket;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

/// One tick of the player's car, as the game would describe it.
#[derive(Clone)]
struct Car {
    lap: u8,
    last_lap_ms: u32,
    current_lap_ms: u32,
    position: u8,
    pit_status: u8,
    pit_stops: u8,
    fuel_kg: f32,
    tyre_age: u8,
    name: &'static str,
    speed: u16,
    front_wing: u8,
}

impl Car {
    /// Lap 1, ten seconds in, fifth, 30 kg of fuel.
    const ANN: Car = Car {
        lap: 1,
        last_lap_ms: 0,
        current_lap_ms: 10_000,
        position: 5,
        pit_status: 0,
        pit_stops: 0,
        fuel_kg: 30.0,
        tyre_age: 4,
        name: "ANN",
        speed: 287,
        front_wing: 30,
    };
}

const PLAYER: usize = 3;

/// `paddock monitor --source f1` on a free loopback port, sending at most `hz`
/// frames a second, plus `extra`: the monitor, where to send packets, and the
/// file its stderr goes to.
pub(crate) fn f1_monitor(
    url: &str,
    hz: u32,
    extra: &[&str],
) -> (Running, String, std::path::PathBuf) {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let to = format!("127.0.0.1:{port}");
    let log = fresh_dir("f1-monitor").join("stderr");
    let monitor = Running::from_child(
        paddock()
            .args([
                "monitor",
                "--nats-url",
                url,
                "--source",
                "f1",
                "--listen",
                &to,
                "--hz",
                &hz.to_string(),
                "--progress",
                "0",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    (monitor, to, log)
}

/// A packet of `len` bytes with the header filled in, the player's car's
/// bytes (`car_size` each, from `start` after the header) written by `fill`.
fn packet(
    format: u16,
    id: u8,
    uid: u64,
    len: usize,
    car: Option<(usize, usize)>,
    fill: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0..2].copy_from_slice(&format.to_le_bytes());
    p[2] = (format % 100) as u8;
    p[5] = 1;
    p[6] = id;
    p[7..15].copy_from_slice(&uid.to_le_bytes());
    p[27] = PLAYER as u8;
    p[28] = 255;
    match car {
        Some((size, start)) => {
            let at = 29 + start + PLAYER * size;
            fill(&mut p[at..at + size]);
        }
        None => fill(&mut p[29..]),
    }
    p
}

fn put_f32(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

/// The packets one tick of the game sends for `car`, in the game's order.
fn tick(format: u16, uid: u64, car: &Car) -> Vec<Vec<u8>> {
    let f25 = format == 2025;
    let session = packet(format, 1, uid, 753, None, |b| {
        b[0] = 2; // overcast
        b[1] = 31; // track °C
        b[2] = 22; // air °C
        b[3] = 20; // total laps
        put_u16(b, 4, 5891);
        b[6] = 15; // race
        b[7] = 7; // Silverstone
        put_u16(b, 9, 3000);
        put_u16(b, 11, 3600);
        b[13] = 80;
        b[124] = 0;
        b[653] = 9;
        b[654] = 14;
    });
    let lap = packet(format, 2, uid, 1285, Some((57, 0)), |b| {
        b[0..4].copy_from_slice(&car.last_lap_ms.to_le_bytes());
        b[4..8].copy_from_slice(&car.current_lap_ms.to_le_bytes());
        put_u16(b, 8, 28_500); // sector 1: 1:28.500
        b[10] = 1;
        put_u16(b, 14, 1_250); // 1.25 s to the car ahead
        b[32] = car.position;
        b[33] = car.lap;
        b[34] = car.pit_status;
        b[35] = car.pit_stops;
        b[36] = 1;
        b[38] = 5; // 5 s of penalties
        b[44] = 4; // on track
    });
    let (names_len, name_size) = if f25 { (1284, 57) } else { (1350, 60) };
    let participants = packet(format, 4, uid, names_len, Some((name_size, 1)), |b| {
        b[3] = 8; // McLaren
        b[5] = 4;
        b[7..7 + car.name.len()].copy_from_slice(car.name.as_bytes());
    });
    let setups = packet(format, 5, uid, 1133, Some((50, 0)), |b| {
        b[0] = car.front_wing;
        b[1] = 25;
        put_f32(b, 4, -3.0);
        for (i, psi) in [21.5f32, 21.6, 23.5, 23.6].iter().enumerate() {
            put_f32(b, 29 + 4 * i, *psi);
        }
        b[45] = 5;
        put_f32(b, 46, 30.0);
    });
    let telemetry = packet(format, 6, uid, 1352, Some((60, 0)), |b| {
        put_u16(b, 0, car.speed);
        put_f32(b, 2, 0.75);
        b[15] = 7;
        put_u16(b, 16, 11_234);
        // The game's order: RL RR FL FR.
        for (i, t) in [510u16, 520, 530, 540].iter().enumerate() {
            put_u16(b, 22 + 2 * i, *t);
        }
        b[30..34].copy_from_slice(&[91, 92, 93, 94]);
        b[34..38].copy_from_slice(&[101, 102, 103, 104]);
        put_u16(b, 38, 105);
        for (i, psi) in [21.1f32, 21.2, 23.3, 23.4].iter().enumerate() {
            put_f32(b, 40 + 4 * i, *psi);
        }
    });
    let status = packet(format, 7, uid, 1239, Some((55, 0)), |b| {
        put_f32(b, 5, car.fuel_kg);
        put_f32(b, 9, 110.0);
        put_f32(b, 13, 3.5);
        b[25] = 18; // C3
        b[26] = 17; // medium
        b[27] = car.tyre_age;
        b[28] = 1; // green
    });
    let (damage_len, damage_size) = if f25 { (1041, 46) } else { (953, 42) };
    let damage = packet(format, 10, uid, damage_len, Some((damage_size, 0)), |b| {
        for (i, worn) in [10f32, 20.0, 30.0, 40.0].iter().enumerate() {
            put_f32(b, 4 * i, *worn);
        }
    });
    vec![
        session,
        lap,
        participants,
        setups,
        telemetry,
        status,
        damage,
    ]
}

fn garbage(format: u16, uid: u64, car: &Car) -> Vec<Vec<u8>> {
    let telemetry = tick(format, uid, car)[4].clone();
    let mut f1_23 = telemetry.clone();
    f1_23[0..2].copy_from_slice(&2023u16.to_le_bytes());
    let mut no_car = telemetry.clone();
    no_car[27] = 40;
    let mut unknown = telemetry.clone();
    unknown[6] = 99;
    vec![
        telemetry[..600].to_vec(),
        f1_23,
        no_car,
        unknown,
        b"\x00".to_vec(),
        vec![0xff; 1500],
    ]
}

async fn send_ticks(socket: &UdpSocket, to: &str, format: u16, uid: u64, car: &Car, n: usize) {
    for _ in 0..n {
        for p in tick(format, uid, car) {
            socket.send_to(&p, to).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_packets_over_udp_become_a_session_with_laps_a_pit_stop_and_a_new_race() {
    let app = spawn_app().await;
    let (monitor, to, log) = f1_monitor(&app.server.url(), 50, &["--new-session-per-race"]);
    let first = monitor.line().strip_prefix("session ").unwrap().to_string();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();

    // F1 24: lap 1, then lap 2 (1:30.500), a stop in lap 2, lap 3 (1:50.250) by another driver.
    let uid = 0x1234_5678;
    let mut car = Car::ANN;
    send_ticks(&socket, &to, 2024, uid, &car, 4).await;
    for p in garbage(2024, uid, &car) {
        socket.send_to(&p, &to).unwrap();
    }
    car.lap = 2;
    car.last_lap_ms = 90_500;
    car.current_lap_ms = 500;
    car.fuel_kg = 27.0;
    send_ticks(&socket, &to, 2024, uid, &car, 4).await;
    car.pit_status = 2;
    car.speed = 80;
    send_ticks(&socket, &to, 2024, uid, &car, 4).await;
    car.pit_status = 0;
    car.pit_stops = 1;
    car.fuel_kg = 60.0;
    car.tyre_age = 0;
    car.speed = 250;
    // More front wing at the stop: a setup that changes, sent again.
    car.front_wing = 33;
    send_ticks(&socket, &to, 2024, uid, &car, 3).await;
    car.lap = 3;
    car.last_lap_ms = 110_250;
    car.name = "BOB";
    car.fuel_kg = 57.0;
    send_ticks(&socket, &to, 2024, uid, &car, 4).await;

    let doc = app
        .get_until(&first, "lap 3 by BOB", |d| {
            d["telemetry"]["player_name"] == "BOB" && d["telemetry"]["lap"] == 3
        })
        .await;
    let t = &doc["telemetry"];
    let expect = json!({
        "game": "F1 24", "car_name": "McLaren", "track_name": "Silverstone",
        "session_type": "Race", "weather": "overcast", "track_temp": 31, "ambient_temp": 22,
        "lap": 3, "position": 5, "last_lap_time": 110.25, "best_lap_time": 90.5,
        "lap_time": 0.5, "total_laps": 20, "laps_left": 18, "session_time_left": 3000,
        "gap_ahead": 1.25, "penalties_s": 5, "pit_stops": 1, "in_pits": false,
        "fuel_kg": 57.0, "fuel": 76.0, "fuel_capacity": 146.667, "fuel_capacity_kg": 110.0,
        "fuel_laps_remaining": 3.5, "speed": 250, "gear": 7, "rpm": 11234, "throttle": 0.75,
        "tyre_compound": "medium", "tyre_compound_actual": "C3", "tyre_age_laps": 0,
        "flag": "green", "pit_window_ideal_lap": 9, "pit_window_latest_lap": 14,
        "brake_temps": {"fl": 530, "fr": 540, "rl": 510, "rr": 520},
        "tire_temps": {"fl": 93, "fr": 94, "rl": 91, "rr": 92},
        "tire_carcass_temps": {"fl": 103, "fr": 104, "rl": 101, "rr": 102},
        "tire_pressures": {"fl": 23.3, "fr": 23.4, "rl": 21.1, "rr": 21.2},
        "tire_wear": {"fl": 0.7, "fr": 0.6, "rl": 0.9, "rr": 0.8},
    });
    for (key, want) in expect.as_object().unwrap() {
        assert_eq!(&t[key], want, "{key} in {t}");
    }
    assert_eq!(t["sector_times"][0], 88.5, "1 min + 28.5 s");
    assert_eq!(doc["setup"]["front_wing"], 33, "the changed setup");
    assert_eq!(doc["setup"]["fuel_load_kg"], 30.0);
    assert_eq!(
        doc["setup"]["tire_pressures"],
        json!({"fl": 23.5, "fr": 23.6, "rl": 21.5, "rr": 21.6})
    );
    // The game sends its setup in every tick: twice in all, once as it
    // was and once changed.
    assert_eq!(
        doc["stats"]["setup_count"], 2,
        "an unchanged setup is sent once, a changed one again"
    );
    assert_eq!(doc["stats"]["rejected_count"], 0);

    // Lap records: lap 1 at 1:30.500; lap 2 pitted, at 1:50.250, fuel up 30 → 60 kg.
    let page = app
        .request(&format!("sessions.laps.{first}"), "{}")
        .await
        .ok();
    let laps = page["laps"].as_array().unwrap();
    assert_eq!(laps.len(), 2, "{page}");
    assert_eq!(laps[0]["next_frame"]["last_lap_time"], 90.5);
    assert_eq!(laps[0]["pitted"], false);
    assert_eq!(laps[1]["next_frame"]["last_lap_time"], 110.25);
    assert_eq!(laps[1]["pitted"], true);
    let stints = app
        .request(&format!("sessions.stints.{first}"), "{}")
        .await
        .ok();
    assert_eq!(stints["stints"][0]["ended_by"], "pit_stop", "{stints}");

    // F1 25, another game session: a new paddock session, printed.
    car = Car {
        lap: 1,
        last_lap_ms: 0,
        current_lap_ms: 1_000,
        name: "CHLOE",
        ..car
    };
    send_ticks(&socket, &to, 2025, 0x9999, &car, 3).await;
    let second = loop {
        let line = monitor.line();
        if let Some(id) = line.strip_prefix("session ") {
            break id.to_string();
        }
    };
    assert_ne!(second, first);
    send_ticks(&socket, &to, 2025, 0x9999, &car, 3).await;
    let doc2 = app
        .get_until(&second, "CHLOE's car", |d| {
            d["telemetry"]["player_name"] == "CHLOE"
        })
        .await;
    assert_eq!(doc2["telemetry"]["game"], "F1 25");
    assert_eq!(
        doc2["telemetry"]["tire_temps"],
        json!({"fl": 93, "fr": 94, "rl": 91, "rr": 92})
    );
    assert_eq!(doc2["telemetry"]["tire_wear"]["fr"], 0.6);
    let old = app.get(&first).await.ok();
    assert_eq!(
        old["telemetry"]["player_name"], "BOB",
        "the first session is left as it was"
    );

    assert_eq!(monitor.stop("-INT"), 0);
    let err = std::fs::read_to_string(&log).unwrap();
    let summary = err
        .lines()
        .rev()
        .find(|l| l.contains("packets read"))
        .unwrap_or_default();
    assert!(
        summary.contains("6 rejected (2 not F1 24/25, 4 malformed or of unknown ids)"),
        "garbage counted: {err}"
    );
}

/// `--hz` binds: the game's ticks at about 100 a second leave the monitor as
/// at most `--hz 10` frames a second, each the latest state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_f1_monitor_sends_at_most_hz_frames_a_second() {
    let app = spawn_app().await;
    let (monitor, to, _log) = f1_monitor(&app.server.url(), 10, &[]);
    let id = monitor.line().strip_prefix("session ").unwrap().to_string();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut car = Car::ANN;
    let started = std::time::Instant::now();
    for k in 0..200u32 {
        // Each tick a new state: 10 ms further into the lap.
        car.current_lap_ms = 10_000 + 10 * k;
        for p in tick(2024, 7, &car) {
            socket.send_to(&p, &to).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ticks_for = started.elapsed();
    let doc = app
        .get_until(&id, "the last tick's state", |d| {
            d["telemetry"]["lap_time"] == 11.99
        })
        .await;
    let took = started.elapsed();
    let frames = doc["stats"]["telemetry_count"].as_u64().unwrap();
    // The monitor's ticker runs at 10 Hz from its start: within `took` it
    // fires at most 10 times a second, plus its first.
    let most = (took.as_secs_f64() * 10.0).ceil() as u64 + 1;
    assert!(
        frames <= most,
        "{frames} frames for 200 ticks in {ticks_for:?} (last seen after {took:?}): more than --hz 10 allows ({most})"
    );
    assert!(frames >= 5, "{frames} frames in {took:?}: {doc}");
}

/// Without `--new-session-per-race`, a new game session (another session UID,
/// the game's next qualifying or race) goes on in the same paddock session, and
/// the monitor says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_new_session_per_race_a_new_game_session_goes_on_in_the_same_session() {
    let app = spawn_app().await;
    let (monitor, to, log) = f1_monitor(&app.server.url(), 50, &[]);
    let id = monitor.line().strip_prefix("session ").unwrap().to_string();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut car = Car::ANN;
    send_ticks(&socket, &to, 2024, 0x1111, &car, 3).await;
    app.get_until(&id, "ANN's car", |d| d["telemetry"]["player_name"] == "ANN")
        .await;
    car.name = "CHLOE";
    car.lap = 1;
    send_ticks(&socket, &to, 2024, 0x2222, &car, 3).await;
    app.get_until(&id, "CHLOE's car, in the same session", |d| {
        d["telemetry"]["player_name"] == "CHLOE"
    })
    .await;
    let listed = app.request("sessions.list", "{}").await.ok();
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(monitor.stop("-INT"), 0);
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(
        err.contains(&format!(
            "another session (uid {}); its frames go on in session {id}",
            0x2222
        )),
        "the monitor says where the new game session goes: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ibt_file_replays_as_its_rows_with_its_setup_and_names() {
    let app = spawn_app().await;
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/ibt/valid_test_file.ibt"
    );
    let started = std::time::Instant::now();
    let (code, out, err) = run_paddock(&[
        "monitor",
        "--nats-url",
        &app.server.url(),
        "--replay",
        file,
        "--time-scale",
        "20",
        "--hz",
        "60",
    ])
    .await;
    let took = started.elapsed();
    assert_eq!(code, 0, "{err}");
    let id = out
        .lines()
        .next()
        .unwrap()
        .strip_prefix("session ")
        .unwrap();
    let doc = app.get(id).await.ok();
    // The file's 390 rows at 60 Hz span 6.48 s; at 20× that is 0.32 s, one row
    // in 20 (1/3 s of sim time) at 60 frames a second, and the last row.
    assert_eq!(doc["stats"]["telemetry_count"], 21, "{err}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let t = &doc["telemetry"];
    // The last row, as an independent reader gives it (python struct over the
    // SDK's layout): SessionTime 938.483, Gear 1, RPM 4000.04, FuelLevel 59.997,
    // LFpressure 165.474 kPa.
    assert_eq!(t["session_time"], 938.483);
    assert_eq!((&t["gear"], &t["rpm"]), (&json!(1), &json!(4000.0)));
    assert_eq!(t["fuel"], 59.997);
    assert_eq!(t["tire_pressures"]["fl"], 24.0);
    assert_eq!(t["player_name"], "George v Rensburg");
    assert_eq!(t["track_name"], "Red Bull Ring");
    assert_eq!(t["game"], "iRacing");
    assert_eq!(t["in_pits"], true);
    // The car never left the pit lane: 7.0 km/h at most, over all rows.
    assert_eq!(t["top_speed"], 7.0);
    // Each corner as that reader gives it (LF RF LR RR; the three readings
    // across the tread averaged), every one distinct, so a swapped corner shows.
    assert_eq!(
        t["tire_temps"],
        json!({"fl": 87.1, "fr": 84.2, "rl": 86.0, "rr": 82.0})
    );
    assert_eq!(
        t["tire_surface_temps"],
        json!({"fl": 69.4, "fr": 69.4, "rl": 69.5, "rr": 69.4})
    );
    assert_eq!(
        t["tire_wear"],
        json!({"fl": 0.9819, "fr": 0.9852, "rl": 0.9779, "rr": 0.9885})
    );
    assert_eq!(
        t["tire_pressures"],
        json!({"fl": 24.0, "fr": 24.0, "rl": 21.0, "rr": 21.0})
    );
    let setup = &doc["setup"];
    assert_eq!(setup["TiresAero"]["TireCompound"]["TireCompound"], "Medium");
    assert_eq!(setup["Chassis"]["LeftFront"]["Camber"], "-3.15 deg");
    assert_eq!(
        setup["DriveBrake"]["BrakeSystemConfig"]["BaseBrakeBias"],
        "52.5% (BBAL)"
    );
    assert_eq!(setup["UpdateCount"], 11);
    assert_eq!(doc["stats"]["rejected_count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_ibt_is_refused_plainly() {
    let dir = fresh_dir("not-ibt");
    let path = dir.join("lap.ibt");
    std::fs::write(&path, b"this is not telemetry").unwrap();
    let (code, _, err) = run_paddock(&[
        "monitor",
        "--nats-url",
        "nats://127.0.0.1:1",
        "--replay",
        path.to_str().unwrap(),
    ])
    .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("cannot replay it") && err.contains("cut short"),
        "{err}"
    );
}

/// The shared-memory sources exist only on Windows: elsewhere the monitor says
/// so, and what to run instead, before it connects to anything.
#[cfg(not(windows))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_memory_source_off_windows_says_where_it_runs() {
    for source in ["acc", "ac", "iracing", "lmu"] {
        let (code, _, err) = run_paddock(&[
            "monitor",
            "--nats-url",
            "nats://127.0.0.1:1",
            "--source",
            source,
        ])
        .await;
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("exists only on Windows") && err.contains("paddock.exe"),
            "{err}"
        );
        if source == "iracing" {
            assert!(err.contains("--replay FILE.ibt"), "{err}");
        }
        if source == "lmu" {
            assert!(err.contains("$rFactor2SMMP_Telemetry$"), "{err}");
        }
    }
}

/// A session deleted under the F1 monitor: it says so and stops, as `paddock
/// monitor` does, rather than send frames that would only be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_f1_monitor_stops_when_its_session_is_deleted() {
    let app = spawn_app().await;
    let (monitor, to, log) = f1_monitor(&app.server.url(), 50, &[]);
    let id = monitor.line().strip_prefix("session ").unwrap().to_string();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let car = Car::ANN;
    send_ticks(&socket, &to, 2024, 7, &car, 3).await;
    app.get_until(&id, "ANN's car", |d| d["telemetry"]["player_name"] == "ANN")
        .await;
    app.request("sessions.delete", id_body(&id)).await.ok();
    send_ticks(&socket, &to, 2024, 7, &car, 3).await;
    assert_ne!(monitor.exit_code(), 0);
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(
        err.contains(&format!("session {id} was deleted")),
        "the monitor says why it stops: {err}"
    );
}
