//! `paddock demo`: a working local stack in one command.
//!
//! Uses the broker at `--nats-url` if one answers; otherwise starts
//! `nats-server -c nats.conf` as a child (the binary found or fetched by
//! [`crate::broker`], so a machine with nothing but Rust works). Then runs the processor and a few
//! simulated monitors in this process until ctrl-c. The child broker runs in its own
//! process group, so the terminal's ctrl-c reaches only paddock: the processor
//! drains against a live broker first, and only then is the broker stopped
//! (SIGTERM, so JetStream shuts down cleanly). On Linux the broker is also told
//! to stop when the demo dies without a word (SIGKILL): nothing outlives it.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::sync::watch;

use super::monitor::{self, MonitorArgs};
use super::serve::ServeArgs;
use crate::broker::{self, BrokerConfig, LocalBroker};
use crate::client::{SessionsClient, connect};
use crate::server;
use crate::server::health::Health;
use std::sync::Arc;

/// Where the demo serves the dashboard unless `--http-addr` says otherwise.
const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8081";
/// The team the demo's cars race for (numbered #1, #2, …).
pub const DEMO_TEAM: &str = "Demo";
/// The WebSocket listener nats.conf configures, for a broker already running.
const NATS_CONF_WS_URL: &str = "ws://127.0.0.1:8080";

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Broker configuration used when no broker is reachable at --nats-url.
    #[arg(long, env = "PADDOCK_NATS_CONF", default_value = "nats.conf")]
    pub nats_conf: PathBuf,
    /// nats-server binary used to start that broker (default: `nats-server` on
    /// PATH, else the pinned release, fetched into the cache).
    #[arg(long, env = "NATS_SERVER_BIN")]
    pub nats_server_bin: Option<PathBuf>,
    /// Simulated monitors to run.
    #[arg(long, env = "PADDOCK_DEMO_MONITORS", default_value_t = 3)]
    pub monitors: usize,
    /// Race time per real second for the demo's monitors (20 makes a lap about 10 s).
    #[arg(long, env = "PADDOCK_DEMO_TIME_SCALE", default_value_t = 20.0)]
    pub time_scale: f64,
}

pub async fn run(args: &DemoArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Listened to from the first moment: ctrl-c while the broker is fetched or
    // started, or while the processor waits for its buckets, stops the demo.
    let mut shutdown = std::pin::pin!(shutdown);
    let mut args = args.clone();
    let url = args.serve.connect.nats_url.clone();
    // Whether to start a broker, and where its monitoring port goes.
    let (start, monitoring) = if !broker_answers(&url).await {
        (true, None)
    } else {
        match beside_broker_without_websocket(&args, &url).await {
            // The page could not reach that broker: one of the demo's own, from
            // nats.conf, on the next free ports, keeps the README's page live.
            Some((own, http)) => {
                say!(
                    "paddock demo: the broker already running at {url} has no WebSocket \
                     listener for the dashboard page, so the demo starts its own on {own} \
                     (to use the one at {url}, pass --ws-url with its WebSocket listener)"
                );
                args.serve.connect.nats_url = own;
                (true, Some(http))
            }
            None => {
                say!("paddock demo: using the NATS broker already running at {url}");
                (false, None)
            }
        }
    };
    let broker = if !start {
        None
    } else {
        tokio::select! {
            started = start_broker(&args, monitoring) => Some(started?),
            () = &mut shutdown => {
                say!("paddock demo: stopped before the broker started");
                return Ok(());
            }
        }
    };
    // The dashboard is on by default here: the broker's WebSocket listener (from
    // nats.conf, or the one the demo's broker reports) and a page on 8081.
    let web = &mut args.serve.web;
    web.http_addr = web
        .http_addr
        .or(Some(DEFAULT_HTTP_ADDR.parse().expect("an address")));
    if web.ws_url.is_none() {
        web.ws_url = Some(
            broker
                .as_ref()
                .and_then(LocalBroker::websocket_url)
                .unwrap_or_else(|| NATS_CONF_WS_URL.to_string()),
        );
    }
    // A broker that was already running (many machines run one on 4222) may
    // have no WebSocket listener where the page is told to connect: then every
    // dashboard link would show a page that cannot connect. Say so, and how to
    // fix it, before printing them.
    if let Some(ws) = web.ws_url.clone()
        && broker.is_none()
        && !websocket_answers(&ws).await
    {
        say!(
            "paddock demo: WARNING: the broker at {url} has no WebSocket listener at {ws}, so \
             the dashboard page cannot reach it (the terminal views work). Either stop that \
             broker and run the demo again (it then starts its own from nats.conf), add \
             `websocket {{ port: 8080, no_tls: true }}` to its configuration, or pass --ws-url \
             with the listener it has."
        );
    }
    let served = run_stack(&args, shutdown).await;
    if let Some(broker) = broker {
        stop_broker(broker).await;
    }
    served
}

/// The processor, then the simulated monitors, until `shutdown`.
async fn run_stack(args: &DemoArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let url = &args.serve.connect.nats_url;
    // The processor exactly as `paddock serve` runs it, from the same flags.
    let mut config = args.serve.config()?;
    let health = Arc::new(Health::default());
    config.store.progress = health.progress();
    let web = args.serve.start_web(&health).await?;
    let page = args.serve.web.public_url(web.as_ref().map(|w| w.addr));
    config.dashboard_url = page.clone();
    let client =
        connect::processor(&args.serve.connect.config(), args.serve.ingest_capacity()).await?;
    health.connecting(client.clone());
    let mut shutdown = std::pin::pin!(shutdown);
    let started = tokio::select! {
        started = server::Processor::start(client, config) => Some(started),
        () = &mut shutdown => None,
    };
    let processor = match started {
        Some(Ok(processor)) => processor,
        Some(Err(e)) => {
            health.failed(&e);
            if let Some(web) = web {
                web.stop().await;
            }
            return Err(e).context("cannot start the processor");
        }
        None => {
            say!("paddock demo: stopped before the processor started");
            if let Some(web) = web {
                web.stop().await;
            }
            return Ok(());
        }
    };
    health.started(processor.app());
    // The demo's cars end with it: team Demo's sessions created from now on
    // are this run's, and are deleted at ctrl-c (archived, like any deleted
    // session), so the next run does not find them among its cars.
    let since = chrono::Utc::now();
    let me = crate::cmd::self_command();
    let flags = args.serve.connect.as_flags();
    let page = page.unwrap_or_default();
    say!(
        "paddock demo: processor running on {url}; starting {} simulated monitor{}. \
         Stop everything with ctrl-c.\n\
         Dashboard (every live session): {page}/ and the team's: {page}/team/{DEMO_TEAM}\n\
         In another terminal:\n  {me} sessions list{flags}\n  {me} watch <session id>{flags}\n  \
         {me} sessions share <session id>{flags}\n  {me} watch --team {DEMO_TEAM}{flags}",
        args.monitors,
        if args.monitors == 1 { "" } else { "s" }
    );
    let monitor_args = MonitorArgs {
        connect: args.serve.connect.clone(),
        session: None,
        hz: 10.0,
        sessions: args.monitors,
        source: super::monitoring::SourceArg::Sim,
        listen: None,
        new_session_per_race: false,
        gt7: Default::default(),
        acc: Default::default(),
        field_hz: 2.0,
        replay: None,
        format: None,
        time_scale: args.time_scale,
        duration: None,
        progress: Duration::ZERO,
        check_every: Duration::from_secs(10),
        dashboard: super::sessions::DashboardArgs {
            dashboard_url: (!page.is_empty()).then(|| page.clone()),
        },
        // A team, so the team page and `watch --team` can be tried from the demo.
        label: super::sessions::LabelArgs {
            team: Some(DEMO_TEAM.to_string()),
            car: None,
        },
    };
    // One shutdown for all: the monitors stop, their sessions end, then the
    // processor drains.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (monitors_done_tx, monitors_done) = tokio::sync::oneshot::channel::<()>();
    let (processor_stop_tx, processor_stop) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let monitors = async {
        // A demo stopped without a signal it could act on (kill -9, a crash)
        // left its cars live until --expire-after: they are ended now (asked
        // here, of the processor running beside), so this run shows its own.
        // Only quiet ones: another demo's cars beside this one send ten frames
        // a second.
        end_demo_sessions(
            args,
            |s| since - s.last_update > LEFT_OVER,
            |n| {
                format!(
                    "ended {n} session{} an earlier demo left live (it was stopped without ctrl-c)",
                    plural(n)
                )
            },
        )
        .await;
        let ran = if args.monitors > 0 {
            monitor::run(&monitor_args, stopped(stop_rx.clone())).await
        } else {
            Ok(())
        };
        let _ = monitors_done_tx.send(());
        ran
    };
    let signal =
        async {
            shutdown.await;
            let _ = stop_tx.send(true);
            let _ = monitors_done.await;
            end_demo_sessions(args, |s| s.created_at >= since, |n| {
            format!(
                "ended its {n} session{} (archived: `{me} sessions archive list{flags}` lists \
                 them while a processor runs, during the next demo say)",
                plural(n)
            )
        })
        .await;
            let _ = processor_stop_tx.send(true);
        };
    let ((), (), monitors) = tokio::join!(
        signal,
        server::run_on_worker(processor, async {
            stopped(processor_stop).await;
            health.stopping();
        }),
        monitors
    );
    if let Some(web) = web {
        web.stop().await;
    }
    monitors
}

/// How long without a frame a team Demo session is taken for one an earlier
/// demo left (its cars send ten frames a second).
const LEFT_OVER: chrono::TimeDelta = chrono::TimeDelta::seconds(3);

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Deletes team Demo's live sessions that `which` picks (archived, like any
/// deleted session), and says how many with `said`.
async fn end_demo_sessions(
    args: &DemoArgs,
    which: impl Fn(&crate::protocol::documents::SessionSummary) -> bool,
    said: impl Fn(usize) -> String,
) {
    let ended = async {
        let client = connect::connect_once(&args.serve.connect.config(), "paddock-demo").await?;
        let ops = SessionsClient::new(
            client,
            args.serve.connect.nats_url.clone(),
            Duration::from_secs(5),
        );
        let mine: Vec<_> = ops
            .list_all(Some(DEMO_TEAM))
            .await?
            .into_iter()
            .filter(|s| which(s))
            .map(|s| s.session_id.to_string())
            .collect();
        for id in &mine {
            ops.delete(id).await?;
        }
        anyhow::Ok(mine.len())
    };
    match ended.await {
        Ok(0) => {}
        Ok(n) => say!("paddock demo: {}", said(n)),
        Err(e) => tracing::warn!(error = %e, "could not end the demo's sessions"),
    }
}

/// Stops the broker the demo started (SIGTERM, so JetStream syncs its store).
async fn stop_broker(mut broker: LocalBroker) {
    say!("paddock demo: stopping the nats-server it started");
    // Clients still open in this process see it go: expected, not a warning.
    connect::broker_stopping();
    let _ = tokio::task::spawn_blocking(move || broker.stop(Duration::from_secs(10))).await;
}

/// For a broker already answering at `url`: when the page would have no
/// WebSocket listener to reach (none given with --ws-url, none where nats.conf
/// puts it) and the demo can start one of its own from nats.conf on this
/// machine, the URL of that broker and a monitoring port, both free.
async fn beside_broker_without_websocket(args: &DemoArgs, url: &str) -> Option<(String, u16)> {
    if args.serve.web.ws_url.is_some() || !args.nats_conf.exists() {
        return None;
    }
    let port = local_port(url)?;
    if websocket_answers(NATS_CONF_WS_URL).await {
        return None;
    }
    let client = free_port_from(port.checked_add(1)?)?;
    let monitoring = free_port_from(8223)?;
    Some((format!("nats://127.0.0.1:{client}"), monitoring))
}

/// The first port from `first` (of the next hundred) nothing listens on.
fn free_port_from(first: u16) -> Option<u16> {
    (first..first.saturating_add(100))
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// Starts a broker where `--nats-url` points: from `--nats-conf` when that file
/// exists (the repository's nats.conf), else with JetStream in paddock's cache.
/// `monitoring` moves the file's monitoring port (one beside a broker already
/// running, which may hold the file's).
async fn start_broker(args: &DemoArgs, monitoring: Option<u16>) -> anyhow::Result<LocalBroker> {
    let url = &args.serve.connect.nats_url;
    let Some(port) = local_port(url) else {
        bail!(
            "no NATS broker answers at {url}, and the demo starts one only on this \
             machine (a nats://127.0.0.1:PORT or nats://localhost:PORT URL)"
        );
    };
    let (bin, source) = {
        let given = args.nats_server_bin.clone();
        tokio::task::spawn_blocking(move || broker::locate(given.as_deref()))
            .await
            .context("the broker look-up failed")??
    };
    let config = if args.nats_conf.exists() {
        BrokerConfig {
            config_file: Some(args.nats_conf.clone()),
            ..BrokerConfig::default()
        }
    } else {
        BrokerConfig {
            store_dir: Some(broker::release::cache_dir().join("demo-store")),
            // For the dashboard page (nats.conf configures its own).
            websocket: true,
            ..BrokerConfig::default()
        }
    };
    let config = BrokerConfig {
        bin: Some(bin.clone()),
        port: Some(port),
        args: monitoring.map_or_else(Vec::new, |m| vec!["-m".into(), m.to_string()]),
        // ctrl-c in the terminal must not stop it before the processor has drained.
        own_process_group: true,
        // Killed outright, the demo leaves no broker behind.
        die_with_parent: true,
        ..config
    };
    say!(
        "paddock demo: no broker at {url}; starting {} ({}){}",
        bin.display(),
        match source {
            broker::Source::Given => "NATS_SERVER_BIN",
            broker::Source::Path => "on PATH",
            broker::Source::Cache => "paddock's pinned release",
        },
        config
            .config_file
            .as_ref()
            .map_or(String::new(), |c| format!(" -c {}", c.display()))
    );
    // Started from this (the main) thread, which lives as long as the demo:
    // the broker's parent-death signal follows the thread that started it.
    let broker = tokio::task::block_in_place(move || LocalBroker::start(config))?;
    Ok(broker)
}

/// The port of a loopback `nats://` URL (the first of a list), if it is one.
fn local_port(url: &str) -> Option<u16> {
    let first = url.split(',').next()?.trim();
    let rest = first.strip_prefix("nats://").unwrap_or(first);
    let (host, port) = rest.rsplit_once(':')?;
    let host = host.rsplit('@').next()?;
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
        .then(|| port.trim_end_matches('/').parse().ok())
        .flatten()
}

/// Whether a WebSocket listener answers at `ws_url` (`ws://host:port`): a bare
/// upgrade request, answered `101 Switching Protocols` by a NATS WebSocket
/// listener. A `wss://` listener is not probed (it needs a TLS handshake).
async fn websocket_answers(ws_url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(rest) = ws_url.strip_prefix("ws://") else {
        return true;
    };
    let authority = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or(rest)
        .to_string();
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(&authority).await.ok()?;
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = [0u8; 16];
        let n = stream.read(&mut answer).await.ok()?;
        Some(answer[..n].starts_with(b"HTTP/1.1 101"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Some(true))
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

#[cfg(test)]
mod tests {
    use super::local_port;

    #[test]
    fn the_demo_starts_a_broker_only_for_a_loopback_url() {
        assert_eq!(local_port("nats://127.0.0.1:4222"), Some(4222));
        assert_eq!(
            local_port("nats://localhost:14222,nats://127.0.0.1:4"),
            Some(14222)
        );
        assert_eq!(local_port("127.0.0.1:4333"), Some(4333));
        assert_eq!(local_port("nats://user:pw@127.0.0.1:4222"), Some(4222));
        assert_eq!(local_port("nats://broker.example:4222"), None);
        assert_eq!(local_port("nats://127.0.0.1"), None);
    }
}
