//! `paddock hub`: at home, the hub's answer while the track is out of reach.
//!
//! While the leaf link is up, a request at the hub (`sessions.get`, …) crosses
//! it to the track's processors and is answered live; this reader stays silent.
//! When no processor answers the service's PING (the link is down, or the
//! track's processors are), it answers `sessions.get|list|laps|stints` from the
//! hub's mirrored copy (store/mirror.rs), each answer marked `"as_of"`: the
//! last moment the copy is known to match the track. It never writes: the
//! copy is the track's, kept by the broker.
//!
//! It subscribes without a queue group: the broker hands a request to the
//! track's queue group and to this reader alike, and a queue group at the hub
//! would take every request for itself (NATS serves a leaf's local queue
//! members first), live or not.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{Client, HeaderMap, Message};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::protocol::subjects::{self, Endpoint};
use crate::server::app::App;
use crate::server::store::mirror::{self, MirrorConfig, Position};

/// How often the reader asks whether a processor answers.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long it waits for the first answer to its PING.
const PROBE_PATIENCE: Duration = Duration::from_millis(500);
/// The copy is read again at most this often, and only when a mirror moved.
const REREAD_EVERY: Duration = Duration::from_secs(1);
/// The endpoints answered from the copy: what a page and `watch` read.
pub const ANSWERED: [Endpoint; 4] = [
    Endpoint::Get,
    Endpoint::List,
    Endpoint::Laps,
    Endpoint::Stints,
];

/// What the reader needs.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub mirror: MirrorConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Store(#[from] crate::server::store::StoreError),
    #[error("cannot subscribe to {subject}: {reason}")]
    Subscribe { subject: String, reason: String },
}

/// The copy, as last read.
struct Copy {
    /// `None` until first read.
    app: Option<Arc<App>>,
    position: Position,
    read_at: Option<tokio::time::Instant>,
}

/// Shared between the probe and the answering loop.
struct Link {
    /// When a processor last answered the PING (hub clock).
    last_answer: Option<DateTime<Utc>>,
    /// Whether the last PING had an answer.
    up: bool,
}

/// Makes the mirrors, then answers from them whenever no processor does, until
/// `shutdown` completes.
pub async fn run(
    client: Client,
    config: HubConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), HubError> {
    let js = jetstream::new(client.clone());
    mirror::ensure(&js, &config.mirror).await?;
    tracing::info!(
        domain = config.mirror.domain,
        bucket = config.mirror.bucket,
        "the hub mirrors the track's records"
    );
    let mut subs = Vec::new();
    for endpoint in ANSWERED {
        let mut names = vec![endpoint.subject()];
        if let Some((_, one)) = endpoint.one_session() {
            names.push(subjects::control(one));
        }
        for subject in names {
            let sub = client
                .subscribe(subject.clone())
                .await
                .map_err(|e| HubError::Subscribe {
                    subject: subject.clone(),
                    reason: e.to_string(),
                })?;
            subs.push(sub.map(move |m| (endpoint, m)));
        }
    }
    let mut requests = futures::stream::select_all(subs);
    let link = Arc::new(Mutex::new(Link {
        last_answer: None,
        up: false,
    }));
    let probe = tokio::spawn(probe(client.clone(), Arc::clone(&link)));
    let mut copy = Copy {
        app: None,
        position: Position::default(),
        read_at: None,
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            next = requests.next() => {
                let Some((endpoint, message)) = next else { break };
                let (up, last_answer) = {
                    let link = link.lock().unwrap_or_else(|e| e.into_inner());
                    (link.up, link.last_answer)
                };
                if up {
                    continue;
                }
                answer(&client, &js, &config.mirror, &mut copy, last_answer, endpoint, message).await;
            }
        }
    }
    probe.abort();
    let _ = client.flush().await;
    tracing::info!("hub reader stopped");
    Ok(())
}

/// Asks every [`PROBE_EVERY`] whether a processor answers the service's PING,
/// and logs each change.
async fn probe(client: Client, link: Arc<Mutex<Link>>) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let answered = ping(&client).await;
        let mut link = link.lock().unwrap_or_else(|e| e.into_inner());
        if answered {
            link.last_answer = Some(Utc::now());
        }
        if answered != link.up {
            if answered {
                tracing::info!("the track's processors answer: requests are theirs");
            } else {
                tracing::warn!("no processor answers: answering from the hub's copy");
            }
            link.up = answered;
        }
    }
}

/// Whether a processor answers `$SRV.PING.sessions` within [`PROBE_PATIENCE`].
async fn ping(client: &Client) -> bool {
    let inbox = client.new_inbox();
    let Ok(mut replies) = client.subscribe(inbox.clone()).await else {
        return false;
    };
    if client
        .publish_with_reply(subjects::service_ping(), inbox, Bytes::new())
        .await
        .is_err()
    {
        return false;
    }
    // With nobody subscribed the broker answers "no responders" (a status, no
    // payload): that is not a processor.
    let answered = tokio::time::timeout(PROBE_PATIENCE, async {
        while let Some(reply) = replies.next().await {
            if reply.status.is_none() && !reply.payload.is_empty() {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    let _ = replies.unsubscribe().await;
    answered
}

/// Answers one request from the copy (read again first when a mirror moved).
async fn answer(
    client: &Client,
    js: &jetstream::Context,
    config: &MirrorConfig,
    copy: &mut Copy,
    last_answer: Option<DateTime<Utc>>,
    endpoint: Endpoint,
    message: Message,
) {
    let Some(reply) = message.reply.clone() else {
        return;
    };
    let fresh = copy.read_at.is_some_and(|at| at.elapsed() < REREAD_EVERY);
    if !fresh {
        match mirror::position(js, config).await {
            Ok(position) if copy.app.is_some() && position == copy.position => {}
            Ok(position) => match mirror::read_copy(js, config).await {
                Ok(app) => {
                    copy.app = Some(Arc::new(app));
                    copy.position = position;
                }
                Err(e) => tracing::warn!(error = %e, "could not read the hub's copy"),
            },
            Err(e) => tracing::warn!(error = %e, "could not read the mirrors' state"),
        }
        copy.read_at = Some(tokio::time::Instant::now());
    }
    let as_of = copy.position.newest.max(last_answer);
    let (body, headers) = match &copy.app {
        None => {
            let e = crate::server::error::ServiceError::Unavailable(
                "the track is out of reach and the hub's copy cannot be read".into(),
            );
            (e.body(), e.headers())
        }
        Some(app) => {
            let subject_id = endpoint
                .one_session()
                .is_some()
                .then(|| subjects::id_token(&message.subject, endpoint))
                .filter(|token| !token.is_empty());
            match app.handle_control_for(endpoint, subject_id, &message.payload) {
                Ok(reply) => (with_as_of(reply.body, as_of), HeaderMap::new()),
                Err(e) => (e.body(), e.headers()),
            }
        }
    };
    if let Err(e) = client.publish_with_headers(reply, headers, body).await {
        tracing::debug!(error = %e, "could not answer from the hub's copy");
    }
}

/// `body` (a JSON object) with `"as_of"`: when the copy was last known to match
/// the track. `null` when nothing says (an empty copy never in touch).
fn with_as_of(body: Bytes, as_of: Option<DateTime<Utc>>) -> Bytes {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(&body) else {
        return body;
    };
    object.insert(
        "as_of".into(),
        as_of
            .map(|t| crate::protocol::documents::time::format(&t).into())
            .unwrap_or(serde_json::Value::Null),
    );
    serde_json::to_vec(&object).map(Bytes::from).unwrap_or(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_from_the_copy_says_as_of_when() {
        let at = DateTime::parse_from_rfc3339("2025-06-14T16:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let body = with_as_of(Bytes::from_static(br#"{"session_id":"x"}"#), Some(at));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["session_id"], "x");
        assert!(
            v["as_of"]
                .as_str()
                .unwrap()
                .starts_with("2025-06-14T16:00:00")
        );
        let none = with_as_of(Bytes::from_static(b"{}"), None);
        assert_eq!(&none[..], br#"{"as_of":null}"#);
    }
}
