//! `paddock bench --quick`: the benchmark command runs end to end (its own broker
//! and processor) and reports every part. The figures themselves live in
//! docs/BENCHMARKS.md, from a full run; a test asserts no timing.

use crate::support::*;

#[tokio::test]
async fn the_quick_benchmark_reports_every_part() {
    // The bench starts its own nats-server, found as the harness finds it
    // (NATS_SERVER_BIN, PATH, the pinned release).
    let (code, stdout, stderr) = run_paddock(&["bench", "--quick"]).await;
    assert_eq!(code, 0, "{stderr}");
    for row in [
        "| raw NATS delivery, 0.5 KB |",
        "| paddock ingest, 0.5 KB |",
        "| paddock ingest, 1.5 KB |",
        "| JetStream KV put, pipelined, 1.5 KB |",
        "| sessions.get p50 / p99 / p99.9 under",
        "| monitor → dashboard p50 / p99 at",
        "| memory per session at 1000 sessions |",
        "| recovery of 1000 stored sessions |",
        // A figure with valgrind, "not measured" and the reason without.
        "| instructions per ingested frame, 0.5 KB |",
    ] {
        assert!(stdout.contains(row), "no {row:?} in:\n{stdout}\n{stderr}");
    }
    assert!(stdout.contains("none lost"), "{stdout}");
}
