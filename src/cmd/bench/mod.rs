//! `paddock bench`: paddock measured beside raw NATS and a JetStream KV bucket, in
//! one run, against a broker and a processor it starts itself.
//!
//! Every figure is printed as it is measured (stderr) and the table at the end
//! (stdout, Markdown) is what docs/BENCHMARKS.md holds. Ratios compare figures
//! from the same run only: the machine's absolute speed cancels out.

mod fanout;
mod helper;
mod hotpath;
mod partitions;
mod pinned;
mod rig;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

use std::path::PathBuf;

use clap::Args;

use super::args::{LapField, parse_lap_field};
use crate::broker::{self, LocalBroker};
use crate::client::SessionsClient;
use crate::protocol::id::SessionId;
use crate::protocol::subjects::{self, DataKind};
use helper::Sink;
use rig::{Processor, connect, counter, start_broker, sync, wait_for_counter};

pub use helper::{EchoArgs, SinkArgs, echo, sink};
pub use hotpath::run as hotpath;

/// The sample frames, compacted as a monitor sends them.
pub(crate) struct Frame {
    pub(crate) name: &'static str,
    pub(crate) body: Bytes,
    /// The same frame with `"final": true`: each session's final frame, which
    /// the check looks for afterwards. Not a new lap: a lap completed by every
    /// session in every round (two lap records each, stored and announced) was
    /// a cost no car brings, and it grew with the sessions.
    pub(crate) last: Bytes,
}

/// The field that marks a session's final frame.
const FINAL: &str = "final";

/// The raw subscriber's subjects: as long as `session`, so the broker's work per
/// frame is the same, and outside what the processor subscribes to.
const RAW_PREFIX: &str = "rawdata";

fn median(figures: &mut [f64]) -> f64 {
    figures.sort_by(f64::total_cmp);
    figures[figures.len() / 2]
}

impl Frame {
    pub(crate) fn small() -> Frame {
        Frame::new("0.5 KB", include_str!("../../../tests/data/telemetry.json"))
    }

    pub(crate) fn rich() -> Frame {
        Frame::new(
            "1.5 KB",
            include_str!("../../../tests/data/telemetry-rich.json"),
        )
    }

    /// The rich sample grown to `bytes` by a string field: ingest as frames grow
    /// (a sim's whole car, or a field of cars, is more than the 1.5 KB sample).
    pub(crate) fn padded(name: &'static str, bytes: usize) -> Frame {
        let mut value: Value =
            serde_json::from_str(include_str!("../../../tests/data/telemetry-rich.json"))
                .expect("the sample is JSON");
        let short = value.to_string().len() + r#","pad":"""#.len();
        value["pad"] = "x".repeat(bytes.saturating_sub(short)).into();
        Frame::new(name, &value.to_string())
    }

    fn new(name: &'static str, pretty: &str) -> Frame {
        let mut value: Value = serde_json::from_str(pretty).expect("the sample is JSON");
        let body = Bytes::from(value.to_string());
        value[FINAL] = true.into();
        Frame {
            name,
            body,
            last: Bytes::from(value.to_string()),
        }
    }
}

/// One row of the report.
struct Row {
    what: String,
    figure: String,
    note: String,
}

struct Report {
    rows: Vec<Row>,
}

impl Report {
    fn add(&mut self, what: impl Into<String>, figure: impl Into<String>, note: impl Into<String>) {
        let row = Row {
            what: what.into(),
            figure: figure.into(),
            note: note.into(),
        };
        say!("  {:<52} {:>16}   {}", row.what, row.figure, row.note);
        self.rows.push(row);
    }

    fn print(&self) {
        out!("| measurement | figure | note |");
        out!("|---|---:|---|");
        for row in &self.rows {
            out!("| {} | {} | {} |", row.what, row.figure, row.note);
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// nats-server binary to start the benchmark's own broker with (default:
    /// `nats-server` on PATH, else the pinned release, fetched into the cache).
    #[arg(long, env = "NATS_SERVER_BIN")]
    pub nats_server_bin: Option<PathBuf>,
    /// Frames per ingest measurement.
    #[arg(long, env = "PADDOCK_BENCH_FRAMES", default_value_t = 300_000)]
    pub frames: usize,
    /// Turns of raw NATS and paddock per ingest measurement (medians are reported).
    #[arg(long, env = "PADDOCK_BENCH_ROUNDS", default_value_t = 5)]
    pub rounds: usize,
    /// Sessions the frames are spread over (every part but the ingest table's rows by sessions).
    #[arg(long, env = "PADDOCK_BENCH_SESSIONS", default_value_t = 100)]
    pub sessions: usize,
    /// The ingest table's rows by sessions (0.5 KB frames), beyond --sessions' rows.
    #[arg(
        long,
        env = "PADDOCK_BENCH_INGEST_SESSIONS",
        value_delimiter = ',',
        default_value = "1000,10000,100000"
    )]
    pub ingest_sessions: Vec<usize>,
    /// Ingest rate (frames/s) while `sessions.get` latency is measured.
    #[arg(long, env = "PADDOCK_BENCH_GET_RATE", default_value_t = 50_000)]
    pub get_rate: u64,
    /// Seconds of `sessions.get` under load.
    #[arg(long, env = "PADDOCK_BENCH_GET_SECONDS", default_value_t = 10)]
    pub get_seconds: u64,
    /// Stored sessions to recover.
    #[arg(
        long,
        env = "PADDOCK_BENCH_RECOVERY_SESSIONS",
        default_value_t = 100_000
    )]
    pub recovery_sessions: usize,
    /// Only these parts: ingest, pinned (ingest with the consumer on a core of
    /// its own), get, latency, fanout, partitions, memory, recovery, callgrind.
    #[arg(long, env = "PADDOCK_BENCH_ONLY", value_delimiter = ',')]
    pub only: Vec<String>,
    /// A smoke test: every part, on small figures, in seconds.
    #[arg(long, env = "PADDOCK_BENCH_QUICK")]
    pub quick: bool,
}

#[derive(Debug, Clone, Args)]
pub struct HotpathArgs {
    #[arg(long, default_value_t = 10_000)]
    pub frames: usize,
    /// small (0.5 KB) or rich (1.5 KB).
    #[arg(long, default_value = "small")]
    pub frame: String,
    /// As `serve --lap-field` ("none": lap history off, to measure its cost).
    #[arg(long, default_value = "/lap", value_parser = parse_lap_field)]
    pub lap_field: LapField,
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::from(args);
    let (bin, _) = broker::locate(args.nats_server_bin.as_deref())?;
    say!(
        "paddock bench: {} ({} cores), {}",
        machine(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        broker::version(&bin)
    );
    let mut report = Report { rows: Vec::new() };
    let wants = |part: &str| args.only.is_empty() || args.only.iter().any(|p| p == part);

    // Rows by frame size at --sessions, then by sessions with the small frame;
    // each on a broker of its own, so no processor recovers another's sessions.
    let shapes = std::iter::once((plan.sessions, true))
        .chain(plan.ingest_sessions.iter().map(|&n| (n, false)))
        .filter(|_| wants("ingest") || wants("pinned"));
    for (session_count, first) in shapes {
        let (broker, client, sessions) = fresh_broker(&bin).await?;
        let (ids, subjects) = new_sessions(session_count);
        let raw_subjects: Vec<Subject> = ids
            .iter()
            .map(|id| Subject::from(format!("{RAW_PREFIX}.{id}.telemetry")))
            .collect();
        // Two layouts: everything sharing every core, and (`pinned`) the consumer
        // on a core of its own, as a deployment gives the processor.
        let mut layouts = Vec::new();
        if wants("ingest") {
            layouts.push(false);
        }
        if wants("pinned") && first {
            if pinned::all_cores().len() > pinned::CONSUMER_CORE {
                layouts.push(true);
            } else {
                report.add(
                    "paddock ingest, consumer on a core of its own",
                    "not measured",
                    "needs 2 cores",
                );
            }
        }
        let turns = Turns {
            broker: &broker,
            client: &client,
            sessions: &sessions,
            ids: &ids,
            subjects: &subjects,
            raw_subjects: &raw_subjects,
            plan: &plan,
        };
        for pinned in layouts {
            let frames = if first {
                vec![
                    Frame::small(),
                    Frame::rich(),
                    Frame::padded("4 KB", 4096),
                    Frame::padded("16 KB", 16384),
                ]
            } else {
                vec![Frame::small()]
            };
            let (small, rich) = (Frame::small().body.len(), Frame::rich().body.len());
            for frame in frames {
                // The same bytes per round at every size: 300,000 frames of
                // 16 KB would be 4.8 GB, held by the ingest queue past its
                // 256 MiB whenever the processor is a step behind.
                let count = (plan.frames * small / frame.body.len())
                    .clamp(plan.frames.min(1_000), plan.frames);
                let layout = match (pinned, first) {
                    (true, _) => ", consumer on a core of its own".to_string(),
                    (false, true) => String::new(),
                    (false, false) => format!(", {} sessions", thousands(session_count as f64)),
                };
                say!(
                    "== ingest, {} frames, {} sessions, {} ({} bytes){layout}",
                    count,
                    session_count,
                    frame.name,
                    frame.body.len()
                );
                let Ingest {
                    raw,
                    ingest,
                    paired,
                    cpu_per_frame,
                    raw_cpu_per_frame,
                    queue_peak,
                    recording,
                } = turns.run(&frame, count, pinned).await?;
                report.add(
                    format!("raw NATS delivery, {}{layout}", frame.name),
                    rate(raw),
                    format!(
                        "plain subscriber in a process of its own, median of {}",
                        plan.rounds
                    ),
                );
                report.add(
                    format!("paddock ingest, {}{layout}", frame.name),
                    rate(ingest),
                    format!(
                        "**{:.2} × raw**, median of {} (the rounds' own ratios: median {paired:.2}); every final frame served, none lost; the ingest queue held at most {} of {}",
                        ingest / raw,
                        plan.rounds,
                        crate::server::store::human_bytes(queue_peak as u128),
                        crate::server::store::human_bytes(
                            crate::server::app::DEFAULT_INGEST_BUFFER_BYTES as u128
                        ),
                    ),
                );
                if let Some(r) = recording {
                    let frames = r.recorded + r.unrecorded;
                    report.add(
                        format!("trace record after the burst, {}{layout}", frame.name),
                        format!("{:.1} s", r.after.as_secs_f64()),
                        format!(
                            "median of {}: from the last frame applied until the trace writer had written every frame (it stands back during a burst); {} of {} frames recorded, {} left out (its 64 MiB queue full); processor CPU meanwhile {:.0} ns per recorded frame",
                            plan.rounds,
                            thousands(r.recorded as f64),
                            thousands(frames as f64),
                            thousands(r.unrecorded as f64),
                            r.cpu.as_secs_f64() * 1e9 * plan.rounds as f64
                                / r.recorded.max(1) as f64,
                        ),
                    );
                }
                report.add(
                    format!("processor CPU per frame, {}{layout}", frame.name),
                    format!("{cpu_per_frame:.0} ns"),
                    format!(
                        "median of {}: its threads' time on a CPU during a round / frames (it includes the client library's share)",
                        plan.rounds
                    ),
                );
                report.add(
                    format!("plain subscriber CPU per frame, {}{layout}", frame.name),
                    format!("{raw_cpu_per_frame:.0} ns"),
                    format!(
                        "median of {}: a client that only counts; it keeps ahead, so it reads fewer frames per wake-up than the processor",
                        plan.rounds
                    ),
                );
                if pinned || !first || frame.body.len() > rich {
                    continue;
                }
                let awaited = kv_puts(&client, &ids, &frame, plan.kv_awaited, 1).await?;
                report.add(
                    format!("JetStream KV put, awaited, {}", frame.name),
                    rate(awaited),
                    format!("{:.3} × raw", awaited / raw),
                );
                let pipelined = kv_puts(&client, &ids, &frame, plan.frames, 256).await?;
                report.add(
                    format!("JetStream KV put, pipelined, {}", frame.name),
                    rate(pipelined),
                    format!("{:.3} × raw (256 in flight)", pipelined / raw),
                );
            }
        }
    }

    // A broker of its own, like every part: on the one the ingest parts had just
    // loaded, paddock's get p99 came out 1.5-2.0 x the responder's, 1.1-1.2 x on
    // a fresh one or with `--store memory` (docs/BENCHMARKS.md, session 9):
    // left-overs of other parts, not this part's load.
    if wants("get") || wants("latency") {
        let (broker, client, sessions) = fresh_broker(&bin).await?;
        let (ids, subjects) = new_sessions(plan.sessions);
        let frame = Frame::rich();
        let (processor, _) = Processor::start(&broker.url(), &[], &sessions).await?;
        // Every session exists (has a frame) before it is asked for.
        blast(&client, &subjects, &frame, subjects.len()).await?;
        wait_for_counter(
            &sessions,
            "live_sessions",
            subjects.len() as u64,
            Duration::from_secs(10),
        )
        .await?;
        if wants("get") {
            say!(
                "== sessions.get under {} frames/s of ingest ({}), {:?}",
                plan.get_rate,
                frame.name,
                plan.get_duration
            );
            // The two take turns in one-second slices, so that whatever else
            // the machine does meanwhile (the previous part's processes
            // exiting, a neighbour on the VM) falls on both alike; one
            // stretch of each put all of it on whichever came second.
            let targets = [Target::RawEcho, Target::Paddock];
            let mut samples = [Vec::new(), Vec::new()];
            let mut achieved = [0.0; 2];
            let slices = plan.get_duration.as_secs().max(1);
            for _ in 0..slices {
                for (k, target) in targets.into_iter().enumerate() {
                    let (some, rate) = request_latency(
                        &broker.url(),
                        &client,
                        &ids,
                        &subjects,
                        &frame,
                        &plan,
                        target,
                        Duration::from_secs(1),
                    )
                    .await?;
                    samples[k].extend(some);
                    achieved[k] += rate / slices as f64;
                }
            }
            for ((target, samples), achieved) in targets.into_iter().zip(samples).zip(achieved) {
                let lat = Latencies::new(samples)?;
                let what = match target {
                    Target::RawEcho => "raw NATS request/reply",
                    Target::Paddock => "sessions.get",
                };
                report.add(
                    format!("{what} p50 / p99 / p99.9 under {}", per_s(achieved)),
                    format!(
                        "{} / {} / {}",
                        us(lat.at(0.50)),
                        us(lat.at(0.99)),
                        us(lat.at(0.999))
                    ),
                    format!("{} requests, one at a time", lat.0.len()),
                );
            }
        }
        if wants("latency") {
            for &hz in &plan.latency_rates {
                say!("== monitor to dashboard at {hz} frames/s ({})", frame.name);
                let lat =
                    dashboard_latency(&broker.url(), &client, &subjects, &frame, hz, &plan).await?;
                report.add(
                    format!("monitor → dashboard p50 / p99 at {}", per_s(hz as f64)),
                    format!("{} / {}", us(lat.at(0.50)), us(lat.at(0.99))),
                    format!("{} frames through the broker", lat.0.len()),
                );
            }
        }
        processor.stop().await?;
    }

    if wants("fanout") {
        let (broker, client, sessions) = fresh_broker(&bin).await?;
        let frame = Frame::small();
        let (processor, _) = Processor::start(&broker.url(), &[], &sessions).await?;
        for shape in &plan.fan_out {
            say!(
                "== fan-out: {} session(s) at {} Hz, {} dashboard(s) each, {:?} ({})",
                shape.sessions,
                shape.hz,
                shape.dashboards_per_session,
                shape.duration,
                frame.name
            );
            let raw = fanout::run(&broker.url(), &client, RAW_PREFIX, *shape, &frame).await?;
            let paddock = fanout::run(&broker.url(), &client, "session", *shape, &frame)
                .await
                .with_context(|| format!("see {}", processor.log.display()))?;
            let figures = |f: &fanout::FanOut| {
                format!(
                    "{} / {}, {}",
                    us(f.latencies.at(0.50)),
                    us(f.latencies.at(0.99)),
                    thousands(f.delivered_per_s)
                )
            };
            say!(
                "  raw NATS: {}; paddock: {}",
                figures(&raw),
                figures(&paddock)
            );
            report.add(
                format!(
                    "fan-out: {} at {} Hz → {} dashboard{} each: p50 / p99, deliveries/s",
                    if shape.sessions == 1 {
                        "1 session".to_string()
                    } else {
                        format!("{} sessions", thousands(shape.sessions as f64))
                    },
                    shape.hz,
                    shape.dashboards_per_session,
                    if shape.dashboards_per_session == 1 { "" } else { "s" }
                ),
                figures(&paddock),
                format!(
                    "raw NATS, same subscribers: {}; subscriptions / connections: {} / {}; the processor ingests every frame",
                    figures(&raw),
                    shape.sessions * shape.dashboards_per_session,
                    shape.connections.min(shape.sessions * shape.dashboards_per_session)
                ),
            );
        }
        processor.stop().await?;
    }

    if wants("partitions") {
        let mut single = None;
        for &count in &plan.partitions {
            say!(
                "== partitions: {count}, a processor owning each; {} frames × {} rounds ({}), then {} more sessions ({})",
                plan.frames,
                plan.rounds,
                Frame::small().name,
                thousands(plan.partition_sessions as f64),
                Frame::rich().name
            );
            let figures = partitions::run(
                &bin,
                count,
                plan.frames,
                plan.rounds,
                plan.sessions,
                plan.partition_sessions,
            )
            .await?;
            let single = *single.get_or_insert(figures.ingest);
            report.add(
                format!(
                    "partitions: {count} ({count} processor{}), aggregate ingest, {}",
                    if count == 1 { "" } else { "s" },
                    Frame::small().name
                ),
                rate(figures.ingest),
                format!(
                    "{:.2} × one processor; median of {}, {} sessions; every final frame served",
                    figures.ingest / single,
                    plan.rounds,
                    plan.sessions
                ),
            );
            report.add(
                format!("partitions: {count}, memory per processor"),
                format!("{:.1} MB", figures.growth_per_processor / 1e6),
                format!(
                    "RSS growth each, mean, while {} sessions ({}) were added: {:.0} B per session in all",
                    thousands(plan.partition_sessions as f64),
                    Frame::rich().name,
                    figures.growth_per_processor * f64::from(count)
                        / plan.partition_sessions as f64
                ),
            );
        }
    }

    if wants("memory") {
        let (broker, client, sessions) = fresh_broker(&bin).await?;
        let frame = Frame::rich();
        let (processor, _) =
            Processor::start(&broker.url(), &["--store", "memory"], &sessions).await?;
        say!("== memory per session ({} frames)", frame.name);
        let base = processor.rss_bytes()?;
        let mut made = 0;
        for &target in &plan.memory_sessions {
            fill(&client, &sessions, &frame, made, target).await?;
            made = target;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let per = (processor.rss_bytes()?.saturating_sub(base)) as f64 / target as f64;
            report.add(
                format!("memory per session at {target} sessions"),
                format!("{:.0} B", per),
                format!(
                    "{:.0} B beyond the {}-byte frame it stores (RSS growth / sessions)",
                    per - frame.body.len() as f64,
                    frame.body.len()
                ),
            );
        }
        processor.stop().await?;
    }

    if wants("recovery") {
        let (broker, client, sessions) = fresh_broker(&bin).await?;
        let frame = Frame::rich();
        let n = plan.recovery_sessions;
        say!("== recovery of {n} stored sessions ({})", frame.name);
        let (processor, _) = Processor::start(&broker.url(), &[], &sessions).await?;
        let ids = fill(&client, &sessions, &frame, 0, n).await?;
        processor.stop().await?;
        let (processor, took) = Processor::start(&broker.url(), &[], &sessions).await?;
        let live = counter(&sessions, "live_sessions").await?;
        ensure!(live == n as u64, "recovered {live} of {n} sessions");
        let answered = answer_all(&sessions, &ids).await?;
        report.add(
            format!("recovery of {n} stored sessions"),
            format!("{:.2} s", took.as_secs_f64()),
            format!("from process start to serving; then {answered} of {n} gets answered"),
        );
        processor.stop().await?;
    }

    if wants("callgrind") {
        say!("== instructions per ingested frame (valgrind --tool=callgrind)");
        // With lap history (the default, `--lap-field /lap`) and without, so the
        // cost of reading the lap field is a figure of its own.
        let runs = [
            (Frame::small(), "/lap", ""),
            (Frame::rich(), "/lap", ""),
            (Frame::small(), "none", ", lap history off"),
            (Frame::rich(), "none", ", lap history off"),
        ];
        for (frame, lap_field, label) in runs {
            let what = format!("instructions per ingested frame, {}{label}", frame.name);
            match hotpath::instructions_per_frame(
                &frame,
                plan.callgrind.0,
                plan.callgrind.1,
                lap_field,
            )
            .await
            {
                Ok(per) => report.add(
                    what,
                    format!("{per:.0}"),
                    "App::ingest alone: parse, validate, store (no NATS)",
                ),
                // Not a failure of the run (valgrind is optional), but never a
                // silent gap: the table says what was not measured, and why.
                Err(e) => report.add(
                    what,
                    "not measured",
                    format!("{e:#}")
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                ),
            }
        }
    }

    out!();
    out!(
        "paddock bench on {}, {} cores, {}",
        machine(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        broker::version(&bin)
    );
    out!();
    report.print();
    Ok(())
}

/// A broker of the part's own (nothing left over from another part), a client,
/// and the `sessions` service through it.
async fn fresh_broker(
    bin: &std::path::Path,
) -> anyhow::Result<(LocalBroker, Client, SessionsClient)> {
    let broker = start_broker(bin)?;
    let client = connect(&broker.url()).await?;
    let sessions = SessionsClient::new(client.clone(), broker.url(), Duration::from_secs(5));
    Ok((broker, client, sessions))
}

/// `n` new session ids and the telemetry subject of each.
pub(crate) fn new_sessions(n: usize) -> (Vec<SessionId>, Vec<Subject>) {
    let ids: Vec<SessionId> = (0..n).map(|_| SessionId::new_v4()).collect();
    let subjects = ids
        .iter()
        .map(|id| Subject::from(subjects::data(id, DataKind::Telemetry)))
        .collect();
    (ids, subjects)
}

/// How much of everything to do; `--quick` shrinks it to a smoke test.
struct Plan {
    sessions: usize,
    ingest_sessions: Vec<usize>,
    frames: usize,
    rounds: usize,
    kv_awaited: usize,
    get_rate: u64,
    get_duration: Duration,
    latency_rates: Vec<u64>,
    fan_out: Vec<fanout::Shape>,
    memory_sessions: Vec<usize>,
    /// Layouts of the partitions part, and the sessions each fills for memory.
    partitions: Vec<u32>,
    partition_sessions: usize,
    recovery_sessions: usize,
    /// Frames of the two callgrind runs.
    callgrind: (usize, usize),
}

impl From<&BenchArgs> for Plan {
    fn from(args: &BenchArgs) -> Self {
        if args.quick {
            return Plan {
                sessions: args.sessions,
                ingest_sessions: vec![1_000],
                frames: 20_000,
                rounds: 1,
                kv_awaited: 1_000,
                get_rate: 5_000,
                get_duration: Duration::from_secs(1),
                latency_rates: vec![1_000],
                fan_out: vec![
                    fan_out(1, 10, Duration::from_secs(2)),
                    fan_out(50, 2, Duration::from_secs(2)),
                ],
                memory_sessions: vec![1_000],
                partitions: vec![1, 2],
                partition_sessions: 1_000,
                recovery_sessions: 1_000,
                callgrind: (1_000, 3_000),
            };
        }
        Plan {
            sessions: args.sessions,
            ingest_sessions: args.ingest_sessions.clone(),
            frames: args.frames,
            rounds: args.rounds,
            kv_awaited: args.frames.min(20_000),
            get_rate: args.get_rate,
            get_duration: Duration::from_secs(args.get_seconds),
            latency_rates: vec![1_000, 10_000, args.get_rate],
            fan_out: vec![
                fan_out(1, 1, Duration::from_secs(10)),
                fan_out(1, 10, Duration::from_secs(10)),
                fan_out(1, 100, Duration::from_secs(10)),
                fan_out(1, 1_000, Duration::from_secs(10)),
                fan_out(1_000, 5, Duration::from_secs(10)),
            ],
            memory_sessions: vec![10_000, 100_000],
            partitions: vec![1, 2, 4],
            partition_sessions: 40_000,
            recovery_sessions: args.recovery_sessions,
            callgrind: (10_000, 60_000),
        }
    }
}

/// What the raw and paddock turns of every ingest measurement share.
struct Turns<'a> {
    broker: &'a LocalBroker,
    client: &'a Client,
    sessions: &'a SessionsClient,
    ids: &'a [SessionId],
    subjects: &'a [Subject],
    raw_subjects: &'a [Subject],
    plan: &'a Plan,
}

impl Turns<'_> {
    /// Raw and paddock take turns, `rounds` times, and the medians are compared:
    /// on a shared 2-core machine one run of either can be off by 20%. The raw
    /// subscriber listens on subjects of the same length that the processor does
    /// not subscribe to, so the processor can stay up, idle, during the raw turns.
    async fn run(&self, frame: &Frame, frames: usize, pinned: bool) -> anyhow::Result<Ingest> {
        let (url, plan) = (self.broker.url(), self.plan);
        let (processor, _) = Processor::start(&url, &[], self.sessions).await?;
        let consumer_core = [pinned::CONSUMER_CORE];
        if pinned {
            pinned::pin(self.broker.pid(), &[0])?;
            pinned::pin(std::process::id(), &[0])?;
            pinned::pin(processor.pid(), &consumer_core)?;
        }
        // The plain subscriber is a process of its own, like the processor.
        let subject = format!("{RAW_PREFIX}.*.telemetry");
        let cores = pinned.then_some(&consumer_core[..]);
        let mut sink = Sink::start(&url, &subject, frames, cores).await?;
        let per_frame = |cpu: Duration| cpu.as_secs_f64() * 1e9 / frames as f64;
        let mut raw = Vec::new();
        let mut ingest = Vec::new();
        let mut cpu_per_frame = Vec::new();
        let mut raw_cpu_per_frame = Vec::new();
        let mut recordings = Vec::new();
        // The broker's CPU in each turn: where a gap between the turns is not
        // the processor's own (JetStream writes during the burst, say).
        let broker_cpu = || rig::cpu_time(self.broker.pid());
        for round in 1..=plan.rounds {
            let cpu = sink.cpu_time()?;
            let broker_before = broker_cpu()?;
            raw.push(
                sink.delivery(self.client, self.raw_subjects, frame, frames)
                    .await?,
            );
            raw_cpu_per_frame.push(per_frame(sink.cpu_time()?.saturating_sub(cpu)));
            let raw_broker = per_frame(broker_cpu()?.saturating_sub(broker_before));
            let broker_before = broker_cpu()?;
            let cpu = processor.cpu_time()?;
            let counted = self.sessions.stats().await?;
            let counted = (
                counted.trace_frames_recorded,
                counted.trace_frames_unrecorded,
            );
            ingest.push(
                paddock_ingest(
                    self.client,
                    self.sessions,
                    self.ids,
                    self.subjects,
                    frame,
                    frames,
                )
                .await
                .with_context(|| format!("see {}", processor.log.display()))?,
            );
            let cpu = processor.cpu_time()?.saturating_sub(cpu);
            cpu_per_frame.push(per_frame(cpu));
            let paddock_broker = per_frame(broker_cpu()?.saturating_sub(broker_before));
            // The trace writer records the burst after it: the next raw turn
            // must not share the machine with that.
            let cpu = processor.cpu_time()?;
            if let Some(mut recording) = settle_record(self.sessions, counted).await? {
                recording.cpu = processor.cpu_time()?.saturating_sub(cpu);
                recordings.push(recording);
            }
            say!(
                "  round {round}: raw {}, paddock {} ({:.2} × raw), CPU per frame: processor {:.0} ns, plain subscriber {:.0} ns, broker {:.0} ns (paddock's turn) / {:.0} ns (raw)",
                rate(raw[round - 1]),
                rate(ingest[round - 1]),
                ingest[round - 1] / raw[round - 1],
                cpu_per_frame[round - 1],
                raw_cpu_per_frame[round - 1],
                paddock_broker,
                raw_broker
            );
        }
        let stats = self.sessions.stats().await?;
        let queue_peak = stats.ingest.peak_bytes;
        ensure!(
            stats.ingest.dropped == 0,
            "the processor dropped {} frames (ingest queue full)",
            stats.ingest.dropped
        );
        processor.stop().await?;
        sink.stop().await?;
        if pinned {
            // The rest of the run shares the cores again.
            pinned::pin(self.broker.pid(), &pinned::all_cores())?;
            pinned::pin(std::process::id(), &pinned::all_cores())?;
        }
        let mut paired: Vec<f64> = ingest.iter().zip(&raw).map(|(p, r)| p / r).collect();
        let recording = Recording::median(recordings);
        Ok(Ingest {
            recording,
            queue_peak,
            paired: median(&mut paired),
            raw: median(&mut raw),
            ingest: median(&mut ingest),
            cpu_per_frame: median(&mut cpu_per_frame),
            raw_cpu_per_frame: median(&mut raw_cpu_per_frame),
        })
    }
}

/// The medians of one ingest measurement.
struct Ingest {
    /// Frames per second to the plain subscriber, and applied by the processor.
    raw: f64,
    ingest: f64,
    /// The median of each round's paddock / raw: a round's two turns run back to
    /// back, so this cancels slower drifts of a shared machine that the ratio of
    /// the two medians does not.
    paired: f64,
    /// Nanoseconds on a CPU per frame: the processor's, the plain subscriber's.
    cpu_per_frame: f64,
    raw_cpu_per_frame: f64,
    /// The most bytes the processor's ingest queue held (`ingest.peak_bytes`).
    queue_peak: usize,
    /// What the trace writer did after the rounds (`None`: nothing recorded,
    /// `--store memory`).
    recording: Option<Recording>,
}

/// What the trace writer did with one round's frames, once the round was over.
#[derive(Debug, Clone, Copy, Default)]
struct Recording {
    /// Frames written to the trace stream, and left out of it (its queue full).
    recorded: u64,
    unrecorded: u64,
    /// From the round's last frame applied to the last recorded.
    after: Duration,
    /// The processor's CPU time meanwhile.
    cpu: Duration,
}

impl Recording {
    /// Totals of frames, medians of times.
    fn median(all: Vec<Recording>) -> Option<Recording> {
        if all.is_empty() {
            return None;
        }
        let mut after: Vec<f64> = all.iter().map(|r| r.after.as_secs_f64()).collect();
        let mut cpu: Vec<f64> = all.iter().map(|r| r.cpu.as_secs_f64()).collect();
        Some(Recording {
            recorded: all.iter().map(|r| r.recorded).sum(),
            unrecorded: all.iter().map(|r| r.unrecorded).sum(),
            after: Duration::from_secs_f64(median(&mut after)),
            cpu: Duration::from_secs_f64(median(&mut cpu)),
        })
    }
}

/// Waits until the trace writer has written, or counted out, every frame the
/// processor applied (a minute at most). `None` when it records nothing
/// (`PADDOCK_STORE=memory`): its counters do not move.
/// `before`: the counters (recorded, unrecorded) before the round.
async fn settle_record(
    sessions: &SessionsClient,
    (recorded, unrecorded): (u64, u64),
) -> anyhow::Result<Option<Recording>> {
    let started = Instant::now();
    loop {
        let stats = sessions.stats().await?;
        let written = stats.trace_frames_recorded + stats.trace_frames_unrecorded;
        if written >= stats.telemetry_frames {
            return Ok(Some(Recording {
                recorded: stats.trace_frames_recorded - recorded,
                unrecorded: stats.trace_frames_unrecorded - unrecorded,
                after: started.elapsed(),
                cpu: Duration::ZERO,
            }));
        }
        if written == 0 && started.elapsed() > Duration::from_secs(3) {
            return Ok(None);
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the trace writer wrote {written} of {} frames in a minute",
            stats.telemetry_frames
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sessions at 20 Hz, each followed by `dashboards`: one connection per
/// dashboard, up to 100 (then they share).
fn fan_out(sessions: usize, dashboards: usize, duration: Duration) -> fanout::Shape {
    fanout::Shape {
        sessions,
        dashboards_per_session: dashboards,
        hz: 20,
        connections: 100,
        duration,
    }
}

/// Publishes `total` frames round-robin over `subjects`, as fast as the client
/// takes them; each subject's last frame is `frame.last`.
pub(crate) async fn blast(
    client: &Client,
    subjects: &[Subject],
    frame: &Frame,
    total: usize,
) -> anyhow::Result<()> {
    let last_round = total - subjects.len();
    for i in 0..total {
        let payload = if i >= last_round {
            frame.last.clone()
        } else {
            frame.body.clone()
        };
        client
            .publish(subjects[i % subjects.len()].clone(), payload)
            .await?;
    }
    client.flush().await?;
    Ok(())
}

/// Frames per second written to a KV bucket (one key per session), with `window`
/// puts in flight (1: each put awaited before the next).
async fn kv_puts(
    client: &Client,
    ids: &[SessionId],
    frame: &Frame,
    total: usize,
    window: usize,
) -> anyhow::Result<f64> {
    let js = async_nats::jetstream::new(client.clone());
    let bucket = "paddock_bench";
    let config = crate::server::store::BucketConfig {
        name: bucket.to_string(),
        max_age: None,
        replicas: 1,
        max_bytes: usize::MAX,
        when_full: crate::server::store::Full::Refuse,
    };
    crate::server::store::open_bucket(&js, &config).await?;
    let subjects: Vec<Subject> = ids
        .iter()
        .map(|id| Subject::from(subjects::kv_key(bucket, id)))
        .collect();
    let started = Instant::now();
    let mut in_flight = VecDeque::with_capacity(window);
    for i in 0..total {
        if in_flight.len() == window {
            let ack: async_nats::jetstream::context::PublishAckFuture =
                in_flight.pop_front().expect("window is full");
            ack.await?;
        }
        let ack = js
            .publish(subjects[i % subjects.len()].clone(), frame.body.clone())
            .await?;
        in_flight.push_back(ack);
    }
    for ack in in_flight {
        ack.await?;
    }
    let elapsed = started.elapsed();
    js.delete_stream(subjects::kv_stream(bucket)).await?;
    Ok(total as f64 / elapsed.as_secs_f64())
}

/// Frames per second applied by the processor, from the first publish until its
/// counter shows them all; then every session must serve its final frame.
pub(crate) async fn paddock_ingest(
    publisher: &Client,
    sessions: &SessionsClient,
    ids: &[SessionId],
    subjects: &[Subject],
    frame: &Frame,
    total: usize,
) -> anyhow::Result<f64> {
    let before = counter(sessions, "telemetry_frames").await?;
    let started = Instant::now();
    blast(publisher, subjects, frame, total).await?;
    let done = wait_for_counter(
        sessions,
        "telemetry_frames",
        before + total as u64,
        Duration::from_secs(10),
    )
    .await?;
    for id in ids {
        let doc = sessions.get(&id.to_string()).await?;
        ensure!(
            doc.telemetry.as_ref().is_some_and(|t| t[FINAL] == true),
            "session {id} does not serve its final frame"
        );
    }
    let applied = counter(sessions, "telemetry_frames").await? - before;
    ensure!(
        applied == total as u64,
        "applied {applied} of {total} frames"
    );
    Ok(total as f64 / (done - started).as_secs_f64())
}

/// Latencies, sorted.
struct Latencies(Vec<Duration>);

impl Latencies {
    fn new(mut all: Vec<Duration>) -> anyhow::Result<Self> {
        ensure!(!all.is_empty(), "no samples");
        all.sort_unstable();
        Ok(Latencies(all))
    }

    fn at(&self, quantile: f64) -> Duration {
        let i = ((self.0.len() as f64 * quantile).ceil() as usize).clamp(1, self.0.len()) - 1;
        self.0[i]
    }
}

/// Publishes at `hz` frames per second for `duration`, in 1 ms slices. Answers
/// how many it published.
async fn paced(
    client: Client,
    subjects: Vec<Subject>,
    body: Bytes,
    hz: u64,
    duration: Duration,
    sent: Option<tokio::sync::mpsc::UnboundedSender<Instant>>,
) -> anyhow::Result<u64> {
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut n: u64 = 0;
    while started.elapsed() < duration {
        tick.tick().await;
        // As many as are due by now: a late tick catches up instead of lowering
        // the rate.
        let due = (started.elapsed().as_secs_f64() * hz as f64) as u64;
        while n < due {
            client
                .publish(subjects[n as usize % subjects.len()].clone(), body.clone())
                .await?;
            if let Some(sent) = &sent {
                let _ = sent.send(Instant::now());
            }
            n += 1;
        }
    }
    client.flush().await?;
    Ok(n)
}

/// What the latency under load is measured on: paddock's `sessions.get`, or a
/// plain responder that answers a reply of the same size straight away (the
/// broker's own round trip, for comparison).
#[derive(Clone, Copy, PartialEq)]
enum Target {
    Paddock,
    RawEcho,
}

/// Request round trips, one at a time, for `duration` while frames arrive at
/// `plan.get_rate`; and the rate they arrived at.
#[allow(clippy::too_many_arguments)]
async fn request_latency(
    url: &str,
    publisher: &Client,
    ids: &[SessionId],
    subjects: &[Subject],
    frame: &Frame,
    plan: &Plan,
    target: Target,
    duration: Duration,
) -> anyhow::Result<(Vec<Duration>, f64)> {
    let requester = connect(url).await?;
    let sessions = SessionsClient::new(requester.clone(), url, Duration::from_secs(5));
    // The raw responder answers with a body as large as a session document.
    let size = serde_json::to_string(&sessions.get(&ids[0].to_string()).await?)?.len();
    let echo = match target {
        Target::Paddock => None,
        // A process of its own, like the processor (see helper.rs).
        Target::RawEcho => Some(
            helper::Helper::start(
                &[
                    "bench-echo".to_string(),
                    format!("--nats-url={url}"),
                    format!("--subject={RAW_PREFIX}.echo"),
                    format!("--size={size}"),
                ],
                None,
            )
            .await?,
        ),
    };
    let before = counter(&sessions, "telemetry_frames").await?;
    let load = tokio::spawn(paced(
        publisher.clone(),
        subjects.to_vec(),
        frame.body.clone(),
        plan.get_rate,
        duration,
        None,
    ));
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut i = 0;
    while !load.is_finished() {
        let (subject, body) = match target {
            Target::Paddock => (
                subjects::control(subjects::GET),
                format!(r#"{{"session_id":"{}"}}"#, ids[i % ids.len()]),
            ),
            Target::RawEcho => (format!("{RAW_PREFIX}.echo"), String::new()),
        };
        i += 1;
        let t = Instant::now();
        let reply = requester.request(subject, body.into()).await?;
        samples.push(t.elapsed());
        ensure!(
            reply.headers.is_none() && reply.payload.len() >= size / 2,
            "unexpected reply: {:?}",
            reply.headers
        );
    }
    let published = load.await??;
    let achieved = published as f64 / started.elapsed().as_secs_f64();
    wait_for_counter(
        &sessions,
        "telemetry_frames",
        before + published,
        Duration::from_secs(10),
    )
    .await?;
    if let Some(echo) = echo {
        echo.stop().await?;
    }
    Ok((samples, achieved))
}

/// From `publish` returning on the monitor's connection to the frame arriving on a
/// dashboard's, at `hz`. One broker delivers a publisher's messages in order, so
/// the n-th frame received is the n-th sent.
async fn dashboard_latency(
    url: &str,
    publisher: &Client,
    subjects: &[Subject],
    frame: &Frame,
    hz: u64,
    plan: &Plan,
) -> anyhow::Result<Latencies> {
    let dashboard = connect(url).await?;
    let mut sub = dashboard.subscribe(subjects::ALL_SESSIONS).await?;
    sync(&dashboard).await?;
    let (tx, mut sent) = tokio::sync::mpsc::unbounded_channel();
    let duration = plan.get_duration.min(Duration::from_secs(3));
    let load = tokio::spawn(paced(
        publisher.clone(),
        subjects.to_vec(),
        frame.body.clone(),
        hz,
        duration,
        Some(tx),
    ));
    let mut samples = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
            Ok(Some(_)) => {
                let arrived = Instant::now();
                let Some(at) = sent.recv().await else { break };
                samples.push(arrived - at);
            }
            _ => break,
        }
        if load.is_finished() && sent.is_empty() {
            break;
        }
    }
    let published = load.await??;
    ensure!(
        samples.len() as u64 == published,
        "the dashboard got {} of {published} frames",
        samples.len()
    );
    Latencies::new(samples)
}

/// Creates sessions `from..to` by publishing `frame` to new ids, in batches the
/// processor can take without the broker dropping any; answers their ids.
pub(crate) async fn fill(
    client: &Client,
    sessions: &SessionsClient,
    frame: &Frame,
    from: usize,
    to: usize,
) -> anyhow::Result<Vec<SessionId>> {
    let ids: Vec<SessionId> = (from..to).map(|_| SessionId::new_v4()).collect();
    let live = counter(sessions, "live_sessions").await? as usize;
    for (n, batch) in ids.chunks(5_000).enumerate() {
        for id in batch {
            client
                .publish(subjects::data(id, DataKind::Telemetry), frame.body.clone())
                .await?;
        }
        let target = live + (n * 5_000 + batch.len());
        wait_for_counter(
            sessions,
            "live_sessions",
            target as u64,
            Duration::from_secs(30),
        )
        .await?;
    }
    Ok(ids)
}

/// Asks for every id, many at a time; answers how many were served.
async fn answer_all(sessions: &SessionsClient, ids: &[SessionId]) -> anyhow::Result<usize> {
    let served = futures::stream::iter(ids)
        .map(|id| async move { sessions.get(&id.to_string()).await.is_ok() })
        .buffer_unordered(64)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    if served != ids.len() {
        bail!("only {served} of {} sessions answered", ids.len());
    }
    Ok(served)
}

fn rate(per_s: f64) -> String {
    format!("{} frames/s", thousands(per_s))
}

fn per_s(hz: f64) -> String {
    format!("{} frames/s", thousands(hz))
}

fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn us(d: Duration) -> String {
    format!("{} µs", d.as_micros())
}

/// The CPU model, from /proc/cpuinfo.
fn machine() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_sample_at_or_above() {
        let lat = Latencies::new((1..=1000).map(Duration::from_micros).collect()).unwrap();
        assert_eq!(lat.at(0.5), Duration::from_micros(500));
        assert_eq!(lat.at(0.99), Duration::from_micros(990));
        assert_eq!(lat.at(0.999), Duration::from_micros(999));
        assert_eq!(lat.at(1.0), Duration::from_micros(1000));
    }

    #[test]
    fn figures_read_well() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
    }

    #[test]
    fn the_sample_frames_have_the_sizes_the_issue_names() {
        let (small, rich) = (Frame::small(), Frame::rich());
        assert!(
            (400..=600).contains(&small.body.len()),
            "{}",
            small.body.len()
        );
        assert!(
            (1300..=1600).contains(&rich.body.len()),
            "{}",
            rich.body.len()
        );
        let last: Value = serde_json::from_slice(&rich.last).unwrap();
        assert_eq!(last[FINAL], true);
        for bytes in [4096, 16384] {
            assert_eq!(Frame::padded("", bytes).body.len(), bytes);
        }
    }
}
