//! A team's tower and alert settings as users give them: the tower's 150-car
//! cap with `omitted`, `--tower-interval 0` turning the feed off, and
//! `--team-alerts` / `PADDOCK_TEAM_ALERTS` read from the command line and the
//! environment (docs/PROTOCOL.md, "The pit wall" and "Alerts").

use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};

use crate::support::*;

async fn create_labelled(nats: &async_nats::Client, team: &str, car: &str) -> String {
    let body = json!({"team": team, "car": car}).to_string();
    ask(nats, "sessions.create", body).await.ok()["session_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A team of 152 cars: the tower lists the first 150 by position and says
/// how many it left out, in one message under 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tower_lists_150_cars_and_counts_the_rest_as_omitted() {
    // test_limits' --create-limit 0: 152 creates from one client in a second.
    let app = spawn_app().await;
    let (_watcher, mut feed) = subscriber(&app.server.url(), "team.Big.tower".into()).await;
    for position in 1..=152u64 {
        let id = create_labelled(&app.client, "Big", &format!("#{position}")).await;
        let mut frame: Value = serde_json::from_str(TELEMETRY).unwrap();
        frame["position"] = json!(position);
        app.send_telemetry(&id, frame.to_string()).await;
    }
    let deadline = std::time::Instant::now() + PATIENCE;
    let (doc, size) = loop {
        let message = next(&mut feed).await;
        let doc: Value = serde_json::from_slice(&message.payload).unwrap();
        if doc["cars"].as_array().unwrap().len() + doc["omitted"].as_u64().unwrap_or(0) as usize
            >= 152
            && doc["cars"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["position"].is_number())
        {
            break (doc, message.payload.len());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tower never held all 152 cars: {} listed",
            doc["cars"].as_array().unwrap().len()
        );
    };
    let cars = doc["cars"].as_array().unwrap();
    assert_eq!(cars.len(), 150);
    assert_eq!(doc["omitted"], 2);
    let labels: Vec<&str> = cars.iter().map(|c| c["car"].as_str().unwrap()).collect();
    assert_eq!(labels.first(), Some(&"#1"));
    assert_eq!(labels.last(), Some(&"#150"));
    assert!(size < 64 * 1024, "{size} bytes");
}

/// `--tower-interval 0`: no tower, while the processor's ticks go on (an alert
/// raised and then cleared, a second or more apart: three tower intervals at
/// the default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_interval_0_turns_the_feed_off() {
    let server = NatsServer::start();
    let url = server.url();
    let _processor = serve_binary(&url, &["--tower-interval", "0"]);
    let nats = connect(&url).await;
    wait_for_processors(&nats, 1).await;
    let id = create_labelled(&nats, "Blue", "#7").await;
    // One connection for both, so the broker keeps their order.
    let mut tower = nats.subscribe("team.Blue.tower").await.unwrap();
    let mut alerts = nats
        .subscribe(format!("session.{id}.alerts"))
        .await
        .unwrap();
    sync(&nats).await;
    let tyres = |c: u32| json!({"lap": 1, "tire_temps": {"fl": c, "fr": 90, "rl": 90, "rr": 90}});
    let send = |frame: Value| {
        let (nats, subject) = (nats.clone(), format!("session.{id}.telemetry"));
        async move { ask(&nats, &subject, frame.to_string()).await.ok() }
    };
    send(tyres(130)).await;
    let state = |m: async_nats::Message| {
        serde_json::from_slice::<Value>(&m.payload).unwrap()["state"].clone()
    };
    assert_eq!(state(next(&mut alerts).await), "raised");
    send(tyres(90)).await;
    assert_eq!(state(next(&mut alerts).await), "cleared");
    // A tower published before the clear would be delivered before it.
    let seen = tower.next().now_or_never();
    assert!(seen.is_none(), "a tower was published: {seen:?}");
}

/// `--team-alerts`, repeated per team, each on top of the `--alert-*` values.
#[test]
fn team_alerts_flags_give_each_team_its_thresholds() {
    let limits = paddock::cmd::serve::ServeArgs::parse_flags(&[
        "--alert-tyre-max",
        "100",
        "--team-alerts",
        "Blue:brake_max=800",
        "--team-alerts",
        "Red No.2:tyre_max=110, stale=20s",
    ])
    .limits()
    .unwrap();
    let blue = limits.alerts_for(Some("Blue"));
    assert_eq!((blue.brake_max_c, blue.tyre_max_c), (800.0, 100.0));
    let red = limits.alerts_for(Some("Red No.2"));
    assert_eq!((red.tyre_max_c, red.stale_s), (110.0, 20.0));
    assert_eq!(red.brake_max_c, limits.alerts.brake_max_c);
    let other = limits.alerts_for(Some("Green"));
    assert_eq!((other.brake_max_c, other.tyre_max_c), (700.0, 100.0));
}

/// A team-alerts spec serve cannot honour stops it at start, saying which.
#[tokio::test]
async fn a_bad_team_alerts_spec_is_refused_at_start() {
    let (code, _, stderr) = run_paddock(&["serve", "--team-alerts", "Blue:brakes=800"]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("unknown threshold `brakes`"), "{stderr}");
}

/// `PADDOCK_TEAM_ALERTS`, teams separated by `;`, read by `paddock serve`: each
/// team's cars are held to its thresholds, the others to serve's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paddock_team_alerts_from_the_environment_hold_for_their_teams() {
    let server = NatsServer::start();
    let url = server.url();
    let _processor = Running::from_child(
        paddock()
            .args(["serve", "--nats-url", &url])
            .env(
                "PADDOCK_TEAM_ALERTS",
                "Blue:brake_max=800;Red:brake_max=900",
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let nats = connect(&url).await;
    wait_for_processors(&nats, 1).await;
    let blue = create_labelled(&nats, "Blue", "#7").await;
    let red = create_labelled(&nats, "Red", "#1").await;
    let plain = create(&nats).await;
    let brakes =
        |c: u32| json!({"lap": 1, "brake_temps": {"fl": c, "fr": 500, "rl": 400, "rr": 400}});
    let send = |id: &str, frame: Value| {
        let (nats, subject) = (nats.clone(), format!("session.{id}.telemetry"));
        async move { ask(&nats, &subject, frame.to_string()).await.ok() }
    };
    // 750 °C: past serve's 700, inside Blue's 800 and Red's 900.
    for id in [&blue, &red, &plain] {
        send(id, brakes(750)).await;
    }
    let brake_hot = |doc: &Value| -> Option<f64> {
        doc["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["kind"] == "brake_hot")?["threshold"]
            .as_f64()
    };
    let until = |id: String, threshold: f64| {
        let nats = nats.clone();
        async move {
            let deadline = std::time::Instant::now() + PATIENCE;
            loop {
                let doc = ask(&nats, &format!("sessions.get.{id}"), String::new())
                    .await
                    .ok();
                if brake_hot(&doc) == Some(threshold) {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no brake_hot at {threshold}: {}",
                    doc["alerts"]
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    until(plain.clone(), 700.0).await;
    // The same check ran for the teams' cars, whose frames came first.
    for id in [&blue, &red] {
        let doc = ask(&nats, &format!("sessions.get.{id}"), String::new())
            .await
            .ok();
        assert_eq!(brake_hot(&doc), None, "{}", doc["alerts"]);
    }
    // 950 °C: past both teams' own.
    send(&blue, brakes(950)).await;
    send(&red, brakes(950)).await;
    until(blue, 800.0).await;
    until(red, 900.0).await;
}
