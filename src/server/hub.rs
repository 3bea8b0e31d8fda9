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
//!
//! It also carries the mirrors' consumer requests over the outage
//! ([`relay_mirror_requests`]): from nats-server 2.10 a mirror whose request
//! went out while the link was down waits 30 s for an answer that cannot come,
//! then backs off, before it asks again, so the copy would catch up some 40 s
//! after the link returns. The reader holds those requests while the track's
//! JetStream does not answer, and sends them on, with the answer back to the
//! mirror, as soon as it does: the mirror resumes at once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{Client, HeaderMap, Message};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};

use crate::protocol::subjects::{self, Endpoint};
use crate::server::app::App;
use crate::server::store::mirror::{self, MirrorConfig, Position};

/// How often the reader asks whether a processor answers.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long it waits for the first answer to its PING.
const PROBE_PATIENCE: Duration = Duration::from_millis(500);
/// The copy is read again at most this often, and only when a mirror moved.
const REREAD_EVERY: Duration = Duration::from_secs(1);
/// A held mirror request older than this is not sent on: its mirror has
/// stopped waiting for the answer (after 30 s from nats-server 2.10) and asks
/// again by itself. 2.9 waits 5 s and asks again every few seconds anyway: one
/// sent on late makes a consumer with no one to deliver to, which the track
/// removes within seconds (an ephemeral consumer without interest).
const RELAY_WITHIN: Duration = Duration::from_secs(25);
/// How long a relayed request waits for the track's JetStream.
const RELAY_PATIENCE: Duration = Duration::from_secs(5);
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
    let relay = tokio::spawn(relay_mirror_requests(
        client.clone(),
        config.mirror.domain.clone(),
    ));
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
    relay.abort();
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

/// Holds the mirrors' consumer requests while the track's JetStream does not
/// answer (`$JS.<domain>.API.INFO`, asked every [`PROBE_EVERY`]), and sends
/// the newest of each mirror on once it does, its answer back to the mirror.
///
/// Why: a mirror's consumer request that goes out while the link is down is
/// lost, and from nats-server 2.10 the mirror waits out that request (30 s,
/// `srcConsumerWaitTime` in server/stream.go) and a backoff (10 s per failed
/// attempt, at most 2 minutes) before it asks again; nats-server's own nudge
/// when a leaf connects (2.12+) passes over a mirror whose request is still in
/// flight. Answered, the mirror resumes from its last record at once. Subscribed
/// only while the track is out of reach, so nothing is held while the track
/// answers the mirrors itself; a request the track also answered (the link
/// came back within a probe) is sent again with the same body, which creates
/// the same consumer (an identical create is answered with the existing one)
/// and whose answer the mirror, no longer waiting, drops.
pub async fn relay_mirror_requests(client: Client, domain: String) {
    let info = subjects::js_domain_info(&domain);
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut holding: Option<async_nats::Subscriber> = None;
    // The newest request per subject (one subject per mirror), with when it came.
    let mut held: HashMap<String, (tokio::time::Instant, Message)> = HashMap::new();
    loop {
        let next = async {
            match holding.as_mut() {
                Some(sub) => sub.next().await,
                None => futures::future::pending().await,
            }
        };
        tokio::select! {
            Some(request) = next => hold(&mut held, request),
            _ = tick.tick() => {
                // Only requests a mirror still waits on are kept: a mirror asks
                // again (a new consumer name, a new subject) after its wait, so
                // an outage of hours would otherwise pile up its asks.
                held.retain(|_, (at, _)| at.elapsed() < RELAY_WITHIN);
                let reachable = answers(&client, &info).await;
                if !reachable && holding.is_none() {
                    match client.subscribe(subjects::js_domain_consumer_creates(&domain)).await {
                        Ok(sub) => {
                            tracing::info!(domain, "the track's JetStream is out of reach: holding the mirrors' requests");
                            holding = Some(sub);
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot hold the mirrors' requests"),
                    }
                } else if reachable && let Some(mut sub) = holding.take() {
                    while let Some(Some(request)) = sub.next().now_or_never() {
                        hold(&mut held, request);
                    }
                    let _ = sub.unsubscribe().await;
                    let due: Vec<Message> = held
                        .drain()
                        .filter(|(_, (at, _))| at.elapsed() < RELAY_WITHIN)
                        .map(|(_, (_, request))| request)
                        .collect();
                    tracing::info!(domain, relayed = due.len(), "the track's JetStream answers again: sending the mirrors' held requests on");
                    futures::future::join_all(due.into_iter().map(|r| relay(&client, r))).await;
                }
            }
        }
    }
}

/// The held requests' bytes at most (subjects and payloads): a mirror's
/// request is some hundreds of bytes and a hub has a mirror per track stream,
/// so this is room for every mirror many times over. Past it a request is not
/// held; its mirror asks again by itself, as without the relay.
const HELD_BYTES: usize = 64 * 1024;

/// Holds `request` as its subject's newest, within [`HELD_BYTES`].
fn hold(held: &mut HashMap<String, (tokio::time::Instant, Message)>, request: Message) {
    let size = |m: &Message| m.subject.len() + m.payload.len();
    let total: usize = held.values().map(|(_, m)| size(m)).sum();
    let replaced = held
        .get(request.subject.as_str())
        .map_or(0, |(_, m)| size(m));
    if total - replaced + size(&request) > HELD_BYTES {
        tracing::debug!(subject = %request.subject, "held mirror requests full: this one is not held");
        return;
    }
    held.insert(
        request.subject.to_string(),
        (tokio::time::Instant::now(), request),
    );
}

/// Sends one held mirror request to the track and its answer to the mirror.
async fn relay(client: &Client, request: Message) {
    let Some(reply) = request.reply else { return };
    let mut sent = async_nats::Request::new()
        .payload(request.payload)
        .timeout(Some(RELAY_PATIENCE));
    if let Some(headers) = request.headers {
        sent = sent.headers(headers);
    }
    match client.send_request(request.subject.clone(), sent).await {
        Ok(answer) => {
            let headers = answer.headers.unwrap_or_default();
            if let Err(e) = client
                .publish_with_headers(reply, headers, answer.payload)
                .await
            {
                tracing::debug!(error = %e, "could not hand a mirror its answer");
            }
        }
        Err(e) => {
            tracing::debug!(subject = %request.subject, error = %e, "a held mirror request was not answered")
        }
    }
}

/// Whether anything answers a request on `subject` within [`PROBE_PATIENCE`]
/// ("no responders" is no answer).
async fn answers(client: &Client, subject: &str) -> bool {
    let request = async_nats::Request::new().timeout(Some(PROBE_PATIENCE));
    client
        .send_request(subject.to_string(), request)
        .await
        .is_ok_and(|reply| reply.status.is_none())
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
