//! Socket.IO clients for the gateway's tests, both by hand: [`Sio`], the
//! WebSocket transport as the origin's monitor and pages use theirs, and
//! [`Polling`], the polling transport, for what a client library would not send
//! (Python's `NaN`) or let a test see (a refused connect's `44`).
//!
//! [`Sio`] speaks Socket.IO v5 over Engine.IO v4 on tokio-tungstenite (plain
//! `ws://` on loopback: no TLS stack, so building the tests needs nothing but
//! Rust). What it does, all the gateway's tests rely on:
//!
//! - connect to `ws://<host>/socket.io/?EIO=4&transport=websocket[&token=…]`,
//!   read the Engine.IO open packet `0{…}`, send the namespace's connect `40`,
//!   and wait for `40{"sid":…}` (a `44{…}` connect error fails the connect);
//! - emit `42["name",data]`; receive `42["name",data…]` (and `42<id>[…]`: the
//!   gateway asks no acks, so none is sent) as `(name, first data)`;
//! - answer the Engine.IO ping `2` with the pong `3`;
//! - when the connection drops (a `kill -9` of the server), reconnect on its
//!   own, as the origin's monitor does; the server's `41` (disconnect) ends it;
//! - disconnect with `41`.
//!
//! Binary events (`45…`, `46…`, and their attachments) are skipped: the gateway
//! sends JSON text only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Times the client tries again after its connection dropped, and the wait
/// between tries (the origin's monitor, python-socketio, keeps trying too).
const RECONNECTS: u32 = 100;
const RECONNECT_DELAY: (Duration, Duration) =
    (Duration::from_millis(200), Duration::from_millis(500));

/// One connected Socket.IO client and every event it has received, in order.
pub struct Sio {
    pub client: Client,
    events: mpsc::UnboundedReceiver<(String, Value)>,
}

/// The sending side of a [`Sio`].
#[derive(Clone)]
pub struct Client {
    /// The open connection's sending half; `None` while it (re)connects and
    /// after a disconnect, so an emit then fails instead of waiting.
    writer: Arc<Mutex<Option<SplitSink<Ws, Message>>>>,
    /// Set by [`Client::disconnect`] (or the server's `41`): no reconnecting.
    done: Arc<AtomicBool>,
}

impl Client {
    /// Sends the event `42["name",data]`; fails while not connected.
    pub async fn emit(&self, event: &str, data: Value) -> Result<(), Error> {
        self.send(format!("42{}", Value::from(vec![Value::from(event), data])))
            .await
    }

    /// Leaves the namespace (`41`) and closes the connection, for good.
    pub async fn disconnect(&self) -> Result<(), Error> {
        self.done.store(true, Ordering::SeqCst);
        let mut writer = self.writer.lock().await;
        let mut open = writer.take().ok_or(Error::AlreadyClosed)?;
        open.send(Message::text("41")).await?;
        open.close().await
    }

    async fn send(&self, packet: String) -> Result<(), Error> {
        match self.writer.lock().await.as_mut() {
            Some(open) => open.send(Message::text(packet)).await,
            None => Err(Error::AlreadyClosed),
        }
    }
}

impl Sio {
    /// Connects to the gateway at `http://<http>` (the origin's `server_url`)
    /// and waits until the server has accepted it into the default namespace.
    pub async fn connect(http: &str) -> Sio {
        Sio::connect_url(&format!("http://{http}")).await
    }

    /// As [`Sio::connect`], to a server URL as the origin's monitor takes it:
    /// `http://host:port`, with its query (`?token=…`) passed on.
    pub async fn connect_url(url: &str) -> Sio {
        let server = url::Url::parse(url).expect("a server URL");
        let mut ws = server.clone();
        ws.set_scheme("ws").unwrap();
        ws.set_path("/socket.io/");
        let query = match server.query() {
            Some(query) => format!("EIO=4&transport=websocket&{query}"),
            None => "EIO=4&transport=websocket".to_string(),
        };
        ws.set_query(Some(&query));
        let client = Client {
            writer: Arc::new(Mutex::new(None)),
            done: Arc::new(AtomicBool::new(false)),
        };
        let (tx, events) = mpsc::unbounded_channel();
        let (ready_tx, ready) = oneshot::channel();
        tokio::spawn(run(ws.to_string(), client.clone(), tx, ready_tx));
        match tokio::time::timeout(Duration::from_secs(10), ready).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("the gateway accepts a Socket.IO connection: {e}"),
            _ => panic!("the gateway acknowledges the namespace within 10 s"),
        }
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

/// The connection, for the life of its [`Sio`]: connects, reports the first
/// outcome on `ready`, reads until the connection drops, then connects again
/// (unless told to stop, or the [`Sio`] is gone).
async fn run(
    url: String,
    client: Client,
    events: mpsc::UnboundedSender<(String, Value)>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    let mut tries = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), open(&url)).await {
            Ok(Ok((writer, reader))) => {
                tries = 0;
                *client.writer.lock().await = Some(writer);
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Ok(()));
                }
                read(reader, &client, &events).await;
                *client.writer.lock().await = None;
            }
            Ok(Err(e)) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(e));
                    return;
                }
            }
            Err(_) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(format!("no Socket.IO connect from {url} in 10 s")));
                    return;
                }
            }
        }
        tries += 1;
        if client.done.load(Ordering::SeqCst) || events.is_closed() || tries > RECONNECTS {
            return;
        }
        let wait = RECONNECT_DELAY.0 * tries;
        tokio::time::sleep(wait.min(RECONNECT_DELAY.1)).await;
    }
}

/// One connection up to the namespace's `40{"sid":…}`: the Engine.IO open
/// packet, our connect, the server's answer (pings answered on the way).
async fn open(url: &str) -> Result<(SplitSink<Ws, Message>, SplitStream<Ws>), String> {
    // TCP_NODELAY: small frames someone waits for (the benchmark's latency).
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let (mut writer, mut reader) = ws.split();
    let mut opened = false;
    loop {
        let packet = match reader.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("{url}: {e}")),
            None => return Err(format!("{url} closed the connection")),
        };
        let packet = packet.as_str();
        if !opened {
            // `0{"sid":…,"pingInterval":…}`
            if !packet.starts_with('0') {
                return Err(format!("{url}: no Engine.IO open packet but {packet}"));
            }
            opened = true;
            writer
                .send(Message::text("40"))
                .await
                .map_err(|e| format!("{url}: {e}"))?;
        } else if let Some(payload) = packet.strip_prefix('2') {
            writer
                .send(Message::text(format!("3{payload}")))
                .await
                .map_err(|e| format!("{url}: {e}"))?;
        } else if packet.starts_with("40") {
            return Ok((writer, reader));
        } else if packet.starts_with("44") {
            return Err(format!("{url} refused the connect: {packet}"));
        } else {
            return Err(format!("{url}: {packet} before the namespace's connect"));
        }
    }
}

/// Reads one connection's packets until it drops or the [`Sio`] is gone:
/// events into `events`, pings answered.
async fn read(
    mut reader: SplitStream<Ws>,
    client: &Client,
    events: &mpsc::UnboundedSender<(String, Value)>,
) {
    loop {
        let message = tokio::select! {
            message = reader.next() => message,
            _ = events.closed() => return,
        };
        let packet = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
            Some(Ok(_)) => continue,
        };
        let packet = packet.as_str();
        if let Some(payload) = packet.strip_prefix('2') {
            // Fails only if the connection is gone, which the next read says.
            let _ = client.send(format!("3{payload}")).await;
        } else if packet == "1" {
            // Engine.IO's close: the transport is gone, connect again.
            return;
        } else if packet == "41" {
            // The server's disconnect: not to be undone (as socket.io-client).
            client.done.store(true, Ordering::SeqCst);
            return;
        } else if let Some(event) = packet.strip_prefix("42").and_then(parse_event) {
            let _ = events.send(event);
        }
    }
}

/// An event's name and first data (`Null` when it has none) from
/// `42["name",data…]` past the `42`, with or without an ack id before the array.
fn parse_event(packet: &str) -> Option<(String, Value)> {
    let array = packet.trim_start_matches(|c: char| c.is_ascii_digit());
    let mut values: Vec<Value> = serde_json::from_str(array).ok()?;
    if values.is_empty() {
        return None;
    }
    let name = values.remove(0).as_str()?.to_string();
    let data = if values.is_empty() {
        Value::Null
    } else {
        values.swap_remove(0)
    };
    Some((name, data))
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

/// A broker and `paddock serve` with its HTTP side (and so the gateway), ready.
pub struct Gateway {
    pub server: super::NatsServer,
    pub processor: super::Running,
    pub http: String,
    pub nats: async_nats::Client,
}

pub async fn gateway(extra: &[&str]) -> Gateway {
    let server = super::NatsServer::start();
    let http = format!("127.0.0.1:{}", super::free_port());
    let mut args = vec!["--http-addr", http.as_str()];
    args.extend_from_slice(extra);
    let processor = super::serve_binary(&server.url(), &args);
    super::until_status(&http, "/readyz", 200).await;
    let nats = super::connect(&server.url()).await;
    Gateway {
        server,
        processor,
        http,
        nats,
    }
}
