//! The Socket.IO gateway (`paddock serve --http-addr`, at `/socket.io/`): the
//! Race Dashboard's (1Lap) monitor and pages talk to paddock unchanged.
//!
//! It is a NATS client like any other, on a connection of its own, and holds no
//! session state: what the origin's events ask for becomes paddock's own
//! requests and subjects (docs/PROTOCOL.md, "Socket.IO gateway"):
//!
//! | Socket.IO event (in)   | becomes                                                    |
//! |------------------------|------------------------------------------------------------|
//! | `request_session_id`   | `sessions.create`; `session_id_assigned` to the caller     |
//! | `setup_data`           | a request on `session.<id>.setup` (acknowledged)           |
//! | `telemetry_update`     | a publish on `session.<id>.telemetry`, in the schema's units |
//! | `join_session`         | subscribe `session.<id>.>`, then `sessions.get`: the snapshot to the joiner, then every frame to the room |
//!
//! Order: one socket's events are handled in the order they arrived, by one task
//! per socket ([`Connection`]); socketioxide spawns each handler's future, so
//! the handler only queues the event, before its (empty) future.
//!
//! Bounds (every one refuses and counts what does not fit, never grows):
//! - sockets: [`GatewayConfig::max_connections`];
//! - events queued per socket: [`PER_SOCKET_QUEUE`] events and
//!   [`GatewayConfig::queue_bytes`] bytes, all sockets together;
//! - rooms (sessions followed): [`GatewayConfig::max_rooms`], each one NATS
//!   subscription that ends a few seconds after its last dashboard left;
//! - packets waiting to be sent to one socket: socketioxide's buffer
//!   ([`SOCKET_BUFFER`]); a dashboard that cannot keep up misses frames, counted
//!   as `dropped`.

pub mod origin;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::Client;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::handler::{ConnectHandler, FromMessageParts};
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::Sid;
use socketioxide::{SocketIo, TransportType};
use tokio::sync::mpsc;

use crate::client::{ClientError, SessionsClient};
use crate::protocol::documents::time as doc_time;
use crate::protocol::id::SessionId;
use crate::protocol::subjects::{self, DataKind, SessionMessage};
use crate::server::ratelimit::{LogThrottle, TokenBucket};

/// Events one socket may have waiting for its task.
pub const PER_SOCKET_QUEUE: usize = 64;
/// Packets socketioxide buffers for one socket before emits to it fail.
pub const SOCKET_BUFFER: usize = 256;
/// Largest Engine.IO payload: the origin server's limit. Beyond it the
/// connection is closed (by the Engine.IO layer); a frame between
/// `--max-payload` and this is refused and counted, and the socket stays.
pub const ENGINE_MAX_PAYLOAD: u64 = 1024 * 1024;
/// Sessions one socket may ask for per minute: a page reloaded in a loop must
/// not spend the gateway's share of the processor's per-client create limit.
const CREATES_PER_SOCKET_PER_MINUTE: u32 = 10;
/// How long a request to the processor may take before the caller is told that
/// no processor answers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a room checks whether any dashboard is left in it.
const ROOM_IDLE_CHECK: Duration = Duration::from_secs(5);
/// Joins waiting for one room's task.
const ROOM_QUEUE: usize = 64;

/// The gateway's settings, from `serve`'s flags.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// When set, clients must connect with `?token=<it>`.
    pub token: Option<String>,
    /// Largest setup or telemetry frame passed on (`--max-payload`).
    pub max_payload: usize,
    pub max_connections: usize,
    pub max_rooms: usize,
    /// Bytes of events queued for all sockets' tasks together.
    pub queue_bytes: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            token: None,
            max_payload: crate::server::app::Limits::default().max_payload,
            max_connections: 1000,
            max_rooms: 1000,
            queue_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What was refused, by why: the `reason` label of
/// `paddock_gateway_rejected_total`.
pub const REJECTION_REASONS: [&str; 10] = [
    "bad_json",
    "unknown_event",
    "malformed_id",
    "not_object",
    "too_large",
    "busy",
    "rate_limited",
    "refused",
    "no_processor",
    "too_many",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// The gateway's counters, served on `/metrics` as `paddock_gateway_*`.
#[derive(Debug, Default)]
pub struct GatewayMetrics {
    /// Sockets connected now.
    pub connections: Gauge,
    /// Sessions followed now (one subscription each).
    pub rooms: Gauge,
    /// Events taken, by name.
    pub events: Family<EventLabel, Counter>,
    /// Events refused, by why.
    pub rejected: Family<ReasonLabel, Counter>,
    /// Frames a dashboard socket could not take (its buffer was full).
    pub dropped: Counter,
    log: LogThrottle,
}

impl GatewayMetrics {
    /// Counts a refusal and logs it, at most once every 5 seconds with the number
    /// not logged in between (as the processor logs its rejections).
    fn reject(&self, reason: &'static str, event: &str, detail: &dyn std::fmt::Display) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
        if let Some(suppressed) = self.log.allow(Duration::from_secs(5)) {
            let event: String = event.chars().take(40).collect();
            tracing::warn!(reason, %event, %detail, suppressed, "gateway refused an event");
        }
    }
}

/// The Socket.IO layer to put on the HTTP router, and its metrics.
pub fn layer(nats: Client, config: GatewayConfig) -> (SocketIoLayer, Arc<GatewayMetrics>) {
    let (layer, io) = SocketIo::builder()
        .max_payload(ENGINE_MAX_PAYLOAD)
        .max_buffer_size(SOCKET_BUFFER)
        .transports([TransportType::Polling, TransportType::Websocket])
        .build_layer();
    let metrics = Arc::new(GatewayMetrics::default());
    let gateway = Arc::new(Gateway {
        sessions: SessionsClient::new(nats.clone(), "the broker", REQUEST_TIMEOUT),
        nats,
        io: io.clone(),
        rooms: Mutex::new(HashMap::new()),
        queued: AtomicUsize::new(0),
        connected: AtomicUsize::new(0),
        metrics: Arc::clone(&metrics),
        config,
    });
    let (on_connect, admit) = (Arc::clone(&gateway), gateway);
    io.ns(
        "/",
        (move |socket: SocketRef| {
            let gateway = Arc::clone(&on_connect);
            async move { gateway.connected(socket) }
        })
        .with(move |socket: SocketRef| {
            let gateway = Arc::clone(&admit);
            async move {
                gateway.admit(&socket)?;
                gateway.listen(&socket);
                Ok::<(), Refused>(())
            }
        }),
    );
    (layer, metrics)
}

struct Gateway {
    nats: Client,
    sessions: SessionsClient,
    io: SocketIo,
    /// The sessions followed: each one's room task, by session.
    rooms: Mutex<HashMap<SessionId, mpsc::Sender<Sid>>>,
    /// Bytes of events queued for sockets' tasks.
    queued: AtomicUsize,
    connected: AtomicUsize,
    metrics: Arc<GatewayMetrics>,
    config: GatewayConfig,
}

/// Why a connection was refused: sent to the client as its connect error.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("this paddock's Socket.IO gateway needs ?token=… in the server URL (--gateway-token)")]
    NoToken,
    #[error("the token in the server URL is not this paddock's --gateway-token")]
    WrongToken,
    #[error(
        "this paddock's Socket.IO gateway has {0} connections already (--gateway-max-connections)"
    )]
    Full(usize),
}

impl Gateway {
    /// The connect middleware: the token, and the connection bound.
    fn admit(&self, socket: &SocketRef) -> Result<(), Refused> {
        if let Some(token) = &self.config.token {
            let given = socket
                .req_parts()
                .uri
                .query()
                .unwrap_or_default()
                .split('&')
                .find_map(|pair| pair.strip_prefix("token="));
            match given {
                None => return Err(Refused::NoToken),
                // Not a timing side channel worth a crate: the token guards a
                // LAN service, and the comparison's time depends on the length
                // of a common prefix only.
                Some(given) if given != token => return Err(Refused::WrongToken),
                Some(_) => {}
            }
        }
        let now = self.connected.load(Relaxed);
        if now >= self.config.max_connections {
            self.metrics
                .reject("too_many", "connect", &"connection refused");
            return Err(Refused::Full(now));
        }
        Ok(())
    }

    /// An admitted socket's events go, in order, to a task of its own. Set up
    /// here in the connect middleware, not in the connect handler: socketioxide
    /// spawns that handler after it has sent the client its connect packet, so
    /// a client's first event (the origin's monitor asks for its session id at
    /// once) could arrive before the handler ran, and be dropped unseen.
    fn listen(self: &Arc<Self>, socket: &SocketRef) {
        let (events, queue) = mpsc::channel::<Bytes>(PER_SOCKET_QUEUE);
        let gateway = Arc::clone(self);
        // socketioxide spawns a handler's future, so the futures of two events
        // may run in either order; the closure itself runs inline, in the
        // order the events arrived, so the queueing happens there.
        socket.on_fallback(move |socket: SocketRef, Packet(text): Packet| {
            gateway.queue(&socket, &events, text);
            std::future::ready(())
        });
        // Ends when the socket (and with it the closure holding `events`) goes.
        let connection = Connection {
            gateway: Arc::clone(self),
            sid: socket.id,
            creates: TokenBucket::new(CREATES_PER_SOCKET_PER_MINUTE, Instant::now()),
        };
        tokio::spawn(connection.run(queue));
    }

    /// A socket connected: counted until it leaves.
    fn connected(self: Arc<Self>, socket: SocketRef) {
        self.connected.fetch_add(1, Relaxed);
        self.metrics.connections.inc();
        let gateway = Arc::clone(&self);
        socket.on_disconnect(move || {
            gateway.connected.fetch_sub(1, Relaxed);
            gateway.metrics.connections.dec();
            std::future::ready(())
        });
    }

    /// Queues one event for its socket's task, within the bounds.
    fn queue(&self, socket: &SocketRef, events: &mpsc::Sender<Bytes>, text: Bytes) {
        let len = text.len();
        let total = self.queued.fetch_add(len, Relaxed) + len;
        if total > self.config.queue_bytes {
            self.queued.fetch_sub(len, Relaxed);
            return self.refuse(socket.id, "busy", "", &"the gateway's event queue is full");
        }
        if events.try_send(text).is_err() {
            self.queued.fetch_sub(len, Relaxed);
            self.refuse(
                socket.id,
                "busy",
                "",
                &"this connection's events wait already",
            );
        }
    }

    /// Counts and logs a refusal, and tells the client why (`paddock_error`; the
    /// origin's clients ignore events they do not know).
    fn refuse(&self, sid: Sid, reason: &'static str, event: &str, detail: &dyn std::fmt::Display) {
        self.metrics.reject(reason, event, detail);
        if let Some(socket) = self.io.get_socket(sid) {
            let _ = socket.emit(
                "paddock_error",
                &serde_json::json!({ "event": event, "reason": reason, "message": detail.to_string() }),
            );
        }
    }

    fn accepted(&self, event: &'static str) {
        self.metrics
            .events
            .get_or_create(&EventLabel { event })
            .inc();
    }

    /// Puts the socket in the session's room through the room's task, starting it
    /// (and its subscription) when this is the session's first dashboard.
    async fn join(self: &Arc<Self>, sid: Sid, id: SessionId) -> Result<(), &'static str> {
        // Subscribed before the lock is taken for the insert: a subscribe is a
        // round trip to the client's writer, not to the broker.
        if let Some(room) = self
            .rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return room.try_send(sid).map_err(|_| "busy");
        }
        let subscription = self
            .nats
            .subscribe(subjects::session_wildcard(&id))
            .await
            .map_err(|_| "no_processor")?;
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(room) = rooms.get(&id) {
            // Another socket started it meanwhile; this subscription is dropped.
            return room.try_send(sid).map_err(|_| "busy");
        }
        if rooms.len() >= self.config.max_rooms {
            return Err("too_many");
        }
        let (joins, queue) = mpsc::channel(ROOM_QUEUE);
        let _ = joins.try_send(sid);
        rooms.insert(id, joins);
        self.metrics.rooms.inc();
        tokio::spawn(Arc::clone(self).room(id, subscription, queue));
        Ok(())
    }

    /// One followed session: joins (snapshot first) and its live frames, to its
    /// room, until no dashboard is left in it.
    async fn room(
        self: Arc<Self>,
        id: SessionId,
        mut live: async_nats::Subscriber,
        mut joins: mpsc::Receiver<Sid>,
    ) {
        let name = id.to_string();
        let prefix = subjects::session_prefix(&id);
        let mut idle = tokio::time::interval(ROOM_IDLE_CHECK);
        idle.tick().await;
        loop {
            tokio::select! {
                Some(sid) = joins.recv() => {
                    self.snapshot_then_join(sid, &id, &name, &prefix, &mut live).await;
                }
                message = live.next() => match message {
                    Some(message) => self.forward(&name, &prefix, &message).await,
                    None => break,
                },
                _ = idle.tick() => {
                    let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
                    if joins.is_empty() && self.io.within(name.clone()).sockets().is_empty() {
                        rooms.remove(&id);
                        break;
                    }
                }
            }
        }
        self.rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        self.metrics.rooms.dec();
    }

    /// The gap-free join of docs/PROTOCOL.md: the room's subscription is in
    /// place, so the snapshot asked now holds every frame routed before it, and
    /// every later one reaches the socket through the room.
    ///
    /// Without a duplicate or a step back: a frame routed after the
    /// subscription and before the snapshot is both in the snapshot and on the
    /// subscription. Such frames are already in the subscription's buffer when
    /// the reply comes (the broker routed them to this connection before the
    /// processor answered, and one connection keeps its order), so they are
    /// taken now: the room gets them as always, and the new socket only those
    /// after its snapshot's own frame of their kind.
    async fn snapshot_then_join(
        &self,
        sid: Sid,
        id: &SessionId,
        room: &str,
        prefix: &str,
        live: &mut async_nats::Subscriber,
    ) {
        let snapshot = self.sessions.get(&id.to_string()).await;
        let arrived: Vec<async_nats::Message> = tokio::task::unconstrained(async {
            let mut arrived = Vec::new();
            while let Some(Some(message)) = live.next().now_or_never() {
                arrived.push(message);
            }
            arrived
        })
        .await;
        // Each read once: the room's event, kept for the new socket too.
        let updates: Vec<Option<Update>> = arrived
            .iter()
            .map(|message| self.update(room, prefix, message))
            .collect();
        for update in updates.iter().flatten() {
            self.to_room(room, update).await;
        }
        let Some(socket) = self.io.get_socket(sid) else {
            return;
        };
        // Per kind, how many of `arrived` the snapshot already holds.
        let mut held = [(DataKind::Setup, 0), (DataKind::Telemetry, 0)];
        match snapshot {
            Ok(document) => {
                let session_id = room;
                if let Some(setup) = &document.setup {
                    let _ = socket.emit(
                        "setup_update",
                        &serde_json::json!({
                            "session_id": session_id,
                            "timestamp": document.setup_timestamp.as_ref().map(doc_time::format),
                            "setup": setup,
                        }),
                    );
                }
                if let Some(telemetry) = &document.telemetry {
                    let _ = socket.emit(
                        "telemetry_update",
                        &serde_json::json!({ "session_id": session_id, "telemetry": telemetry }),
                    );
                }
                for (kind, upto) in &mut held {
                    let stored = match kind {
                        DataKind::Setup => document.setup.as_ref(),
                        DataKind::Telemetry => document.telemetry.as_ref(),
                        DataKind::Field => None,
                    };
                    if let Some(stored) = stored
                        && let Some(at) = arrived.iter().zip(&updates).rposition(|(m, u)| {
                            u.as_ref().is_some_and(|u| u.kind() == *kind)
                                && serde_json::from_slice::<Value>(&m.payload).ok().as_ref()
                                    == Some(stored)
                        })
                    {
                        *upto = at + 1;
                    }
                }
            }
            // Not there yet: the origin's page may open before its monitor's
            // first frame creates the session. It is joined all the same.
            Err(ClientError::Service { code: 404, .. }) => {}
            Err(e) => self.refuse(sid, "no_processor", "join_session", &e),
        }
        for (at, update) in updates.iter().enumerate() {
            if let Some(update) = update
                && held
                    .iter()
                    .any(|(kind, upto)| update.kind() == *kind && at >= *upto)
            {
                let _ = update.emit_to(&socket);
            }
        }
        socket.join(room.to_string());
    }

    /// A message of the followed session, to the room as the origin's event.
    async fn forward(&self, room: &str, prefix: &str, message: &async_nats::Message) {
        if let Some(update) = self.update(room, prefix, message) {
            self.to_room(room, &update).await;
        }
    }

    /// An event to every socket in the room.
    async fn to_room(&self, room: &str, update: &Update<'_>) {
        let to = self.io.to(room.to_string());
        let sent = match update {
            Update::Telemetry(update) => to.emit("telemetry_update", update).await,
            Update::Setup(update) => to.emit("setup_update", update).await,
        };
        if sent.is_err() {
            self.metrics.dropped.inc();
        }
    }

    /// The origin's event for a message of the followed session: only setups
    /// and telemetry, and only JSON objects (straight from the broker, so
    /// possibly what the processor then refuses).
    fn update<'a>(
        &self,
        room: &'a str,
        prefix: &str,
        message: &'a async_nats::Message,
    ) -> Option<Update<'a>> {
        let kind = message
            .subject
            .strip_prefix(prefix)
            .and_then(subjects::session_message);
        // The Race Dashboard's pages know setup and telemetry; the field is
        // paddock's own (its Timing view).
        let Some(SessionMessage::Data(kind @ (DataKind::Telemetry | DataKind::Setup))) = kind
        else {
            return None;
        };
        let frame = serde_json::from_slice::<&RawValue>(&message.payload).ok()?;
        if !frame.get().starts_with('{') {
            return None;
        }
        Some(match kind {
            DataKind::Telemetry => Update::Telemetry(TelemetryUpdate {
                session_id: room,
                telemetry: frame,
            }),
            DataKind::Setup => Update::Setup(SetupUpdate {
                session_id: room,
                timestamp: doc_time::format(&chrono::Utc::now()),
                setup: frame,
            }),
            DataKind::Field => return None,
        })
    }
}

/// One event for the origin's pages.
enum Update<'a> {
    Telemetry(TelemetryUpdate<'a>),
    Setup(SetupUpdate<'a>),
}

impl Update<'_> {
    fn kind(&self) -> DataKind {
        match self {
            Update::Telemetry(_) => DataKind::Telemetry,
            Update::Setup(_) => DataKind::Setup,
        }
    }

    fn emit_to(&self, socket: &SocketRef) -> Result<(), impl std::fmt::Debug> {
        match self {
            Update::Telemetry(update) => socket.emit("telemetry_update", update),
            Update::Setup(update) => socket.emit("setup_update", update),
        }
    }
}

#[derive(Serialize)]
struct TelemetryUpdate<'a> {
    session_id: &'a str,
    telemetry: &'a RawValue,
}

#[derive(Serialize)]
struct SetupUpdate<'a> {
    session_id: &'a str,
    timestamp: String,
    setup: &'a RawValue,
}

/// One socket's events, handled in order by one task.
struct Connection {
    gateway: Arc<Gateway>,
    sid: Sid,
    creates: TokenBucket,
}

/// What the origin's monitor and page send, with the id still unchecked.
#[derive(Deserialize)]
struct Envelope {
    session_id: Option<Value>,
    #[serde(default)]
    telemetry: Option<Value>,
    #[serde(default)]
    setup: Option<Value>,
}

impl Connection {
    async fn run(mut self, mut queue: mpsc::Receiver<Bytes>) {
        while let Some(text) = queue.recv().await {
            self.gateway.queued.fetch_sub(text.len(), Relaxed);
            self.handle(&text).await;
        }
    }

    async fn handle(&mut self, text: &[u8]) {
        let (gateway, sid) = (Arc::clone(&self.gateway), self.sid);
        let refuse = |reason, event: &str, detail: &dyn std::fmt::Display| {
            gateway.refuse(sid, reason, event, detail)
        };
        let text = String::from_utf8_lossy(text);
        let text = origin::finite_json(&text);
        let Ok(mut packet) = serde_json::from_str::<Vec<Value>>(&text) else {
            return refuse("bad_json", "", &"the event's data is not JSON");
        };
        let event = match packet.first() {
            Some(Value::String(event)) => event.clone(),
            _ => return refuse("bad_json", "", &"no event name"),
        };
        let data = if packet.len() > 1 {
            packet.swap_remove(1)
        } else {
            Value::Null
        };
        match event.as_str() {
            "request_session_id" => self.create(data).await,
            "telemetry_update" => self.telemetry(data).await,
            "setup_data" => self.setup(data).await,
            "join_session" => self.join(data).await,
            _ => refuse(
                "unknown_event",
                &event,
                &"not an event of the Race Dashboard's",
            ),
        }
    }

    /// The session id of an event's data, checked.
    fn envelope(&self, event: &str, data: Value) -> Option<(SessionId, Envelope)> {
        let refuse = |reason, detail: &dyn std::fmt::Display| {
            self.gateway.refuse(self.sid, reason, event, detail)
        };
        if !data.is_object() {
            refuse("not_object", &"the event's data is not an object");
            return None;
        }
        let Ok(envelope) = serde_json::from_value::<Envelope>(data) else {
            refuse("not_object", &"the event's data is not an object");
            return None;
        };
        let id = match &envelope.session_id {
            Some(Value::String(id)) => SessionId::parse(id),
            _ => {
                refuse("malformed_id", &"no session_id string");
                return None;
            }
        };
        match id {
            Ok(id) => Some((id, envelope)),
            Err(e) => {
                refuse("malformed_id", &e);
                None
            }
        }
    }

    /// A new session; its `team` and `car` when the data names them (the
    /// origin's monitor sends `{}`).
    async fn create(&mut self, data: Value) {
        const EVENT: &str = "request_session_id";
        let label: crate::protocol::documents::Label =
            serde_json::from_value(data).unwrap_or_default();
        let gateway = &self.gateway;
        if let Err(wait) = self.creates.take(Instant::now()) {
            let detail = format!(
                "too many sessions asked for; try again in {}s",
                wait.as_secs() + 1
            );
            return gateway.refuse(self.sid, "rate_limited", EVENT, &detail);
        }
        match gateway.sessions.create_labelled(&label).await {
            Ok(document) => {
                gateway.accepted(EVENT);
                if let Some(socket) = gateway.io.get_socket(self.sid) {
                    let assigned = serde_json::json!({ "session_id": document.session_id });
                    let _ = socket.emit("session_id_assigned", &assigned);
                }
            }
            Err(e) => gateway.refuse(self.sid, refusal_reason(&e), EVENT, &e),
        }
    }

    async fn telemetry(&mut self, data: Value) {
        const EVENT: &str = "telemetry_update";
        let Some((id, envelope)) = self.envelope(EVENT, data) else {
            return;
        };
        let Some(Value::Object(mut frame)) = envelope.telemetry else {
            return self.gateway.refuse(
                self.sid,
                "not_object",
                EVENT,
                &"telemetry is not an object",
            );
        };
        origin::to_schema(&mut frame);
        let Some(body) = self.sized(EVENT, &frame) else {
            return;
        };
        let subject = subjects::data(&id, DataKind::Telemetry);
        match self.gateway.nats.publish(subject, body).await {
            Ok(()) => self.gateway.accepted(EVENT),
            Err(e) => self.gateway.refuse(self.sid, "no_processor", EVENT, &e),
        }
    }

    async fn setup(&mut self, data: Value) {
        const EVENT: &str = "setup_data";
        let Some((id, envelope)) = self.envelope(EVENT, data) else {
            return;
        };
        let Some(Value::Object(setup)) = envelope.setup else {
            return self
                .gateway
                .refuse(self.sid, "not_object", EVENT, &"setup is not an object");
        };
        let Some(body) = self.sized(EVENT, &setup) else {
            return;
        };
        let subject = subjects::data(&id, DataKind::Setup);
        match self
            .gateway
            .sessions
            .request_as::<Value>(subject, body)
            .await
        {
            Ok(_) => self.gateway.accepted(EVENT),
            Err(e) => self.gateway.refuse(self.sid, refusal_reason(&e), EVENT, &e),
        }
    }

    async fn join(&mut self, data: Value) {
        const EVENT: &str = "join_session";
        let Some((id, _)) = self.envelope(EVENT, data) else {
            return;
        };
        match self.gateway.join(self.sid, id).await {
            Ok(()) => self.gateway.accepted(EVENT),
            Err(reason) => {
                self.gateway
                    .refuse(self.sid, reason, EVENT, &"cannot follow this session now")
            }
        }
    }

    /// The frame as JSON, within `--max-payload`.
    fn sized(&self, event: &str, frame: &Map<String, Value>) -> Option<Bytes> {
        let body = serde_json::to_vec(frame).ok()?;
        if body.len() > self.gateway.config.max_payload {
            let detail = format!(
                "{} bytes, larger than this paddock's --max-payload {}",
                body.len(),
                self.gateway.config.max_payload
            );
            self.gateway.refuse(self.sid, "too_large", event, &detail);
            return None;
        }
        Some(Bytes::from(body))
    }
}

/// A processor's answer, as a rejection reason.
fn refusal_reason(e: &ClientError) -> &'static str {
    match e {
        ClientError::Service { code: 429, .. } => "rate_limited",
        ClientError::Service { code: 413, .. } => "too_large",
        ClientError::Service { .. } | ClientError::Refused(_) => "refused",
        _ => "no_processor",
    }
}

/// An event's text as it arrived (`["<event>", <data>…]`), before any parsing:
/// Python's `json` writes `NaN`, which serde would refuse, so the gateway reads
/// it itself ([`origin::finite_json`]).
struct Packet(Bytes);

impl<A: Adapter> FromMessageParts<A> for Packet {
    type Error = std::convert::Infallible;
    fn from_message_parts(
        _: &Arc<socketioxide::socket::Socket<A>>,
        value: &mut socketioxide::handler::Value,
        _: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        Ok(Packet(match value {
            socketioxide::handler::Value::Str(text, _) => Bytes::copy_from_slice(text.as_bytes()),
            // Binary attachments: not what the origin sends; refused as bad JSON.
            socketioxide::handler::Value::Bytes(_) => Bytes::new(),
        }))
    }
}
