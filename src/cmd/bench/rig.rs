//! What a benchmark runs against: its own nats-server and its own processor, as
//! child processes, so that nothing else on the machine is measured and the
//! processor's memory can be read from /proc.

use std::path::{Path, PathBuf};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::Client;
use bytes::Bytes;

use crate::broker::{BrokerConfig, LocalBroker};
use crate::client::SessionsClient;

/// The benchmark's own broker: JetStream on a port it picks, a temporary store.
pub(crate) fn start_broker(bin: &Path) -> anyhow::Result<LocalBroker> {
    start_broker_with(bin, None)
}

/// The same, reading `extra_config` too (e.g. partition mappings).
pub(crate) fn start_broker_with(
    bin: &Path,
    extra_config: Option<String>,
) -> anyhow::Result<LocalBroker> {
    Ok(LocalBroker::start(BrokerConfig {
        bin: Some(bin.to_path_buf()),
        extra_config,
        ..BrokerConfig::default()
    })?)
}

/// A bare client: benchmark connections log nothing.
pub(crate) async fn connect(url: &str) -> anyhow::Result<Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

/// Returns once the broker has processed everything `client` sent before: a
/// request nobody answers comes back "no responders" only after that.
pub(crate) async fn sync(client: &Client) -> anyhow::Result<()> {
    match client.request("paddock.bench.sync", Bytes::new()).await {
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
        other => bail!("expected the broker's no-responders reply, got {other:?}"),
    }
}

/// `paddock serve` as a child process of this binary, logging warnings to a file.
pub(crate) struct Processor {
    child: Child,
    pub(crate) log: PathBuf,
}

impl Processor {
    /// Starts it and waits until it answers `sessions.stats`: start-up includes
    /// recovering everything stored, so this is also the recovery time.
    pub(crate) async fn start(
        url: &str,
        args: &[&str],
        client: &SessionsClient,
    ) -> anyhow::Result<(Self, Duration)> {
        let started = Instant::now();
        let mut processor = Processor::spawn(url, args, "")?;
        Processor::wait_ready(std::slice::from_mut(&mut processor), client).await?;
        Ok((processor, started.elapsed()))
    }

    /// Starts it without waiting; `tag` tells its log from others'.
    pub(crate) fn spawn(url: &str, args: &[&str], tag: &str) -> anyhow::Result<Self> {
        let log =
            std::env::temp_dir().join(format!("paddock-bench-{}{tag}.log", std::process::id()));
        let child = Command::new(std::env::current_exe()?)
            // The memory fill creates its sessions with frames, on demand: unbounded.
            .args(["serve", "--nats-url", url, "--max-sessions", "1000000"])
            .args(["--on-demand-limit", "0", "--on-demand-share", "100"])
            // The rate budgets' checks run on every frame as in production, but
            // never refuse one: the bench drives each session far past any sim's
            // rate (300,000 frames over 100 sessions is 3,000 each, in a second).
            // Every other bound is serve's default: --max-memory, the ingest
            // queue's --ingest-buffer-bytes, the buckets' --kv-max-bytes.
            .args(["--max-frame-rate", "1000000000", "--max-lap-rate", "0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start the processor")?;
        Ok(Processor { child, log })
    }

    /// Waits until `sessions.stats` is answered, which with partitions needs
    /// every one of them.
    pub(crate) async fn wait_ready(
        processors: &mut [Processor],
        client: &SessionsClient,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if client.stats().await.is_ok() {
                return Ok(());
            }
            for processor in processors.iter_mut() {
                if let Some(status) = processor.child.try_wait()? {
                    bail!(
                        "the processor exited at start ({status}); see {}",
                        processor.log.display()
                    );
                }
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!("the processor did not answer within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory, from /proc (Linux).
    pub(crate) fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .context("cannot read the processor's memory (needs Linux /proc)")?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .context("no VmRSS in /proc/<pid>/status")?;
        Ok(kb * 1024)
    }

    /// Time the processor's threads have spent on a CPU, all together, from
    /// /proc/<pid>/task/*/schedstat (nanoseconds; Linux). What a frame costs the
    /// machine, which on a shared machine is taken from the broker's delivery: a
    /// figure that moves far less between runs than a throughput does.
    pub(crate) fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time(self.pid())
    }

    /// SIGTERM, and wait for the graceful stop (which stores the last changes).
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        #[cfg(unix)]
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        // No SIGTERM on Windows: the processor is ended as ctrl-c would not
        // be delivered to a child without a console of its own.
        #[cfg(not(unix))]
        let _ = self.child.kill();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("the processor did not stop within 60 s after SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A counter from `sessions.stats`.
pub(crate) async fn counter(client: &SessionsClient, name: &str) -> anyhow::Result<u64> {
    // By name, as the counters are reported: the bench follows several of them.
    let stats = serde_json::to_value(client.stats().await?)?;
    stats[name]
        .as_u64()
        .with_context(|| format!("sessions.stats has no {name}"))
}

/// Waits until the counter `name` reaches `target`; fails when it stops moving
/// for `stall`. Answers when it got there.
pub(crate) async fn wait_for_counter(
    client: &SessionsClient,
    name: &str,
    target: u64,
    stall: Duration,
) -> anyhow::Result<Instant> {
    let mut last = (0, Instant::now());
    loop {
        let now = counter(client, name).await?;
        if now >= target {
            return Ok(Instant::now());
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > stall {
            bail!("{name} stopped at {now} of {target}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Time the threads of process `pid` have spent on a CPU, all together
/// (/proc/<pid>/task/*/schedstat, nanoseconds; Linux).
pub(crate) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let tasks = format!("/proc/{pid}/task");
    let mut ns = 0u64;
    for task in std::fs::read_dir(&tasks).with_context(|| format!("cannot read {tasks}"))? {
        let stat = std::fs::read_to_string(task?.path().join("schedstat"))
            .context("no schedstat (needs Linux with schedstats)")?;
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .context("unreadable schedstat")?;
    }
    Ok(Duration::from_nanos(ns))
}
