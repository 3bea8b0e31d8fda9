//! Forza and Gran Turismo 7 into sessions: Forza's Data Out packets over UDP to
//! a running `paddock monitor --source forza`, and a stand-in PlayStation on
//! loopback that waits for `paddock monitor --source gt7`'s heartbeat and
//! answers with encrypted packets, as the console does.
//!
//! The packets are built here from the games' layouts (src/sources/forza.rs and
//! gt7.rs cite them), each field written at its documented offset, every
//! corner distinct so the corner order shows; GT7's are encrypted with the
//! salsa20 crate itself, not through paddock's code.
//!
//! A new race in the packets (Forza: the race clock back at the start; GT7:
//! another car) is a new paddock session with `--new-session-per-race`, and
//! the same session, said on stderr, without it.

use std::net::UdpSocket;
use std::process::Stdio;
use std::time::Duration;

use salsa20::Salsa20;
use salsa20::cipher::{KeyIvInit, StreamCipher};
use serde_json::json;

use crate::support::*;

/// `paddock monitor --source <source>` with `extra`, sending at most 50 frames
/// a second: the monitor and the file its stderr goes to.
fn monitor(url: &str, source: &str, extra: &[&str]) -> (Running, std::path::PathBuf) {
    let log = fresh_dir(&format!("{source}-monitor")).join("stderr");
    let monitor = Running::from_child(
        paddock()
            .args([
                "monitor",
                "--nats-url",
                url,
                "--source",
                source,
                "--hz",
                "50",
                "--progress",
                "0",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    (monitor, log)
}

/// The monitor's last progress line (what it read and refused), and all its stderr.
fn closing_count(log: &std::path::Path) -> (String, String) {
    let err = std::fs::read_to_string(log).unwrap();
    let summary = err
        .lines()
        .rev()
        .find(|l| l.contains("packets read"))
        .unwrap_or_default()
        .to_string();
    (summary, err)
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn put_f32(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// One Forza Motorsport (2023) "Dash" packet (331 bytes): `laps` completed,
/// `distance` m since the start, the race on unless `race_on` is false, 300 s
/// into the race.
fn forza_packet(laps: u16, distance: f32, last_lap: f32, race_on: bool) -> Vec<u8> {
    forza_packet_at(300.0, laps, distance, last_lap, race_on)
}

/// The same, `clock` s into the race (CurrentRaceTime).
fn forza_packet_at(clock: f32, laps: u16, distance: f32, last_lap: f32, race_on: bool) -> Vec<u8> {
    let mut p = vec![0u8; 331];
    p[0..4].copy_from_slice(&i32::from(race_on).to_le_bytes());
    put_f32(&mut p, 8, 9000.0); // EngineMaxRpm
    put_f32(&mut p, 16, 6500.0); // CurrentEngineRpm
    p[212..216].copy_from_slice(&3031i32.to_le_bytes()); // CarOrdinal
    let d = 232; // the Dash
    put_f32(&mut p, d + 12, 55.0); // Speed, m/s
    // TireTemp FL FR RL RR, °F: 95, 93, 91, 89 °C.
    for (i, f) in [203.0f32, 199.4, 195.8, 192.2].iter().enumerate() {
        put_f32(&mut p, d + 24 + 4 * i, *f);
    }
    put_f32(&mut p, d + 44, 0.5); // Fuel
    put_f32(&mut p, d + 48, distance);
    put_f32(&mut p, d + 52, 88.5); // BestLap
    put_f32(&mut p, d + 56, last_lap);
    put_f32(&mut p, d + 60, 7.25); // CurrentLap
    put_f32(&mut p, d + 64, clock); // CurrentRaceTime
    p[d + 68..d + 70].copy_from_slice(&laps.to_le_bytes());
    p[d + 70] = 2; // RacePosition
    p[d + 71] = 204; // Accel: 0.8
    p[d + 72] = 0; // Brake
    p[d + 75] = 6; // Gear
    p[d + 76] = 64; // Steer: right
    // TireWear FL FR RL RR (worn): 0.05 … 0.20.
    for (i, w) in [0.05f32, 0.1, 0.15, 0.2].iter().enumerate() {
        put_f32(&mut p, 311 + 4 * i, *w);
    }
    p[327..331].copy_from_slice(&513i32.to_le_bytes()); // TrackOrdinal
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forza_data_out_over_udp_becomes_a_session_with_laps() {
    let app = spawn_app().await;
    let to = format!("127.0.0.1:{}", free_udp_port());
    let (monitor, log) = monitor(&app.server.url(), "forza", &["--listen", &to]);
    let id = monitor.line().strip_prefix("session ").unwrap().to_string();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |p: Vec<u8>| {
        socket.send_to(&p, &to).unwrap();
    };
    // The menus, then lap 1 from the grid, then lap 2 from the line on.
    send(forza_packet(0, 0.0, 0.0, false));
    for k in 0..5 {
        send(forza_packet(0, 100.0 + 10.0 * k as f32, 0.0, true));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send(vec![0u8; 100]);
    send(vec![0xff; 400]);
    for k in 0..5 {
        send(forza_packet(1, 4000.0 + 50.0 * k as f32, 91.25, true));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let doc = app
        .get_until(&id, "lap 2, 200 m from the line", |d| {
            d["telemetry"]["lap"] == 2 && d["telemetry"]["lap_distance"] == 200.0
        })
        .await;
    let t = &doc["telemetry"];
    let expect = json!({
        "game": "Forza Motorsport", "lap": 2, "position": 2, "speed": 198.0,
        "rpm": 6500.0, "max_rpm": 9000.0, "gear": 6, "throttle": 0.8, "brake": 0.0,
        "steering": 0.504, "lap_time": 7.25, "last_lap_time": 91.25,
        "best_lap_time": 88.5, "session_time": 300.0, "fuel_pct": 0.5,
        "distance_traveled": 4200.0, "lap_distance": 200.0, "car_ordinal": 3031,
        "track_ordinal": 513,
        "tire_temps": {"fl": 95.0, "fr": 93.0, "rl": 91.0, "rr": 89.0},
        "tire_wear": {"fl": 0.95, "fr": 0.9, "rl": 0.85, "rr": 0.8},
    });
    for (key, want) in expect.as_object().unwrap() {
        assert_eq!(&t[key], want, "{key} in {t}");
    }
    assert!(t["timestamp"].is_string());
    assert_eq!(doc["stats"]["rejected_count"], 0);
    // Lap 1 is recorded, with lap 2's first frame carrying its time.
    let page = app.request(&format!("sessions.laps.{id}"), "{}").await.ok();
    let laps = page["laps"].as_array().unwrap();
    assert_eq!(laps.len(), 1, "{page}");
    assert_eq!(laps[0]["next_frame"]["last_lap_time"], 91.25);

    assert_eq!(monitor.stop("-INT"), 0);
    let (summary, err) = closing_count(&log);
    assert!(
        summary.contains(
            "forza Forza Motorsport: 10 packets read, 1 with the race off (menus, pause), 2 \
             rejected"
        ),
        "menus and garbage counted: {err}"
    );
}

/// The next session the monitor prints (`session <id>` on stdout).
fn next_session(monitor: &Running) -> String {
    loop {
        if let Some(id) = monitor.line().strip_prefix("session ") {
            return id.to_string();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forza_with_new_session_per_race_a_restart_is_a_new_session() {
    let app = spawn_app().await;
    let to = format!("127.0.0.1:{}", free_udp_port());
    let (monitor, log) = monitor(
        &app.server.url(),
        "forza",
        &["--listen", &to, "--new-session-per-race"],
    );
    let first = next_session(&monitor);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |p: Vec<u8>| {
        socket.send_to(&p, &to).unwrap();
    };
    // Lap 2 of a race, 300 s in.
    for k in 0..3 {
        send(forza_packet(1, 4000.0 + 50.0 * k as f32, 91.25, true));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.get_until(&first, "lap 2", |d| d["telemetry"]["lap"] == 2)
        .await;
    // A rewind of 5 s is the same race.
    send(forza_packet_at(295.0, 1, 3900.0, 91.25, true));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The menus, then the race restarted: the clock and the laps from 0.
    send(forza_packet_at(0.0, 0, 0.0, 0.0, false));
    for k in 0..3 {
        send(forza_packet_at(
            0.5 + k as f32,
            0,
            10.0 * k as f32,
            0.0,
            true,
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = next_session(&monitor);
    assert_ne!(second, first);
    let doc = app
        .get_until(&second, "the new race's latest frame", |d| {
            d["telemetry"]["lap"] == 1 && d["telemetry"]["session_time"] == 2.5
        })
        .await;
    assert_eq!(
        doc["telemetry"]["lap_distance"],
        serde_json::Value::Null,
        "{doc}"
    );
    // The old session keeps the race that was: its last frame is lap 2's.
    let old = app.get_until(&first, "the old race", |_| true).await;
    assert_eq!(old["telemetry"]["lap"], 2, "{old}");
    let listed = app.request("sessions.list", "{}").await.ok();
    assert_eq!(listed["total"], 2, "{listed}");

    assert_eq!(monitor.stop("-INT"), 0);
    let (_, err) = closing_count(&log);
    assert_eq!(
        err.matches("the game started another race").count(),
        1,
        "one new race (not the rewind): {err}"
    );
    assert!(
        err.contains(
            "the game started another race (the race clock back at the start); a new paddock \
             session"
        ),
        "{err}"
    );
}

/// GT7's Salsa20 key, the first 32 bytes of its phrase.
const GT7_KEY: &[u8; 32] = b"Simulator Interface Packet GT7 v";

/// A GT7 packet of format B (316 bytes) as the console sends it: the
/// plaintext built at the readers' offsets, encrypted whole with the nonce
/// from `iv1` (xor 0xDEADBEEF, format B's), `iv1` then put in the clear at 0x40.
fn gt7_packet(iv1: u32, lap: i16, last_lap_ms: i32, on_track: bool) -> Vec<u8> {
    gt7_packet_of(1234, iv1, lap, last_lap_ms, on_track)
}

/// The same, of the car with code `car`.
fn gt7_packet_of(car: i32, iv1: u32, lap: i16, last_lap_ms: i32, on_track: bool) -> Vec<u8> {
    let mut p = vec![0u8; 316];
    p[0..4].copy_from_slice(&0x4737_5330u32.to_le_bytes());
    put_f32(&mut p, 0x3C, 7250.0); // rpm
    put_f32(&mut p, 0x44, 31.5); // fuel, L
    put_f32(&mut p, 0x48, 65.0); // tank, L
    put_f32(&mut p, 0x4C, 40.0); // 144 km/h
    for (i, t) in [88.0f32, 87.0, 79.0, 78.0].iter().enumerate() {
        put_f32(&mut p, 0x60 + 4 * i, *t);
    }
    p[0x74..0x76].copy_from_slice(&lap.to_le_bytes());
    p[0x76..0x78].copy_from_slice(&12i16.to_le_bytes());
    p[0x78..0x7C].copy_from_slice(&95_100i32.to_le_bytes());
    p[0x7C..0x80].copy_from_slice(&last_lap_ms.to_le_bytes());
    p[0x84..0x86].copy_from_slice(&(-1i16).to_le_bytes());
    p[0x8E..0x90].copy_from_slice(&u16::from(on_track).to_le_bytes());
    p[0x90] = 0x53; // 3rd gear, 5th suggested
    p[0x91] = 153; // throttle 0.6
    p[0x92] = 51; // brake 0.2
    p[0x124..0x128].copy_from_slice(&car.to_le_bytes());
    put_f32(&mut p, 0x128, std::f32::consts::FRAC_PI_4); // wheel: 45°
    let mut nonce = [0u8; 8];
    nonce[..4].copy_from_slice(&(iv1 ^ 0xDEAD_BEEF).to_le_bytes());
    nonce[4..].copy_from_slice(&iv1.to_le_bytes());
    Salsa20::new(GT7_KEY.into(), &nonce.into()).apply_keystream(&mut p);
    p[0x40..0x44].copy_from_slice(&iv1.to_le_bytes());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playstation_answering_the_heartbeat_becomes_a_session() {
    let app = spawn_app().await;
    // The stand-in console, on a port of its own rather than GT7's 33739.
    let console = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let console_port = console.local_addr().unwrap().port().to_string();
    let (monitor, log) = monitor(
        &app.server.url(),
        "gt7",
        &[
            "--console",
            "127.0.0.1",
            "--console-port",
            &console_port,
            "--listen",
            "127.0.0.1:0",
            "--gt7-format",
            "b",
        ],
    );
    let id = monitor.line().strip_prefix("session ").unwrap().to_string();
    let mut beat = [0u8; 16];
    let (len, monitor_at) =
        tokio::time::timeout(Duration::from_secs(30), console.recv_from(&mut beat))
            .await
            .expect("a heartbeat within 30 s")
            .unwrap();
    assert_eq!(&beat[..len], b"B", "format B's heartbeat");

    // As the console does: to whoever sent the heartbeat, 60 a second.
    let send = async |p: Vec<u8>| {
        console.send_to(&p, monitor_at).await.unwrap();
    };
    send(gt7_packet(1, 0, -1, false)).await; // the menus
    send(vec![0x55; 316]).await; // not encrypted with GT7's key
    send(vec![1, 2, 3]).await;
    for (k, lap) in [(0u32, 2i16), (1, 2), (2, 3), (3, 3), (4, 3)] {
        send(gt7_packet(
            0x1000 + k,
            lap,
            if lap == 3 { 96_750 } else { 97_000 },
            true,
        ))
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let doc = app
        .get_until(&id, "lap 3", |d| d["telemetry"]["lap"] == 3)
        .await;
    let t = &doc["telemetry"];
    let expect = json!({
        "game": "Gran Turismo 7", "lap": 3, "total_laps": 12, "laps_left": 10,
        "speed": 144.0, "rpm": 7250.0, "gear": 3, "throttle": 0.6, "brake": 0.2,
        "fuel": 31.5, "fuel_capacity": 65.0, "fuel_pct": 0.4846,
        "best_lap_time": 95.1, "last_lap_time": 96.75, "car_code": 1234,
        "steering_angle_deg": 45.0,
        "tire_temps": {"fl": 88.0, "fr": 87.0, "rl": 79.0, "rr": 78.0},
    });
    for (key, want) in expect.as_object().unwrap() {
        assert_eq!(&t[key], want, "{key} in {t}");
    }
    for absent in [
        "position",
        "lap_distance",
        "lap_time",
        "tire_wear",
        "grid_position",
    ] {
        assert_eq!(t.get(absent), None, "GT7 sends no {absent}: {t}");
    }
    let page = app.request(&format!("sessions.laps.{id}"), "{}").await.ok();
    assert_eq!(
        page["laps"][0]["next_frame"]["last_lap_time"], 96.75,
        "{page}"
    );

    assert_eq!(monitor.stop("-INT"), 0);
    let (summary, err) = closing_count(&log);
    assert!(
        summary.contains(
            "gt7 format B: 5 packets read, 1 with the car off track (menus, pause, loading), 2 \
             rejected (1 not decrypting to GT7's, 1 of no GT7 length)"
        ),
        "menus and garbage counted: {err}"
    );
}

/// Without `--new-session-per-race`, another car (a new race) goes on in the
/// same session, and the monitor says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gt7_without_new_session_per_race_another_car_goes_on_in_the_same_session() {
    let app = spawn_app().await;
    let console = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let console_port = console.local_addr().unwrap().port().to_string();
    let (monitor, log) = monitor(
        &app.server.url(),
        "gt7",
        &[
            "--console",
            "127.0.0.1",
            "--console-port",
            &console_port,
            "--listen",
            "127.0.0.1:0",
            "--gt7-format",
            "b",
        ],
    );
    let id = next_session(&monitor);
    let mut beat = [0u8; 16];
    let (_, monitor_at) =
        tokio::time::timeout(Duration::from_secs(30), console.recv_from(&mut beat))
            .await
            .expect("a heartbeat within 30 s")
            .unwrap();
    for (k, car, lap) in [(0u32, 1234, 2i16), (1, 1234, 3), (2, 4321, 1), (3, 4321, 1)] {
        let p = gt7_packet_of(car, 0x2000 + k, lap, 97_000, true);
        console.send_to(&p, monitor_at).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    app.get_until(&id, "the other car, in the same session", |d| {
        d["telemetry"]["car_code"] == 4321
    })
    .await;
    let listed = app.request("sessions.list", "{}").await.ok();
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(monitor.stop("-INT"), 0);
    let (_, err) = closing_count(&log);
    assert!(
        err.contains(&format!(
            "the game started another race (another car); its frames go on in session {id} \
             (--new-session-per-race starts a new one)"
        )),
        "{err}"
    );
}

/// Without `--console` there is nowhere to send the heartbeat: said at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gt7_without_a_console_is_refused_plainly() {
    let (code, _, err) = run_paddock(&[
        "monitor",
        "--nats-url",
        "nats://127.0.0.1:1",
        "--source",
        "gt7",
    ])
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("--console"), "{err}");
}
