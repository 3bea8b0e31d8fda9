//! Brokers for tests: paddock's own `LocalBroker`, one per test, and clusters.

use std::path::PathBuf;
use std::time::Duration;

use paddock::broker::{BrokerConfig, LocalBroker};

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

    /// A broker with a WebSocket listener too, for the dashboard page.
    pub fn start_websocket() -> Self {
        Self::start_config(BrokerConfig {
            websocket: true,
            ..BrokerConfig::default()
        })
    }

    /// A broker with a WebSocket listener and more configuration (e.g. the
    /// subject mappings of partitioned ownership).
    pub fn start_websocket_with(extra_config: String) -> Self {
        Self::start_config(BrokerConfig {
            websocket: true,
            extra_config: Some(extra_config),
            ..BrokerConfig::default()
        })
    }

    /// `ws://127.0.0.1:PORT` of a broker started with a WebSocket listener.
    pub fn ws_url(&self) -> String {
        self.broker
            .websocket_url()
            .expect("a broker started with a websocket listener")
    }

    /// A broker on a given port (e.g. one a processor is already trying to reach).
    pub fn start_on(port: u16) -> Self {
        Self::start_config(BrokerConfig {
            port: Some(port),
            ..BrokerConfig::default()
        })
    }

    /// A broker from a configuration file: its ports (-1: the broker picks)
    /// and JetStream's store as the file says.
    pub fn start_from_file(file: &std::path::Path) -> Self {
        Self::start_config(BrokerConfig {
            config_file: Some(file.to_path_buf()),
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

/// A loopback port that is free right now.
pub fn free_port() -> u16 {
    paddock::broker::free_port()
}

/// A JetStream cluster of `nats-server`s on loopback, each with its own store:
/// paddock's own [`paddock::broker::LocalCluster`].
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
    /// Every node's URL, comma-separated (ports stay the same across restarts).
    urls: String,
}

impl NatsCluster {
    pub async fn start(size: usize) -> Self {
        Self::start_with(size, None).await
    }

    /// Each node also reads `extra_config` (e.g. subject mappings). Returns once
    /// every node answers JetStream requests (the metadata leader is elected),
    /// so what a test starts next does not race the election.
    pub async fn start_with(size: usize, extra_config: Option<String>) -> Self {
        let echo = std::env::var_os("TEST_LOG").map(|_| "nats-server: ".to_string());
        let cluster = paddock::broker::LocalCluster::start_with(size, echo, extra_config)
            .unwrap_or_else(|e| panic!("{e}"));
        cluster
            .jetstream_ready(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        NatsCluster {
            urls: cluster.urls(),
            nodes: cluster
                .nodes
                .into_iter()
                .map(|broker| NatsServer { broker })
                .collect(),
        }
    }

    /// Every node's URL, comma-separated, as `--nats-url` takes them.
    pub fn urls(&self) -> String {
        self.urls.clone()
    }
}
