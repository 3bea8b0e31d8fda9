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
        "| raw NATS request/reply p50 / p99 / p99.9 under",
        "| plain subscriber CPU per frame, 0.5 KB |",
        "| paddock ingest, 0.5 KB |",
        "| paddock ingest, 1.5 KB |",
        "| JetStream KV put, pipelined, 1.5 KB |",
        "| sessions.get p50 / p99 / p99.9 under",
        "| monitor → dashboard p50 / p99 at",
        "| processor CPU per frame, 0.5 KB |",
        "| fan-out: 1 session at 20 Hz → 10 dashboards each:",
        "| fan-out: 50 sessions at 20 Hz → 2 dashboards each:",
        "| partitions: 1 (1 processor), aggregate ingest, 0.5 KB |",
        "| partitions: 2 (2 processors), aggregate ingest, 0.5 KB |",
        "| partitions: 2, memory per processor |",
        "| memory per session at 1000 sessions |",
        "| recovery of 1000 stored sessions |",
        "| instructions per ingested frame, 0.5 KB |",
    ] {
        assert!(stdout.contains(row), "no {row:?} in:\n{stdout}\n{stderr}");
    }
    let row = |start: &str| -> Vec<String> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no {start:?} row"));
        line.split('|').map(|c| c.trim().to_string()).collect()
    };
    // Each ingest measurement applied every frame (the bench fails otherwise) and
    // says so, with a rate.
    for size in ["0.5 KB", "1.5 KB"] {
        let cells = row(&format!("| paddock ingest, {size} |"));
        assert!(
            cells[3].contains("every final frame served, none lost"),
            "{cells:?}"
        );
        let rate: f64 = cells[2]
            .trim_end_matches(" frames/s")
            .replace(',', "")
            .parse()
            .unwrap();
        assert!(rate > 0.0, "{cells:?}");
    }
    // With the consumer on a core of its own: measured on 2 cores or more, and
    // otherwise said not to be, for that reason.
    assert!(
        stdout.contains("| paddock ingest, 0.5 KB, consumer on a core of its own |")
            || stdout.contains(
                "| paddock ingest, consumer on a core of its own | not measured | needs 2 cores |"
            ),
        "no pinned ingest row in:\n{stdout}"
    );
    // Instructions: a count when valgrind is installed; without it, "not
    // measured" for exactly that reason, never for another error.
    let cells = row("| instructions per ingested frame, 0.5 KB |");
    let has_valgrind = std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if has_valgrind {
        assert!(cells[2].parse::<f64>().is_ok_and(|n| n > 0.0), "{cells:?}");
    } else {
        assert_eq!(cells[2], "not measured", "{cells:?}");
        assert!(cells[3].contains("valgrind is not installed"), "{cells:?}");
    }
}
