//! Talking to the service as a client does, and reading its answers.

use async_nats::{Client, Message};
use bytes::Bytes;
use serde_json::Value;
use std::time::{Duration, Instant};

use super::{PATIENCE, TELEMETRY};

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

/// Waits until `client` has seen its broker go away: after a kill, the point from
/// which every client of that broker has lost its connection (the kernel closed
/// their sockets with the process), so a restart is a reconnect for each of them.
pub async fn until_disconnected(client: &Client) {
    let deadline = Instant::now() + PATIENCE;
    while client.connection_state() != async_nats::connection::State::Disconnected {
        assert!(
            Instant::now() < deadline,
            "the client never noticed its broker was gone"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls until `subject` answers a request (the broker and processor may be coming
/// up), re-sending after any failure: for requests that may safely arrive twice
/// (`sessions.get`), or whose duplicate does not matter to the test. [`ask`] is
/// the one that never re-sends what may have arrived.
pub async fn wait_for_reply(client: &async_nats::Client, subject: &str, body: String) -> Answer {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_millis(500),
            client.request(subject.to_string(), body.clone().into()),
        )
        .await;
        if let Ok(Ok(message)) = attempt {
            return Answer::from(message);
        }
        assert!(Instant::now() < deadline, "{subject} never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
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
/// Re-sent only when no processor subscribes yet (the broker answers "no
/// responders"): a request that may have reached one is never sent twice, so a
/// slow create or delete cannot turn into two.
pub async fn ask(client: &async_nats::Client, subject: &str, body: String) -> Answer {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout(
            PATIENCE,
            client.request(subject.to_string(), body.clone().into()),
        )
        .await
        {
            Ok(Ok(reply)) => return Answer::from(reply),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
            Ok(Err(e)) => panic!("{subject}: {e}"),
            Err(_) => panic!("{subject}: no reply within {PATIENCE:?}"),
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

/// The next message on `sub`, failing the test if none comes within `PATIENCE`.
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

/// The current info (config, state, cluster) of a JetStream stream.
pub async fn stream_info(
    client: &async_nats::Client,
    stream: &str,
) -> async_nats::jetstream::stream::Info {
    async_nats::jetstream::new(client.clone())
        .get_stream(stream)
        .await
        .unwrap_or_else(|e| panic!("no stream {stream}: {e}"))
        .info()
        .await
        .unwrap_or_else(|e| panic!("no info of {stream}: {e}"))
        .clone()
}

/// Every processor's answer to a micro discovery request (`$SRV.INFO.sessions`,
/// `$SRV.STATS.sessions`): it reaches every instance, where a request to an
/// endpoint reaches one. Waits for `n` answers.
pub async fn each_processor(client: &Client, subject: &str, n: usize) -> Vec<Value> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply(subject.to_string(), inbox, "".into())
        .await
        .unwrap();
    let mut each = Vec::new();
    while each.len() < n {
        let reply = next(&mut replies).await;
        each.push(serde_json::from_slice(&reply.payload).unwrap());
    }
    each
}

/// `n` new sessions, the k-th with the setup `{"car": k}` (sent as a request, so
/// it is stored when this returns).
pub async fn sessions_with_setups(client: &Client, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for car in 0..n {
        let id = create(client).await;
        ask(
            client,
            &format!("session.{id}.setup"),
            format!(r#"{{"car": {car}}}"#),
        )
        .await
        .ok();
        ids.push(id);
    }
    ids
}

/// One telemetry frame per lap of `laps` to every session of `ids`, lap by lap.
pub async fn publish_laps(client: &Client, ids: &[String], laps: std::ops::RangeInclusive<u64>) {
    for lap in laps {
        for id in ids {
            client
                .publish(format!("session.{id}.telemetry"), frame(lap).into())
                .await
                .unwrap();
        }
    }
}

/// A client with a `.creds` file, reading its replies under `inbox`.
pub async fn connect_with_creds(
    url: &str,
    creds: impl AsRef<std::path::Path>,
    inbox: &str,
) -> Client {
    async_nats::ConnectOptions::with_credentials_file(creds.as_ref())
        .await
        .unwrap()
        .custom_inbox_prefix(inbox)
        .connect(url)
        .await
        .unwrap()
}
