//! A broker configured like deploy/security/: each role can do its job and is
//! refused everything else; and TLS with client certificates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;
use async_nats::{Client, ConnectOptions};
use tokio::sync::mpsc::UnboundedReceiver;

const ROLES: [(&str, &str); 5] = [
    ("processor", "processor-secret"),
    ("monitor", "monitor-secret"),
    ("dashboard", "dashboard-secret"),
    ("ops", "ops-secret"),
    ("gateway", "gateway-secret"),
];

fn password(user: &str) -> &'static str {
    ROLES.iter().find(|(u, _)| *u == user).unwrap().1
}

/// A directory holding deploy/security/roles.conf with the passwords filled in
/// (the server would read them from its environment) and a configuration that
/// includes it, as deploy/README.md says to.
fn roles_config() -> PathBuf {
    let dir = fresh_dir("roles");
    let mut roles = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/security/roles.conf"
    ))
    .unwrap();
    for (user, secret) in ROLES {
        let var = format!("$PADDOCK_{}_PASSWORD", user.to_uppercase());
        assert!(roles.contains(&var), "roles.conf names {var}");
        roles = roles.replace(&var, &format!("\"{secret}\""));
    }
    std::fs::write(dir.join("roles.conf"), roles).unwrap();
    std::fs::write(dir.join("server.conf"), "include ./roles.conf\n").unwrap();
    dir.join("server.conf")
}

/// A client of `user`, and the errors the server reports to it (a refused
/// publish or subscribe arrives only this way).
async fn client_as(url: &str, user: &str) -> (Client, UnboundedReceiver<String>) {
    let (options, errors) = reporting_errors(
        ConnectOptions::new()
            .user_and_password(user.into(), password(user).into())
            .custom_inbox_prefix(format!("_INBOX_{user}")),
    );
    let client = options
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"));
    (client, errors)
}

/// `paddock monitor` as the monitor role, on `url`.
fn monitor_in_role(url: &str) -> [&str; 9] {
    [
        "monitor",
        "--nats-url",
        url,
        "--user",
        "monitor",
        "--password",
        password("monitor"),
        "--inbox-prefix",
        "_INBOX_monitor",
    ]
}

fn serve_as_processor(url: &str) -> Running {
    Running::spawn(&[
        "serve",
        "--nats-url",
        url,
        "--user",
        "processor",
        "--password",
        password("processor"),
    ])
}

/// The Socket.IO gateway with the `gateway` role: the Race Dashboard's monitor
/// and page work through it, and the role can do nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_role_carries_the_origin_monitor_and_nothing_more() {
    let config = roles_config();
    let server = NatsServer::start_with(&["-c", config.to_str().unwrap()]);
    let url = server.url();
    let http = format!("127.0.0.1:{}", free_port());
    let _processor = Running::spawn(&[
        "serve",
        "--nats-url",
        &url,
        "--user",
        "processor",
        "--password",
        password("processor"),
        "--http-addr",
        &http,
        "--gateway-user",
        "gateway",
        "--gateway-password",
        password("gateway"),
    ]);
    until_status(&http, "/readyz", 200).await;
    let mut monitor = Sio::connect(&http).await;
    let id = monitor.request_session_id().await;
    let mut page = Sio::connect(&http).await;
    page.emit("join_session", serde_json::json!({"session_id": id}))
        .await;
    monitor
        .emit(
            "setup_data",
            serde_json::json!({"session_id": id, "setup": {"wing": 3}}),
        )
        .await;
    assert_eq!(page.next("setup_update").await["setup"]["wing"], 3);
    monitor
        .emit(
            "telemetry_update",
            serde_json::json!({"session_id": id, "telemetry": {"lap": 4}}),
        )
        .await;
    assert_eq!(page.next("telemetry_update").await["telemetry"]["lap"], 4);
    let metrics = until_status(&http, "/metrics", 200).await;
    assert!(
        !metrics.contains("paddock_gateway_rejected_total{"),
        "{metrics}"
    );

    // The role itself: no deletes, no listing, no one else's replies.
    let (gateway, mut errors) = client_as(&url, "gateway").await;
    gateway
        .publish("sessions.delete", id_body(&id).into())
        .await
        .unwrap();
    refused(&mut errors, "publish", "sessions.delete").await;
    gateway.publish("sessions.list", "".into()).await.unwrap();
    refused(&mut errors, "publish", "sessions.list").await;
    let _sub = gateway.subscribe("_INBOX_ops.>").await.unwrap();
    refused(&mut errors, "subscription", "_INBOX_ops.>").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_can_do_its_job_and_is_refused_the_rest() {
    let config = roles_config();
    let server = NatsServer::start_with(&["-c", config.to_str().unwrap()]);
    let url = server.url();
    // The processor runs with nothing but its role: JetStream buckets, the micro
    // service, announcements.
    let processor = serve_as_processor(&url);
    let (ops, mut ops_errors) = client_as(&url, "ops").await;
    wait_for_processors(&ops, 1).await;

    // Monitor: creates a session and publishes into it.
    let (monitor, mut monitor_errors) = client_as(&url, "monitor").await;
    let id = create(&monitor).await;
    monitor
        .publish(format!("session.{id}.telemetry"), frame(1).into())
        .await
        .unwrap();
    // A setup sent as a request on the same connection: the processor answers it
    // only after the frame before it, so the get below sees the frame.
    let ack = monitor
        .request(format!("session.{id}.setup"), r#"{"wing": 1}"#.into())
        .await
        .unwrap();
    assert!(ack.headers.is_none(), "{ack:?}");
    let doc = ask(&ops, "sessions.get", id_body(&id)).await.ok();
    assert_eq!(doc["telemetry"]["lap"], 1);
    // ... and reads nothing, deletes nothing, answers nothing.
    monitor
        .publish("sessions.delete", id_body(&id).into())
        .await
        .unwrap();
    refused(&mut monitor_errors, "publish", "sessions.delete").await;
    monitor
        .publish("sessions.get", id_body(&id).into())
        .await
        .unwrap();
    refused(&mut monitor_errors, "publish", "sessions.get").await;
    let _sub = monitor.subscribe("session.*.>").await.unwrap();
    refused(&mut monitor_errors, "subscription", "session.*.>").await;

    // Dashboard: reads live data and queries, writes nothing.
    let (dashboard, mut dashboard_errors) = client_as(&url, "dashboard").await;
    let (_live, mut live) = {
        let sub = dashboard
            .subscribe(format!("session.{id}.>"))
            .await
            .unwrap();
        sync_as(&dashboard).await;
        ((), sub)
    };
    monitor
        .publish(format!("session.{id}.telemetry"), frame(2).into())
        .await
        .unwrap();
    let message = next(&mut live).await;
    assert_eq!(message.subject.as_str(), format!("session.{id}.telemetry"));
    let doc = ask(&dashboard, "sessions.get", id_body(&id)).await.ok();
    assert_eq!(doc["session_id"], id.as_str());
    let list = ask(&dashboard, "sessions.list", String::new()).await.ok();
    assert_eq!(list["total"], 1);
    for subject in [
        "sessions.create".to_string(),
        "sessions.delete".to_string(),
        format!("session.{id}.telemetry"),
        format!("session.{id}.setup"),
    ] {
        dashboard
            .publish(subject.clone(), "{}".into())
            .await
            .unwrap();
        refused(&mut dashboard_errors, "publish", &subject).await;
    }
    // Nobody but the processor may answer the service.
    let _fake = dashboard.subscribe("sessions.get").await.unwrap();
    refused(&mut dashboard_errors, "subscription", "sessions.get").await;
    // Nor read another role's replies.
    for inbox in ["_INBOX.>", "_INBOX_ops.>"] {
        let _snoop = dashboard.subscribe(inbox).await.unwrap();
        refused(&mut dashboard_errors, "subscription", inbox).await;
    }

    // Ops: deletes; does not publish data or answer the service.
    for subject in [format!("session.{id}.telemetry")] {
        ops.publish(subject.clone(), frame(3).into()).await.unwrap();
        refused(&mut ops_errors, "publish", &subject).await;
    }
    let _fake = ops.subscribe("sessions.>").await.unwrap();
    refused(&mut ops_errors, "subscription", "sessions.>").await;
    let deleted = ask(&ops, "sessions.delete", id_body(&id)).await.ok();
    assert_eq!(deleted["session_id"], id.as_str());

    // A wrong password gets no connection at all.
    let wrong = ConnectOptions::new()
        .user_and_password("ops".into(), "guess".into())
        .connect(&url)
        .await;
    assert!(wrong.is_err(), "a wrong password was accepted");

    // The commands take the same credentials.
    let (code, _, stderr) = run_paddock(&[
        "sessions",
        "stats",
        "--nats-url",
        &url,
        "--user",
        "ops",
        "--password",
        password("ops"),
        "--inbox-prefix",
        "_INBOX_ops",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    // A request the role may not make is reported as the broker's refusal, not as
    // a missing processor.
    let (code, _, stderr) = run_paddock(&[
        "sessions",
        "delete",
        "3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b",
        "--timeout",
        "2s",
        "--nats-url",
        &url,
        "--user",
        "dashboard",
        "--password",
        password("dashboard"),
        "--inbox-prefix",
        "_INBOX_dashboard",
    ])
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the broker refused the request")
            && stderr.contains("Permissions Violation"),
        "{stderr}"
    );
    assert_eq!(processor.stop("-TERM"), 0);
}

/// A monitor in the monitor role may not subscribe to the lifecycle events, yet
/// it still notices its session deleted: every --check-every one frame goes as a
/// request, and the processor's 404 answer stops it (exit 1, said once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_in_its_role_stops_when_its_session_is_deleted() {
    let config = roles_config();
    let server = NatsServer::start_with(&["-c", config.to_str().unwrap()]);
    let url = server.url();
    let processor = serve_as_processor(&url);
    let (ops, _) = client_as(&url, "ops").await;
    wait_for_processors(&ops, 1).await;
    let stderr = fresh_dir("monitor-in-role").join("stderr");
    let child = paddock()
        .args(monitor_in_role(&url))
        .args(["--hz", "20", "--check-every", "300ms"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let monitor = Running::from_child(child);
    let id = monitor.line().strip_prefix("session ").unwrap().to_string();
    ask(&ops, "sessions.delete", id_body(&id)).await.ok();
    let started = std::time::Instant::now();
    let mut monitor = monitor;
    let code = loop {
        if let Some(status) = monitor.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the monitor kept publishing to its deleted session"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(code, Some(1));
    // Said once, naming the session and the end. (The delete may come before
    // the monitor's setup is acknowledged, then the refused setup says so.)
    let said = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(said.matches("has ended").count(), 1, "{said}");
    assert!(
        said.contains(&format!("session {id} has ended (deleted)")),
        "{said}"
    );
    assert_eq!(processor.stop("-TERM"), 0);
}

/// `sync` for a client whose role may not publish just anywhere: a request to an
/// endpoint it may use, answered after everything it sent before.
async fn sync_as(client: &Client) {
    client
        .request("sessions.stats", "".into())
        .await
        .expect("stats answered");
}

/// The TLS test makes its certificates with the openssl command.
pub(crate) static TLS_TEST: crate::support::needs::Group =
    crate::support::needs::Group::new("security::tls test", "sudo apt-get install openssl");

/// Runs openssl (as a test tool, like nats-server) to make a CA, a server
/// certificate for 127.0.0.1, and a client certificate.
pub(crate) fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("these tests need the openssl command (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=paddock test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    // rustls takes only X.509 v3 certificates: the client's gets an extension too.
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for name in ["server", "client"] {
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN=paddock {name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        let mut sign = vec![
            "x509",
            "-req",
            "-days",
            "2",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
        ];
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        sign.extend(["-in", &csr, "-out", &pem]);
        let ext = format!("{name}.ext");
        sign.extend(["-extfile", &ext]);
        run(&sign);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    if crate::support::needs::on_path(&["openssl"]).is_none() {
        TLS_TEST.left_out("openssl");
        return;
    }
    let dir = fresh_dir("tls");
    certificates(&dir);
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let server = NatsServer::start_with(&[
        "--tlsverify",
        "--tlscert",
        &path("server.pem"),
        "--tlskey",
        &path("server.key"),
        "--tlscacert",
        &path("ca.pem"),
    ]);
    let url = server.url();
    let tls = [
        "--tls-ca".to_string(),
        path("ca.pem"),
        "--tls-cert".to_string(),
        path("client.pem"),
        "--tls-key".to_string(),
        path("client.key"),
    ];
    let mut serve = vec!["serve".to_string(), "--nats-url".into(), url.clone()];
    serve.extend(tls.iter().cloned());
    let serve: Vec<&str> = serve.iter().map(String::as_str).collect();
    let processor = Running::spawn(&serve);

    let mut stats = vec![
        "sessions".to_string(),
        "stats".into(),
        "--nats-url".into(),
        url.clone(),
    ];
    stats.extend(tls.iter().cloned());
    let stats: Vec<&str> = stats.iter().map(String::as_str).collect();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (code, stdout, stderr) = run_paddock(&stats).await;
        if code == 0 {
            assert!(stdout.contains("live sessions"), "{stdout}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{stderr}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Without the client certificate the broker does not let the command in.
    let (code, _, stderr) = run_paddock(&["sessions", "stats", "--nats-url", &url]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("no NATS broker is reachable"), "{stderr}");
    let (code, _, stderr) = run_paddock(&[
        "sessions",
        "stats",
        "--nats-url",
        &url,
        "--tls-ca",
        &path("ca.pem"),
    ])
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(processor.stop("-TERM"), 0);
}

/// A monitor in the monitor role prints a `watch` command for the dashboard
/// role that works when pasted into a shell holding the role's password
/// (#30 item 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_in_its_role_prints_a_watch_command_for_the_dashboard_role() {
    let config = roles_config();
    let server = NatsServer::start_with(&["-c", config.to_str().unwrap()]);
    let url = server.url();
    let _processor = serve_as_processor(&url);
    let (ops, _) = client_as(&url, "ops").await;
    wait_for_processors(&ops, 1).await;
    let mut args = monitor_in_role(&url).to_vec();
    args.extend(["--progress", "0"]);
    let monitor = Running::spawn(&args);
    let _session = monitor.line();
    let watch = monitor.line();
    let watch = watch
        .trim()
        .strip_prefix("watch it: ")
        .unwrap_or(&watch)
        .to_string();
    assert!(
        watch.contains("--user dashboard --password \"$PADDOCK_DASHBOARD_PASSWORD\"")
            && watch.contains("--inbox-prefix _INBOX_dashboard"),
        "{watch}"
    );
    // As a shell would run it with the variable set.
    let pasted = watch.replace("\"$PADDOCK_DASHBOARD_PASSWORD\"", password("dashboard"));
    let mut args: Vec<&str> = pasted.split_whitespace().skip(1).collect();
    args.push("--plain");
    let watching = Running::spawn(&args);
    // The first line may come before the monitor's first frame.
    let lines = watching.lines_for(Duration::from_secs(4));
    assert!(
        lines.iter().any(|l| l.starts_with("lap")),
        "{pasted}: {lines:?}"
    );
}

/// Team mode (roles.conf): the processor may publish the teams' towers, and a
/// dashboard may read them; a monitor may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_team_mode_the_tower_feed_reaches_dashboards_and_not_monitors() {
    use futures::StreamExt;
    let config = roles_config();
    let server = NatsServer::start_with(&["-c", config.to_str().unwrap()]);
    let url = server.url();
    let _processor = serve_as_processor(&url);
    let (dashboard, _) = client_as(&url, "dashboard").await;
    let mut towers = dashboard.subscribe("team.*.tower").await.unwrap();
    let (monitor, mut errors) = client_as(&url, "monitor").await;
    let _refused = monitor.subscribe("team.*.tower").await.unwrap();
    refused(&mut errors, "subscription", "team.*.tower").await;
    // The monitor role creates a labelled car and sends a frame.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let reply = loop {
        let body = serde_json::json!({"team": "Blue", "car": "#7"}).to_string();
        match monitor.request("sessions.create", body.into()).await {
            Ok(reply) => break reply,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no processor answered: {e}"),
        }
    };
    let doc: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    let id = doc["session_id"].as_str().unwrap().to_string();
    monitor
        .publish(
            format!("session.{id}.telemetry"),
            r#"{"lap":2,"position":4}"#.into(),
        )
        .await
        .unwrap();
    let message = tokio::time::timeout(std::time::Duration::from_secs(10), towers.next())
        .await
        .expect("no tower within 10 s")
        .unwrap();
    assert_eq!(message.subject.as_str(), "team.Blue.tower");
    let tower: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(tower["cars"][0]["session_id"], id.as_str());
}

/// docs/PROTOCOL.md's "Subjects at a glance", row by row, against roles.conf:
/// each request a row says monitor, dashboard or ops may send is let through
/// by the broker (the processor answers, whatever the answer), and each it does
/// not name them for is refused. A new endpoint or role must be added to both
/// or this fails. Rows for per-session mode (`sessions.renew`, `sessions.team`:
/// credentials that only `paddock auth init`'s operator mode issues) are left
/// to that mode's tests (isolation.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_conf_allows_each_role_exactly_the_requests_protocol_md_gives_it() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let table = doc
        .split("| subject | who publishes | what |")
        .nth(1)
        .expect("PROTOCOL.md's subjects table");
    let config = roles_config();
    let server = NatsServer::start_with(&["-c", config.to_str().unwrap()]);
    let url = server.url();
    let processor = serve_as_processor(&url);
    let (ops, _) = client_as(&url, "ops").await;
    wait_for_processors(&ops, 1).await;
    let id = create(&client_as(&url, "monitor").await.0).await;
    let mut clients = Vec::new();
    for role in ["monitor", "dashboard", "ops"] {
        clients.push((role, client_as(&url, role).await));
    }

    let mut rows = 0;
    let mut wrong = Vec::new();
    for line in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let (subjects, who) = (cells[0].trim_start_matches("| "), cells[1]);
        if who.contains("per-session") {
            continue;
        }
        // Requests and data frames a client sends: `sessions.…` and a
        // session's setup and telemetry (not the processor's announcements).
        let named: Vec<String> = subjects
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|s| {
                (s.starts_with("sessions.") && !s.starts_with("sessions.events"))
                    || s.ends_with(".setup")
                    || s.ends_with(".telemetry")
            })
            .filter(|s| !s.starts_with("sessions.partition"))
            .map(|s| s.replace("<id>", &id))
            .collect();
        if named.is_empty() {
            continue;
        }
        rows += 1;
        for (role, (client, errors)) in &mut clients {
            let documented = who
                .split(", ")
                .any(|w| w == *role || w.strip_suffix('s') == Some(*role));
            for subject in &named {
                while errors.try_recv().is_ok() {}
                // The processor's answer (any answer: the broker let it
                // through), or the broker's refusal on the error callback,
                // whichever comes first.
                let (answered, refusal) = tokio::select! {
                    reply = client.request(subject.clone(), id_body(&id).into()) => {
                        (reply.is_ok(), None)
                    }
                    error = errors.recv() => {
                        (false, error.filter(|e| e.contains("permissions violation")))
                    }
                    () = tokio::time::sleep(PATIENCE) => (false, None),
                };
                match (documented, answered, refusal) {
                    (true, true, None) | (false, false, Some(_)) => {}
                    (true, _, refusal) => wrong.push(format!(
                        "{role} may send {subject} (PROTOCOL.md: {who}) but was refused: {refusal:?}"
                    )),
                    (false, answered, _) => wrong.push(format!(
                        "{role} is not named for {subject} (PROTOCOL.md: {who}) but the broker let it \
                         through (answered: {answered})"
                    )),
                }
            }
        }
    }
    assert!(
        rows >= 12,
        "only {rows} rows of requests read from PROTOCOL.md"
    );
    assert!(
        wrong.is_empty(),
        "roles.conf and PROTOCOL.md disagree:\n{}",
        wrong.join("\n")
    );
    assert_eq!(processor.stop("-TERM"), 0);
}
