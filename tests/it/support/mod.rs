//! Test harness: a real `nats-server` per test, and the processor in-process.
//! By concern: [`broker`], [`processor`], [`binary`] (the paddock binary as a
//! user runs it), [`answers`] (requests, replies, messages), [`browser`] (headless
//! chromium through chromedriver, for the dashboard page), [`needs`] (what a
//! group of tests does without the programs it drives).
//!
//! Modelled on async-nats's own `nats-server` test crate: the real binary is spawned
//! on a random port (`-p -1`), the port is read from its log, JetStream keeps its
//! store in a fresh temporary directory, and the child is killed on `Drop`. No mock.
//! That is paddock's own `broker::LocalBroker`, so tests start brokers the way
//! `paddock demo` and `paddock bench` do.
//!
//! The binary comes from `NATS_SERVER_BIN`, else `nats-server` on PATH, else the
//! pinned release in paddock's cache (fetched once, verified). If none can be had
//! the test fails with the ways to provide one: a test that cannot reach a broker
//! must never pass.
//!
//! Set `TEST_LOG=1` to see the processor's logs.

mod answers;
mod binary;
mod broker;
pub mod browser;
mod http;
pub mod needs;
mod processor;
mod proxy;
mod socketio;

pub use answers::*;
pub use binary::*;
pub use broker::*;
pub use http::*;
pub use processor::*;
pub use proxy::*;
pub use socketio::*;

use std::time::Duration;

pub const TELEMETRY: &str = include_str!("../../data/telemetry.json");
pub const TELEMETRY_RICH: &str = include_str!("../../data/telemetry-rich.json");
pub const SETUP: &str = include_str!("../../data/setup.json");

/// A scripted lap of 2000 m with `lap_distance`, a frame every 0.1 s: lap 1
/// at 50 m/s throughout; later laps at 50 m/s to 1000 m and 40 m/s after, so
/// they lose (d − 1000)/40 − (d − 1000)/50 seconds past 1000 m: 2.5 s at
/// 1500 m, 5 s at 2000 m. A later lap's first frame gives the previous lap's
/// time (40 s), as sims do.
pub fn scripted_lap(lap: u64) -> Vec<serde_json::Value> {
    let frames = if lap == 1 { 400 } else { 450 };
    (0..=frames)
        .map(|k| {
            let (d, v) = if lap == 1 || k <= 200 {
                (5.0 * k as f64, 50.0)
            } else {
                (1000.0 + 4.0 * (k - 200) as f64, 40.0)
            };
            let mut frame = serde_json::json!({
                "lap": lap, "lap_time": k as f64 / 10.0, "lap_distance": d,
                "speed": v * 3.6, "throttle": 1.0, "brake": 0.0, "steering": 0.0,
                "gear": if v > 45.0 { 5 } else { 4 }, "rpm": 8000.0,
            });
            if lap > 1 && k == 0 {
                frame["last_lap_time"] = serde_json::json!(40.0);
            }
            frame
        })
        .collect()
}

/// How long `eventually` waits for an asynchronous effect before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);
