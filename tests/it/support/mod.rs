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

/// How long `eventually` waits for an asynchronous effect before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);
