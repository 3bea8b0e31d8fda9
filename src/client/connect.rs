//! Connecting to the broker, with the connection's life in the logs.
//!
//! async-nats reconnects and resubscribes on its own (unlimited attempts by default);
//! what it does not do is tell the operator. The event callback turns every
//! disconnect, reconnect and slow-consumer event into a structured log line, so a
//! broker outage during a race is visible and its end is too.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Where the broker is and how to prove who we are: what every connection needs.
/// The commands fill it from their flags (`cmd::args::ConnectArgs`).
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// One URL, or a cluster's nodes comma-separated.
    pub nats_url: String,
    /// A `.creds` file (JWT and seed).
    pub creds: Option<std::path::PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// A CA to verify the broker with; makes TLS required.
    pub tls_ca: Option<std::path::PathBuf>,
    /// A client certificate and its key, for brokers that verify clients.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// Where replies arrive: `<prefix>.<connection>.<n>` (roles read only their own).
    pub inbox_prefix: String,
    /// The `.creds` the connection signs with, loaded from `creds` at connect and
    /// replaced by renewal (per-session credentials, `super::creds`).
    pub live: super::creds::LiveCreds,
}

impl ConnectConfig {
    /// A broker at `url` with no credentials and no TLS (tests, benchmarks).
    pub fn plain(url: &str) -> Self {
        ConnectConfig {
            nats_url: url.to_string(),
            creds: None,
            user: None,
            password: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            inbox_prefix: "_INBOX".into(),
            live: Default::default(),
        }
    }
}

/// The link to the broker going down or coming back, for commands that react to it
/// (the monitor re-sends its setup, the watch view takes a fresh snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Up,
    Down,
}

/// Operations the broker refused lately (permissions), as it worded them. A
/// refused publish or subscribe is reported only on the connection's event
/// callback, never to the caller; a request whose publish was refused just goes
/// unanswered. Kept here, process-wide, so the client can say what happened
/// instead of "no processor is answering".
static REFUSALS: std::sync::Mutex<Vec<(std::time::Instant, String)>> =
    std::sync::Mutex::new(Vec::new());

/// Messages the client dropped because a subscription's buffer was full ("slow
/// consumer"), on every connection of this process. Process-wide like
/// [`REFUSALS`]: the event callback is set before the processor exists, and
/// `/metrics` reports it per process.
static SLOW_CONSUMER_DROPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many messages this process's connections dropped as a slow consumer.
pub fn slow_consumer_drops() -> u64 {
    SLOW_CONSUMER_DROPS.load(std::sync::atomic::Ordering::Relaxed)
}

fn note_refusal(text: String) {
    let mut refusals = REFUSALS.lock().unwrap_or_else(|e| e.into_inner());
    refusals.retain(|(at, _)| at.elapsed() < Duration::from_secs(60));
    refusals.push((std::time::Instant::now(), text));
}

/// The broker's words for a refusal since `since`: of `subject` if there was one,
/// else any (a request also fails when its reply may not be received, e.g. with
/// per-session credentials and no `--inbox-prefix`: then the refused subject is
/// the inbox).
pub fn refusal_since(subject: &str, since: std::time::Instant) -> Option<String> {
    let quoted = format!("\"{subject}\"");
    let refusals = REFUSALS.lock().unwrap_or_else(|e| e.into_inner());
    let recent = || refusals.iter().rev().filter(|(at, _)| *at >= since);
    recent()
        .find(|(_, text)| text.contains(&quoted))
        .or_else(|| recent().next())
        .map(|(_, text)| text.clone())
}

/// Options shared by every paddock connection to the broker `args` describes: its
/// credentials, a client name the broker shows in its connection list, and
/// connection events logged (and forwarded to `links`, if given).
fn options(
    args: &ConnectConfig,
    name: &str,
    links: Option<UnboundedSender<Link>>,
) -> anyhow::Result<ConnectOptions> {
    // A `.creds` file: each (re)connect signs with what `args.live` holds then,
    // so renewed credentials take effect at the next reconnect.
    let base = match &args.creds {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the credentials file {}", path.display()))?;
            args.live
                .set(&text)
                .with_context(|| format!("cannot use the credentials file {}", path.display()))?;
            args.live
                .check_inbox(&args.inbox_prefix)
                .with_context(|| format!("cannot use the credentials file {}", path.display()))?;
            ConnectOptions::with_auth_callback(args.live.callback())
        }
        None => ConnectOptions::new(),
    };
    Ok(observed(base, name, links))
}

fn observed(
    options: ConnectOptions,
    name: &str,
    links: Option<UnboundedSender<Link>>,
) -> ConnectOptions {
    let drops = Arc::new(DropLog::default());
    let refusals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    options
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            let links = links.clone();
            let drops = Arc::clone(&drops);
            let refusals = Arc::clone(&refusals);
            async move {
                let link = match event {
                    Event::Connected => {
                        refusals.store(0, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!("connected to NATS");
                        Some(Link::Up)
                    }
                    Event::Disconnected if BROKER_STOPPING.load(std::sync::atomic::Ordering::Relaxed) => {
                        tracing::debug!("disconnected from NATS: the broker is being stopped");
                        Some(Link::Down)
                    }
                    Event::Disconnected => {
                        tracing::warn!("disconnected from NATS; reconnecting (state is kept)");
                        Some(Link::Down)
                    }
                    Event::SlowConsumer(sid) => {
                        drops.note(sid);
                        None
                    }
                    Event::LameDuckMode => {
                        tracing::warn!("broker entering lame duck mode; will move to another");
                        None
                    }
                    // A refused publish or subscribe (permissions) is only ever
                    // reported here: the request itself just goes unanswered.
                    Event::ServerError(e) => {
                        tracing::warn!(error = %e, "the NATS server refused an operation");
                        note_refusal(e.to_string());
                        None
                    }
                    // One per failed reconnect attempt: the delay callback below
                    // reports the outage at a readable rate instead. A broker that
                    // answers and refuses is not an outage: said as such, at the
                    // same rate (the credentials may be renewed meanwhile).
                    Event::ClientError(e) => {
                        let text = e.to_string();
                        if text.contains("authorization") || text.contains("authentication") {
                            let n = refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                            if n.is_power_of_two() && n <= 32 || n.is_multiple_of(15) {
                                tracing::warn!(attempt = n, error = %text, "the NATS broker refuses these credentials; still retrying");
                            }
                        } else {
                            tracing::debug!(error = %e, "NATS client error");
                        }
                        None
                    }
                    // This process closed a connection it was done with (the
                    // demo's clean-up client, say): nothing to report at info,
                    // where it read as a failure (found by the README walk).
                    Event::Closed => {
                        tracing::debug!("NATS connection closed by this process");
                        None
                    }
                    other => {
                        tracing::info!(event = %other, "NATS connection event");
                        None
                    }
                };
                if let (Some(tx), Some(link)) = (links, link) {
                    let _ = tx.send(link);
                }
            }
        })
}

/// Set once this process stops the broker it started itself (`paddock demo`
/// after a clean stop): its clients' disconnects are then expected, and not
/// worth a warning each.
static BROKER_STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks the broker this process started as being stopped by it (see
/// [`BROKER_STOPPING`]).
pub fn broker_stopping() {
    BROKER_STOPPING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// async-nats's default backoff (immediately, then doubling up to 4 s, forever), and a
/// warning while the broker stays unreachable: at attempts 2, 4, 8, 16, 32, then about
/// once a minute, so a long outage is visible without a line per attempt.
fn reconnect_delay(attempts: usize) -> Duration {
    let delay = match attempts {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis(1u64 << (n - 1).min(12)).min(MAX_RECONNECT_DELAY),
    };
    if attempts >= 2
        && (attempts.is_power_of_two() && attempts <= 32 || attempts.is_multiple_of(15))
        && !BROKER_STOPPING.load(std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(attempt = attempts, retry_in = ?delay, "NATS broker unreachable; still retrying");
    }
    delay
}

const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(4);

/// Connects for a long-running process: if the broker is not up yet, keeps trying
/// in the background instead of failing, so the processor can start before the
/// broker (systemd, compose) and waits for it.
pub async fn connect_persistent(args: &ConnectConfig, name: &str) -> anyhow::Result<Client> {
    connect_with(|| options(args, name, None), args).await
}

/// [`connect_persistent`] with options of the caller's (the processor's buffer).
///
/// One attempt first: a broker that answers and refuses (credentials, TLS) will
/// not change its mind by being asked again, so that fails at once with the
/// reason. Only a broker that is not there yet is waited for, in the background.
async fn connect_with(
    options: impl Fn() -> anyhow::Result<ConnectOptions>,
    args: &ConnectConfig,
) -> anyhow::Result<Client> {
    tracing::info!(nats_url = args.nats_url, "connecting to NATS");
    match connect_to(options()?, args).await? {
        Ok(client) => return Ok(client),
        Err(e) if refused(&e) => return Err(refused_or_unreachable(args, &e)),
        Err(e) => tracing::info!(error = %e, "NATS broker not reachable yet; waiting for it"),
    }
    connect_to(options()?.retry_on_initial_connect(), args)
        .await?
        .map_err(|e| refused_or_unreachable(args, &e))
}

/// The processor's connection: persistent like [`connect_persistent`], with a
/// subscription buffer of `ingest_buffer` messages (`--ingest-buffer`). Production
/// and the test harness connect through this one function.
pub async fn processor(config: &ConnectConfig, ingest_buffer: usize) -> anyhow::Result<Client> {
    let options =
        || Ok(options(config, "paddock-processor", None)?.subscription_capacity(ingest_buffer));
    connect_with(options, config).await
}

/// Connects a long-running command that reacts to the link (monitor, watch): keeps
/// trying in the background like [`connect_persistent`], and returns the link
/// changes alongside the client.
pub async fn connect_observed(
    args: &ConnectConfig,
    name: &str,
) -> anyhow::Result<(Client, UnboundedReceiver<Link>)> {
    let (links_tx, links) = tokio::sync::mpsc::unbounded_channel();
    let client = connect_with(|| options(args, name, Some(links_tx.clone())), args).await?;
    Ok((client, links))
}

/// Connects once, failing fast: for commands where a person is waiting.
pub async fn connect_once(args: &ConnectConfig, name: &str) -> anyhow::Result<Client> {
    connect_to(options(args, name, None)?, args)
        .await?
        .map_err(|e| refused_or_unreachable(args, &e))
}

/// Adds what the broker may ask of a client besides a `.creds` file (see
/// [`options`]): a user and password, and TLS (a CA to verify the broker, a
/// client certificate).
async fn secured(
    mut options: ConnectOptions,
    args: &ConnectConfig,
) -> anyhow::Result<ConnectOptions> {
    options = options.custom_inbox_prefix(&args.inbox_prefix);
    if let (Some(user), Some(password)) = (&args.user, &args.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(ca) = &args.tls_ca {
        ensure_readable(ca)?;
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        ensure_readable(cert)?;
        ensure_readable(key)?;
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    Ok(options)
}

/// A missing certificate is named at once, not as a TLS handshake failure later.
fn ensure_readable(path: &std::path::Path) -> anyhow::Result<()> {
    std::fs::File::open(path)
        .map(drop)
        .with_context(|| format!("cannot read {}", path.display()))
}

/// Connects to `args.nats_url`, which may list several servers separated by commas
/// (the nodes of a cluster): the client tries them in turn, and also learns the
/// other nodes from the server it reaches.
///
/// The outer error is ours (the URL, a certificate file); the inner one is the
/// connection's, kept whole so the caller can tell a refusal from an absence.
async fn connect_to(
    options: ConnectOptions,
    args: &ConnectConfig,
) -> anyhow::Result<Result<Client, async_nats::ConnectError>> {
    let url = args.nats_url.as_str();
    let servers: Vec<ServerAddr> = url
        .split(',')
        .map(|u| u.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|e| {
            anyhow::anyhow!(
                "{url} is not a NATS URL ({e}): nats://HOST:PORT or tls://HOST:PORT, several \
                 comma-separated for a cluster"
            )
        })?;
    let options = secured(options, args).await?;
    Ok(options.connect(servers).await)
}

/// Whether the broker answered and said no, rather than not being there.
fn refused(e: &async_nats::ConnectError) -> bool {
    use async_nats::ConnectErrorKind as Kind;
    matches!(
        e.kind(),
        Kind::AuthorizationViolation | Kind::Authentication | Kind::Tls
    )
}

/// A failed connection in one line that says which it was: the broker is not
/// there, or it is and refused us (credentials, TLS). The client's error already
/// quotes its cause, so only its text is kept (the chain would repeat it).
fn refused_or_unreachable(args: &ConnectConfig, e: &async_nats::ConnectError) -> anyhow::Error {
    use async_nats::ConnectErrorKind as Kind;
    let url = &args.nats_url;
    let has_credentials = args.creds.is_some() || args.user.is_some() || url.contains('@');
    match e.kind() {
        // Its text is "authorization violation: nats: authorization violation".
        // Without credentials, the broker wants some (operator mode, or roles).
        Kind::AuthorizationViolation if !has_credentials => anyhow::anyhow!(
            "the NATS broker at {url} needs credentials (authorization violation): pass \
             --creds (or NATS_CREDS), or --user and --password"
        ),
        Kind::AuthorizationViolation => anyhow::anyhow!(
            "the NATS broker at {url} refused these credentials (authorization violation)"
        ),
        Kind::Authentication => {
            anyhow::anyhow!("the NATS broker at {url} refused these credentials: {e}")
        }
        Kind::Tls => anyhow::anyhow!("TLS with the NATS broker at {url} failed: {e}"),
        _ => anyhow::anyhow!("no NATS broker is reachable at {url}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_to_four_seconds() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert_eq!(reconnect_delay(2), Duration::from_millis(2));
        assert_eq!(reconnect_delay(5), Duration::from_millis(16));
        assert_eq!(reconnect_delay(20), MAX_RECONNECT_DELAY);
        assert_eq!(reconnect_delay(usize::MAX), MAX_RECONNECT_DELAY);
    }
}

/// Messages the client dropped because a subscription's buffer was full: one event
/// per message, so at most one log line per subscription every 5 s, with the count.
#[derive(Default)]
struct DropLog {
    since_logged:
        std::sync::Mutex<std::collections::HashMap<u64, (u64, Option<std::time::Instant>)>>,
}

impl DropLog {
    const EVERY: Duration = Duration::from_secs(5);

    fn note(&self, subscription: u64) {
        SLOW_CONSUMER_DROPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut map = self.since_logged.lock().expect("not poisoned");
        let (count, logged) = map.entry(subscription).or_default();
        *count += 1;
        if logged.is_none_or(|at| at.elapsed() >= Self::EVERY) {
            tracing::warn!(
                subscription,
                dropped = *count,
                "slow consumer: messages dropped because this subscription's buffer was full"
            );
            *count = 0;
            *logged = Some(std::time::Instant::now());
        }
    }
}
