//! Per-session access on a broker in operator mode (decentralized JWT auth): the
//! processor issues each session's monitor and dashboard credentials at create,
//! and the broker holds every client to its session.

use std::time::Duration;

use crate::support::*;
use async_nats::{Client, ConnectOptions};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

/// A client with `creds` (a .creds document) reading replies under `inbox`, and
/// the errors the server reports to it.
pub(crate) async fn client_with(
    url: &str,
    creds: &str,
    inbox: &str,
) -> (Client, UnboundedReceiver<String>) {
    let (options, errors) = reporting_errors(
        ConnectOptions::with_credentials(creds)
            .unwrap()
            .custom_inbox_prefix(inbox),
    );
    let client = options
        .connect(url)
        .await
        .expect("a client with issued credentials connects");
    (client, errors)
}

/// A client with auth init's ops credentials from `dir`, once a processor answers.
pub(crate) async fn ops_client(url: &str, dir: &std::path::Path) -> Client {
    let creds = std::fs::read_to_string(dir.join("ops.creds")).unwrap();
    let (ops, _) = client_with(url, &creds, "_INBOX_ops").await;
    wait_for_processors(&ops, 1).await;
    ops
}

/// The claims of the user JWT in a `.creds` document.
pub(crate) fn jwt_claims(creds: &str) -> Value {
    let jwt = creds.lines().nth(1).unwrap();
    serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(jwt.split('.').nth(1).unwrap().as_bytes())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_credentials_reach_that_session_and_nothing_else() {
    // The production setup, as docs/SECURITY.md says to make it.
    let dir = fresh_dir("auth");
    let out = dir.to_str().unwrap().to_string();
    let (code, _, stderr) = run_paddock(&["auth", "init", "--out", &out]).await;
    assert_eq!(code, 0, "{stderr}");
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    // The broker configuration auth init wrote beside the operator's.
    let server = NatsServer::start_with(&["-c", &path("nats-server.conf")]);
    // A second init on the same directory would invalidate everything: refused.
    let (code, _, stderr) = run_paddock(&["auth", "init", "--out", &out]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    let url = server.url();
    let processor = serve_issuing(&url, &dir, &[]);
    // Waits until the processor serves, through ops' eyes.
    let ops = ops_client(&url, &dir).await;

    // The creator's credentials receive replies only under _INBOX_creator: without
    // the flag, `sessions create` says so before sending anything, so no session
    // is created whose credentials would be lost with the reply.
    let (code, _, stderr) = run_paddock(&[
        "sessions",
        "create",
        "--nats-url",
        &url,
        "--creds",
        &path("creator.creds"),
    ])
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "receive replies only under _INBOX_creator: pass --inbox-prefix _INBOX_creator"
        ),
        "{stderr}"
    );
    let list = ask(&ops, "sessions.list", String::new()).await.ok();
    assert_eq!(list["count"], 0, "{list}");

    // Two sessions, created with the creator's credentials; the command saves
    // each one's credentials and says how to use them.
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let (id, stdout) = create_with_creator(&url, &dir).await;
        // The credentials expire --credentials-ttl (5 min) after they are issued.
        let dashboard = std::fs::read_to_string(dir.join(format!("{id}-dashboard.creds"))).unwrap();
        let claims = jwt_claims(&dashboard);
        // (The expiry is computed a moment before the JWT is stamped.)
        let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
        assert!((5 * 60 - 1..=5 * 60).contains(&lifetime), "{claims}");
        assert!(
            stdout.contains(&format!("--inbox-prefix _INBOX_{id}")),
            "{stdout}"
        );
        let creds = json!({
            "monitor": std::fs::read_to_string(dir.join(format!("{id}-monitor.creds"))).unwrap(),
            "dashboard": std::fs::read_to_string(dir.join(format!("{id}-dashboard.creds"))).unwrap(),
            "inbox_prefix": format!("_INBOX_{id}"),
        });
        sessions.push((id, creds));
    }
    // The creator creates, and that is all.
    let (creator, mut creator_errors) = client_with(
        &url,
        &std::fs::read_to_string(dir.join("creator.creds")).unwrap(),
        "_INBOX_creator",
    )
    .await;
    creator
        .publish(
            format!("session.{}.telemetry", sessions[0].0),
            frame(1).into(),
        )
        .await
        .unwrap();
    refused(
        &mut creator_errors,
        "publish",
        &format!("session.{}.telemetry", sessions[0].0),
    )
    .await;
    let (mine, creds) = &sessions[0];
    let (theirs, _) = &sessions[1];
    let inbox = creds["inbox_prefix"].as_str().unwrap();

    // The monitor writes into its own session, as a request too, and nowhere else.
    let (monitor, mut monitor_errors) =
        client_with(&url, creds["monitor"].as_str().unwrap(), inbox).await;
    let ack = monitor
        .request(format!("session.{mine}.setup"), r#"{"wing": 3}"#.into())
        .await
        .unwrap();
    assert!(ack.headers.is_none(), "{ack:?}");
    monitor
        .publish(format!("session.{theirs}.telemetry"), frame(1).into())
        .await
        .unwrap();
    refused(
        &mut monitor_errors,
        "publish",
        &format!("session.{theirs}.telemetry"),
    )
    .await;
    monitor.publish("sessions.create", "".into()).await.unwrap();
    refused(&mut monitor_errors, "publish", "sessions.create").await;

    // The dashboard reads its session live and by snapshot; a wildcard does not
    // leak the others, and neither does another session's prefix.
    let (dashboard, mut dashboard_errors) =
        client_with(&url, creds["dashboard"].as_str().unwrap(), inbox).await;
    let _wild = dashboard.subscribe("session.*.>").await.unwrap();
    refused(&mut dashboard_errors, "subscription", "session.*.>").await;
    let _other = dashboard
        .subscribe(format!("session.{theirs}.>"))
        .await
        .unwrap();
    refused(
        &mut dashboard_errors,
        "subscription",
        &format!("session.{theirs}.>"),
    )
    .await;
    let mut live = dashboard
        .subscribe(format!("session.{mine}.>"))
        .await
        .unwrap();
    let doc: Value = serde_json::from_slice(
        &dashboard
            .request(format!("sessions.get.{mine}"), "".into())
            .await
            .unwrap()
            .payload,
    )
    .unwrap();
    assert_eq!(doc["setup"], json!({"wing": 3}));
    monitor
        .publish(format!("session.{mine}.telemetry"), frame(2).into())
        .await
        .unwrap();
    let message = next(&mut live).await;
    assert_eq!(
        message.subject.as_str(),
        format!("session.{mine}.telemetry")
    );
    // A new lap completes lap 2: announced live on the session's prefix, and
    // served by request on the session's own laps subject.
    monitor
        .publish(format!("session.{mine}.telemetry"), frame(3).into())
        .await
        .unwrap();
    loop {
        if next(&mut live).await.subject.as_str() == format!("session.{mine}.lap") {
            break;
        }
    }
    let laps: Value = serde_json::from_slice(
        &dashboard
            .request(format!("sessions.laps.{mine}"), "".into())
            .await
            .unwrap()
            .payload,
    )
    .unwrap();
    assert_eq!(
        (laps["count"].as_u64(), &laps["laps"][0]["lap"]),
        (Some(1), &json!(2))
    );
    // Snapshots and laps of its own session only: by subject, which the broker
    // can check.
    for subject in [
        format!("sessions.get.{theirs}"),
        format!("sessions.laps.{theirs}"),
        "sessions.laps".to_string(),
        "sessions.get".to_string(),
        "sessions.list".to_string(),
        "sessions.delete".to_string(),
        // Renewal of its own role for its own session only: a dashboard cannot
        // turn itself into its session's monitor.
        format!("sessions.renew.monitor.{mine}"),
        format!("sessions.renew.dashboard.{theirs}"),
    ] {
        dashboard
            .publish(subject.clone(), id_body(theirs).into())
            .await
            .unwrap();
        refused(&mut dashboard_errors, "publish", &subject).await;
    }
    let _snoop = dashboard.subscribe("_INBOX.>").await.unwrap();
    refused(&mut dashboard_errors, "subscription", "_INBOX.>").await;

    // The commands work with the issued credentials alone: a monitor streaming
    // into its session, and the race engineer's view of it.
    let (monitor_creds, dashboard_creds) = (
        path(&format!("{mine}-monitor.creds")),
        path(&format!("{mine}-dashboard.creds")),
    );
    let watch = Running::spawn(&[
        "watch",
        mine,
        "--plain",
        "--nats-url",
        &url,
        "--creds",
        &dashboard_creds,
        "--inbox-prefix",
        inbox,
    ]);
    // The view's first line is the snapshot of what the test published above,
    // taken before the monitor starts.
    let snapshot = watch.line();
    let values = |line: &str| line.split(" | frame").next().unwrap_or(line).to_string();
    let (code, _, stderr) = run_paddock(&[
        "monitor",
        "--session",
        mine,
        "--duration",
        "2s",
        "--hz",
        "20",
        "--nats-url",
        &url,
        "--creds",
        &monitor_creds,
        "--inbox-prefix",
        inbox,
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("0 skipped"), "{stderr}");
    // Without the session's inbox prefix the replies could not reach the monitor:
    // it says which prefix its credentials need, before sending anything.
    let (code, _, stderr) = run_paddock(&[
        "monitor",
        "--session",
        mine,
        "--duration",
        "2s",
        "--nats-url",
        &url,
        "--creds",
        &monitor_creds,
    ])
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("pass --inbox-prefix {inbox}")),
        "{stderr}"
    );
    // Only the live monitor's frames (its simulated car: other fuel, tyres and
    // times) can change what the view shows after the snapshot.
    let seen = watch.lines_for(Duration::from_secs(1));
    assert!(
        seen.iter()
            .any(|line| line.starts_with("lap") && values(line) != values(&snapshot)),
        "the view never showed the live monitor's frames: {snapshot} then {seen:?}"
    );
    assert_eq!(watch.stop("-INT"), 0);
    assert_eq!(processor.stop("-TERM"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_renewed_while_the_session_lives_and_end_within_the_ttl_after_it() {
    const TTL_S: u64 = 4;
    let (dir, _server, url, _processor, ops) = issuing_with_ttl("auth-ttl", TTL_S).await;
    let (id, _) = create_with_creator(&url, &dir).await;
    let monitor_file = dir.join(format!("{id}-monitor.creds"));
    let issued = std::fs::read_to_string(&monitor_file).unwrap();
    let inbox = format!("_INBOX_{id}");

    // The monitor streams for several lifetimes of its credentials: it renews
    // them (and saves them), so its frames keep arriving.
    let mut monitor = KillOnDrop(
        paddock()
            .args([
                "monitor",
                "--session",
                &id,
                "--hz",
                "20",
                "--progress",
                "0",
                "--nats-url",
                &url,
            ])
            .args([
                "--creds",
                monitor_file.to_str().unwrap(),
                "--inbox-prefix",
                &inbox,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_secs(3 * TTL_S)).await;
    let count = |doc: &Value| doc["stats"]["telemetry_count"].as_u64().unwrap();
    let subject = format!("sessions.get.{id}");
    let get = || ask(&ops, &subject, String::new());
    let before = count(&get().await.ok());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = count(&get().await.ok());
    assert!(
        after > before,
        "frames stopped after {}s: {before} → {after}",
        3 * TTL_S
    );
    let renewed = std::fs::read_to_string(&monitor_file).unwrap();
    assert_ne!(renewed, issued, "the monitor saved its renewed credentials");
    // Created with the TTL, not for days. (The expiry is computed a moment
    // before the JWT is stamped: it may fall a second short.)
    let claims = jwt_claims(&issued);
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(
        (TTL_S as i64 - 1..=TTL_S as i64).contains(&lifetime),
        "{claims}"
    );

    // The session is deleted: renewal is refused, so the monitor says so and
    // stops, and its latest credentials stop working within the TTL.
    ask(&ops, "sessions.delete", id_body(&id)).await.ok();
    let deleted = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(2 * TTL_S + 5);
        loop {
            if let Some(status) = monitor.0.try_wait().unwrap() {
                let mut stderr = String::new();
                use std::io::Read;
                monitor
                    .0
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .unwrap();
                return (status, stderr);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the monitor kept running"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(1), "{}", status.1);
    assert!(status.1.contains("has ended"), "{}", status.1);
    let latest = std::fs::read_to_string(&monitor_file).unwrap();
    let refused_after = loop {
        let connected = ConnectOptions::with_credentials(&latest)
            .unwrap()
            .custom_inbox_prefix(&inbox)
            .connect(&url)
            .await;
        if connected.is_err() {
            break deleted.elapsed();
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(TTL_S + 2),
            "the deleted session's credentials still work after {:?}",
            deleted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        refused_after <= Duration::from_secs(TTL_S + 1),
        "{refused_after:?}"
    );
    // And nobody gets new ones for it.
    let (code, _, stderr) = run_paddock(&[
        "sessions",
        "renew",
        &id,
        "--role",
        "dashboard",
        "--nats-url",
        &url,
        "--creds",
        dir.join("ops.creds").to_str().unwrap(),
        "--inbox-prefix",
        "_INBOX_ops",
        "--credentials-dir",
        dir.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");
}

/// `sessions renew --credentials-dir NEW` makes the directory, as `create`
/// does, and writes the renewed credentials there (#39 item 5.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_makes_a_missing_credentials_dir() {
    let (dir, _server, url, _processor, _ops) = issuing_with_ttl("renew-dir", 300).await;
    let (id, _) = create_with_creator(&url, &dir).await;
    let new = dir.join("renewed").join("here");
    assert!(!new.exists());
    let (code, stdout, stderr) = run_paddock(&[
        "sessions",
        "renew",
        &id,
        "--role",
        "monitor",
        "--nats-url",
        &url,
        "--creds",
        dir.join("ops.creds").to_str().unwrap(),
        "--inbox-prefix",
        "_INBOX_ops",
        "--credentials-dir",
        new.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let file = new.join(format!("{id}-monitor.creds"));
    assert!(stdout.starts_with(file.to_str().unwrap()), "{stdout}");
    let creds = std::fs::read_to_string(&file).unwrap();
    assert!(creds.contains("BEGIN NATS USER JWT"), "{creds}");
}

/// A per-session link carries over 1,000 characters of credentials: no QR
/// code of it fits an 80-column terminal, so `sessions share` prints the link
/// and says so rather than a code too wide to scan, and `--qr-file` writes the
/// code as an SVG image (#39 item 5.7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_session_links_qr_code_goes_to_a_file_when_the_terminal_is_too_narrow() {
    let (dir, _server, url, _processor, _ops) = issuing_with_ttl("share-qr", 300).await;
    let (id, _) = create_with_creator(&url, &dir).await;
    let ops_creds = dir.join("ops.creds");
    let svg = dir.join("qr.svg");
    let share = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "sessions",
            "share",
            &id,
            "--nats-url",
            &url,
            "--creds",
            ops_creds.to_str().unwrap(),
            "--inbox-prefix",
            "_INBOX_ops",
            "--dashboard-url",
            "http://pit.example:8081",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_paddock(&args).await
        }
    };
    let (code, stdout, stderr) = share(&[]).await;
    assert_eq!(code, 0, "{stderr}");
    let mut lines = stdout.lines();
    let link = lines.next().unwrap();
    assert!(link.contains("#jwt="), "{link}");
    let rest: Vec<&str> = lines.collect();
    assert!(
        rest[0].starts_with("(no QR code: this link needs one ")
            && rest[0].contains("the terminal has 80")
            && rest[0].contains("--qr-file"),
        "{stdout}"
    );
    assert!(!stdout.contains('█'), "{stdout}");
    let (code, stdout, stderr) = share(&["--qr-file", svg.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("QR code written to {}", svg.display())),
        "{stdout}"
    );
    let image = std::fs::read_to_string(&svg).unwrap();
    assert!(
        image.starts_with("<?xml") && image.contains("<svg"),
        "{image:.200}"
    );
}

/// A child process killed when the test lets go of it, failing or not, so a
/// failed assertion leaves no monitor running after the test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `paddock watch` with a session's dashboard credentials renews them itself
/// (and saves them) while the session lives: past three lifetimes of the
/// credentials it still follows the monitor's frames live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_renews_its_own_credentials_past_their_lifetime() {
    const TTL_S: u64 = 4;
    let (dir, _server, url, _processor, _ops) = issuing_with_ttl("watch-ttl", TTL_S).await;
    let (id, _) = create_with_creator(&url, &dir).await;
    let file = |role: &str| dir.join(format!("{id}-{role}.creds"));
    let inbox = format!("_INBOX_{id}");
    let issued = std::fs::read_to_string(file("dashboard")).unwrap();
    let with_creds = |role: &str| {
        vec![
            "--nats-url".to_string(),
            url.clone(),
            "--creds".into(),
            file(role).to_str().unwrap().to_string(),
            "--inbox-prefix".into(),
            inbox.clone(),
        ]
    };
    let _monitor = KillOnDrop(
        paddock()
            .args(["monitor", "--session", &id, "--hz", "10", "--progress", "0"])
            .args(with_creds("monitor"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut args = vec!["watch".to_string(), id.clone(), "--plain".into()];
    args.extend(with_creds("dashboard"));
    let watch = Running::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_secs(3 * TTL_S)).await;
    // The lines of the last two seconds: live, a frame under a second old.
    let _ = watch.lines_for(Duration::from_millis(10));
    let recent = watch.lines_for(Duration::from_secs(2));
    assert!(!recent.is_empty(), "watch printed nothing");
    for line in &recent {
        assert!(
            line.starts_with("lap") && line.contains("| frame 0."),
            "after {}s: {line} ({recent:?})",
            3 * TTL_S
        );
    }
    let renewed = std::fs::read_to_string(file("dashboard")).unwrap();
    assert_ne!(renewed, issued, "watch saved its renewed credentials");
    assert_eq!(watch.stop("-INT"), 0);
}

/// Per-session access with credentials that last `ttl_s` seconds: `auth init`
/// into a fresh directory, its broker, an issuing processor, and an ops client
/// once the processor answers.
pub(crate) async fn issuing_with_ttl(
    tag: &str,
    ttl_s: u64,
) -> (std::path::PathBuf, NatsServer, String, Running, Client) {
    let dir = fresh_dir(tag);
    let out = dir.to_str().unwrap().to_string();
    let (code, _, stderr) = run_paddock(&["auth", "init", "--out", &out]).await;
    assert_eq!(code, 0, "{stderr}");
    let server = NatsServer::start_with(&["-c", dir.join("nats-server.conf").to_str().unwrap()]);
    let url = server.url();
    let processor = serve_issuing(&url, &dir, &["--credentials-ttl", &format!("{ttl_s}s")]);
    let ops = ops_client(&url, &dir).await;
    (dir, server, url, processor, ops)
}

/// What a per-session monitor prints works when pasted: the `watch` command
/// (with the session's dashboard credentials beside the monitor's) and the
/// page's link, which carries them (#30 item 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_session_monitors_printed_commands_work_when_pasted() {
    let dir = fresh_dir("monitor-hints");
    let out = dir.to_str().unwrap().to_string();
    let (code, _, stderr) = run_paddock(&["auth", "init", "--out", &out]).await;
    assert_eq!(code, 0, "{stderr}");
    let server = NatsServer::start_with(&["-c", dir.join("nats-server.conf").to_str().unwrap()]);
    let url = server.url();
    let http = format!("127.0.0.1:{}", free_port());
    let _processor = serve_issuing(&url, &dir, &["--http-addr", &http]);
    let _ops = ops_client(&url, &dir).await;
    let (id, _) = create_with_creator(&url, &dir).await;
    let creds = dir.join(format!("{id}-monitor.creds"));
    let inbox = format!("_INBOX_{id}");
    let monitor = Running::spawn(&[
        "monitor",
        "--session",
        &id,
        "--nats-url",
        &url,
        "--creds",
        creds.to_str().unwrap(),
        "--inbox-prefix",
        &inbox,
        "--progress",
        "0",
    ]);
    let printed: Vec<String> = (0..3).map(|_| monitor.line()).collect();
    let watch = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("watch it: "))
        .unwrap_or_else(|| panic!("no watch command: {printed:?}"));
    let link = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("open it: "))
        .unwrap_or_else(|| panic!("no page link: {printed:?}"));
    assert!(
        link.starts_with(&format!("http://{http}/session/{id}#jwt="))
            && link.ends_with(&format!("&inbox={inbox}")),
        "{link}"
    );
    // The watch command as printed (its first word is this binary), plus --plain.
    let words: Vec<&str> = watch.split_whitespace().skip(1).collect();
    assert!(
        watch.contains(&format!("{id}-dashboard.creds")) && words.contains(&inbox.as_str()),
        "{watch}"
    );
    let mut args = words.clone();
    args.push("--plain");
    let pasted = Running::spawn(&args);
    // The first line may come before the monitor's first frame.
    let lines = pasted.lines_for(Duration::from_secs(4));
    assert!(
        lines.iter().any(|l| l.starts_with("lap")),
        "{watch}: {lines:?}"
    );
}

/// A team link (`sessions share --team`, #28 item 4): its credentials read that
/// team's tower and nothing of another team; with them the page asks for a
/// car's credentials, for the team's cars only, those created after the link
/// too; and they are asked for again on the team's own subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_link_reads_its_teams_cars_and_no_other_team() {
    let (dir, _server, url, _processor, ops) = issuing_with_ttl("team-link", 300).await;
    let creator_creds = std::fs::read_to_string(dir.join("creator.creds")).unwrap();
    let (creator, _) = client_with(&url, &creator_creds, "_INBOX_creator").await;
    let create = |team: &str, car: &str| {
        let body = json!({"team": team, "car": car}).to_string();
        let creator = creator.clone();
        async move {
            let doc = ask(&creator, "sessions.create", body).await.ok();
            let id = doc["session_id"].as_str().unwrap().to_string();
            let monitor = doc["credentials"]["monitor"].as_str().unwrap().to_string();
            (id, monitor)
        }
    };
    let (blue, blue_monitor) = create("Blue Moon", "#7").await;
    let (red, _) = create("Red", "#1").await;

    // The share command prints the team page's link with the team's credentials.
    let ops_creds = dir.join("ops.creds");
    let (code, stdout, stderr) = run_paddock(&[
        "sessions",
        "share",
        "--team",
        "Blue Moon",
        "--json",
        "--nats-url",
        &url,
        "--creds",
        ops_creds.to_str().unwrap(),
        "--inbox-prefix",
        "_INBOX_ops",
        "--dashboard-url",
        "http://pit.example:8080/",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let shared: Value = serde_json::from_str(&stdout).unwrap();
    let link = shared["link"].as_str().unwrap();
    let (page, fragment) = link.split_once('#').unwrap();
    assert_eq!(page, "http://pit.example:8080/team/Blue%20Moon");
    let fragment: std::collections::HashMap<_, _> =
        url::form_urlencoded::parse(fragment.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(fragment["team"], "Blue Moon");
    assert_eq!(fragment["inbox"], "_INBOX_team_Blue%20Moon");
    // The link's id, in the fragment (what the page renews on) and the JSON.
    assert_eq!(fragment["link"], shared["link_id"].as_str().unwrap());
    let claims = jwt_claims(&format!(
        "-----BEGIN NATS USER JWT-----\n{}\n",
        fragment["jwt"]
    ));
    assert_eq!(
        claims["nats"]["sub"]["allow"],
        json!(["team.Blue%20Moon.>", "_INBOX_team_Blue%20Moon.>"])
    );

    // The same credentials as a client: ops asks for them as the command did.
    let team = ask(
        &ops,
        "sessions.team",
        json!({"team": "Blue Moon"}).to_string(),
    )
    .await
    .ok();
    assert_eq!(team["inbox_prefix"], "_INBOX_team_Blue%20Moon");
    let inbox = team["inbox_prefix"].as_str().unwrap();
    let (link_client, mut errors) = client_with(&url, team["creds"].as_str().unwrap(), inbox).await;
    let mut tower = link_client
        .subscribe("team.Blue%20Moon.tower")
        .await
        .unwrap();
    let message = next(&mut tower).await;
    let doc: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(doc["team"], "Blue Moon");
    assert_eq!(doc["cars"][0]["session_id"], blue.as_str(), "{doc}");

    // Another team's tower and any session's data: refused by the broker.
    let _other = link_client.subscribe("team.Red.tower").await.unwrap();
    refused(&mut errors, "subscription", "team.Red.tower").await;
    let subject = format!("session.{blue}.>");
    let _data = link_client.subscribe(subject.clone()).await.unwrap();
    refused(&mut errors, "subscription", &subject).await;

    // Asked again on the team's own subject: fresh team credentials; a car of
    // the team: that car's; a car of another team, or none: not found.
    // Its link's own subject (the link `sessions.team` made), no other.
    let own = format!("sessions.renew.link.{}", team["link"].as_str().unwrap());
    let own = own.as_str();
    let again = ask(&link_client, own, "{}".into()).await.ok();
    assert_ne!(again["creds"], team["creds"]);
    assert!(again.get("session_id").is_none(), "{again}");
    let car = ask(&link_client, own, id_body(&blue)).await.ok();
    assert_eq!(car["session_id"], blue.as_str());
    ask(&link_client, own, id_body(&red))
        .await
        .expect_error(404);
    let missing = uuid::Uuid::new_v4().to_string();
    ask(&link_client, own, id_body(&missing))
        .await
        .expect_error(404);
    ask(&link_client, own, r#"{"session_id": 7}"#.into())
        .await
        .expect_error(400);
    // Another team's subject, or the body form that names any team: refused.
    let _ = link_client.publish("sessions.team.Red", "{}".into()).await;
    refused(&mut errors, "publish", "sessions.team.Red").await;
    // Nor its team's subject, which links without ids renewed on.
    let _ = link_client
        .publish("sessions.team.Blue%20Moon", "{}".into())
        .await;
    refused(&mut errors, "publish", "sessions.team.Blue%20Moon").await;
    let _ = link_client
        .publish("sessions.team", json!({"team": "Red"}).to_string().into())
        .await;
    refused(&mut errors, "publish", "sessions.team").await;

    // The car's credentials, on the same inbox: the car page's reads, that car only.
    let (car_client, mut car_errors) =
        client_with(&url, car["creds"].as_str().unwrap(), inbox).await;
    let mut data = car_client
        .subscribe(format!("session.{blue}.>"))
        .await
        .unwrap();
    // (A reply after the subscription: the broker has it.)
    let doc = ask(&car_client, &format!("sessions.get.{blue}"), String::new())
        .await
        .ok();
    assert_eq!(doc["team"], "Blue Moon");
    let (monitor, _) = client_with(&url, &blue_monitor, &format!("_INBOX_{blue}")).await;
    monitor
        .publish(format!("session.{blue}.telemetry"), frame(4).into())
        .await
        .unwrap();
    let got = next_frame(&mut data).await;
    assert!(got.subject.as_str().ends_with(".telemetry"));
    let _ = car_client
        .publish(format!("sessions.get.{red}"), "".into())
        .await;
    refused(&mut car_errors, "publish", &format!("sessions.get.{red}")).await;

    // A car that joins after the link was made: the same link reaches it.
    let (later, _) = create("Blue Moon", "#8").await;
    let car = ask(&link_client, own, id_body(&later)).await.ok();
    assert_eq!(car["session_id"], later.as_str());
    // Relabelled into another team, a car leaves the link's reach.
    ask(
        &ops,
        "sessions.label",
        json!({"session_id": later, "team": "Red"}).to_string(),
    )
    .await
    .ok();
    ask(&link_client, own, id_body(&later))
        .await
        .expect_error(404);
}
