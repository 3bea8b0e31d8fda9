//! `paddock bench --only pinned`: ingest with the consumer on a core of its own.
//!
//! By default the broker, the publisher and the consumer (the processor, or the
//! plain subscriber it is compared with) share every core, and on a 2-core machine
//! every nanosecond the consumer spends is taken from the broker's delivery. A
//! deployment gives the processor cores of its own; this mode measures that on one
//! machine: the broker and the publisher (this process) on core 0, the consumer on
//! core 1. The plain subscriber is then a child process too (`bench-sink`), so
//! that both consumers run alike: their own process, their own core.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use async_nats::Subject;
use clap::Args;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::rig::{connect, sync};
use super::{Frame, blast};

/// The core the consumer gets; everything else runs on core 0.
pub(crate) const CONSUMER_CORE: usize = 1;

/// Restricts every thread of process `pid` to `cores` (Linux); threads it starts
/// later inherit it.
pub(crate) fn pin(pid: u32, cores: &[usize]) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &core in cores {
        // SAFETY: `core` is below the machine's core count, well inside the set.
        unsafe { libc::CPU_SET(core, &mut set) };
    }
    let tasks = format!("/proc/{pid}/task");
    for task in std::fs::read_dir(&tasks).with_context(|| format!("cannot read {tasks}"))? {
        let tid: libc::pid_t = task?
            .file_name()
            .to_string_lossy()
            .parse()
            .context("a task id that is not a number")?;
        // SAFETY: sched_setaffinity(2) with the size of the set it reads.
        let done = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
        // A thread that ended since the listing is no failure.
        if done != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH) {
            bail!(
                "cannot pin thread {tid} of {pid}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Every core of the machine that is online (not `available_parallelism`, which
/// answers the calling thread's own affinity, pinned or not).
pub(crate) fn all_cores() -> Vec<usize> {
    // SAFETY: sysconf(3) with a valid name.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    (0..usize::try_from(online).unwrap_or(1).max(1)).collect()
}

/// `paddock bench-sink`: the plain subscriber of the `pinned` part, in a process of
/// its own. Prints `ready` once subscribed, then `done` after every `count`
/// messages, until its input closes.
#[derive(Debug, Clone, Args)]
pub struct SinkArgs {
    #[arg(long)]
    pub nats_url: String,
    #[arg(long)]
    pub subject: String,
    #[arg(long)]
    pub count: usize,
}

pub async fn sink(args: &SinkArgs) -> anyhow::Result<()> {
    let client = connect(&args.nats_url).await?;
    let mut messages = client.subscribe(args.subject.clone()).await?;
    sync(&client).await?;
    println!("ready");
    loop {
        for n in 0..args.count {
            match tokio::time::timeout(Duration::from_secs(30), messages.next()).await {
                Ok(Some(_)) => {}
                _ => bail!("the sink got {n} of {} messages", args.count),
            }
        }
        println!("done");
    }
}

/// A running `bench-sink`, pinned to the consumer's core.
pub(crate) struct Sink {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Sink {
    pub(crate) async fn start(url: &str, subject: &str, count: usize) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["bench-sink", "--nats-url", url, "--subject", subject])
            .args(["--count", &count.to_string()])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the sink")?;
        let pid = child.id().context("the sink exited at once")?;
        pin(pid, &[CONSUMER_CORE])?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut sink = Sink {
            child,
            lines: BufReader::new(stdout).lines(),
        };
        sink.expect("ready").await?;
        Ok(sink)
    }

    async fn expect(&mut self, what: &str) -> anyhow::Result<()> {
        let line = self.lines.next_line().await?;
        ensure!(
            line.as_deref() == Some(what),
            "the sink said {line:?}, not {what:?}"
        );
        Ok(())
    }

    /// Frames per second the sink received: from the first publish until it
    /// reports all of them.
    pub(crate) async fn delivery(
        &mut self,
        publisher: &async_nats::Client,
        subjects: &[Subject],
        frame: &Frame,
        total: usize,
    ) -> anyhow::Result<f64> {
        let started = Instant::now();
        blast(publisher, subjects, frame, total).await?;
        self.expect("done").await?;
        Ok(total as f64 / started.elapsed().as_secs_f64())
    }

    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}
