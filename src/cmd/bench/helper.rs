//! The bench's helper processes: this binary run again with a hidden subcommand,
//! so that a plain NATS client compared with the processor runs as the processor
//! does: a process of its own with a one-worker runtime (`serve`'s default). In the
//! bench's own process it would share a runtime with the publisher and the
//! requester, and one wake-up of that process could carry a request out and its
//! answer back: a shortcut the processor, a process of its own, never gets.
//!
//! Each helper prints `ready` once the broker has its subscription, then reports
//! on stdout line by line.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use async_nats::{Client, Subject, Subscriber};
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::pinned::pin;
use super::rig::{connect, cpu_time, sync};
use super::{Frame, blast};

/// Where a helper listens.
#[derive(Debug, Clone, Args)]
pub struct Listen {
    #[arg(long)]
    pub nats_url: String,
    #[arg(long)]
    pub subject: String,
}

impl Listen {
    /// Subscribes, and says `ready` once the broker has the subscription.
    async fn ready(&self) -> anyhow::Result<(Client, Subscriber)> {
        let client = connect(&self.nats_url).await?;
        let subscriber = client.subscribe(self.subject.clone()).await?;
        sync(&client).await?;
        println!("ready");
        Ok((client, subscriber))
    }
}

/// `paddock bench-sink`: the plain subscriber of the ingest parts. Prints `done`
/// after every `count` messages, until its input closes.
#[derive(Debug, Clone, Args)]
pub struct SinkArgs {
    #[command(flatten)]
    pub listen: Listen,
    #[arg(long)]
    pub count: usize,
}

pub async fn sink(args: &SinkArgs) -> anyhow::Result<()> {
    let (_client, mut messages) = args.listen.ready().await?;
    loop {
        // Between turns it waits as long as the other turn takes (with 100,000
        // sessions, the check of every final frame takes longer than a turn).
        if messages.next().await.is_none() {
            return Ok(());
        }
        // Then one deadline for the lot, not a timer per message: the
        // processor it is compared with sets none.
        let mut n = 1;
        let all = tokio::time::timeout(Duration::from_secs(30), async {
            while n < args.count && messages.next().await.is_some() {
                n += 1;
            }
        })
        .await;
        if all.is_err() || n < args.count {
            bail!("the sink got {n} of {} messages", args.count);
        }
        println!("done");
    }
}

/// `paddock bench-echo`: the plain responder of the `get` part. Answers every
/// request on `subject` with `size` spaces (as long as a session document), until
/// killed.
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    #[command(flatten)]
    pub listen: Listen,
    #[arg(long)]
    pub size: usize,
}

pub async fn echo(args: &EchoArgs) -> anyhow::Result<()> {
    let (client, mut requests) = args.listen.ready().await?;
    let body = Bytes::from(vec![b' '; args.size]);
    while let Some(request) = requests.next().await {
        if let Some(reply) = request.reply {
            client.publish(reply, body.clone()).await?;
        }
    }
    Ok(())
}

/// A running helper process.
pub(crate) struct Helper {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Helper {
    /// Starts `paddock <args>`, on `cores` if given, and waits for its `ready`.
    pub(crate) async fn start(args: &[String], cores: Option<&[usize]>) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start paddock {}", args.join(" ")))?;
        if let Some(cores) = cores {
            pin(child.id().context("the helper exited at once")?, cores)?;
        }
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut helper = Helper {
            child,
            lines: BufReader::new(stdout).lines(),
        };
        helper.expect("ready").await?;
        Ok(helper)
    }

    /// Waits for the helper's next line and checks it is `what`.
    pub(crate) async fn expect(&mut self, what: &str) -> anyhow::Result<()> {
        let line = self.lines.next_line().await?;
        ensure!(
            line.as_deref() == Some(what),
            "the helper said {line:?}, not {what:?}"
        );
        Ok(())
    }

    /// Time its threads have spent on a CPU (see `rig::cpu_time`).
    pub(crate) fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time(self.child.id().context("the helper has exited")?)
    }

    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// A running `bench-sink`: the plain subscriber the processor's ingest is
/// compared with.
pub(crate) struct Sink(Helper);

impl Sink {
    /// Starts it on `cores` if given; it reports every `count` messages.
    pub(crate) async fn start(
        url: &str,
        subject: &str,
        count: usize,
        cores: Option<&[usize]>,
    ) -> anyhow::Result<Self> {
        let args = [
            "bench-sink".to_string(),
            format!("--nats-url={url}"),
            format!("--subject={subject}"),
            format!("--count={count}"),
        ];
        Ok(Sink(Helper::start(&args, cores).await?))
    }

    /// Frames per second the sink received, publishing `count` frames: from the
    /// first publish until it reports them all.
    pub(crate) async fn delivery(
        &mut self,
        publisher: &async_nats::Client,
        subjects: &[Subject],
        frame: &Frame,
        count: usize,
    ) -> anyhow::Result<f64> {
        let started = Instant::now();
        blast(publisher, subjects, frame, count).await?;
        self.0.expect("done").await?;
        Ok(count as f64 / started.elapsed().as_secs_f64())
    }

    pub(crate) fn cpu_time(&self) -> anyhow::Result<Duration> {
        self.0.cpu_time()
    }

    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.0.stop().await
    }
}
