//! paddock keeps live sim-racing sessions — a car's setup and its telemetry — and
//! serves them over NATS to race engineers' dashboards and ops tooling.
//!
//! Four layers, each depending only on the ones below it
//! (`cmd → web → server, gateway`; `gateway → client`; `cmd → client, server,
//! broker → protocol`):
//!
//! - [`protocol`]: the wire contract, with no I/O — every subject, session ids,
//!   payload validation, and the typed documents server and clients exchange.
//! - [`server`]: the processor (`paddock serve`): the session map and lap history,
//!   the `sessions` service's endpoints, ingest, storage in JetStream, credentials.
//! - [`client`]: what talks to a processor from outside — the `sessions` client and
//!   connection set-up.
//! - [`broker`]: a local nats-server for demo, bench and tests: found, or fetched
//!   (pinned and verified) into the user's cache, and started.
//! - [`gateway`]: the Race Dashboard's (1Lap) Socket.IO protocol on the HTTP side,
//!   a NATS client like any other (its monitor and pages work unchanged).
//! - [`web`]: the processor's HTTP side — the race engineer's dashboard page
//!   (embedded; it talks to NATS itself over WebSocket), `/healthz`, `/readyz`,
//!   `/metrics`.
//! - [`sources`]: real sims' telemetry (EA F1, Forza and Gran Turismo 7 over
//!   UDP, iRacing `.ibt` files, ACC/AC and iRacing shared memory on Windows)
//!   decoded into schema frames; pure, no I/O (the monitor command does that).
//! - [`export`]: laps as other tools' files (MoTeC i2's `.ld` and `.ldx`);
//!   pure, recorded traces in, bytes out.
//! - [`cmd`]: the binary's commands; the only place clap appears.
#![deny(unreachable_pub)]
#![deny(rustdoc::broken_intra_doc_links)]

// Before the modules: a macro is visible in the modules declared after it. Every
// line paddock prints goes through these two.

/// `eprintln!` that never panics. A person's pipe may close before paddock is
/// done (`paddock demo 2>&1 | tee log`, then ctrl-c ends `tee` first): what is
/// left to say is dropped, and the shutdown (stopping the broker the demo
/// started) goes on.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `println!` that never panics, for the same reason (`paddock monitor | head -1`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod broker;
#[cfg(test)]
mod circles;
pub mod client;
pub mod cmd;
pub mod export;
pub mod gateway;
pub mod protocol;
pub mod server;
pub mod sources;
pub mod web;

pub use protocol::id::SessionId;
pub use server::app::Limits;
pub use server::processor::Processor;
