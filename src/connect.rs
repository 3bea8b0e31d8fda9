//! Connecting to the broker, with the connection's life in the logs.
//!
//! async-nats reconnects and resubscribes on its own (unlimited attempts by default);
//! what it does not do is tell the operator. The event callback turns every
//! disconnect, reconnect and slow-consumer event into a structured log line, so a
//! broker outage during a race is visible and its end is too.

use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};

/// Options shared by every paddock connection: a client name the broker shows in
/// its connection list, and connection events logged.
pub fn options(name: &str) -> ConnectOptions {
    ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            match event {
                Event::Connected => tracing::info!("connected to NATS"),
                Event::Disconnected => {
                    tracing::warn!("disconnected from NATS; reconnecting (state is kept)")
                }
                Event::SlowConsumer(sid) => tracing::warn!(
                    subscription = sid,
                    "slow consumer: the broker dropped messages for this subscription"
                ),
                Event::LameDuckMode => {
                    tracing::warn!("broker entering lame duck mode; will move to another")
                }
                other => tracing::info!(event = %other, "NATS connection event"),
            }
        })
}

/// Connects for a long-running process: if the broker is not up yet, keeps trying
/// in the background instead of failing, so the processor can start before the
/// broker (systemd, compose) and waits for it.
pub async fn connect_persistent(url: &str, name: &str) -> Result<Client, async_nats::ConnectError> {
    tracing::info!(nats_url = url, "connecting to NATS");
    options(name).retry_on_initial_connect().connect(url).await
}

/// Connects once, failing fast: for commands where a person is waiting.
pub async fn connect_once(url: &str, name: &str) -> Result<Client, async_nats::ConnectError> {
    options(name).connect(url).await
}
