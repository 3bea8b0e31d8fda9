//! Socket.IO clients for the gateway's tests: `rust_socketio` (a client library
//! no one here wrote) as the origin's monitor and pages use theirs, and the
//! Engine.IO polling transport by hand for what that library cannot send
//! (Python's `NaN`) or see (a refused connect).

use std::time::{Duration, Instant};

use futures::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload};
use serde_json::Value;
use tokio::sync::mpsc;

/// One connected Socket.IO client and every event it has received, in order.
pub struct Sio {
    pub client: Client,
    events: mpsc::UnboundedReceiver<(String, Value)>,
}

impl Sio {
    /// Connects to the gateway at `http://<http>` (the origin's `server_url`)
    /// and waits until the server has accepted it into the default namespace.
    pub async fn connect(http: &str) -> Sio {
        Sio::connect_url(&format!("http://{http}")).await
    }

    pub async fn connect_url(url: &str) -> Sio {
        let (tx, events) = mpsc::unbounded_channel();
        let (ready_tx, mut ready) = mpsc::unbounded_channel();
        let client = ClientBuilder::new(url)
            .namespace("/")
            .reconnect_delay(200, 500)
            .max_reconnect_attempts(100)
            .on(Event::Connect, move |_, _| {
                let _ = ready_tx.send(());
                async {}.boxed()
            })
            .on_any(move |event, payload, _| {
                if let Payload::Text(mut values) = payload {
                    let value = if values.is_empty() {
                        Value::Null
                    } else {
                        values.swap_remove(0)
                    };
                    let _ = tx.send((String::from(event), value));
                }
                async {}.boxed()
            })
            .connect()
            .await
            .expect("the gateway accepts a Socket.IO connection");
        tokio::time::timeout(Duration::from_secs(10), ready.recv())
            .await
            .expect("the gateway acknowledges the namespace within 10 s");
        Sio { client, events }
    }

    pub async fn emit(&self, event: &str, data: Value) {
        self.client.emit(event, data).await.expect("emit");
    }

    /// The next event named `name` (others are skipped), within 10 s.
    pub async fn next(&mut self, name: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some((event, value))) if event == name => return value,
                Ok(Some(_)) => continue,
                _ => panic!("no {name} event within 10 s"),
            }
        }
    }

    /// Every event received within `window`.
    pub async fn during(&mut self, window: Duration) -> Vec<(String, Value)> {
        let deadline = Instant::now() + window;
        let mut seen = Vec::new();
        while let Ok(Some(event)) =
            tokio::time::timeout_at(deadline.into(), self.events.recv()).await
        {
            seen.push(event);
        }
        seen
    }

    /// A new session from the gateway, as the origin's monitor asks for one.
    pub async fn request_session_id(&mut self) -> String {
        self.emit("request_session_id", serde_json::json!({})).await;
        let assigned = self.next("session_id_assigned").await;
        assigned["session_id"].as_str().unwrap().to_string()
    }
}

/// The Engine.IO v4 polling transport by hand: a handshake, the namespace's
/// connect, then raw packets.
pub struct Polling {
    base: String,
    sid: String,
}

/// Longer than the gateway's ping interval (25 s): a long-poll may take that.
fn agent() -> ureq::Agent {
    super::agent_waiting(Duration::from_secs(30))
}

impl Polling {
    /// Opens a session and sends the namespace's connect (`40`); `query` is
    /// added to the URL (e.g. `token=…`). Answers the first reply to the
    /// connect: `40{"sid":…}`, or `44{"message":…}` when refused.
    pub async fn open(http: &str, query: &str) -> (Polling, String) {
        let base = format!("http://{http}/socket.io/?EIO=4&transport=polling&{query}");
        let open = Self::get_blocking(base.clone()).await;
        // `0{"sid":"…",…}`
        let handshake: Value = serde_json::from_str(&open[1..]).expect("engine.io handshake");
        let sid = handshake["sid"].as_str().unwrap().to_string();
        let polling = Polling { base, sid };
        polling.send("40").await;
        let reply = polling.next_message().await;
        (polling, reply)
    }

    async fn get_blocking(url: String) -> String {
        tokio::task::spawn_blocking(move || {
            let mut response = agent().get(&url).call().expect("polling GET");
            response.body_mut().read_to_string().unwrap()
        })
        .await
        .unwrap()
    }

    /// Sends one packet as it is written (`42["event",{…}]`).
    pub async fn send(&self, packet: &str) {
        let url = format!("{}&sid={}", self.base, self.sid);
        let body = packet.to_string();
        let status = tokio::task::spawn_blocking(move || {
            agent()
                .post(&url)
                .content_type("text/plain;charset=UTF-8")
                .send(body.as_str())
                .expect("polling POST")
                .status()
                .as_u16()
        })
        .await
        .unwrap();
        assert_eq!(status, 200, "the gateway took the packet {packet}");
    }

    /// The packets waiting for this client (one long-poll), separated by the
    /// record separator.
    pub async fn poll(&self) -> String {
        Self::get_blocking(format!("{}&sid={}", self.base, self.sid)).await
    }

    /// The next Engine.IO message packet (`4…`), past pings (`2`).
    pub async fn next_message(&self) -> String {
        loop {
            let packets = self.poll().await;
            if let Some(message) = packets.split('\u{1e}').find(|p| p.starts_with('4')) {
                return message.to_string();
            }
        }
    }
}
