//! Test harness: a real `nats-server` per test, and the processor in-process.
//!
//! Modelled on async-nats's own `nats-server` test crate: the real binary is spawned
//! on a random port (`-p -1`), the port is read from its log, JetStream keeps its
//! store in a fresh temporary directory, and the child is killed on `Drop`. No mock.
//! That is paddock's own `broker::LocalBroker`, so tests start brokers the way
//! `paddock demo` and `paddock bench` do.
//!
//! The binary comes from `NATS_SERVER_BIN`, else `nats-server` on PATH, else the
//! pinned release in paddock's cache (fetched once, verified). If none can be had
//! the test fails with the ways to provide one: a test that cannot reach a broker
//! must never pass.
//!
//! Set `TEST_LOG=1` to see the processor's logs.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{Client, Message};
use bytes::Bytes;
use paddock::app::App;
use paddock::broker::{BrokerConfig, LocalBroker};
use paddock::processor::Lifecycle;
use paddock::{Limits, Processor};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TELEMETRY: &str = include_str!("../data/telemetry.json");
pub const TELEMETRY_RICH: &str = include_str!("../data/telemetry-rich.json");
pub const SETUP: &str = include_str!("../data/setup.json");

/// How long `eventually` waits for an asynchronous effect before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A running `nats-server`, killed and its store removed on drop: paddock's own
/// [`LocalBroker`], which demo and bench use too.
pub struct NatsServer {
    broker: LocalBroker,
}

/// A new, empty directory under the system's temporary directory.
pub fn fresh_dir(tag: &str) -> PathBuf {
    paddock::broker::fresh_dir(tag)
}

impl NatsServer {
    /// A broker with JetStream on, on a random loopback port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Same, with extra command-line arguments (e.g. `["--max_payload", "4096"]`).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_config(BrokerConfig {
            args: extra.iter().map(|s| s.to_string()).collect(),
            ..BrokerConfig::default()
        })
    }

    /// A broker on a given port (e.g. one a processor is already trying to reach).
    pub fn start_on(port: u16) -> Self {
        Self::start_config(BrokerConfig {
            port: Some(port),
            ..BrokerConfig::default()
        })
    }

    fn start_config(config: BrokerConfig) -> Self {
        let config = BrokerConfig {
            echo_log: std::env::var_os("TEST_LOG").map(|_| "nats-server: ".to_string()),
            ..config
        };
        match LocalBroker::start(config) {
            Ok(broker) => NatsServer { broker },
            // These tests need a real broker; one that cannot start fails the test.
            Err(e) => panic!("{e}"),
        }
    }

    pub fn url(&self) -> String {
        self.broker.url()
    }

    pub fn port(&self) -> u16 {
        self.broker.port()
    }

    /// Kills the broker (as a crash would) and starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.broker.restart().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Kills the broker and leaves it down until [`NatsServer::start_again`].
    pub fn kill(&mut self) {
        self.broker.kill();
    }

    pub fn start_again(&mut self) {
        self.restart();
    }
}

/// The paddock binary built for these tests, as a command to add arguments to.
pub fn paddock() -> Command {
    Command::new(env!("CARGO_BIN_EXE_paddock"))
}

/// Runs the binary to completion; returns (exit code, stdout, stderr).
pub async fn run_paddock(args: &[&str]) -> (i32, String, String) {
    // Waits on a blocking thread, so an in-process processor keeps running.
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || paddock().args(args).output())
        .await
        .expect("the waiting thread panicked")
        .expect("the paddock binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running paddock process whose stdout lines are collected as they come. Its
/// methods block: use it from a multi-threaded test runtime, so the in-process
/// processor keeps running on the other worker.
pub struct Running {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Running {
    pub fn spawn(args: &[&str]) -> Self {
        let child = paddock()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("the paddock binary starts");
        Self::from_child(child)
    }

    /// A child spawned with its stdout piped.
    pub fn from_child(mut child: Child) -> Self {
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running { child, lines }
    }

    /// The next stdout line, waiting up to `PATIENCE`.
    pub fn line(&self) -> String {
        self.lines
            .recv_timeout(PATIENCE)
            .expect("no output line in time")
    }

    /// Lines printed within `window`.
    pub fn lines_for(&self, window: Duration) -> Vec<String> {
        let end = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => out.push(line),
                Err(_) => break,
            }
        }
        out
    }

    /// Sends a signal (e.g. "-INT") and waits for the exit code.
    pub fn stop(mut self, signal: &str) -> i32 {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "paddock did not exit after {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that is free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A JetStream cluster of `nats-server`s on loopback, each with its own store.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    pub fn start(size: usize) -> Self {
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let nodes = (0..size)
            .map(|i| {
                let routes: Vec<String> = route_ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
                    .collect();
                NatsServer::start_with(&[
                    "--server_name",
                    &format!("n{i}"),
                    "--cluster_name",
                    "paddock-test",
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", route_ports[i]),
                    "--routes",
                    &routes.join(","),
                ])
            })
            .collect();
        NatsCluster { nodes }
    }

    /// Every node's URL, comma-separated, as `--nats-url` takes them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Waits until `n` processors answer the micro PING.
pub async fn wait_for_processors(client: &Client, n: usize) {
    use futures::StreamExt;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let inbox = client.new_inbox();
        let mut replies = client.subscribe(inbox.clone()).await.unwrap();
        client
            .publish_with_reply("$SRV.PING.sessions", inbox, "".into())
            .await
            .unwrap();
        let mut seen = 0;
        while let Ok(Some(reply)) =
            tokio::time::timeout(Duration::from_millis(300), replies.next()).await
        {
            // With nobody subscribed the broker itself answers "no responders"
            // (a status message, no payload): that is not a processor.
            if reply.status.is_none() && !reply.payload.is_empty() {
                seen += 1;
            }
        }
        if seen >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {seen} of {n} processors answer"
        );
    }
}

/// Turns on the processor's logs when `TEST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into()),
            ))
            .with_test_writer()
            .try_init();
    }
}

/// A broker, a processor running in-process against it, and a client for the test.
pub struct TestApp {
    pub server: NatsServer,
    pub client: Client,
    pub app: Arc<App>,
    processor: Option<RunningProcessor>,
}

struct RunningProcessor {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

/// The production store (JetStream buckets), with a short write-behind window so
/// tests of recovery need not wait long.
pub fn test_store() -> paddock::store::StoreConfig {
    paddock::store::StoreConfig {
        persist_interval: Duration::from_millis(200),
        ..Default::default()
    }
}

pub fn test_limits() -> Limits {
    Limits {
        max_payload: 64 * 1024,
        max_sessions: 1_000,
        // Tests create sessions faster than any team; the limit has its own test.
        creates_per_minute: 0,
        ..Limits::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_limits()).await
}

pub async fn spawn_app_with(limits: Limits) -> TestApp {
    spawn_app_full(limits, Lifecycle::default()).await
}

/// A test app whose processor ends sessions as `lifecycle` says.
pub async fn spawn_app_full(limits: Limits, lifecycle: Lifecycle) -> TestApp {
    init_logs();
    let server = NatsServer::start();
    let (app, processor) =
        start_processor_with(&server.url(), limits, &test_store(), lifecycle).await;
    let client = connect(&server.url()).await;
    TestApp {
        server,
        client,
        app,
        processor: Some(processor),
    }
}

async fn start_processor(url: &str, limits: Limits) -> (Arc<App>, RunningProcessor) {
    start_processor_with(url, limits, &test_store(), Lifecycle::default()).await
}

async fn start_processor_with(
    url: &str,
    limits: Limits,
    store: &paddock::store::StoreConfig,
    lifecycle: Lifecycle,
) -> (Arc<App>, RunningProcessor) {
    // The same connection options as production, reconnect logging included.
    let client = paddock::connect::connect_once(
        &paddock::cli::ConnectArgs::plain(url),
        "paddock-test-processor",
    )
    .await
    .expect("the processor cannot connect to the test broker");
    let processor = Processor::start(client, limits, store, lifecycle)
        .await
        .expect("the processor did not start");
    let app = processor.app();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(processor.run(async move {
        let _ = stopped.await;
    }));
    (app, RunningProcessor { stop, handle })
}

/// Waits until the broker has processed everything `client` sent so far (its
/// subscriptions above all). `Client::flush` does not: it only means "written to the
/// socket". A request to a subject nobody serves is answered by the broker itself
/// ("no responders"), and only after the commands before it.
pub async fn sync(client: &Client) {
    match client.request("paddock.test.sync", Bytes::new()).await {
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
        other => panic!("expected the broker's no-responders reply, got {other:?}"),
    }
}

/// A client subscribed to `subject`, with the subscription in effect at the broker.
pub async fn subscriber(url: &str, subject: String) -> (Client, async_nats::Subscriber) {
    let client = connect(url).await;
    let sub = client.subscribe(subject).await.expect("subscribe failed");
    sync(&client).await;
    (client, sub)
}

/// A request that retries while no processor answers (it may be starting).
pub async fn ask(client: &async_nats::Client, subject: &str, body: String) -> Answer {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(Ok(reply)) = tokio::time::timeout(
            Duration::from_millis(500),
            client.request(subject.to_string(), body.clone().into()),
        )
        .await
        {
            return Answer::from(reply);
        }
        assert!(Instant::now() < deadline, "{subject} never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates a session (waiting for the processor) and returns its id.
pub async fn create(client: &async_nats::Client) -> String {
    let doc = ask(client, "sessions.create", String::new()).await.ok();
    doc["session_id"].as_str().expect("an id").to_string()
}

/// The next message on `sub`, failing the test if none comes within `PATIENCE`.
/// The next monitor frame (setup or telemetry) under `session.<id>.>`, skipping the
/// processor's lap announcements (`session.<id>.lap`), which arrive when the lap
/// writer has stored them, not in frame order.
pub async fn next_frame(sub: &mut async_nats::Subscriber) -> Message {
    loop {
        let message = next(sub).await;
        if !message.subject.as_str().ends_with(".lap") {
            return message;
        }
    }
}

pub async fn next(sub: &mut async_nats::Subscriber) -> Message {
    use futures::StreamExt;
    tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("nothing arrived")
        .expect("subscription ended")
}

pub async fn connect(url: &str) -> Client {
    async_nats::connect(url)
        .await
        .expect("cannot connect to the test broker")
}

impl TestApp {
    /// Shuts the processor down through its shutdown future and waits until it returns.
    pub async fn stop_processor(&mut self) {
        if let Some(p) = self.processor.take() {
            let _ = p.stop.send(());
            tokio::time::timeout(Duration::from_secs(15), p.handle)
                .await
                .expect("the processor did not stop within 15 s")
                .expect("the processor task panicked");
        }
    }

    /// Stops the processor and starts a new one on the same broker: it recovers
    /// what the store kept (nothing, with `--store memory`).
    pub async fn restart_processor(&mut self, limits: Limits) {
        self.restart_processor_with(limits, test_store()).await;
    }

    pub async fn restart_processor_with(
        &mut self,
        limits: Limits,
        store: paddock::store::StoreConfig,
    ) {
        self.stop_processor().await;
        let (app, processor) =
            start_processor_with(&self.server.url(), limits, &store, Lifecycle::default()).await;
        self.app = app;
        self.processor = Some(processor);
    }

    /// A request with a JSON body; returns the reply as an [`Answer`].
    pub async fn request(&self, subject: &str, body: impl Into<Bytes>) -> Answer {
        let message = tokio::time::timeout(
            PATIENCE,
            self.client.request(subject.to_string(), body.into()),
        )
        .await
        .unwrap_or_else(|_| panic!("no reply on {subject} within {PATIENCE:?}"))
        .unwrap_or_else(|e| panic!("request on {subject} failed: {e}"));
        Answer::from(message)
    }

    pub async fn create(&self) -> Value {
        self.request("sessions.create", "{}").await.ok()
    }

    /// Creates a session and returns its id.
    pub async fn new_session(&self) -> String {
        self.create().await["session_id"]
            .as_str()
            .expect("an id")
            .to_string()
    }

    /// Sends a setup as a request (acknowledged once stored).
    pub async fn send_setup(&self, id: &str, body: impl Into<Bytes>) -> Answer {
        self.request(&format!("session.{id}.setup"), body).await
    }

    /// Publishes a telemetry frame, fire-and-forget.
    pub async fn send_telemetry(&self, id: &str, body: impl Into<Bytes>) {
        self.publish(format!("session.{id}.telemetry"), body).await
    }

    pub async fn get(&self, id: &str) -> Answer {
        self.request("sessions.get", id_body(id)).await
    }

    pub async fn publish(&self, subject: String, body: impl Into<Bytes>) {
        self.client
            .publish(subject, body.into())
            .await
            .expect("publish failed");
    }

    pub async fn flush(&self) {
        self.client.flush().await.expect("flush failed");
    }

    /// Polls `sessions.get` until `check` holds for the document, or fails.
    pub async fn get_until(&self, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let answer = self.get(id).await;
            if answer.code.is_none() && check(&answer.body) {
                return answer.body;
            }
            if Instant::now() > deadline {
                panic!("{what}: not true within {PATIENCE:?}; last answer: {answer:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn id_body(id: &str) -> String {
    format!(r#"{{"session_id": "{id}"}}"#)
}

/// A reply: the micro error code and reason if it carried them, and the JSON body.
#[derive(Debug)]
pub struct Answer {
    pub code: Option<u16>,
    pub reason: Option<String>,
    pub body: Value,
}

impl Answer {
    /// The body of a successful reply; fails the test on an error reply.
    pub fn ok(self) -> Value {
        assert_eq!(self.code, None, "expected success, got {self:?}");
        self.body
    }

    /// Asserts an error reply with `code`, a reason header, and a JSON error body.
    pub fn expect_error(&self, code: u16) {
        assert_eq!(
            self.code,
            Some(code),
            "expected a {code} error, got {self:?}"
        );
        assert!(
            self.reason.as_deref().is_some_and(|r| !r.is_empty()),
            "no reason header: {self:?}"
        );
        assert!(
            self.body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "no JSON error body: {self:?}"
        );
    }
}

impl From<Message> for Answer {
    fn from(message: Message) -> Self {
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        let code =
            header("Nats-Service-Error-Code").map(|c| c.parse().expect("numeric error code"));
        let reason = header("Nats-Service-Error");
        let body = serde_json::from_slice(&message.payload).unwrap_or_else(|e| {
            panic!(
                "reply is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&message.payload)
            )
        });
        Answer { code, reason, body }
    }
}

/// A telemetry frame based on the 0.5 KB sample, with a distinguishing lap number.
pub fn frame(lap: u64) -> String {
    let mut v: Value = serde_json::from_str(TELEMETRY).unwrap();
    v["lap"] = lap.into();
    v.to_string()
}

/// Is this string a version-4 UUID in canonical form?
pub fn is_uuid4(s: &str) -> bool {
    uuid::Uuid::try_parse(s)
        .is_ok_and(|u| u.get_version_num() == 4 && u.hyphenated().to_string() == s)
}

/// Is this an RFC 3339 UTC timestamp?
pub fn is_rfc3339_utc(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        chrono::DateTime::parse_from_rfc3339(s).is_ok_and(|t| t.offset().local_minus_utc() == 0)
    })
}

/// Connection options that pass on the errors the server reports to the client
/// (a refused publish or subscribe arrives only this way), lower-cased.
pub fn reporting_errors(
    options: async_nats::ConnectOptions,
) -> (
    async_nats::ConnectOptions,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (tx, errors) = tokio::sync::mpsc::unbounded_channel();
    let options = options.event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let async_nats::Event::ServerError(e) = event {
                let _ = tx.send(e.to_string().to_lowercase());
            }
        }
    });
    (options, errors)
}

/// The next server error names a permissions violation for `what` ("publish" or
/// "subscription") on `subject`.
pub async fn refused(
    errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    what: &str,
    subject: &str,
) {
    let error = tokio::time::timeout(Duration::from_secs(5), errors.recv())
        .await
        .unwrap_or_else(|_| panic!("{what} to {subject} was not refused"))
        .unwrap();
    assert!(
        error.contains("permissions violation")
            && error.contains(what)
            && error.contains(&subject.to_lowercase()),
        "{error}"
    );
}
