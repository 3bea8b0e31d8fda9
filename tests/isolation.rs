//! Per-session access on a broker in operator mode (decentralized JWT auth): the
//! processor issues each session's monitor and dashboard credentials at create,
//! and the broker holds every client to its session.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use async_nats::{Client, ConnectOptions};
use nkeys::KeyPair;
use paddock::credentials::{Issuer, encode};
use serde_json::{Value, json};
use support::*;
use tokio::sync::mpsc::UnboundedReceiver;

/// An operator, a system account and paddock's account (with a signing key the
/// processor issues users with), preloaded into a broker configuration.
struct Operator {
    dir: PathBuf,
    account: KeyPair,
    signing: KeyPair,
}

impl Operator {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "paddock-operator-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let operator = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let account = KeyPair::new_account();
        let signing = KeyPair::new_account();
        let claims = |iss: &KeyPair, sub: &KeyPair, name: &str, nats: Value| {
            json!({
                "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
                "iat": chrono::Utc::now().timestamp(),
                "iss": iss.public_key(),
                "name": name,
                "sub": sub.public_key(),
                "nats": nats,
            })
        };
        let unlimited = json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
        });
        let mut with_jetstream = unlimited.clone();
        for key in ["mem_storage", "disk_storage", "streams", "consumer"] {
            with_jetstream[key] = (-1).into();
        }
        let operator_jwt = encode(
            &claims(
                &operator,
                &operator,
                "paddock-test",
                json!({"type": "operator", "version": 2, "system_account": system.public_key()}),
            ),
            &operator,
        )
        .unwrap();
        let system_jwt = encode(
            &claims(
                &operator,
                &system,
                "SYS",
                json!({"limits": unlimited, "type": "account", "version": 2}),
            ),
            &operator,
        )
        .unwrap();
        let account_jwt = encode(
            &claims(
                &operator,
                &account,
                "paddock",
                json!({
                    "limits": with_jetstream,
                    "signing_keys": [signing.public_key()],
                    "default_permissions": {"pub": {}, "sub": {}},
                    "type": "account",
                    "version": 2,
                }),
            ),
            &operator,
        )
        .unwrap();
        let config = format!(
            "operator: \"{operator_jwt}\"\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: \"{system_jwt}\"\n  {acc}: \"{account_jwt}\"\n}}\n",
            sys = system.public_key(),
            acc = account.public_key(),
        );
        std::fs::write(dir.join("server.conf"), config).unwrap();
        std::fs::write(dir.join("signing.seed"), signing.seed().unwrap()).unwrap();
        Operator {
            dir,
            account,
            signing,
        }
    }

    fn config(&self) -> String {
        self.dir.join("server.conf").to_str().unwrap().to_string()
    }

    fn issuer(&self) -> Issuer {
        Issuer::new(&self.account.public_key(), &self.signing.seed().unwrap()).unwrap()
    }

    /// A user of paddock's account with no restriction (the processor, ops), as a
    /// .creds file.
    fn admin_creds(&self, name: &str) -> String {
        let creds = self.issuer().user(name, json!({}), None).unwrap();
        let path = self.dir.join(format!("{name}.creds"));
        std::fs::write(&path, creds).unwrap();
        path.to_str().unwrap().to_string()
    }
}

/// A client with `creds` (a .creds document) reading replies under `inbox`, and
/// the errors the server reports to it.
async fn client_with(url: &str, creds: &str, inbox: &str) -> (Client, UnboundedReceiver<String>) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_credentials_reach_that_session_and_nothing_else() {
    let operator = Operator::new();
    let server = NatsServer::start_with(&["-c", &operator.config()]);
    let url = server.url();
    let processor = Running::spawn(&[
        "serve",
        "--nats-url",
        &url,
        "--creds",
        &operator.admin_creds("processor"),
        "--issuer-account",
        &operator.account.public_key(),
        "--issuer-signing-seed",
        operator.dir.join("signing.seed").to_str().unwrap(),
    ]);
    let admin = ConnectOptions::with_credentials_file(operator.admin_creds("ops"))
        .await
        .unwrap()
        .connect(&url)
        .await
        .unwrap();
    wait_for_processors(&admin, 1).await;

    // Two sessions; the create reply carries each one's credentials.
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let doc = ask(&admin, "sessions.create", String::new()).await.ok();
        let id = doc["session_id"].as_str().unwrap().to_string();
        let creds = &doc["credentials"];
        assert_eq!(creds["inbox_prefix"], format!("_INBOX_{id}"));
        sessions.push((id, creds.clone()));
    }
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
    // Snapshots of its own session only: by subject, which the broker can check.
    for subject in [
        format!("sessions.get.{theirs}"),
        "sessions.get".to_string(),
        "sessions.list".to_string(),
        "sessions.delete".to_string(),
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
    let file = |role: &str| {
        let path = operator.dir.join(format!("{mine}-{role}.creds"));
        std::fs::write(&path, creds[role].as_str().unwrap()).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (monitor_creds, dashboard_creds) = (file("monitor"), file("dashboard"));
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
    let seen = watch.lines_for(Duration::from_secs(1)).join("\n");
    assert!(seen.contains("lap"), "the view showed no telemetry: {seen}");
    assert_eq!(watch.stop("-INT"), 0);
    assert_eq!(processor.stop("-TERM"), 0);
}
