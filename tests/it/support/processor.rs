//! The processor in-process, against a test's own broker, built the way
//! `paddock serve` builds it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use bytes::Bytes;
use paddock::Limits;
use paddock::client::connect::{self, ConnectConfig};
use paddock::server::app::App;
use paddock::server::processor::DEFAULT_INGEST_BUFFER;
use paddock::server::store::StoreConfig;
use paddock::server::{self, Lifecycle, Processor};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Answer, NatsServer, PATIENCE, connect, id_body};

/// Waits until `n` processors answer the micro PING.
pub async fn wait_for_processors(client: &Client, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let seen = paddock::client::processors_answering(client).await.unwrap();
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
pub fn test_store() -> StoreConfig {
    StoreConfig {
        persist_interval: Duration::from_millis(200),
        ..Default::default()
    }
}

/// `paddock serve`'s own limits, from its flags' defaults, with one lifted:
/// tests create sessions from one client faster than any team does
/// (`--create-limit 0`; bad_input.rs tests the limit).
pub fn test_limits() -> Limits {
    paddock::cmd::serve::ServeArgs::parse_flags(&["--create-limit", "0"])
        .limits()
        .expect("serve's defaults are valid")
}

/// `limits` with `--max-frame-rate 0`: for a test that sends one session more
/// frames at once than a sim does (the default burst is 300), to build a
/// backlog or to count them all. The caller says why; budgets.rs tests the rate.
pub fn no_frame_rate(mut limits: Limits) -> Limits {
    limits.budgets.frame_rate = 0.0;
    limits
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
        start_processor_with(&server.url(), limits, test_store(), lifecycle).await;
    let client = connect(&server.url()).await;
    TestApp {
        server,
        client,
        app,
        processor: Some(processor),
    }
}

async fn start_processor_with(
    url: &str,
    limits: Limits,
    store: StoreConfig,
    lifecycle: Lifecycle,
) -> (Arc<App>, RunningProcessor) {
    // The connection and the start `paddock serve` uses, with its defaults.
    let client = connect::processor(&ConnectConfig::plain(url), DEFAULT_INGEST_BUFFER)
        .await
        .expect("the processor cannot connect to the test broker");
    let config = server::Config {
        limits,
        store,
        lifecycle,
        issuer: None,
        dashboard_url: None,
        partitions: Default::default(),
    };
    let processor = Processor::start(client, config)
        .await
        .expect("the processor did not start");
    let app = processor.app();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(processor.run(async move {
        let _ = stopped.await;
    }));
    (app, RunningProcessor { stop, handle })
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

    pub async fn restart_processor_with(&mut self, limits: Limits, store: StoreConfig) {
        self.stop_processor().await;
        let (app, processor) =
            start_processor_with(&self.server.url(), limits, store, Lifecycle::default()).await;
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
