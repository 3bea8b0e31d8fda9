//! Taking a link back (docs/SECURITY.md, #44): shared links have ids, are
//! listed, and are withdrawn; a withdrawn link's renewal is refused at once by
//! every processor, across restarts, and its credentials stop at the broker
//! once they expire. Against a broker in operator mode, as `auth init` sets it up.

use std::time::Duration;

use async_nats::Client;
use serde_json::{Value, json};

use crate::isolation::{client_with, issuing_with_ttl, ops_client};
use crate::support::*;

/// `paddock sessions <args>` as ops, with auth init's ops credentials in `dir`.
async fn ops_command(url: &str, dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let creds = dir.join("ops.creds");
    let mut all = vec!["sessions"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[
        "--nats-url",
        url,
        "--creds",
        creds.to_str().unwrap(),
        "--inbox-prefix",
        "_INBOX_ops",
    ]);
    run_paddock(&all).await
}

/// A live session labelled `team`, made with the creator's credentials.
async fn labelled(url: &str, dir: &std::path::Path, team: &str) -> String {
    let creds = std::fs::read_to_string(dir.join("creator.creds")).unwrap();
    let (creator, _) = client_with(url, &creds, "_INBOX_creator").await;
    let body = json!({"team": team, "car": "#7"}).to_string();
    let doc = ask(&creator, "sessions.create", body).await.ok();
    doc["session_id"].as_str().unwrap().to_string()
}

/// A new team link, as `sessions share --team` asks for it: (id, reply).
async fn team_link(ops: &Client, team: &str) -> (String, Value) {
    let reply = ask(ops, "sessions.team", json!({"team": team}).to_string())
        .await
        .ok();
    (reply["link"].as_str().unwrap().to_string(), reply)
}

/// A link's holder, connected with the credentials in `access`.
async fn holder(url: &str, access: &Value) -> Client {
    let creds = access["creds"].as_str().unwrap();
    client_with(url, creds, access["inbox_prefix"].as_str().unwrap())
        .await
        .0
}

/// The link's renewal, asked by its holder on its own subject.
async fn renew(holder: &Client, link: &str, body: &str) -> Answer {
    ask(holder, &format!("sessions.renew.link.{link}"), body.into()).await
}

/// Refused as withdrawn: 403 with the `link_revoked` label.
fn withdrawn(answer: &Answer) {
    answer.expect_error(403);
    assert_eq!(answer.body["reason"], "link_revoked", "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_team_link_is_refused_at_once_and_the_teams_other_links_renew() {
    // Short-lived credentials, to see the broker's side of the bound.
    let ttl = 4;
    let (dir, _server, url, _processor, ops) = issuing_with_ttl("links-team", ttl).await;
    let car = labelled(&url, &dir, "Blue").await;
    let (leaked, leaked_access) = team_link(&ops, "Blue").await;
    let (kept, kept_access) = team_link(&ops, "Blue").await;
    assert_ne!(leaked, kept);
    let leaked_holder = holder(&url, &leaked_access).await;
    let kept_holder = holder(&url, &kept_access).await;
    renew(&leaked_holder, &leaked, "{}").await.ok();
    // The car page opened from the leaked link, renewed once.
    let car_access = renew(&leaked_holder, &leaked, &id_body(&car)).await.ok();
    assert_eq!(car_access["session_id"], car.as_str());
    let car_holder = holder(&url, &car_access).await;

    // Withdrawn by the command ops run.
    let (code, stdout, stderr) = ops_command(&url, &dir, &["revoke", "--link", &leaked]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("withdrew 1 link") && stdout.contains(&leaked),
        "{stdout}"
    );

    // At once: the link, and the car page opened from it, are refused.
    withdrawn(&renew(&leaked_holder, &leaked, "{}").await);
    withdrawn(&renew(&car_holder, &leaked, &id_body(&car)).await);
    // The team's other link renews, its car page too.
    renew(&kept_holder, &kept, "{}").await.ok();
    renew(&kept_holder, &kept, &id_body(&car)).await.ok();

    // Listed with when each was made, last renewed, and withdrawn.
    let (code, stdout, stderr) =
        ops_command(&url, &dir, &["links", "--team", "Blue", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed["count"], 2, "{listed}");
    let of = |id: &str| {
        listed["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["link"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed: {listed}"))
    };
    assert!(of(&leaked)["revoked_at"].is_string(), "{listed}");
    assert_eq!(of(&kept)["revoked_at"], Value::Null);
    assert_eq!(of(&kept)["kind"], "team");
    assert!(of(&kept)["renewals"].as_u64().unwrap() >= 2, "{listed}");
    assert!(of(&kept)["renewed_at"].is_string(), "{listed}");
    let (code, table, _) = ops_command(&url, &dir, &["links", "--team", "Blue"]).await;
    assert_eq!(code, 0);
    assert!(
        table.contains("withdrawn") && table.contains("live until") && table.contains("2 links"),
        "{table}"
    );

    // The broker's side: what the leaked link holds works until it expires,
    // within the TTL, and then the broker refuses it.
    let expires = chrono::DateTime::parse_from_rfc3339(car_access["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let left = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
    assert!(left <= Duration::from_secs(ttl), "{left:?}");
    tokio::time::sleep(left + Duration::from_secs(2)).await;
    let refused =
        async_nats::ConnectOptions::with_credentials(car_access["creds"].as_str().unwrap())
            .unwrap()
            .connect(&url)
            .await;
    assert!(
        refused.is_err(),
        "expired credentials of a withdrawn link connected"
    );

    // The whole team: the other link now, and none counted twice.
    let revoked = ask(&ops, "sessions.revoke", json!({"team": "Blue"}).to_string())
        .await
        .ok();
    assert_eq!(revoked["revoked"], 1, "{revoked}");
    assert_eq!(revoked["links"][0]["link"], kept.as_str());
    // (Its credentials expired too, so ops asks in the body form for it.)
    let answer = ask(
        &ops,
        "sessions.renew.link",
        json!({"link": kept}).to_string(),
    )
    .await;
    withdrawn(&answer);
    // A withdrawal of a link no one made is 404.
    ask(
        &ops,
        "sessions.revoke",
        json!({"link": "0123456789abcdef"}).to_string(),
    )
    .await
    .expect_error(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_session_link_is_refused_while_the_session_lives_on() {
    let (dir, _server, url, _processor, ops) = issuing_with_ttl("links-session", 300).await;
    let (id, _) = create_with_creator(&url, &dir).await;

    // `share` prints the link with its id, in the fragment the page reads.
    let (code, stdout, stderr) = ops_command(
        &url,
        &dir,
        &[
            "share",
            &id,
            "--json",
            "--dashboard-url",
            "http://pit.example:8080",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let shared: Value = serde_json::from_str(&stdout).unwrap();
    let leaked = shared["link_id"].as_str().unwrap().to_string();
    let link = shared["link"].as_str().unwrap();
    assert!(link.ends_with(&format!("&link={leaked}")), "{link}");
    let (_, fragment) = link.split_once('#').unwrap();
    let fragment: std::collections::HashMap<_, _> =
        url::form_urlencoded::parse(fragment.as_bytes())
            .into_owned()
            .collect();
    let creds = paddock::server::credentials::creds(&fragment["jwt"], &fragment["seed"]);
    let (leaked_holder, mut errors) = client_with(&url, &creds, &fragment["inbox"]).await;
    // It reads its session, and renews on its link, not as the session's dashboard.
    ask(&leaked_holder, &format!("sessions.get.{id}"), String::new())
        .await
        .ok();
    let renewed = renew(&leaked_holder, &leaked, "").await.ok();
    assert_eq!(renewed["kind"], "session");
    assert_eq!(renewed["session_id"], id.as_str());
    let dashboard = format!("sessions.renew.dashboard.{id}");
    let _ = leaked_holder.publish(dashboard.clone(), "".into()).await;
    refused(&mut errors, "publish", &dashboard).await;

    // Another link to the same session, made by the request itself.
    let kept_access = ask(&ops, "sessions.share", id_body(&id)).await.ok();
    let kept = kept_access["link"].as_str().unwrap().to_string();
    let kept_holder = holder(&url, &kept_access).await;

    let revoked = ask(&ops, "sessions.revoke", json!({"link": leaked}).to_string())
        .await
        .ok();
    assert_eq!(revoked["revoked"], 1, "{revoked}");
    withdrawn(&renew(&leaked_holder, &leaked, "").await);
    renew(&kept_holder, &kept, "").await.ok();
    // The session lives on.
    let doc = ask(&ops, &format!("sessions.get.{id}"), String::new())
        .await
        .ok();
    assert_eq!(doc["session_id"], id.as_str());

    let (code, table, stderr) = ops_command(&url, &dir, &["links", &id]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        table.contains(&leaked) && table.contains(&kept) && table.contains("withdrawn"),
        "{table}"
    );
    // Every link of the session at once.
    let (code, stdout, stderr) = ops_command(&url, &dir, &["revoke", "--session", &id]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("withdrew 1 link") && stdout.contains(&kept),
        "{stdout}"
    );
    withdrawn(&renew(&kept_holder, &kept, "").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawals_outlive_a_restart_and_every_processor_refuses_them() {
    let (dir, _server, url, first, ops) = issuing_with_ttl("links-restart", 300).await;
    let (leaked, leaked_access) = team_link(&ops, "Blue").await;
    let (kept, kept_access) = team_link(&ops, "Blue").await;
    let leaked_holder = holder(&url, &leaked_access).await;
    let kept_holder = holder(&url, &kept_access).await;
    ask(&ops, "sessions.revoke", json!({"link": leaked}).to_string())
        .await
        .ok();

    // The processor restarts: the withdrawal holds, the other link renews.
    assert_eq!(first.stop("-TERM"), 0);
    let ttl = ["--credentials-ttl", "300s"];
    let _second = serve_issuing(&url, &dir, &ttl);
    wait_for_processors(&ops, 1).await;
    withdrawn(&renew(&leaked_holder, &leaked, "{}").await);
    renew(&kept_holder, &kept, "{}").await.ok();

    // A processor started later shares the requests: a withdrawal answered by
    // either is refused by both, and a link made on either renews on both.
    let _third = serve_issuing(&url, &dir, &ttl);
    wait_for_processors(&ops, 2).await;
    let (fresh, fresh_access) = team_link(&ops, "Blue").await;
    let fresh_holder = holder(&url, &fresh_access).await;
    for _ in 0..10 {
        renew(&fresh_holder, &fresh, "{}").await.ok();
    }
    ask(&ops, "sessions.revoke", json!({"team": "Blue"}).to_string())
        .await
        .ok();
    for _ in 0..10 {
        withdrawn(&renew(&kept_holder, &kept, "{}").await);
        withdrawn(&renew(&fresh_holder, &fresh, "{}").await);
        withdrawn(&renew(&leaked_holder, &leaked, "{}").await);
    }
    let listed = ask(&ops, "sessions.links", json!({"team": "Blue"}).to_string())
        .await
        .ok();
    assert_eq!(listed["count"], 3, "{listed}");
    assert!(
        listed["links"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["revoked_at"].is_string()),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_bounded_and_the_team_subject_of_old_links_is_refused() {
    let dir = fresh_dir("links-bounded");
    let out = dir.to_str().unwrap().to_string();
    let (code, _, stderr) = run_paddock(&["auth", "init", "--out", &out]).await;
    assert_eq!(code, 0, "{stderr}");
    let server = NatsServer::start_with(&["-c", dir.join("nats-server.conf").to_str().unwrap()]);
    let url = server.url();
    let _processor = serve_issuing(&url, &dir, &["--max-links", "2"]);
    let ops = ops_client(&url, &dir).await;
    let id = labelled(&url, &dir, "Blue").await;
    team_link(&ops, "Blue").await;
    ask(&ops, "sessions.share", id_body(&id)).await.ok();
    let refused = ask(&ops, "sessions.team", json!({"team": "Blue"}).to_string()).await;
    refused.expect_error(503);
    assert_eq!(refused.body["reason"], "too_many_links");
    assert!(
        refused.body["error"]
            .as_str()
            .unwrap()
            .contains("--max-links 2"),
        "{refused:?}"
    );
    ask(&ops, "sessions.share", id_body(&id))
        .await
        .expect_error(503);
    // What links without ids renewed on: refused, saying why.
    let old = ask(&ops, "sessions.team.Blue", "{}".into()).await;
    old.expect_error(403);
    assert_eq!(old.body["reason"], "link_required");
    // Withdrawing needs something named.
    ask(&ops, "sessions.revoke", "{}".into())
        .await
        .expect_error(400);
}
