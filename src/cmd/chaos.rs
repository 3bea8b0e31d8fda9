//! `paddock chaos`: a long run under load with faults injected, checking what a
//! team relies on (docs/RELIABILITY.md).
//!
//! It starts a 3-node JetStream cluster and two `paddock serve` processes (R3
//! buckets), then for `--duration`: `--monitors` simulated monitors at `--hz`
//! (setups sent as acknowledged requests, a lap every 10 s), dashboards following
//! sessions live, ops creating and deleting sessions, and a `sessions.get` probe.
//! At random times from `--seed` it injects: kill -9 of a processor (restarted),
//! SIGSTOP/SIGCONT of a processor for longer than a dashboard's stale window, kill
//! and restart of a broker node (often the buckets' stream leader), a stop of all
//! processors for a while, and bursts of bad frames. Each fault opens a declared
//! window (the fault and a settling time after it).
//!
//! Checked continuously: outside fault windows `sessions.get` p99 and the
//! dashboards' frame gaps stay within stated bounds; within them the longest
//! unavailability is reported. Checked at the end, through each processor alone:
//! every acknowledged create and setup is served, every session's final frame is
//! served, every lap completed while a processor ran is present once, and no
//! deleted session answers (each is in the archive). Each processor's memory at the
//! end is compared with its value after warm-up, and the buckets' sizes are shown.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::Client;
use bytes::Bytes;
use clap::Args;
use serde_json::{Value, json};

use super::args::parse_period;
use super::sim::Rng;
use crate::broker::LocalCluster;
use crate::client::{ClientError, SessionsClient};
use crate::protocol::documents::{Ack, SessionDocument};
use crate::protocol::id::SessionId;
use crate::protocol::subjects::{self, DataKind};

#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// How long to run the load and the faults.
    #[arg(long, env = "PADDOCK_CHAOS_DURATION", default_value = "10m", value_parser = parse_period)]
    pub duration: Duration,
    /// Seed of the fault schedule (printed, so a run can be repeated); random when
    /// not given.
    #[arg(long, env = "PADDOCK_CHAOS_SEED")]
    pub seed: Option<u64>,
    /// Simulated monitors, one session each.
    #[arg(long, env = "PADDOCK_CHAOS_MONITORS", default_value_t = 100)]
    pub monitors: usize,
    /// Telemetry frames per second per monitor.
    #[arg(long, env = "PADDOCK_CHAOS_HZ", default_value_t = 20)]
    pub hz: u32,
    /// Dashboards following a session live.
    #[arg(long, env = "PADDOCK_CHAOS_DASHBOARDS", default_value_t = 4)]
    pub dashboards: usize,
    /// Mean time between faults.
    #[arg(long, env = "PADDOCK_CHAOS_FAULT_EVERY", default_value = "30s", value_parser = parse_period)]
    pub fault_every: Duration,
    /// Outside fault windows, `sessions.get` p99 must stay within this.
    #[arg(long, env = "PADDOCK_CHAOS_GET_P99_BOUND", default_value = "250ms", value_parser = parse_period)]
    pub get_p99_bound: Duration,
    /// Within fault windows, the longest `sessions.get` may go unanswered: the
    /// longest fault (a processor paused 7 s, which keeps its share of the
    /// queue group) plus a restart and the recovery of every session.
    #[arg(long, env = "PADDOCK_CHAOS_UNAVAILABLE_BOUND", default_value = "15s", value_parser = parse_period)]
    pub unavailable_bound: Duration,
    /// Outside fault windows, no dashboard may wait longer than this for a frame.
    #[arg(long, env = "PADDOCK_CHAOS_GAP_BOUND", default_value = "1s", value_parser = parse_period)]
    pub gap_bound: Duration,
    /// A processor's memory at the end may exceed its value after warm-up by at
    /// most this factor (plus 32 MiB of allocator slack, and after a hostile
    /// monitor its ingest queue's bound, a quarter of --max-memory).
    #[arg(long, env = "PADDOCK_CHAOS_RSS_MARGIN", default_value_t = 1.5)]
    pub rss_margin: f64,
    /// The processors' --max-memory. After every hostile-monitor fault each
    /// processor's resident memory must stay within it plus its ingest queue (a
    /// quarter of it) plus 64 MiB (runtime, allocator slack), and what its
    /// sessions hold (sessions.stats) within it.
    #[arg(long, env = "PADDOCK_CHAOS_MAX_MEMORY", default_value = "256MiB", value_parser = super::args::parse_bytes)]
    pub max_memory: usize,
    /// nats-server binary (default: the one `paddock broker which` names).
    #[arg(long, env = "NATS_SERVER_BIN")]
    pub nats_server_bin: Option<PathBuf>,
}

/// How long after a fault ends its window stays open: reconnects, leader
/// elections and catch-up.
const SETTLE: Duration = Duration::from_secs(10);
/// A dashboard shows STALE after this long without a frame; a paused processor
/// stays paused longer.
const STALE: Duration = Duration::from_secs(5);
/// A lap every this many seconds of each monitor's frames.
const LAP_S: u64 = 10;
const BUCKET: &str = "paddock_sessions";
/// How long a hostile monitor floods its session.
const HOSTILE_FOR: Duration = Duration::from_secs(8);
/// What a processor may hold beyond `--max-memory` and its ingest queue:
/// runtime, allocator slack.
const MEMORY_OVERHEAD: u64 = 64 * 1024 * 1024;
/// How long a `sessions.get` probe waits before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillProcessor,
    PauseProcessor,
    KillBroker,
    StopAllProcessors,
    BadFrames,
    HostileMonitor,
}

impl Fault {
    const ALL: [Fault; 6] = [
        Fault::KillProcessor,
        Fault::PauseProcessor,
        Fault::KillBroker,
        Fault::StopAllProcessors,
        Fault::BadFrames,
        Fault::HostileMonitor,
    ];
    fn name(self) -> &'static str {
        match self {
            Fault::KillProcessor => "kill -9 a processor, restart it",
            Fault::PauseProcessor => "SIGSTOP a processor 7 s, SIGCONT",
            Fault::KillBroker => "kill a broker node, restart it",
            Fault::StopAllProcessors => "stop every processor 5 s",
            Fault::BadFrames => "burst of 5,000 bad frames",
            Fault::HostileMonitor => "hostile monitor: 8 s of 60 KB frames, a new lap in each",
        }
    }
}

/// One `paddock serve` child.
struct Processor {
    child: Child,
    args: Vec<String>,
    log: PathBuf,
}

impl Processor {
    fn spawn(args: &[String], log: PathBuf) -> anyhow::Result<Self> {
        let child = Command::new(std::env::current_exe()?)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)?,
            )
            .spawn()
            .context("cannot start a processor")?;
        Ok(Processor {
            child,
            args: args.to_vec(),
            log,
        })
    }
    #[cfg(unix)]
    fn signal(&self, signal: i32) {
        // SAFETY: a plain kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }
    /// Never called: `run` refuses to start without Unix signals.
    #[cfg(not(unix))]
    fn signal(&self, _signal: i32) {}
    fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = Processor::spawn(&self.args, self.log.clone())?;
        Ok(())
    }
    /// Stops it gracefully (SIGTERM: drain and store the last changes).
    fn terminate(&mut self) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    /// Resident memory in bytes (Linux), if readable.
    fn rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the load generators know, for the checks.
#[derive(Default)]
struct Truth {
    /// Sessions whose create was acknowledged, and not deleted.
    live: HashSet<SessionId>,
    /// Sessions whose delete was acknowledged.
    deleted: HashSet<SessionId>,
    /// The last acknowledged setup revision per session.
    setup_rev: HashMap<SessionId, u64>,
    /// The last frame's sequence number published per session.
    last_seq: HashMap<SessionId, u64>,
    /// Completed laps per session, with when the next lap's first frame went out.
    laps: HashMap<SessionId, Vec<(u64, Instant)>>,
}

/// When something was unavailable or slow.
#[derive(Default)]
struct Observed {
    /// (when, latency) of each answered probe; failures as `None`.
    gets: Vec<(Instant, Option<Duration>)>,
    /// Per dashboard, when each frame arrived.
    arrivals: Vec<Vec<Instant>>,
    /// Fault windows: kind, start, end (settle included).
    windows: Vec<(Fault, Instant, Instant)>,
    /// Windows in which no processor ran (laps then cannot be recorded).
    all_down: Vec<(Instant, Instant)>,
}

/// The signals the faults send (kill -9, pause, resume).
#[cfg(unix)]
mod sig {
    pub(super) const KILL: i32 = libc::SIGKILL;
    pub(super) const STOP: i32 = libc::SIGSTOP;
    pub(super) const CONT: i32 = libc::SIGCONT;
}
#[cfg(not(unix))]
mod sig {
    pub(super) const KILL: i32 = 9;
    pub(super) const STOP: i32 = 19;
    pub(super) const CONT: i32 = 18;
}

pub async fn run(args: &ChaosArgs) -> anyhow::Result<()> {
    if cfg!(not(unix)) {
        bail!(
            "paddock chaos pauses and kills processes with Unix signals: run it on Linux or macOS"
        );
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    say!("== paddock chaos: seed {seed}, {:?}", args.duration);
    if let Some(bin) = &args.nats_server_bin {
        // SAFETY: set before any thread reads the environment here.
        unsafe { std::env::set_var("NATS_SERVER_BIN", bin) };
    }
    let cluster = tokio::task::spawn_blocking(|| LocalCluster::start(3, None)).await??;
    cluster.jetstream_ready(Duration::from_secs(30)).await?;
    let cluster = Arc::new(Mutex::new(cluster));
    let urls = cluster.lock().unwrap().urls();
    let dir = crate::broker::fresh_dir("chaos");
    let serve_args: Vec<String> = [
        "serve",
        "--nats-url",
        &urls,
        "--kv-replicas",
        "3",
        "--kv-bucket",
        BUCKET,
        "--max-sessions",
        "10000",
        "--max-memory",
        &args.max_memory.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut processors = (0..2)
        .map(|i| Processor::spawn(&serve_args, dir.join(format!("processor-{i}.log"))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let nats = crate::client::connect::connect_persistent(
        &crate::client::connect::ConnectConfig::plain(&urls),
        "paddock-chaos",
    )
    .await?;
    let ops = SessionsClient::new(nats.clone(), urls.clone(), Duration::from_secs(5));
    wait_for(&nats, 2).await?;
    say!(
        "== cluster of 3 and 2 processors up (logs in {})",
        dir.display()
    );

    let truth = Arc::new(Mutex::new(Truth::default()));
    let observed = Arc::new(Mutex::new(Observed::default()));
    let started = Instant::now();
    let stop_at = started + args.duration;

    // Monitors: one acknowledged create and setup each, then frames.
    let mut ids = Vec::new();
    for _ in 0..args.monitors {
        let id = create(&ops).await?;
        set_up(&ops, &truth, id, 0).await?;
        ids.push(id);
    }
    let load = spawn_load(&urls, &ids, args.hz, &truth, stop_at).await?;
    let dashboards_from = Instant::now();
    let dashboards = spawn_dashboards(&urls, &ids, args.dashboards, &observed, stop_at).await?;
    let probe = tokio::spawn(probe(
        ops.clone(),
        ids.clone(),
        Arc::clone(&observed),
        stop_at,
    ));
    let churn = tokio::spawn(churn(ops.clone(), Arc::clone(&truth), stop_at));

    // Faults until the end, on the seed's schedule; memory after warm-up.
    let warm_up = started + args.duration.mul_f64(0.15).max(Duration::from_secs(10));
    let mut rng = Rng::new(seed);
    let mut counts: BTreeMap<Fault, u32> = BTreeMap::new();
    let mut memory = Memory::of(processors.len());
    let mut next_fault = started + Duration::from_secs(15);
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if memory.start[0].is_none() && Instant::now() >= warm_up {
            memory.start = processors.iter().map(Processor::rss).collect();
        }
        // No fault in the last settle time: the end is measured calm.
        if Instant::now() < next_fault || Instant::now() + SETTLE * 2 > stop_at {
            continue;
        }
        let fault = Fault::ALL[rng.below(Fault::ALL.len() as u64) as usize];
        *counts.entry(fault).or_default() += 1;
        let from = Instant::now();
        say!(
            "== {:>6.1}s fault: {}",
            from.duration_since(started).as_secs_f64(),
            fault.name()
        );
        inject(
            fault,
            &mut rng,
            &mut processors,
            &cluster,
            &nats,
            &ids,
            &observed,
        )
        .await?;
        observed
            .lock()
            .unwrap()
            .windows
            .push((fault, from, Instant::now() + SETTLE));
        if fault == Fault::HostileMonitor {
            // Right after the flood, when it has cost the most.
            for (i, p) in processors.iter().enumerate() {
                if let Some(rss) = p.rss() {
                    memory.after_hostile[i] = memory.after_hostile[i].max(rss);
                }
            }
            for stats in each_stats(&nats, processors.len()).await {
                let held = stats["memory"]["frame_bytes"].as_u64().unwrap_or(0)
                    + stats["memory"]["lap_bytes"].as_u64().unwrap_or(0);
                memory.held_after_hostile = memory.held_after_hostile.max(held);
            }
        }
        let mean = args.fault_every.as_secs_f64();
        next_fault = Instant::now()
            + Duration::from_secs_f64(mean * (0.5 + rng.below(1000) as f64 / 1000.0));
    }
    let _ = tokio::join!(load, dashboards, probe, churn);
    memory.end = processors.iter().map(Processor::rss).collect();
    // Frames handed to the clients are out; the write-behind window passes.
    let _ = nats.flush().await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The end checks, through each processor alone.
    let mut violations = Vec::new();
    for alone in 0..2 {
        let other = 1 - alone;
        processors[other].terminate();
        let problems = check_all(&ops, &truth, &observed).await;
        for p in problems {
            violations.push(format!("via processor {alone}: {p}"));
        }
        processors[other].restart()?;
        wait_for(&nats, 2).await?;
    }
    let kv = bucket_sizes(&nats).await;

    // What happened, in one table.
    let observed = observed.lock().unwrap();
    let bounds = Bounds::of(args);
    let calm = analyse(&observed, &memory, dashboards_from, stop_at, bounds);
    violations.extend(calm.violations.iter().cloned());
    let p = |q: f64| calm.quantile(q);
    let worst_unavailable = longest_unavailability(&observed.gets);
    if worst_unavailable > args.unavailable_bound {
        violations.push(format!(
            "sessions.get went unanswered for {worst_unavailable:?} > {:?}",
            args.unavailable_bound
        ));
    }
    let (worst_gap_calm, worst_gap_fault) = (calm.worst_gap_calm, calm.worst_gap_fault);
    let hostile = counts.contains_key(&Fault::HostileMonitor);

    let truth = truth.lock().unwrap();
    let frames: u64 = truth.last_seq.values().sum();
    let mb = |b: Option<u64>| {
        b.map_or("—".to_string(), |b| {
            format!("{:.0} MiB", b as f64 / 1048576.0)
        })
    };
    let ms = |d: Option<Duration>| {
        d.map_or("—".into(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1000.0)
        })
    };
    let mut out = String::new();
    out.push_str(&format!(
        "\n| paddock chaos | seed {seed}, {} s |\n|---|---|\n",
        args.duration.as_secs()
    ));
    out.push_str(&format!(
        "| load | {} monitors at {} Hz ({} frames), {} dashboards, ops creating and deleting ({} deleted), a get probe every 100 ms |\n",
        args.monitors, args.hz, frames, args.dashboards, truth.deleted.len()
    ));
    for fault in Fault::ALL {
        out.push_str(&format!(
            "| fault: {} | {} |\n",
            fault.name(),
            counts.get(&fault).copied().unwrap_or(0)
        ));
    }
    out.push_str(&format!(
        "| sessions.get outside faults: p50 / p99 / max (bound {:?}) | {} / {} / {} ({} probes) |\n",
        args.get_p99_bound,
        ms(p(0.5)),
        ms(p(0.99)),
        ms(calm.latencies.last().copied()),
        calm.latencies.len()
    ));
    out.push_str(&format!(
        "| dashboard frame gap, worst: outside faults (bound {:?}) / within | {} / {} |\n",
        args.gap_bound,
        ms(Some(worst_gap_calm)),
        ms(Some(worst_gap_fault))
    ));
    out.push_str(&format!(
        "| longest sessions.get unavailability (within faults; bound {:?}) | {} |\n",
        args.unavailable_bound,
        ms(Some(worst_unavailable))
    ));
    for i in 0..2 {
        out.push_str(&format!(
            "| processor {i} memory: after warm-up → end (margin ×{} + 32 MiB{}) | {} → {} |\n",
            args.rss_margin,
            if hostile {
                " + the ingest queue's bound"
            } else {
                ""
            },
            mb(memory.start[i]),
            mb(memory.end[i])
        ));
    }
    if hostile {
        out.push_str(&format!(
            "| after a hostile monitor: worst processor memory (bound {} MiB) / sessions held (bound {} MiB) | {} / {} |\n",
            bounds.rss_after_hostile() >> 20,
            bounds.max_memory >> 20,
            mb(memory.after_hostile.iter().copied().max()),
            mb(Some(memory.held_after_hostile))
        ));
    }
    out.push_str(&format!("| buckets at the end | {kv} |\n"));
    out.push_str(&format!(
        "| invariants: acknowledged creates and setups served, final frames served, laps present once, deleted sessions gone and archived — through each processor alone | {} |\n",
        if violations.is_empty() { "all hold".to_string() } else { format!("{} violated", violations.len()) }
    ));
    out!("{out}");
    if !violations.is_empty() {
        for v in violations.iter().take(50) {
            say!("violation: {v}");
        }
        bail!("{} invariant violations (seed {seed})", violations.len());
    }
    Ok(())
}

/// `sessions.stats` of each processor (`$SRV.STATS`, every instance answers).
async fn each_stats(nats: &Client, n: usize) -> Vec<Value> {
    let inbox = nats.new_inbox();
    let Ok(mut sub) = nats.subscribe(inbox.clone()).await else {
        return Vec::new();
    };
    if nats
        .publish_with_reply("$SRV.STATS.sessions", inbox, Bytes::new())
        .await
        .is_err()
    {
        return Vec::new();
    }
    let _ = nats.flush().await;
    let mut out = Vec::new();
    use futures::StreamExt;
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
            Ok(Some(m)) => {
                if let Ok(v) = serde_json::from_slice::<Value>(&m.payload) {
                    out.push(v["endpoints"][0]["data"].clone());
                }
            }
            _ => break,
        }
    }
    out
}

/// Waits until `n` processors answer discovery.
async fn wait_for(nats: &Client, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = crate::client::processors_answering(nats)
            .await
            .map_err(|e| anyhow::anyhow!("discovery failed: {e}"))?;
        if seen >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {seen} of {n} processors answer after 120 s");
        }
    }
}

/// Creates a session, retrying while no processor answers.
async fn create(ops: &SessionsClient) -> anyhow::Result<SessionId> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match ops.create().await {
            Ok(doc) => return Ok(doc.session_id),
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends setup revision `rev` as a request; records it once acknowledged.
async fn set_up(
    ops: &SessionsClient,
    truth: &Mutex<Truth>,
    id: SessionId,
    rev: u64,
) -> anyhow::Result<()> {
    let body = Bytes::from(json!({"rev": rev, "wing": 3 + rev % 5, "car": "chaos"}).to_string());
    let acked = ops
        .request_as::<Ack>(subjects::data(&id, DataKind::Setup), body)
        .await;
    if acked.is_ok() {
        let mut truth = truth.lock().unwrap();
        truth.setup_rev.insert(id, rev);
        truth.live.insert(id);
    }
    Ok(())
}

/// The monitors' frames: `hz` a second for every session, over four connections;
/// the lap goes up every `LAP_S` seconds of frames; a new setup now and then.
async fn spawn_load(
    urls: &str,
    ids: &[SessionId],
    hz: u32,
    truth: &Arc<Mutex<Truth>>,
    stop_at: Instant,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for chunk in ids.chunks(ids.len().div_ceil(4).max(1)) {
        let config = crate::client::connect::ConnectConfig::plain(urls);
        let nats =
            crate::client::connect::connect_persistent(&config, "paddock-chaos-monitor").await?;
        let setups = SessionsClient::new(nats.clone(), urls.to_string(), Duration::from_secs(3));
        let chunk = chunk.to_vec();
        let truth = Arc::clone(truth);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(hz)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut seq = 0u64;
            while Instant::now() < stop_at {
                tick.tick().await;
                seq += 1;
                let lap = 1 + seq / (LAP_S * u64::from(hz));
                for id in &chunk {
                    let frame = json!({"seq": seq, "lap": lap, "fuel": 100.0 - (seq % 1000) as f64 / 20.0, "player_name": "chaos"});
                    if nats
                        .publish(subjects::data(id, DataKind::Telemetry), frame.to_string().into())
                        .await
                        .is_ok()
                    {
                        let mut truth = truth.lock().unwrap();
                        truth.last_seq.insert(*id, seq);
                        if seq.is_multiple_of(LAP_S * u64::from(hz)) {
                            // This frame starts lap `lap`: lap - 1 is complete.
                            truth.laps.entry(*id).or_default().push((lap - 1, Instant::now()));
                        }
                    }
                }
                // A new setup for one car every 2 s of frames, acknowledged.
                if seq.is_multiple_of(2 * u64::from(hz)) {
                    let id = chunk[(seq as usize / (2 * hz as usize)) % chunk.len()];
                    // Beside the frames: an unanswered setup (a fault) must not
                    // hold them up.
                    let (setups, truth) = (setups.clone(), Arc::clone(&truth));
                    tokio::spawn(async move { set_up(&setups, &truth, id, seq).await });
                }
            }
            let _ = nats.flush().await;
        }));
    }
    Ok(tokio::spawn(async move {
        for t in tasks {
            let _ = t.await;
        }
    }))
}

/// Dashboards: subscribe to a session's telemetry and note each arrival.
async fn spawn_dashboards(
    urls: &str,
    ids: &[SessionId],
    n: usize,
    observed: &Arc<Mutex<Observed>>,
    stop_at: Instant,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use futures::StreamExt;
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().take(n).enumerate() {
        observed.lock().unwrap().arrivals.push(Vec::new());
        let config = crate::client::connect::ConnectConfig::plain(urls);
        let nats =
            crate::client::connect::connect_persistent(&config, "paddock-chaos-dashboard").await?;
        let mut frames = nats
            .subscribe(subjects::data(id, DataKind::Telemetry))
            .await?;
        let observed = Arc::clone(observed);
        tasks.push(tokio::spawn(async move {
            let _nats = nats;
            while Instant::now() < stop_at {
                match tokio::time::timeout(Duration::from_secs(1), frames.next()).await {
                    Ok(Some(_)) => observed.lock().unwrap().arrivals[i].push(Instant::now()),
                    Ok(None) => return,
                    Err(_) => {}
                }
            }
        }));
    }
    Ok(tokio::spawn(async move {
        for t in tasks {
            let _ = t.await;
        }
    }))
}

/// `sessions.get` of a random monitor session every 100 ms, timed.
async fn probe(
    ops: SessionsClient,
    ids: Vec<SessionId>,
    observed: Arc<Mutex<Observed>>,
    stop_at: Instant,
) {
    let mut n = 0usize;
    while Instant::now() < stop_at {
        n += 1;
        let id = ids[n * 7919 % ids.len()];
        let sent = Instant::now();
        let answer = tokio::time::timeout(PROBE_TIMEOUT, ops.get(&id.to_string())).await;
        let latency = matches!(answer, Ok(Ok(_))).then(|| sent.elapsed());
        observed.lock().unwrap().gets.push((sent, latency));
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(sent.elapsed())).await;
    }
}

/// Ops: every 3 s a new session with a setup, and the oldest such one deleted.
async fn churn(ops: SessionsClient, truth: Arc<Mutex<Truth>>, stop_at: Instant) {
    let mut mine: std::collections::VecDeque<SessionId> = Default::default();
    let mut rev = 0;
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_secs(3)).await;
        if let Ok(doc) = ops.create().await {
            let id = doc.session_id;
            truth.lock().unwrap().live.insert(id);
            rev += 1;
            let _ = set_up(&ops, &truth, id, rev).await;
            mine.push_back(id);
        }
        if mine.len() > 5
            && let Some(id) = mine.pop_front()
        {
            match ops.delete(&id.to_string()).await {
                Ok(_) => {
                    let mut truth = truth.lock().unwrap();
                    truth.live.remove(&id);
                    truth.deleted.insert(id);
                }
                // Not acknowledged: it may or may not have ended; not checked.
                Err(_) => {
                    truth.lock().unwrap().live.remove(&id);
                }
            }
        }
    }
}

async fn inject(
    fault: Fault,
    rng: &mut Rng,
    processors: &mut [Processor],
    cluster: &Arc<Mutex<LocalCluster>>,
    nats: &Client,
    ids: &[SessionId],
    observed: &Arc<Mutex<Observed>>,
) -> anyhow::Result<()> {
    let which = rng.below(processors.len() as u64) as usize;
    match fault {
        Fault::KillProcessor => {
            processors[which].signal(sig::KILL);
            tokio::time::sleep(Duration::from_secs(2)).await;
            processors[which].restart()?;
        }
        Fault::PauseProcessor => {
            processors[which].signal(sig::STOP);
            tokio::time::sleep(STALE + Duration::from_secs(2)).await;
            processors[which].signal(sig::CONT);
        }
        Fault::KillBroker => {
            // Half the time the node that leads the live bucket's stream.
            let node = if rng.below(2) == 0 {
                stream_leader(nats).await.unwrap_or(0)
            } else {
                rng.below(3) as usize
            };
            let down = Arc::clone(cluster);
            tokio::task::spawn_blocking(move || down.lock().unwrap().nodes[node].kill()).await?;
            tokio::time::sleep(Duration::from_secs(5)).await;
            let up = Arc::clone(cluster);
            tokio::task::spawn_blocking(move || up.lock().unwrap().nodes[node].restart()).await??;
        }
        Fault::StopAllProcessors => {
            let from = Instant::now();
            for p in processors.iter() {
                p.signal(sig::KILL);
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            for p in processors.iter_mut() {
                p.restart()?;
            }
            wait_for(nats, processors.len()).await?;
            observed
                .lock()
                .unwrap()
                .all_down
                .push((from, Instant::now()));
        }
        Fault::HostileMonitor => {
            // A session of its own (created on demand by its first frame), flooded
            // as fast as this process can publish: the rate limit sheds it, the
            // lap budgets bound what its flapping lap field keeps.
            let id = SessionId::new_v4();
            let subject = subjects::data(&id, DataKind::Telemetry);
            let until = Instant::now() + HOSTILE_FOR;
            let mut n = 0u64;
            while Instant::now() < until {
                for _ in 0..32 {
                    n += 1;
                    let mut frame = format!(r#"{{"lap": {n}, "fuel": 9.5, "pad": ""#).into_bytes();
                    frame.resize(60 * 1024 - 2, b'x');
                    frame.extend_from_slice(b"\"}");
                    let _ = nats.publish(subject.clone(), frame.into()).await;
                }
                let _ = nats.flush().await;
            }
        }
        Fault::BadFrames => {
            for i in 0..5_000u64 {
                let subject = if i % 3 == 0 {
                    format!("session.{}.telemetry", uuid::Uuid::new_v4())
                } else {
                    subjects::data(&ids[(i as usize) % ids.len()], DataKind::Telemetry)
                };
                let body: &'static [u8] = match i % 4 {
                    0 => b"{not json",
                    1 => b"[1,2,3]",
                    2 => b"\xff\xfe",
                    _ => b"",
                };
                let _ = nats.publish(subject, Bytes::from_static(body)).await;
            }
            let _ = nats.flush().await;
        }
    }
    Ok(())
}

/// Every invariant that the end state must satisfy, through whichever processor
/// answers; the problems found.
async fn check_all(
    ops: &SessionsClient,
    truth: &Mutex<Truth>,
    observed: &Mutex<Observed>,
) -> Vec<String> {
    let (live, deleted, setup_rev, last_seq, laps) = {
        let t = truth.lock().unwrap();
        (
            t.live.clone(),
            t.deleted.clone(),
            t.setup_rev.clone(),
            t.last_seq.clone(),
            t.laps.clone(),
        )
    };
    let all_down = observed.lock().unwrap().all_down.clone();
    let mut problems = Vec::new();
    for id in &live {
        let text = id.to_string();
        let doc: SessionDocument<Value> = match retry(|| ops.get(&text)).await {
            Ok(doc) => doc,
            Err(e) => {
                problems.push(format!("acknowledged session {id} not served: {e}"));
                continue;
            }
        };
        if let Some(rev) = setup_rev.get(id) {
            // The acknowledged one, or a later one whose acknowledgement was lost.
            let served = doc.setup.as_ref().and_then(|s| s["rev"].as_u64());
            if served.is_none_or(|served| served < *rev) {
                problems.push(format!(
                    "{id}: acknowledged setup rev {rev}, served {served:?}"
                ));
            }
        }
        if let Some(seq) = last_seq.get(id) {
            let served = doc.telemetry.as_ref().and_then(|t| t["seq"].as_u64());
            if served != Some(*seq) {
                problems.push(format!("{id}: final frame {seq}, served {served:?}"));
            }
        }
        if let Some(completed) = laps.get(id) {
            match retry(|| ops.laps(id, None, false)).await {
                Ok(records) => {
                    let mut seen = HashSet::new();
                    for r in &records {
                        if !seen.insert(r.lap.to_string()) {
                            problems.push(format!("{id}: lap {} recorded twice", r.lap));
                        }
                    }
                    for (lap, at) in completed {
                        let unseen = all_down.iter().any(|(a, b)| {
                            *at + Duration::from_secs(2) >= *a && *at <= *b + Duration::from_secs(2)
                        });
                        if !unseen && !seen.contains(&lap.to_string()) {
                            problems.push(format!("{id}: lap {lap} missing"));
                        }
                    }
                }
                Err(e) => problems.push(format!("{id}: laps not served: {e}")),
            }
        }
    }
    for id in &deleted {
        match ops.get(&id.to_string()).await {
            Err(ClientError::Service { code: 404, .. }) => {}
            other => problems.push(format!("deleted session {id} answers: {other:?}")),
        }
        let archived: Result<Value, _> = ops
            .request("archive.get", json!({ "session_id": id }))
            .await;
        if let Err(e) = archived {
            problems.push(format!("deleted session {id} not in the archive: {e}"));
        }
    }
    problems
}

/// A request retried for a few seconds while no processor answers (one was just
/// stopped for the check).
async fn retry<T, F, Fut>(mut ask: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match ask().await {
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => return other,
        }
    }
}

/// The bounds the run is held to, from the command line.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    get_p99: Duration,
    gap: Duration,
    rss_margin: f64,
    max_memory: u64,
}

impl Bounds {
    fn of(args: &ChaosArgs) -> Bounds {
        Bounds {
            get_p99: args.get_p99_bound,
            gap: args.gap_bound,
            rss_margin: args.rss_margin,
            max_memory: args.max_memory as u64,
        }
    }

    /// The processors' ingest queue bound (serve's default for their
    /// --max-memory).
    fn ingest_queue(&self) -> u64 {
        crate::server::app::default_ingest_buffer_bytes(self.max_memory as usize) as u64
    }

    /// The most a processor may hold right after a hostile monitor: the
    /// budget, its ingest queue, the rest.
    fn rss_after_hostile(&self) -> u64 {
        self.max_memory + self.ingest_queue() + MEMORY_OVERHEAD
    }
}

/// The processors' resident memory where the memory checks read it, by
/// processor, and what their sessions held after a hostile monitor.
#[derive(Debug, Clone, Default)]
struct Memory {
    /// After warm-up; `None` until then, or where it cannot be read.
    start: Vec<Option<u64>>,
    /// At the end of the load.
    end: Vec<Option<u64>>,
    /// The most each reached right after a hostile monitor's flood, when the
    /// flood has cost the most.
    after_hostile: Vec<u64>,
    /// The most any processor's sessions held then (frames and laps, its
    /// `sessions.stats`): the budget `--max-memory` is for.
    held_after_hostile: u64,
}

impl Memory {
    fn of(processors: usize) -> Memory {
        Memory {
            start: vec![None; processors],
            end: vec![None; processors],
            after_hostile: vec![0; processors],
            held_after_hostile: 0,
        }
    }
}

/// The calm-time checks, from what was observed: `sessions.get` outside fault
/// windows, the dashboards' frame gaps, and the processors' memory. A pure
/// function of the observations, unit-tested on made-up ones.
struct Calm {
    /// Answered probes' latencies outside fault windows, sorted.
    latencies: Vec<Duration>,
    worst_gap_calm: Duration,
    worst_gap_fault: Duration,
    violations: Vec<String>,
}

impl Calm {
    fn quantile(&self, q: f64) -> Option<Duration> {
        self.latencies
            .get(((self.latencies.len().max(1) - 1) as f64 * q) as usize)
            .copied()
    }
}

/// Checks the observations against the bounds. A dashboard's gaps run from when
/// the dashboards started to its first frame, between frames, and from its last
/// frame to the end of the run, so one whose frames stop for good, or never
/// start, is caught. A check with no data at all is a violation, not a pass.
fn analyse(
    observed: &Observed,
    memory: &Memory,
    from: Instant,
    end: Instant,
    bounds: Bounds,
) -> Calm {
    let (get_p99_bound, gap_bound) = (bounds.get_p99, bounds.gap);
    let in_window = |t: Instant| observed.windows.iter().any(|(_, a, b)| t >= *a && t <= *b);
    // A probe belongs to a fault if the fault began while it was in flight, too
    // (sent just before a broker node died, it waits out its 2 s timeout).
    let overlaps = |from: Instant, to: Instant| {
        observed
            .windows
            .iter()
            .any(|(_, a, b)| from <= *b && to >= *a)
    };
    let calm_probe = |(sent, latency): &(Instant, Option<Duration>)| {
        !overlaps(*sent, *sent + latency.unwrap_or(PROBE_TIMEOUT))
    };
    let mut latencies: Vec<Duration> = observed
        .gets
        .iter()
        .filter(|g| calm_probe(g))
        .filter_map(|(_, l)| *l)
        .collect();
    latencies.sort();
    let calm_failures = observed
        .gets
        .iter()
        .filter(|g| g.1.is_none() && calm_probe(g))
        .count();
    let mut violations = Vec::new();
    let (mut worst_gap_calm, mut worst_gap_fault) = (Duration::ZERO, Duration::ZERO);
    for (i, arrivals) in observed.arrivals.iter().enumerate() {
        let edges: Vec<Instant> = std::iter::once(from)
            .chain(arrivals.iter().copied())
            .chain(std::iter::once(end))
            .collect();
        for pair in edges.windows(2) {
            let gap = pair[1].saturating_duration_since(pair[0]);
            // A gap counts as calm only when no fault window touches it.
            if overlaps(pair[0], pair[1]) || in_window(pair[0]) || in_window(pair[1]) {
                worst_gap_fault = worst_gap_fault.max(gap);
            } else {
                worst_gap_calm = worst_gap_calm.max(gap);
            }
        }
        if arrivals.is_empty() {
            violations.push(format!("dashboard {i} received no frame at all"));
        }
    }
    if observed.arrivals.is_empty() {
        violations.push("no dashboard followed a session: the gap check has no data".into());
    }
    let calm = Calm {
        latencies,
        worst_gap_calm,
        worst_gap_fault,
        violations: Vec::new(),
    };
    match calm.quantile(0.99) {
        None => violations.push(
            "no sessions.get was answered outside fault windows: the p99 check has no data".into(),
        ),
        Some(p99) if p99 > get_p99_bound => violations.push(format!(
            "sessions.get p99 outside faults {p99:?} > {get_p99_bound:?}"
        )),
        Some(_) => {}
    }
    if calm_failures > 0 {
        violations.push(format!(
            "{calm_failures} sessions.get failed outside fault windows"
        ));
    }
    if worst_gap_calm > gap_bound {
        violations.push(format!(
            "a dashboard waited {worst_gap_calm:?} for a frame outside faults (> {gap_bound:?})"
        ));
    }
    let hostile = observed
        .windows
        .iter()
        .any(|(fault, _, _)| *fault == Fault::HostileMonitor);
    violations.extend(memory_violations(memory, hostile, bounds));
    Calm { violations, ..calm }
}

/// A processor's memory at the end against its value after warm-up, and
/// after hostile monitors against the budget.
fn memory_violations(memory: &Memory, hostile: bool, bounds: Bounds) -> Vec<String> {
    let mut violations = Vec::new();
    // After a hostile monitor the ingest queue may have held its whole bound
    // of its 60 KB frames, and the allocator keeps pages it had: that is a
    // bound reached, not growth.
    let queue_slack = if hostile {
        bounds.ingest_queue() as f64
    } else {
        0.0
    };
    for (i, (start, end)) in memory.start.iter().zip(&memory.end).enumerate() {
        if let (Some(start), Some(end)) = (start, end)
            && (*end as f64)
                > (*start as f64) * bounds.rss_margin + 32.0 * 1024.0 * 1024.0 + queue_slack
        {
            violations.push(format!(
                "processor {i} grew from {} to {} MiB",
                start >> 20,
                end >> 20
            ));
        }
    }
    let rss_bound = bounds.rss_after_hostile();
    for (i, rss) in memory.after_hostile.iter().enumerate() {
        if *rss > rss_bound {
            violations.push(format!(
                "processor {i} held {} MiB after a hostile monitor (bound {} MiB: the budget, its ingest queue, {} MiB)",
                rss >> 20,
                rss_bound >> 20,
                MEMORY_OVERHEAD >> 20
            ));
        }
    }
    if memory.held_after_hostile > bounds.max_memory {
        violations.push(format!(
            "sessions held {} bytes after a hostile monitor (> --max-memory {})",
            memory.held_after_hostile, bounds.max_memory
        ));
    }
    violations
}

/// The longest time from a failed probe to the next answered one.
fn longest_unavailability(gets: &[(Instant, Option<Duration>)]) -> Duration {
    let mut worst = Duration::ZERO;
    let mut down_since = None;
    for (at, latency) in gets {
        match (latency, down_since) {
            (None, None) => down_since = Some(*at),
            (Some(l), Some(since)) => {
                worst = worst.max((*at + *l) - since);
                down_since = None;
            }
            _ => {}
        }
    }
    worst
}

/// Messages and bytes of paddock's three buckets.
async fn bucket_sizes(nats: &Client) -> String {
    let js = async_nats::jetstream::new(nats.clone());
    let mut parts = Vec::new();
    for (name, stream) in [
        ("live", format!("KV_{BUCKET}")),
        ("archive", format!("KV_{BUCKET}_archive")),
        ("laps", format!("KV_{BUCKET}_laps")),
    ] {
        match js.get_stream(&stream).await {
            Ok(mut s) => match s.info().await {
                Ok(info) => parts.push(format!(
                    "{name} {} keys, {:.1} MiB",
                    info.state.messages,
                    info.state.bytes as f64 / 1048576.0
                )),
                Err(e) => parts.push(format!("{name}: {e}")),
            },
            Err(e) => parts.push(format!("{name}: {e}")),
        }
    }
    parts.join("; ")
}

/// The node (n0..n2) leading the live bucket's stream.
async fn stream_leader(nats: &Client) -> Option<usize> {
    let js = async_nats::jetstream::new(nats.clone());
    let mut stream = js.get_stream(format!("KV_{BUCKET}")).await.ok()?;
    let info = stream.info().await.ok()?;
    let leader = info.cluster.as_ref()?.leader.as_ref()?;
    leader.strip_prefix('n')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const BOUNDS: Bounds = Bounds {
        get_p99: Duration::from_millis(250),
        gap: Duration::from_secs(1),
        rss_margin: 1.5,
        max_memory: 256 * MIB,
    };

    /// Two processors at 100 MiB after warm-up and 120 MiB at the end, no
    /// hostile monitor.
    fn steady_memory() -> Memory {
        Memory {
            start: vec![Some(100 * MIB); 2],
            end: vec![Some(120 * MIB); 2],
            ..Memory::of(2)
        }
    }

    /// A calm minute: probes every 100 ms answered in 1 ms, two dashboards with
    /// a frame every 50 ms, a fault window in the middle.
    fn calm_minute(t0: Instant) -> (Observed, Instant) {
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let end = at(60_000);
        let observed = Observed {
            gets: (0..600)
                .map(|i| (at(i * 100), Some(Duration::from_millis(1))))
                .collect(),
            arrivals: vec![(0..1200).map(|i| at(i * 50)).collect(); 2],
            windows: vec![(Fault::KillBroker, at(20_000), at(30_000))],
            all_down: Vec::new(),
        };
        (observed, end)
    }

    fn violations(observed: &Observed, t0: Instant, end: Instant) -> Vec<String> {
        analyse(observed, &steady_memory(), t0, end, BOUNDS).violations
    }

    #[test]
    fn a_calm_run_passes() {
        let t0 = Instant::now();
        let (observed, end) = calm_minute(t0);
        assert_eq!(violations(&observed, t0, end), Vec::<String>::new());
    }

    #[test]
    fn each_violation_is_found() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);

        // A slow get outside the window: the p99 check.
        let (mut o, end) = calm_minute(t0);
        for g in o.gets.iter_mut().take(20) {
            g.1 = Some(Duration::from_millis(400));
        }
        assert!(violations(&o, t0, end).iter().any(|v| v.contains("p99")));

        // A failed get outside the window; the same inside it is allowed.
        let (mut o, end) = calm_minute(t0);
        o.gets[5].1 = None;
        assert!(violations(&o, t0, end).iter().any(|v| v.contains("failed")));
        let (mut o, end) = calm_minute(t0);
        o.gets[250].1 = None;
        assert!(violations(&o, t0, end).is_empty());

        // A gap between frames outside the window.
        let (mut o, end) = calm_minute(t0);
        o.arrivals[1].retain(|t| *t < at(40_000) || *t > at(42_000));
        assert!(violations(&o, t0, end).iter().any(|v| v.contains("waited")));

        // Frames that stop for good before the end (no later arrival to measure by).
        let (mut o, end) = calm_minute(t0);
        o.arrivals[0].retain(|t| *t < at(45_000));
        assert!(violations(&o, t0, end).iter().any(|v| v.contains("waited")));

        // A dashboard that never receives a frame.
        let (mut o, end) = calm_minute(t0);
        o.arrivals[1].clear();
        let v = violations(&o, t0, end);
        assert!(v.iter().any(|v| v.contains("no frame at all")), "{v:?}");

        // No data: no calm probe at all, no dashboard at all.
        let (mut o, end) = calm_minute(t0);
        o.windows = vec![(Fault::KillBroker, t0, end)];
        assert!(
            violations(&o, t0, end)
                .iter()
                .any(|v| v.contains("no data"))
        );
        let (mut o, end) = calm_minute(t0);
        o.arrivals.clear();
        assert!(
            violations(&o, t0, end)
                .iter()
                .any(|v| v.contains("no data"))
        );
    }

    #[test]
    fn memory_past_its_bounds_is_found() {
        let t0 = Instant::now();
        let (calm, end) = calm_minute(t0);
        let (mut hostile, _) = calm_minute(t0);
        hostile.windows.push((
            Fault::HostileMonitor,
            t0 + Duration::from_secs(40),
            t0 + Duration::from_secs(50),
        ));
        let found = |observed: &Observed, memory: &Memory| {
            analyse(observed, memory, t0, end, BOUNDS).violations
        };
        assert_eq!(found(&calm, &steady_memory()), Vec::<String>::new());

        // Growth past the margin (100 × 1.5 + 32 = 182 MiB): found, unless a
        // hostile monitor may have filled the ingest queue (+ 64 MiB).
        let mut grown = steady_memory();
        grown.end[1] = Some(200 * MIB);
        let v = found(&calm, &grown);
        assert!(v.iter().any(|v| v.contains("processor 1 grew")), "{v:?}");
        assert_eq!(found(&hostile, &grown), Vec::<String>::new());
        grown.end[1] = Some(250 * MIB);
        let v = found(&hostile, &grown);
        assert!(v.iter().any(|v| v.contains("processor 1 grew")), "{v:?}");

        // Right after a hostile monitor: resident memory within the budget,
        // its ingest queue and 64 MiB (256 + 64 + 64 = 384 MiB) ...
        let mut flooded = steady_memory();
        flooded.after_hostile = vec![380 * MIB, 300 * MIB];
        assert_eq!(found(&hostile, &flooded), Vec::<String>::new());
        flooded.after_hostile[0] = 390 * MIB;
        let v = found(&hostile, &flooded);
        assert!(
            v.iter()
                .any(|v| v.contains("processor 0 held 390 MiB after a hostile monitor")),
            "{v:?}"
        );

        // ... and what its sessions hold within the budget itself.
        let mut held = steady_memory();
        held.held_after_hostile = 256 * MIB;
        assert_eq!(found(&hostile, &held), Vec::<String>::new());
        held.held_after_hostile += 1;
        let v = found(&hostile, &held);
        assert!(v.iter().any(|v| v.contains("sessions held")), "{v:?}");
    }
}
