//! Sessions end (deleted by ops, or expired when idle), are announced, and are
//! kept in the archive with their final state.

use std::time::Duration;

use crate::support::*;
use paddock::server::Lifecycle;
use serde_json::Value;

#[tokio::test]
async fn an_idle_session_expires_is_announced_and_archived() {
    let lifecycle = Lifecycle {
        expire_after: Some(Duration::from_secs(1)),
        ..Lifecycle::default()
    };
    let app = spawn_app_full(test_limits(), lifecycle).await;
    // Listening before the session exists: its expiry, a second after its last
    // frame, cannot come before the subscriptions.
    let (_feed_client, mut feed) =
        subscriber(&app.server.url(), "sessions.events.expired".into()).await;
    let (_dash_client, mut dashboard) = subscriber(&app.server.url(), "session.*.>".into()).await;
    let id = app.new_session().await;
    app.send_setup(&id, SETUP).await.ok();
    app.send_telemetry(&id, frame(9)).await;

    // Announced on the service-wide feed and on the session's own prefix.
    let event: Value = serde_json::from_slice(&next(&mut feed).await.payload).unwrap();
    assert_eq!(event["event"], "expired");
    assert_eq!(event["session_id"], id.as_str());
    assert_eq!(event["session"]["telemetry"]["lap"], 9);
    // On the session's own prefix too (after its frames and its creation).
    let expired = format!("session.{id}.events.expired");
    while next(&mut dashboard).await.subject.as_str() != expired {}

    let answer = app.get(&id).await;
    answer.expect_error(404);
    assert!(answer.reason.unwrap().contains("has ended (expired)"));
    let archived = app.request("sessions.archive.get", id_body(&id)).await.ok();
    assert_eq!(archived["reason"], "expired");
    assert_eq!(
        archived["session"]["setup"],
        serde_json::from_str::<Value>(SETUP).unwrap()
    );
    assert_eq!(archived["session"]["telemetry"]["lap"], 9);
    assert!(is_rfc3339_utc(&archived["ended_at"]));

    // Its monitor's data is refused from now on.
    app.send_setup(&id, SETUP).await.expect_error(404);
    let stats = app.request("sessions.stats", "").await.ok();
    assert_eq!(stats["sessions_expired"], 1);
    assert_eq!(stats["live_sessions"], 0);
}

#[tokio::test]
async fn a_session_that_keeps_sending_never_expires() {
    let lifecycle = Lifecycle {
        expire_after: Some(Duration::from_millis(800)),
        ..Lifecycle::default()
    };
    let app = spawn_app_full(test_limits(), lifecycle).await;
    let id = app.new_session().await;
    for lap in 0..20 {
        app.send_telemetry(&id, frame(lap)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.get(&id).await.ok();
}

#[tokio::test]
async fn deleted_sessions_are_in_the_archive_even_after_a_restart() {
    let mut app = spawn_app().await;
    let first = app.new_session().await;
    let second = app.new_session().await;
    app.send_telemetry(&first, frame(4)).await;
    app.get_until(&first, "frame", |d| d["telemetry"]["lap"] == 4)
        .await;
    app.request("sessions.delete", id_body(&first)).await.ok();
    app.request("sessions.delete", id_body(&second)).await.ok();

    app.restart_processor(test_limits()).await;
    let list = app.request("sessions.archive.list", "").await.ok();
    assert_eq!(list["total"], 2);
    let ids: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [second.as_str(), first.as_str()],
        "most recently ended first"
    );
    assert_eq!(list["sessions"][1]["reason"], "deleted");
    let archived = app
        .request("sessions.archive.get", id_body(&first))
        .await
        .ok();
    assert_eq!(archived["session"]["telemetry"]["lap"], 4);
    app.request("sessions.archive.get", id_body(&app.new_session().await))
        .await
        .expect_error(404);
}
