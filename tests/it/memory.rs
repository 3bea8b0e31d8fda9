//! `--max-memory` as docs/SECURITY.md states it ("past it no frame may grow"),
//! and the writers' queues' counters (`laps_unstored`, `alerts_unqueued`) where
//! an operator reads them. The queues' own bounds are unit tests beside them
//! (src/server/store/): filling them here would take 100,000 laps or 4,096
//! alert events held behind a stalled bucket.

use std::sync::atomic::Ordering::Relaxed;

use serde_json::Value;

use crate::support::*;

/// A frame of exactly `size` bytes with no lap field (so no lap record takes
/// memory beside it): a sequence number and padding.
fn padded(seq: u64, size: usize) -> String {
    let mut frame = format!(r#"{{"seq": {seq}, "pad": ""#);
    frame.push_str(&"x".repeat(size - frame.len() - 2));
    frame.push_str("\"}");
    assert_eq!(frame.len(), size);
    frame
}

async fn stats(app: &TestApp) -> Value {
    app.request("sessions.stats", "{}").await.ok()
}

/// Sessions are created while memory is free, then their frames grow until the
/// frames held would pass `--max-memory`: the frame that would is refused (503
/// `over_budget`) and its session keeps the one before, a setup may not grow
/// either, a frame no larger than the one it replaces is still taken, and what
/// the sessions hold never passes the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_memory_no_frame_may_grow() {
    // 1 MiB: ten sessions' worth of 63 KiB setups and telemetry is more.
    let limits = paddock::cmd::serve::ServeArgs::parse_flags(&["--max-memory", "1MiB"])
        .limits()
        .expect("valid flags");
    let app = spawn_app_with(limits).await;
    let budget = stats(&app).await["memory"]["budget_bytes"]
        .as_u64()
        .unwrap();
    assert_eq!(budget, 1024 * 1024);
    const BIG: usize = 63 * 1024;
    const SMALL: usize = 100;

    // Created while nothing is held (a create needs room for two frames of
    // --max-payload), each with a small telemetry frame to grow from.
    let mut ids = Vec::new();
    for _ in 0..10 {
        let id = app.new_session().await;
        app.request(&format!("session.{id}.telemetry"), padded(0, SMALL))
            .await
            .ok();
        ids.push(id);
    }
    // Nine big setups and a small one.
    for (i, id) in ids.iter().enumerate() {
        let size = if i == 9 { SMALL } else { BIG };
        app.send_setup(id, padded(0, size)).await.ok();
    }
    // Telemetry grows session by session until the budget is met.
    let mut refused = None;
    for (i, id) in ids.iter().enumerate() {
        let answer = app
            .request(&format!("session.{id}.telemetry"), padded(1, BIG))
            .await;
        if answer.code.is_some() {
            refused = Some((i, answer));
            break;
        }
    }
    let Some((at, answer)) = refused else {
        panic!(
            "every frame grew past --max-memory 1MiB: {}",
            stats(&app).await
        )
    };
    answer.expect_error(503);
    assert_eq!(answer.body["reason"], "over_budget", "{answer:?}");
    let held = stats(&app).await["memory"]["frame_bytes"].as_u64().unwrap();
    assert!(held <= budget, "{held} bytes held");
    assert!(
        held + BIG as u64 - SMALL as u64 > budget,
        "refused with room to spare: {held} bytes held"
    );
    // The session keeps the frame the refused one would have replaced.
    let doc = app.get(&ids[at]).await.ok();
    assert_eq!(doc["telemetry"]["seq"], 0, "{}", doc["telemetry"]["seq"]);

    // A setup may not grow either.
    let small_setup = &ids[9];
    let answer = app.send_setup(small_setup, padded(1, BIG)).await;
    answer.expect_error(503);
    assert_eq!(answer.body["reason"], "over_budget", "{answer:?}");
    assert_eq!(app.get(small_setup).await.ok()["setup"]["seq"], 0);

    // Frames no larger than the ones they replace are still taken.
    app.request(&format!("session.{}.telemetry", ids[at]), padded(2, SMALL))
        .await
        .ok();
    app.send_setup(small_setup, padded(2, SMALL)).await.ok();
    app.request(&format!("session.{}.telemetry", ids[0]), padded(2, BIG))
        .await
        .ok();
    assert_eq!(app.get(&ids[at]).await.ok()["telemetry"]["seq"], 2);

    let s = stats(&app).await;
    assert!(
        s["memory"]["frame_bytes"].as_u64().unwrap() <= budget,
        "{s}"
    );
    assert_eq!(s["memory"]["over_budget"], true, "{s}");
    assert_eq!(s["rejected"]["over_budget"], 2, "{s}");
    // Frames published (not requested) are held to the same rule.
    app.send_telemetry(&ids[at], padded(3, BIG)).await;
    let s = app_stats_until(&app, |s| s["rejected"]["over_budget"] == 3).await;
    assert!(
        s["memory"]["frame_bytes"].as_u64().unwrap() <= budget,
        "{s}"
    );
    assert_eq!(app.get(&ids[at]).await.ok()["telemetry"]["seq"], 2);
}

/// Polls `sessions.stats` until `check` holds.
async fn app_stats_until(app: &TestApp, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let s = stats(app).await;
        if check(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sessions.stats never got there: {s}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// What the lap writer and the alert writer count when their queues overflow
/// (their unit tests fill them) is what `sessions.stats` reports, under the
/// names docs/PROTOCOL.md gives, and `/metrics` serves both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writers_overflow_counters_are_reported() {
    let app = spawn_app().await;
    let s = stats(&app).await;
    assert_eq!(
        (&s["laps_unstored"], &s["alerts_unqueued"]),
        (&0.into(), &0.into()),
        "{s}"
    );
    // The counters the writers add to (src/server/store/: the unit tests show
    // each overflow lands here).
    app.app.metrics.laps_unstored.fetch_add(7, Relaxed);
    app.app.metrics.alerts_unqueued.fetch_add(3, Relaxed);
    let s = stats(&app).await;
    assert_eq!(s["laps_unstored"], 7, "{s}");
    assert_eq!(s["alerts_unqueued"], 3, "{s}");

    // And where an operator scrapes them, from the processor users run.
    let http = format!("127.0.0.1:{}", free_port());
    let _processor = serve_binary(&app.server.url(), &["--http-addr", &http, "--no-gateway"]);
    // Served from the start, the processor's part once it runs.
    let deadline = std::time::Instant::now() + PATIENCE;
    let metrics = loop {
        let metrics = until_status(&http, "/metrics", 200).await;
        if metrics.contains("paddock_sessions_live ") {
            break metrics;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    for name in [
        "paddock_laps_unstored_total",
        "paddock_alerts_unqueued_total",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} missing: {metrics}"
        );
    }
}
