//! Fan-out: one car followed by many race engineers, and many cars each followed
//! by a few. Every dashboard is a subscription to `session.<id>.>` (the page's
//! and `watch`'s), and every frame carries the time it was published, so each
//! delivery is measured on its own: monitor → dashboard through the broker, with
//! the processor ingesting the same frames. Beside it, in the same run, the same
//! subscribers and publisher on subjects the processor does not subscribe to:
//! raw NATS.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::ensure;
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures::StreamExt;

use super::rig::{connect, sync};
use super::{Frame, Latencies};
use crate::protocol::id::SessionId;

/// One fan-out scenario.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    pub(super) sessions: usize,
    pub(super) dashboards_per_session: usize,
    pub(super) hz: u64,
    /// Connections the dashboards share (one each, up to this many).
    pub(super) connections: usize,
    pub(super) duration: Duration,
}

/// What one run of a scenario measured.
pub(super) struct FanOut {
    pub(super) latencies: Latencies,
    /// Deliveries to dashboards per second, all together.
    pub(super) delivered_per_s: f64,
}

/// The key the publish time is written under, first in every frame (nanoseconds
/// since the run's start, on this process's monotonic clock).
const SENT: &str = "{\"bench_sent_ns\":";

/// Runs `shape` with sessions under `prefix`: "session" (paddock's subjects, which
/// the processor ingests) or the raw prefix (nobody else subscribes).
pub(super) async fn run(
    url: &str,
    publisher: &Client,
    prefix: &str,
    shape: Shape,
    frame: &Frame,
) -> anyhow::Result<FanOut> {
    let ids: Vec<SessionId> = (0..shape.sessions).map(|_| SessionId::new_v4()).collect();
    let total = shape.sessions * shape.dashboards_per_session;
    let connections = shape.connections.min(total).max(1);
    let epoch = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    // Set once every delivery is in: the readers stop (a subscription's stream
    // would otherwise wait for more for as long as its connection lives).
    let (done_tx, done) = tokio::sync::watch::channel(false);

    // Dashboards first, each subscription confirmed by the broker before a frame
    // is sent: subscription k follows session k % sessions.
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(connect(url).await?);
    }
    let mut readers = Vec::with_capacity(total);
    for k in 0..total {
        let client = &clients[k % connections];
        let id = ids[k % shape.sessions];
        let mut sub = client.subscribe(format!("{prefix}.{id}.>")).await?;
        let received = Arc::clone(&received);
        let mut done = done.clone();
        readers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let message = tokio::select! {
                    message = sub.next() => match message {
                        Some(message) => message,
                        None => break,
                    },
                    _ = done.wait_for(|done| *done) => break,
                };
                let now = epoch.elapsed().as_nanos() as u64;
                if let Some(sent) = sent_ns(&message.payload) {
                    samples.push(Duration::from_nanos(now.saturating_sub(sent)));
                    received.fetch_add(1, Relaxed);
                }
            }
            samples
        }));
    }
    for client in &clients {
        sync(client).await?;
    }

    let subjects: Vec<Subject> = ids
        .iter()
        .map(|id| Subject::from(format!("{prefix}.{id}.telemetry")))
        .collect();
    let published = paced(publisher, &subjects, frame, shape, epoch).await?;
    let expected = published * shape.dashboards_per_session as u64;
    // Everything published is delivered, or the run says how much was not.
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = received.load(Relaxed);
    let _ = done_tx.send(true);
    ensure!(
        got == expected,
        "fan-out: dashboards got {got} of {expected} deliveries"
    );
    let mut samples = Vec::with_capacity(expected as usize);
    for reader in readers {
        samples.extend(reader.await?);
    }
    Ok(FanOut {
        latencies: Latencies::new(samples)?,
        delivered_per_s: expected as f64 / shape.duration.as_secs_f64(),
    })
}

/// Every session at `shape.hz` for `shape.duration`, round-robin in 1 ms slices,
/// each frame stamped with its publish time. Answers how many were published.
async fn paced(
    client: &Client,
    subjects: &[Subject],
    frame: &Frame,
    shape: Shape,
    epoch: Instant,
) -> anyhow::Result<u64> {
    let rate = shape.hz as f64 * subjects.len() as f64;
    // The sample frame without its opening brace: the stamp goes first.
    let rest = &frame.body[1..];
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut n: u64 = 0;
    while started.elapsed() < shape.duration {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while n < due {
            let mut body = Vec::with_capacity(SENT.len() + 21 + rest.len());
            body.extend_from_slice(SENT.as_bytes());
            body.extend_from_slice((epoch.elapsed().as_nanos() as u64).to_string().as_bytes());
            body.push(b',');
            body.extend_from_slice(rest);
            let subject = subjects[n as usize % subjects.len()].clone();
            client.publish(subject, Bytes::from(body)).await?;
            n += 1;
        }
    }
    client.flush().await?;
    Ok(n)
}

/// The publish time a frame carries.
fn sent_ns(payload: &[u8]) -> Option<u64> {
    let digits = payload.strip_prefix(SENT.as_bytes())?;
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_frame_is_still_the_sample_frame_and_gives_its_time_back() {
        let body = br#"{"lap":14,"fuel":41.2}"#;
        let stamped = [SENT.as_bytes(), b"123456789,", &body[1..]].concat();
        assert_eq!(sent_ns(&stamped), Some(123_456_789));
        let value: serde_json::Value = serde_json::from_slice(&stamped).unwrap();
        assert_eq!(value["lap"], 14);
        assert_eq!(sent_ns(body), None);
    }
}
