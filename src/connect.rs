//! Connecting to the broker, with the connection's life in the logs.
//!
//! async-nats reconnects and resubscribes on its own (unlimited attempts by default);
//! what it does not do is tell the operator. The event callback turns every
//! disconnect, reconnect and slow-consumer event into a structured log line, so a
//! broker outage during a race is visible and its end is too.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// The link to the broker going down or coming back, for commands that react to it
/// (the monitor re-sends its setup, the watch view takes a fresh snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Up,
    Down,
}

/// Options shared by every paddock connection: a client name the broker shows in
/// its connection list, and connection events logged.
pub fn options(name: &str) -> ConnectOptions {
    options_observed(name, None)
}

/// Like [`options`], also forwarding link changes to `links`.
pub fn options_observed(name: &str, links: Option<UnboundedSender<Link>>) -> ConnectOptions {
    let drops = Arc::new(DropLog::default());
    ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            let links = links.clone();
            let drops = Arc::clone(&drops);
            async move {
                let link = match event {
                    Event::Connected => {
                        tracing::info!("connected to NATS");
                        Some(Link::Up)
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
                    // One per failed reconnect attempt: the delay callback below
                    // reports the outage at a readable rate instead.
                    Event::ClientError(e) => {
                        tracing::debug!(error = %e, "NATS client error");
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
    {
        tracing::warn!(attempt = attempts, retry_in = ?delay, "NATS broker unreachable; still retrying");
    }
    delay
}

const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(4);

/// Connects for a long-running process: if the broker is not up yet, keeps trying
/// in the background instead of failing, so the processor can start before the
/// broker (systemd, compose) and waits for it.
pub async fn connect_persistent(url: &str, name: &str) -> Result<Client, async_nats::ConnectError> {
    connect_with(options(name), url).await
}

/// [`connect_persistent`] with options of the caller's (the processor's buffer).
pub async fn connect_with(
    options: ConnectOptions,
    url: &str,
) -> Result<Client, async_nats::ConnectError> {
    tracing::info!(nats_url = url, "connecting to NATS");
    connect_to(options.retry_on_initial_connect(), url).await
}

/// Connects a long-running command that reacts to the link (monitor, watch): keeps
/// trying in the background like [`connect_persistent`], and returns the link
/// changes alongside the client.
pub async fn connect_observed(
    url: &str,
    name: &str,
) -> Result<(Client, UnboundedReceiver<Link>), async_nats::ConnectError> {
    let (links_tx, links) = tokio::sync::mpsc::unbounded_channel();
    let client = connect_to(
        options_observed(name, Some(links_tx)).retry_on_initial_connect(),
        url,
    )
    .await?;
    Ok((client, links))
}

/// Connects to `url`, which may list several servers separated by commas (the
/// nodes of a cluster): the client tries them in turn, and also learns the other
/// nodes from the server it reaches.
async fn connect_to(
    options: ConnectOptions,
    url: &str,
) -> Result<Client, async_nats::ConnectError> {
    let servers: Result<Vec<ServerAddr>, _> = url.split(',').map(|u| u.trim().parse()).collect();
    match servers {
        Ok(servers) => options.connect(servers).await,
        // Let the client report the malformed URL in its own words.
        Err(_) => options.connect(url).await,
    }
}

/// Connects once, failing fast: for commands where a person is waiting.
pub async fn connect_once(url: &str, name: &str) -> Result<Client, async_nats::ConnectError> {
    connect_to(options(name), url).await
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
