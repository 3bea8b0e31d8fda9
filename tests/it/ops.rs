//! The processor's ops endpoints on `--http-addr`, as a load balancer and
//! Prometheus use them: `/healthz`, `/readyz` through a broker outage, and
//! `/metrics` checked by Prometheus's own `promtool`.

use crate::support::*;

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
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "metrics test did not run: promtool not found ({e}). Install Debian's \
                 `apt-get install prometheus` (promtool), or leave it out with \
                 `cargo test -- --skip ops::metrics`"
            )
        });
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
