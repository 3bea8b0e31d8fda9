//! The public contract, row by row, through a real broker.

use std::collections::HashSet;

use crate::support::*;
use serde_json::{Value, json};

#[tokio::test]
async fn create_returns_a_fresh_session_document() {
    let app = spawn_app().await;
    let doc = app.create().await;
    assert!(is_uuid4(doc["session_id"].as_str().unwrap()), "{doc}");
    assert!(is_rfc3339_utc(&doc["created_at"]), "{doc}");
    assert!(is_rfc3339_utc(&doc["last_update"]), "{doc}");
    assert_eq!(doc["setup"], Value::Null);
    assert_eq!(doc["setup_timestamp"], Value::Null);
    assert_eq!(doc["telemetry"], Value::Null);
}

#[tokio::test]
async fn create_accepts_an_empty_body() {
    let app = spawn_app().await;
    let doc = app.request("sessions.create", "").await.ok();
    assert!(is_uuid4(doc["session_id"].as_str().unwrap()));
}

#[tokio::test]
async fn many_creates_never_collide() {
    let app = spawn_app().await;
    let mut ids = HashSet::new();
    for _ in 0..300 {
        ids.insert(app.new_session().await);
    }
    assert_eq!(ids.len(), 300);
}

#[tokio::test]
async fn setup_sent_as_a_request_is_acknowledged_once_stored() {
    let app = spawn_app().await;
    let id = app.new_session().await;
    let ack = app.send_setup(&id, SETUP).await.ok();
    assert_eq!(ack["ok"], true);
    assert_eq!(ack["session_id"], id.as_str());
    // Stored before the ack: no polling needed.
    let doc = app.get(&id).await.ok();
    assert_eq!(doc["setup"], serde_json::from_str::<Value>(SETUP).unwrap());
    assert!(is_rfc3339_utc(&doc["setup_timestamp"]));
    assert_eq!(doc["setup_timestamp"], ack["stored_at"]);
}

#[tokio::test]
async fn telemetry_is_stored_exactly_as_sent_and_moves_last_update() {
    let app = spawn_app().await;
    let created = app.create().await;
    let id = created["session_id"].as_str().unwrap().to_string();
    app.send_telemetry(&id, TELEMETRY_RICH).await;
    let doc = app
        .get_until(&id, "telemetry stored", |d| !d["telemetry"].is_null())
        .await;
    assert_eq!(
        doc["telemetry"],
        serde_json::from_str::<Value>(TELEMETRY_RICH).unwrap()
    );
    assert!(
        doc["last_update"].as_str() > created["last_update"].as_str(),
        "{doc}"
    );
    assert_eq!(doc["created_at"], created["created_at"]);
    assert_eq!(doc["stats"]["telemetry_count"], 1);
}

#[tokio::test]
async fn setup_and_telemetry_never_clobber_each_other() {
    let app = spawn_app().await;
    let id = app.new_session().await;
    app.send_setup(&id, SETUP).await.ok();
    app.send_telemetry(&id, frame(1)).await;
    app.send_telemetry(&id, frame(2)).await;
    let doc = app
        .get_until(&id, "two frames", |d| d["stats"]["telemetry_count"] == 2)
        .await;
    assert_eq!(doc["setup"], serde_json::from_str::<Value>(SETUP).unwrap());
    assert_eq!(doc["telemetry"]["lap"], 2);
    // A new setup leaves telemetry alone.
    app.send_setup(&id, r#"{"wing": 9}"#).await.ok();
    let doc = app.get(&id).await.ok();
    assert_eq!(doc["setup"], json!({"wing": 9}));
    assert_eq!(doc["telemetry"]["lap"], 2);
}

#[tokio::test]
async fn get_of_an_unknown_id_is_404() {
    let app = spawn_app().await;
    let answer = app.get(&uuid::Uuid::new_v4().to_string()).await;
    answer.expect_error(404);
}

#[tokio::test]
async fn list_shows_the_active_sessions() {
    let app = spawn_app().await;
    let a = app.new_session().await;
    let b = app.new_session().await;
    let c = app.new_session().await;
    app.request("sessions.delete", id_body(&b)).await.ok();
    let list = app.request("sessions.list", "{}").await.ok();
    let rows = list["sessions"].as_array().unwrap();
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [a.as_str(), c.as_str()],
        "oldest first, deleted ones gone"
    );
    for row in rows {
        assert!(
            is_rfc3339_utc(&row["created_at"]) && is_rfc3339_utc(&row["last_update"]),
            "{row}"
        );
    }
}

#[tokio::test]
async fn delete_ends_the_session() {
    let app = spawn_app().await;
    let id = app.new_session().await;
    let reply = app.request("sessions.delete", id_body(&id)).await.ok();
    assert_eq!(reply["deleted"], true);
    assert_eq!(reply["session_id"], id.as_str());
    assert!(is_rfc3339_utc(&reply["deleted_at"]));
    app.get(&id).await.expect_error(404);
    app.request("sessions.delete", id_body(&id))
        .await
        .expect_error(404);
}

#[tokio::test]
async fn stats_counts_sessions_and_frames() {
    let app = spawn_app().await;
    let id = app.new_session().await;
    app.send_telemetry(&id, frame(1)).await;
    app.send_telemetry(&id, "nope").await;
    app.get_until(&id, "frame stored", |d| d["stats"]["telemetry_count"] == 1)
        .await;
    let stats = app.request("sessions.stats", "").await.ok();
    assert_eq!(stats["live_sessions"], 1);
    assert_eq!(stats["sessions_created"], 1);
    assert_eq!(stats["telemetry_frames"], 1);
    assert!(stats["ingest_rate_hz"].is_number(), "{stats}");
    assert_eq!(stats["sessions_expired"], 0);
    let doc = app.get(&id).await.ok();
    assert!(
        doc["stats"]["rate_hz"].is_number() && doc["stats"]["duration_s"].is_number(),
        "{doc}"
    );
    // The bad frame may still be in flight; wait for it to be counted.
    let deadline = std::time::Instant::now() + PATIENCE;
    while app.request("sessions.stats", "").await.ok()["rejected"]["malformed_json"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the bad frame was never counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_service_is_discoverable_through_srv_subjects() {
    let app = spawn_app().await;
    let ping = app.request("$SRV.PING.sessions", "").await.ok();
    assert_eq!(ping["name"], "sessions");
    assert_eq!(ping["type"], "io.nats.micro.v1.ping_response");

    let info = app.request("$SRV.INFO.sessions", "").await.ok();
    let mut subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "sessions.archive.get",
            "sessions.archive.laps",
            "sessions.archive.laps.*",
            "sessions.archive.list",
            "sessions.compare",
            "sessions.compare.*",
            "sessions.create",
            "sessions.delete",
            "sessions.get",
            "sessions.get.*",
            "sessions.label",
            "sessions.laps",
            "sessions.laps.*",
            "sessions.links",
            "sessions.list",
            "sessions.renew.dashboard",
            "sessions.renew.dashboard.*",
            "sessions.renew.link",
            "sessions.renew.link.*",
            "sessions.renew.monitor",
            "sessions.renew.monitor.*",
            "sessions.revoke",
            "sessions.share",
            "sessions.stats",
            "sessions.stints",
            "sessions.stints.*",
            "sessions.team",
            "sessions.team.*",
            "sessions.trace",
            "sessions.trace.*"
        ]
    );
    for endpoint in info["endpoints"].as_array().unwrap() {
        assert_eq!(
            endpoint["queue_group"], "q",
            "the micro default queue group: {endpoint}"
        );
    }

    app.create().await;
    app.get(&uuid::Uuid::new_v4().to_string())
        .await
        .expect_error(404);
    let stats = app.request("$SRV.STATS.sessions", "").await.ok();
    let endpoints = stats["endpoints"].as_array().unwrap();
    let create = endpoints
        .iter()
        .find(|e| e["subject"] == "sessions.create")
        .unwrap();
    assert_eq!(create["num_requests"], 1);
    assert_eq!(create["data"]["live_sessions"], 1);
}

#[tokio::test]
async fn a_dashboard_sees_frames_and_lifecycle_events_under_the_session_prefix() {
    let app = spawn_app().await;
    let id = app.new_session().await;
    let dashboard = connect(&app.server.url()).await;
    let mut live = dashboard
        .subscribe(format!("session.{id}.>"))
        .await
        .unwrap();
    sync(&dashboard).await;

    app.send_telemetry(&id, frame(3)).await;
    app.request("sessions.delete", id_body(&id)).await.ok();

    let first = next(&mut live).await;
    assert_eq!(first.subject.as_str(), format!("session.{id}.telemetry"));
    let event = next(&mut live).await;
    assert_eq!(
        event.subject.as_str(),
        format!("session.{id}.events.deleted")
    );
    let body: Value = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(body["event"], "deleted");
    assert_eq!(body["session_id"], id.as_str());
}

#[tokio::test]
async fn the_service_wide_feed_announces_creates_and_deletes() {
    let app = spawn_app().await;
    let watcher = connect(&app.server.url()).await;
    let mut feed = watcher.subscribe("sessions.events.>").await.unwrap();
    sync(&watcher).await;
    let id = app.new_session().await;
    app.request("sessions.delete", id_body(&id)).await.ok();
    let created = next(&mut feed).await;
    assert_eq!(created.subject.as_str(), "sessions.events.created");
    let deleted = next(&mut feed).await;
    assert_eq!(deleted.subject.as_str(), "sessions.events.deleted");
    let body: Value = serde_json::from_slice(&deleted.payload).unwrap();
    assert_eq!(body["session_id"], id.as_str());
}

#[tokio::test]
async fn a_dashboard_never_sees_control_requests() {
    let app = spawn_app().await;
    let id = app.new_session().await;
    let dashboard = connect(&app.server.url()).await;
    let mut live = dashboard
        .subscribe(format!("session.{id}.>"))
        .await
        .unwrap();
    sync(&dashboard).await;
    app.get(&id).await.ok();
    app.request("sessions.list", "").await.ok();
    app.send_telemetry(&id, frame(1)).await;
    // The first thing the dashboard sees is the frame, not the requests before it.
    assert_eq!(
        next(&mut live).await.subject.as_str(),
        format!("session.{id}.telemetry")
    );
}

#[tokio::test]
async fn list_pages_through_thousands_of_sessions_within_the_broker_limit() {
    // Lifted: --max-sessions (6,000 must fit) and --on-demand-limit (they are
    // made by their first frames, 6,000 in a second; bad_input.rs tests the limit).
    let app = spawn_app_with(paddock::Limits {
        max_sessions: 7_000,
        on_demand: paddock::server::sessions::OnDemand::UNLIMITED,
        ..test_limits()
    })
    .await;
    let mut expected = HashSet::new();
    for _ in 0..6_000 {
        let id = uuid::Uuid::new_v4().to_string();
        app.send_telemetry(&id, "{}").await;
        expected.insert(id);
    }
    app.flush().await;
    // The largest page (5 000 rows) still fits in the broker's 1 MB max_payload.
    let deadline = std::time::Instant::now() + PATIENCE;
    let big = loop {
        let page = app
            .request("sessions.list", r#"{"limit": 5000}"#)
            .await
            .ok();
        if page["total"] == 6_000 {
            break page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sessions never all created: {}",
            page["total"]
        );
    };
    assert_eq!(big["count"], 5_000);
    // The default page size, followed to the end, lists each session once.
    let mut seen = HashSet::new();
    let mut offset = 0u64;
    loop {
        let page = app
            .request("sessions.list", format!(r#"{{"offset": {offset}}}"#))
            .await
            .ok();
        for row in page["sessions"].as_array().unwrap() {
            assert!(seen.insert(row["session_id"].as_str().unwrap().to_string()));
        }
        match page["next_offset"].as_u64() {
            Some(next) => offset = next,
            None => break,
        }
    }
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_snapshot_can_be_asked_with_the_id_in_the_subject() {
    let app = spawn_app().await;
    let id = app.new_session().await;
    let doc = app.request(&format!("sessions.get.{id}"), "").await.ok();
    assert_eq!(doc["session_id"], id.as_str());
    let unknown = app
        .request(&format!("sessions.get.{}", uuid::Uuid::new_v4()), "")
        .await;
    assert_eq!(unknown.code, Some(404));
    let malformed = app.request("sessions.get.not-an-id", "").await;
    assert_eq!(malformed.code, Some(400));
}

#[tokio::test]
async fn refused_requests_are_counted_by_reason_like_refused_frames() {
    let app = spawn_app().await;
    app.request("sessions.get", id_body(&uuid::Uuid::new_v4().to_string()))
        .await
        .expect_error(404);
    app.request("sessions.list", r#"{"limit": 0}"#)
        .await
        .expect_error(400);
    let stats = app.request("sessions.stats", "").await.ok();
    assert_eq!(stats["rejected"]["unknown_session"], 1, "{stats}");
    assert_eq!(stats["rejected"]["bad_request"], 1, "{stats}");
    assert_eq!(stats["rejected_total"], 2, "{stats}");
}
