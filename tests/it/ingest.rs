//! No honest frame is lost to a burst (#40): `paddock serve` with its default
//! flags (only `--create-limit 0`, so one client may create every session), and
//! 500,000 frames of 0.5 KB published as fast as one connection takes them over
//! 100, 1,000 and 10,000 sessions. Each session sends no more than the default
//! `--max-frame-burst` (300) lets through at once, so every frame is honest.
//! Every session's final frame is applied, nothing is dropped, and /metrics
//! shows no slow consumer.
//!
//! A correctness test, not a timed one: how fast is `paddock bench`'s business.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use crate::support::*;

/// Frames in all, when the burst allows them.
const FRAMES: usize = 500_000;
/// Most frames one session sends: under the default `--max-frame-burst` (300).
const PER_SESSION: usize = 250;

/// A frame of about 0.5 KB: the sample telemetry, compact, with its number.
fn frame(seq: usize) -> Vec<u8> {
    let mut doc: Value = serde_json::from_str(TELEMETRY).unwrap();
    doc["seq"] = seq.into();
    serde_json::to_vec(&doc).unwrap()
}

async fn burst(sessions: usize) {
    let server = NatsServer::start();
    let url = server.url();
    let http = format!("127.0.0.1:{}", free_port());
    // Not `serve_binary`: that turns the frame rate off. These are the defaults.
    let _processor = Running::spawn(&[
        "serve",
        "--nats-url",
        &url,
        "--http-addr",
        &http,
        "--create-limit",
        "0",
    ]);
    let nc = connect(&url).await;
    wait_for_processors(&nc, 1).await;
    let started = Instant::now();
    let ids: Vec<String> = futures::stream::iter(0..sessions)
        .map(|_| create(&nc))
        .buffer_unordered(64)
        .collect()
        .await;
    let created = started.elapsed();

    let per_session = (FRAMES / sessions).min(PER_SESSION);
    let sample = frame(0);
    let subjects: Vec<String> = ids
        .iter()
        .map(|id| format!("session.{id}.telemetry"))
        .collect();
    // Round after round over every session: the final frames come last.
    let publisher = connect(&url).await;
    let started = Instant::now();
    for seq in 1..=per_session {
        let payload: bytes::Bytes = if seq == per_session {
            frame(seq).into()
        } else {
            sample.clone().into()
        };
        for subject in &subjects {
            publisher
                .publish(subject.clone(), payload.clone())
                .await
                .unwrap();
        }
    }
    publisher.flush().await.unwrap();
    let published = started.elapsed();
    let total = (per_session * sessions) as u64;

    // Everything is applied once the counter says so; the wait is generous
    // because this is not a timing.
    let deadline = Instant::now() + Duration::from_secs(120);
    let stats = loop {
        let stats = ask(&nc, "sessions.stats", "{}".into()).await.ok();
        if stats["telemetry_frames"].as_u64() == Some(total) {
            break stats;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {total} frames applied: {stats}",
            stats["telemetry_frames"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(stats["ingest"]["dropped"], 0, "{stats}");
    assert_eq!(stats["rejected_total"], 0, "{stats}");

    // Every session's final frame, as a dashboard joining now would get it.
    let finals: Vec<(String, Value)> = futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let nc = nc.clone();
            async move {
                let doc = ask(&nc, &format!("sessions.get.{id}"), String::new())
                    .await
                    .ok();
                (id, doc)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let stale: Vec<_> = finals
        .iter()
        .filter(|(_, doc)| doc["telemetry"]["seq"] != per_session)
        .map(|(id, doc)| format!("{id}: seq {}", doc["telemetry"]["seq"]))
        .collect();
    assert!(
        stale.is_empty(),
        "{} of {sessions} sessions lack their final frame: {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
    for (id, doc) in &finals {
        assert_eq!(doc["stats"]["telemetry_count"], per_session, "{id}: {doc}");
        assert_eq!(doc["stats"]["dropped_count"], 0, "{id}: {doc}");
    }

    let metrics = until_status(&http, "/metrics", 200).await;
    for line in [
        "paddock_slow_consumer_drops_total 0",
        "paddock_ingest_dropped_total 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    eprintln!(
        "{sessions} sessions x {per_session} frames: created in {created:?}, published in \
         {published:?}; the ingest queue held at most {} bytes of {}",
        stats["ingest"]["peak_bytes"], stats["ingest"]["buffer_bytes"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_100_sessions_loses_no_frame() {
    burst(100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_1000_sessions_loses_no_frame() {
    burst(1_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_10000_sessions_loses_no_frame() {
    burst(10_000).await;
}
