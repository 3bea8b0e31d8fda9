//! The session map: the one owner of every live session's state.
//!
//! The NATS handlers call this small API — `create`, `get`, `update_setup`,
//! `update_telemetry`, `delete`, `list`, and `laps` for lap history — and never
//! reach into the map. What lifecycle and storage need besides (expiry, the
//! archive, recovery, peers, the write-behind's dirty list) is `pub(crate)`: the
//! server's own business.
//!
//! One `std::sync::Mutex` guards it: every operation is a few hash-map steps and
//! refcount bumps, it is never held across an `.await`, and documents are rendered
//! from a [`Snapshot`] after the lock is released.
//!
//! Frames are stored as `Bytes` holding exactly the bytes the monitor sent (the
//! data path copies them out of the client's read buffer once): a snapshot is a
//! refcount bump per frame, and returns each frame byte for byte.
//!
//! One file per reason to change; this one only names them. At the bottom, what
//! a session is made of: `frame.rs` (a stored frame, [`Now`]), `rate.rs` (the
//! telemetry rate), `budget.rs` (what a session may cost), `error.rs` (why an
//! operation was refused), `session.rs` (a session, its [`Snapshot`], what is
//! kept when it [`Ended`]) and `document.rs` (the session document). Above them
//! `map.rs`, the map and its owner API; then each of its other users' side of it,
//! as more `impl Sessions` blocks: `admission.rs` (the frame rate, capacity),
//! `lap_records.rs` (lap history, restored, adopted and trimmed), `archive.rs`
//! (expiry and ended sessions), `replicas.rs` (storage's and peers' copies),
//! `persist.rs` (the write-behind's dirty list) and `views.rs` (what the tower
//! and the alerts read, with the tower's input types, so the tower uses the map
//! and not the other way round). Each file uses only files listed before it,
//! never this one (src/circles.rs checks that no modules form a circle).

mod admission;
mod archive;
mod budget;
mod document;
mod error;
mod frame;
mod lap_records;
mod map;
mod persist;
mod rate;
mod replicas;
mod session;
#[cfg(test)]
mod test_support;
mod views;

pub use budget::{
    Budgets, DEFAULT_FIELD_BURST, DEFAULT_FIELD_RATE, DEFAULT_FRAME_BURST, DEFAULT_FRAME_RATE,
    DEFAULT_LAPS_PER_MINUTE, DEFAULT_MAX_LAP_BYTES, DEFAULT_MAX_MEMORY, OnDemand,
};
pub use error::{OnDemandLimit, SessionError};
pub use frame::{Frame, Now};
pub use map::{Applied, Held, Load, Sessions};
pub use replicas::Followed;
pub use session::{Ended, SessionStats, Snapshot};
pub use views::{PACE_LAPS, TeamCar};

pub use crate::protocol::documents::EndReason;

pub use crate::protocol::documents::SessionSummary as Summary;

pub use crate::protocol::documents::time::format as format_time;
