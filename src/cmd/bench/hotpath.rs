//! Instructions per ingested frame: `App::ingest` on a fixed workload, counted by
//! `valgrind --tool=callgrind`. Instruction counts do not move with the machine's
//! load, so this is the figure to compare between two versions of the hot path.
//!
//! The workload runs twice, with a few and with many frames; the difference over
//! the difference in frames leaves out start-up and the first frame of each session.

use anyhow::{Context, bail};

use super::Frame;
use crate::protocol::id::SessionId;
use crate::protocol::subjects::{self, DataKind};
use crate::server::app::{App, Limits};

const SESSIONS: usize = 100;

/// The workload (`paddock bench-hotpath`): `frames` frames over 100 sessions,
/// straight into `App::ingest`.
pub fn run(
    frames: usize,
    rich: bool,
    lap_field: Option<crate::protocol::payload::Pointer>,
) -> anyhow::Result<()> {
    let frame = if rich { Frame::rich() } else { Frame::small() };
    let app = App::new(Limits {
        max_payload: 64 * 1024,
        max_sessions: 10_000,
        lap_field,
        // The rate check runs on every frame, as in production, but never refuses
        // one: the workload sends far faster than any sim (as the bench's serve).
        budgets: crate::server::sessions::Budgets {
            frame_rate: 1e9,
            frame_burst: 1e9,
            laps_per_minute: 0.0,
            max_memory: usize::MAX,
            ..Default::default()
        },
        ..Default::default()
    });
    let subjects: Vec<String> = (0..SESSIONS)
        .map(|_| subjects::data(&SessionId::new_v4(), DataKind::Telemetry))
        .collect();
    for i in 0..frames {
        app.ingest(&subjects[i % SESSIONS], &frame.body)
            .context("a sample frame was refused")?;
    }
    Ok(())
}

/// (instructions for `many` frames − for `few`) / (`many` − `few`).
/// `lap_field`: as `serve --lap-field` ("none" measures the hot path without lap
/// history).
pub(crate) async fn instructions_per_frame(
    frame: &Frame,
    few: usize,
    many: usize,
    lap_field: &str,
) -> anyhow::Result<f64> {
    let a = instructions(frame, few, lap_field).await?;
    let b = instructions(frame, many, lap_field).await?;
    Ok(b.saturating_sub(a) as f64 / (many - few) as f64)
}

async fn instructions(frame: &Frame, frames: usize, lap_field: &str) -> anyhow::Result<u64> {
    let size = if frame.name == Frame::rich().name {
        "rich"
    } else {
        "small"
    };
    let output = tokio::process::Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(std::env::current_exe()?)
        .args([
            "bench-hotpath",
            "--frames",
            &frames.to_string(),
            "--frame",
            size,
            "--lap-field",
            lap_field,
        ])
        .env("RUST_LOG", "off")
        .output()
        .await
        .context("valgrind is not installed (Debian: apt-get install valgrind)")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("valgrind failed: {stderr}");
    }
    stderr
        .lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .context("no instruction count in callgrind's output")
}
