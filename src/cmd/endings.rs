//! How a monitor learns that a session it writes to has ended (deleted by ops,
//! or expired after being idle): its frames would only be refused from then on,
//! so it says so and stops rather than stream into nothing.
//!
//! Two ways, for two kinds of credentials. On an open broker the monitor hears
//! the service's lifecycle events (`sessions.events.>`). Per-session credentials
//! may not subscribe there, so every `--check-every` one frame per session goes
//! as a request, and a 404 answer says the session is gone. The renewal of those
//! credentials ([`crate::client::creds::Stopped`]) says it too.

use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::client::{ClientError, SessionsClient};
use crate::protocol::documents::Ack;
use crate::protocol::subjects::{self, Event};

/// Sends the frames that double as checks (cheap to clone into the loops).
#[derive(Clone)]
pub(super) struct Checks {
    client: SessionsClient,
    every: Duration,
    answers: mpsc::Sender<(String, String)>,
}

/// What tells of endings: the lifecycle events and the checks' 404 answers.
pub(super) struct Endings {
    events: Option<async_nats::Subscriber>,
    answers: mpsc::Receiver<(String, String)>,
}

/// One of the sessions ended: its id, and what to stop with.
pub(super) struct Ended {
    pub id: String,
    pub message: String,
}

/// Starts listening for endings: the lifecycle events on an open broker (no
/// credentials given), and the answers to checks sent every `--check-every`
/// (0: none) through `client`.
pub(super) async fn watch(
    nats: &Client,
    client: &SessionsClient,
    args: &super::monitoring::MonitorArgs,
) -> anyhow::Result<(Checks, Endings)> {
    let (every, sessions) = (args.check_every, args.sessions);
    let open_broker = args.connect.creds.is_none() && args.connect.user.is_none();
    let events = match open_broker {
        true => Some(nats.subscribe(subjects::ALL_SERVICE_EVENTS).await?),
        false => None,
    };
    let (answers_tx, answers) = mpsc::channel(sessions.max(1));
    Ok((
        Checks {
            client: client.clone(),
            every,
            answers: answers_tx,
        },
        Endings { events, answers },
    ))
}

impl Checks {
    /// The first check, `every` from now.
    pub(super) fn first(&self) -> Instant {
        Instant::now() + self.every
    }

    /// Sends `body` for session `id` as a request when its check is due (then
    /// moves `check_at` on), the answer read on a task of its own so a slow
    /// processor never holds the stream. Answers whether it sent it; if not, the
    /// caller publishes it as usual.
    pub(super) fn send(
        &self,
        check_at: &mut Instant,
        id: &str,
        subject: &str,
        body: Bytes,
    ) -> bool {
        let now = Instant::now();
        if self.every.is_zero() || now < *check_at {
            return false;
        }
        *check_at = now + self.every;
        let (client, answers) = (self.client.clone(), self.answers.clone());
        let (id, subject) = (id.to_string(), subject.to_string());
        tokio::spawn(async move {
            if let Err(ClientError::Service {
                code: 404, reason, ..
            }) = client.request_as::<Ack>(subject, body).await
            {
                let _ = answers.send((id, reason)).await;
            }
        });
        true
    }
}

impl Endings {
    /// Why the monitor of one session `id` must stop: its session ended, as
    /// heard here or as its credentials' renewal was refused. Pending forever
    /// while neither says so.
    pub(super) async fn of_session(
        &mut self,
        id: &str,
        renewal: &mut mpsc::Receiver<crate::client::creds::Stopped>,
    ) -> anyhow::Error {
        let mut renewing = true;
        loop {
            tokio::select! {
                ended = self.next() => {
                    if ended.id == id {
                        return anyhow::anyhow!("{}", ended.message);
                    }
                }
                stopped = renewal.recv(), if renewing => match stopped {
                    Some(crate::client::creds::Stopped::SessionEnded(e)) => {
                        return anyhow::anyhow!(
                            "session {id} has ended ({e}); its credentials are not renewed, so \
                             it cannot be written to any more"
                        );
                    }
                    Some(_) => {}
                    None => renewing = false,
                },
            }
        }
    }

    /// The next session to end, any session's on an open broker: the caller
    /// keeps those it writes to. Pending forever when nothing can tell.
    pub(super) async fn next(&mut self) -> Ended {
        let (events, answers) = (&mut self.events, &mut self.answers);
        loop {
            let event = async {
                match events.as_mut() {
                    Some(events) => events.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(event) = event => {
                    let ended = subjects::event_of(&event.subject)
                        .filter(|kind| matches!(kind, Event::Deleted | Event::Expired));
                    let id = serde_json::from_slice::<Value>(&event.payload)
                        .ok()
                        .and_then(|v| v["session_id"].as_str().map(str::to_string));
                    if let (Some(kind), Some(id)) = (ended, id) {
                        let message = format!(
                            "session {id} was {} (sessions.events.{}): its frames would be \
                             refused, so the monitor stops",
                            if kind == Event::Deleted { "deleted" } else { "ended after being idle" },
                            kind.as_str()
                        );
                        return Ended { id, message };
                    }
                }
                Some((id, reason)) = answers.recv() => {
                    // The processor's reason names the session and why already
                    // ("session <id> has ended (deleted); ask sessions.create …").
                    let reason = reason.split("; ").next().unwrap_or(&reason);
                    let message = if reason.contains(&id) {
                        format!("{reason}: its frames are refused, so the monitor stops")
                    } else {
                        format!(
                            "session {id} has ended ({reason}): its frames are refused, so the \
                             monitor stops"
                        )
                    };
                    return Ended { id, message };
                }
                else => std::future::pending::<()>().await,
            }
        }
    }
}
