//! The processor's ops endpoints on `--http-addr`, as a load balancer and
//! Prometheus use them: `/healthz`, `/readyz` through a broker outage, and
//! `/metrics` checked by Prometheus's own `promtool` (without it, that test is
//! left out, saying so, except under `CI=true`: support/needs.rs).

use crate::support::needs::{Group, on_path};
use crate::support::*;

static METRICS_TEST: Group = Group::new("ops::metrics test", "sudo apt-get install prometheus");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_broker_and_health_the_process() {
    // The processor starts before its broker: alive, not ready.
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let http = format!("127.0.0.1:{}", free_port());
    let _processor = serve_binary(&url, &["--http-addr", &http]);
    assert_eq!(until_status(&http, "/healthz", 200).await, "ok\n");
    let why = until_status(&http, "/readyz", 503).await;
    assert!(
        why.contains("not connected") || why.contains("starting"),
        "{why}"
    );

    let mut server = NatsServer::start_on(port);
    assert_eq!(until_status(&http, "/readyz", 200).await, "ready\n");

    // The broker goes away: not ready, with the reason; back: ready again.
    server.kill();
    let why = until_status(&http, "/readyz", 503).await;
    assert!(why.contains("not connected to the NATS broker"), "{why}");
    assert_eq!(http_get(&http, "/healthz").await.map(|a| a.0), Some(200));
    server.start_again();
    until_status(&http, "/readyz", 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_prometheus_text_and_count_what_happened() {
    let Some(promtool_bin) = on_path(&["promtool"]) else {
        METRICS_TEST.left_out("promtool");
        return;
    };
    let server = NatsServer::start();
    let url = server.url();
    let http = format!("127.0.0.1:{}", free_port());
    let _processor = serve_binary(&url, &["--http-addr", &http]);
    let nc = connect(&url).await;
    wait_for_processors(&nc, 1).await;
    let id = create(&nc).await;
    for lap in 1..=3 {
        nc.publish(format!("session.{id}.telemetry"), frame(lap).into())
            .await
            .unwrap();
    }
    nc.publish(format!("session.{id}.telemetry"), "not json".into())
        .await
        .unwrap();
    ask(&nc, &format!("sessions.get.{id}"), String::new())
        .await
        .ok();
    ask(&nc, "sessions.get.nope", String::new())
        .await
        .expect_error(400);

    let text = until_status(&http, "/metrics", 200).await;
    // Prometheus's own parser and linter.
    let promtool = std::process::Command::new(&promtool_bin)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", promtool_bin.display()));
    use std::io::Write;
    promtool
        .stdin
        .as_ref()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    for line in [
        "paddock_ready 1",
        "paddock_sessions_live 1",
        "paddock_sessions_created_total 1",
        "paddock_frames_total{kind=\"telemetry\"} 3",
        "paddock_rejected_total{reason=\"malformed_json\"} 1",
        "paddock_rejected_total{reason=\"malformed_id\"} 1",
        "paddock_laps_completed_total 2",
        "paddock_requests_total{endpoint=\"create\",code=\"200\"} 1",
        "paddock_requests_total{endpoint=\"get\",code=\"200\"} 1",
        "paddock_requests_total{endpoint=\"get\",code=\"400\"} 1",
        "paddock_request_duration_seconds_count{endpoint=\"get\"} 2",
        "paddock_storage_write_failures_total 0",
        "paddock_slow_consumer_drops_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}

/// The page's security headers, as a browser receives them: a CSP that allows
/// the page's own scripts and styles and connections to exactly the broker's
/// WebSocket origin, no referrer, no sniffing; assets are not sniffed either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_its_security_headers() {
    let server = NatsServer::start_websocket();
    let http = format!("127.0.0.1:{}", free_port());
    let ws = server.ws_url();
    let _processor = serve_binary(&server.url(), &["--http-addr", &http, "--ws-url", &ws]);
    until_status(&http, "/healthz", 200).await;
    let id = paddock::SessionId::new_v4();
    for path in ["/".to_string(), format!("/session/{id}")] {
        let (status, headers) = http_headers(&http, &path).await;
        assert_eq!(status, 200, "{path}");
        let csp = &headers["content-security-policy"];
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            &format!("connect-src 'self' {ws}"),
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {directive} not in {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
    }
    let (status, headers) = http_headers(&http, "/assets/app.js").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-content-type-options"], "nosniff");
    // A team's page for a name that could be a team label; not for markup.
    assert_eq!(
        http_get(&http, "/team/Blue%20Racing").await.map(|a| a.0),
        Some(200)
    );
    assert_eq!(
        http_get(&http, "/team/%3Cb%3E").await.map(|a| a.0),
        Some(404)
    );
    // The icon browsers ask for by themselves: no 404 in the console.
    for path in ["/favicon.ico", "/assets/icon.svg"] {
        let (status, headers) = http_headers(&http, path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(headers["content-type"], "image/svg+xml", "{path}");
    }
}

/// Past `--max-memory` new sessions are refused with 503 `over_budget`, and the
/// processor says so on `/readyz`, `/metrics` and `sessions.stats`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_memory_budget_the_processor_refuses_new_sessions_and_says_so() {
    let server = NatsServer::start();
    let url = server.url();
    let http = format!("127.0.0.1:{}", free_port());
    // Three frames of 16 KiB reserved per session (setup, telemetry, field):
    // room for about ten sessions' two frames.
    let _processor = serve_binary(
        &url,
        &[
            "--http-addr",
            &http,
            "--max-memory",
            "400KiB",
            "--max-payload",
            "16384",
            // The memory budget is what this test fills; the buckets share
            // --kv-max-bytes (default --max-memory), whose live half (~190 KiB)
            // would refuse writes first at 32 KiB of frames per session.
            "--kv-max-bytes",
            "4MiB",
        ],
    );
    let client = connect(&url).await;
    wait_for_processors(&client, 1).await;
    until_status(&http, "/readyz", 200).await;
    let frame = |n: usize| format!(r#"{{"lap": 1, "pad": "{}"}}"#, "x".repeat(16_000 + n));
    let mut made = 0;
    let refused = loop {
        let answer = ask(&client, "sessions.create", "{}".into()).await;
        if answer.code.is_some() {
            break answer;
        }
        let id = answer.ok()["session_id"].as_str().unwrap().to_string();
        for kind in ["setup", "telemetry"] {
            client
                .publish(format!("session.{id}.{kind}"), frame(made).into())
                .await
                .unwrap();
        }
        sync(&client).await;
        made += 1;
        assert!(made < 100, "never refused");
    };
    refused.expect_error(503);
    assert!(
        refused.reason.as_deref().unwrap().contains("memory budget"),
        "{refused:?}"
    );
    assert!((8..=14).contains(&made), "{made} sessions fit");
    let why = until_status(&http, "/readyz", 503).await;
    assert!(why.contains("over its memory budget"), "{why}");
    let stats = ask(&client, "sessions.stats", "{}".into()).await.ok();
    assert_eq!(stats["memory"]["over_budget"], true, "{stats}");
    assert_eq!(stats["rejected"]["over_budget"], 1, "{stats}");
    assert!(
        stats["memory"]["frame_bytes"].as_u64().unwrap() <= 400 * 1024,
        "{stats}"
    );
    let (_, metrics) = http_get(&http, "/metrics").await.unwrap();
    assert!(metrics.contains("paddock_over_budget 1"), "{metrics}");
    assert!(
        metrics.contains("paddock_memory_budget_bytes 409600"),
        "{metrics}"
    );
}
