//! Many monitors at once, and what dashboards see live and on joining late.

use crate::support::*;
use futures::StreamExt;
use serde_json::Value;

#[tokio::test]
async fn sixty_sessions_publishing_concurrently_each_end_with_their_own_last_frame() {
    const SESSIONS: usize = 60;
    const FRAMES: u64 = 200;
    let app = spawn_app().await;
    let url = app.server.url();
    let mut monitors = Vec::new();
    for _ in 0..SESSIONS {
        let id = app.new_session().await;
        let url = url.clone();
        // Each monitor has its own connection, as on a driver's PC.
        monitors.push(tokio::spawn(async move {
            let client = connect(&url).await;
            let setup_ack = client
                .request(format!("session.{id}.setup"), SETUP.into())
                .await
                .expect("setup acknowledged");
            assert!(setup_ack.headers.is_none(), "setup refused");
            for lap in 1..=FRAMES {
                // The last frame names its session, so a mix-up cannot go unnoticed.
                let mut frame: Value = serde_json::from_str(TELEMETRY).unwrap();
                frame["lap"] = lap.into();
                frame["player_name"] = id.clone().into();
                client
                    .publish(format!("session.{id}.telemetry"), frame.to_string().into())
                    .await
                    .unwrap();
            }
            client.flush().await.unwrap();
            id
        }));
    }
    let ids: Vec<String> = futures::future::join_all(monitors)
        .await
        .into_iter()
        .map(|r| r.expect("a monitor failed"))
        .collect();
    for id in &ids {
        let doc = app
            .get_until(id, "all frames applied", |d| {
                d["stats"]["telemetry_count"] == FRAMES
            })
            .await;
        assert_eq!(
            doc["telemetry"]["lap"], FRAMES,
            "{id} ends with its last frame"
        );
        assert_eq!(doc["telemetry"]["player_name"], id.as_str());
        assert_eq!(doc["setup"], serde_json::from_str::<Value>(SETUP).unwrap());
    }
    let stats = app.request("sessions.stats", "").await.ok();
    assert_eq!(stats["telemetry_frames"], SESSIONS as u64 * FRAMES);
    assert_eq!(stats["rejected_total"], 0);
}

#[tokio::test]
async fn two_dashboards_receive_the_same_frames_in_order() {
    let app = spawn_app().await;
    let id = app.new_session().await;
    let mut dashboards = Vec::new();
    for _ in 0..2 {
        let client = connect(&app.server.url()).await;
        let sub = client.subscribe(format!("session.{id}.>")).await.unwrap();
        sync(&client).await;
        dashboards.push((client, sub));
    }
    app.send_setup(&id, SETUP).await.ok();
    for lap in 1..=50 {
        app.send_telemetry(&id, frame(lap)).await;
    }
    app.flush().await;
    let mut seen = Vec::new();
    for (_client, sub) in &mut dashboards {
        let mut subjects_and_laps = Vec::new();
        for _ in 0..51 {
            let msg = next_frame(sub).await;
            let body: Value = serde_json::from_slice(&msg.payload).unwrap();
            subjects_and_laps.push((msg.subject.to_string(), body["lap"].clone()));
        }
        seen.push(subjects_and_laps);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0][0].0, format!("session.{id}.setup"));
    let laps: Vec<u64> = seen[0][1..]
        .iter()
        .map(|(_, lap)| lap.as_u64().unwrap())
        .collect();
    assert_eq!(laps, (1..=50).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_late_joiner_sees_the_current_state_at_once_then_live_frames() {
    let app = spawn_app().await;
    let id = app.new_session().await;
    app.send_setup(&id, SETUP).await.ok();
    for lap in 1..=10 {
        app.send_telemetry(&id, frame(lap)).await;
    }
    app.get_until(&id, "ten frames", |d| d["stats"]["telemetry_count"] == 10)
        .await;

    // The documented join: subscribe first, then take the snapshot, so no frame
    // falls between the two.
    let dashboard = connect(&app.server.url()).await;
    let mut live = dashboard
        .subscribe(format!("session.{id}.>"))
        .await
        .unwrap();
    // No sync needed: the broker handles the SUB before the request on this connection.
    let snapshot = Answer::from(
        dashboard
            .request("sessions.get", id_body(&id).into())
            .await
            .unwrap(),
    )
    .ok();
    assert_eq!(snapshot["telemetry"]["lap"], 10);
    assert_eq!(
        snapshot["setup"],
        serde_json::from_str::<Value>(SETUP).unwrap()
    );
    assert!(is_rfc3339_utc(&snapshot["setup_timestamp"]));

    app.send_telemetry(&id, frame(11)).await;
    let msg = next_frame(&mut live).await;
    let body: Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(body["lap"], 11);
}

// Multi-threaded, as in production: that is where two tasks could race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_includes_every_frame_the_broker_routed_before_it() {
    // The dashboard's join: subscribe, then `sessions.get`. A setup the broker routed
    // before the dashboard's subscription is not delivered to it live, so it must be
    // in the snapshot, even while the processor is still working through a backlog.
    // Frames dense with numbers are slow to validate and build that backlog.
    // Lifted: --max-frame-rate. 1,000 frames at once to one session, past the
    // default burst of 300 (which would refuse the setup after them).
    let app = spawn_app_with(no_frame_rate(test_limits())).await;
    let monitor = connect(&app.server.url()).await;
    let heavy: String = {
        let numbers: Vec<String> = (0..2_000).map(|i| format!("{}.{i}", i * 7)).collect();
        format!(r#"{{"samples": [{}]}}"#, numbers.join(","))
    };
    for round in 0..8u64 {
        let id = uuid::Uuid::new_v4().to_string();
        for _ in 0..1_000 {
            let subject = format!("session.{id}.telemetry");
            monitor
                .publish(subject, heavy.clone().into())
                .await
                .unwrap();
        }
        let setup = format!(r#"{{"round": {round}}}"#);
        monitor
            .publish(format!("session.{id}.setup"), setup.into())
            .await
            .unwrap();
        // The broker has routed every one of those messages once this returns.
        sync(&monitor).await;

        let dashboard = connect(&app.server.url()).await;
        let mut live = dashboard
            .subscribe(format!("session.{id}.>"))
            .await
            .unwrap();
        let reply = dashboard
            .request("sessions.get", id_body(&id).into())
            .await
            .unwrap();
        let snapshot = Answer::from(reply).ok();
        assert_eq!(
            snapshot["setup"]["round"], round,
            "round {round}: the snapshot missed the setup"
        );
        assert_eq!(snapshot["stats"]["telemetry_count"], 1_000, "round {round}");
        // No monitor frame from before the subscription shows up live. (The
        // processor's own announcements may: `events.created` when the first
        // frame is applied and each `lap` once stored, which can be after the
        // dashboard subscribed.)
        while let Ok(Some(msg)) =
            tokio::time::timeout(std::time::Duration::from_millis(50), live.next()).await
        {
            assert!(
                msg.subject.contains(".events.") || msg.subject.ends_with(".lap"),
                "round {round}: a frame from before the subscription arrived live: {}",
                msg.subject
            );
        }
    }
}
