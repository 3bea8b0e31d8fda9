//! The processor's HTTP side (`paddock serve --http-addr`): the race engineer's
//! dashboard page and the ops endpoints.
//!
//! The page is static: HTML, CSS and JavaScript embedded in the binary
//! ([`assets`]), plus `/config.json` telling it where the broker's WebSocket
//! listener is. It talks to NATS itself (the official JavaScript client over
//! WebSocket), with the same subjects and the same join as `paddock watch`, so
//! the processor's HTTP side carries no session data and no credentials: a
//! per-session link keeps its credentials in the URL fragment, which browsers
//! never send to the server.
//!
//! - `/`, `/session/<id>`, `/team/<team>`: the page (listing, one session, or
//!   one team's cars by position); `/dashboard/<id>`
//!   (the Race Dashboard's links) redirects to `/session/<id>`.
//! - `/socket.io/`: the Race Dashboard's Socket.IO protocol ([`crate::gateway`]).
//! - `/config.json`: the broker's WebSocket URL and the stale threshold.
//! - `/assets/<file>`: the page's scripts, styles and icon (also at `/favicon.ico`).
//! - `POST /export/motec`: a recorded lap the page read, as MoTeC i2 files
//!   ([`export`]: a conversion only; it reads no session).
//! - `/healthz`: the process answers. `/readyz`: it serves (503 with the reason
//!   otherwise). `/metrics`: Prometheus text format ([`metrics`]).

pub mod assets;
pub mod export;
pub mod metrics;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use socketioxide::layer::SocketIoLayer;

use crate::gateway::GatewayMetrics;
use crate::protocol::id::SessionId;
use crate::server::health::Health;

/// What the page needs to know, from `serve`'s flags.
#[derive(Clone)]
pub struct WebConfig {
    /// The broker's WebSocket listener as the browser reaches it (`ws://` or
    /// `wss://`); without it the page says it cannot connect.
    pub ws_url: Option<String>,
    /// How long without a frame before the page shows STALE (a link may override
    /// it with `?stale=<seconds>`).
    pub stale_after: Duration,
    /// The Socket.IO gateway at `/socket.io/` ([`crate::gateway`]), when served.
    pub gateway: Option<(SocketIoLayer, Arc<GatewayMetrics>)>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            ws_url: None,
            stale_after: Duration::from_secs(5),
            gateway: None,
        }
    }
}

struct Shared {
    config: WebConfig,
    health: Arc<Health>,
    metrics: metrics::Exporter,
    /// The Content-Security-Policy of the page: its own scripts and styles, and
    /// connections to itself and the broker's WebSocket only.
    csp: HeaderValue,
}

/// The routes, ready for `axum::serve`.
pub fn router(config: WebConfig, health: Arc<Health>) -> Router {
    let csp = content_security_policy(config.ws_url.as_deref());
    let gateway = config.gateway.clone();
    let shared = Arc::new(Shared {
        metrics: metrics::Exporter::new(
            Arc::clone(&health),
            gateway.as_ref().map(|(_, m)| Arc::clone(m)),
        ),
        config,
        health,
        csp,
    });
    let router = Router::new()
        .route("/", get(page))
        .route("/session/{id}", get(session_page))
        .route("/dashboard/{id}", get(origin_link))
        .route("/team/{team}", get(team_page))
        .route("/config.json", get(config_json))
        .route("/assets/{file}", get(asset))
        .route(
            "/export/motec",
            axum::routing::post(export::motec)
                .layer(axum::extract::DefaultBodyLimit::max(export::MAX_BODY_BYTES)),
        )
        .route("/favicon.ico", get(|| asset(Path("icon.svg".to_string()))))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(shared);
    match gateway {
        Some((layer, _)) => router.layer(layer),
        None => router,
    }
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: WebConfig,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // TCP_NODELAY on every accepted socket: axum does not set it, and without it
    // Nagle's algorithm holds small writes (a Socket.IO frame, an ack) until the
    // peer's delayed ACK, ~40 ms stalls on a latency-bound stream.
    let listener = listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted socket");
        }
    });
    axum::serve(listener, router(config, health))
        .with_graceful_shutdown(shutdown)
        .await
}

/// `connect-src` names the broker's WebSocket origin exactly; everything else the
/// page loads comes from this server. No inline script or style is allowed, so
/// even a value that slipped into the DOM as markup could not run.
fn content_security_policy(ws_url: Option<&str>) -> HeaderValue {
    let ws = ws_url.map(ws_origin).unwrap_or_default();
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' {ws}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(policy.trim()).unwrap_or(HeaderValue::from_static("default-src 'none'"))
}

/// `ws://host:port/path` → `ws://host:port` (CSP sources take origins).
fn ws_origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("ws", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Only characters a CSP source may hold: a URL from a flag must not add
    // directives of its own.
    let safe = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c))
    };
    if matches!(scheme, "ws" | "wss") && safe(host) {
        format!("{scheme}://{host}")
    } else {
        String::new()
    }
}

async fn page(State(shared): State<Arc<Shared>>) -> Response {
    html(&shared, assets::INDEX_HTML)
}

async fn session_page(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match SessionId::parse(&id) {
        Ok(_) => html(&shared, assets::INDEX_HTML),
        Err(e) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
    }
}

/// A team's tower: the page, for a team name that could be a label.
async fn team_page(State(shared): State<Arc<Shared>>, Path(team): Path<String>) -> Response {
    let label = crate::protocol::documents::Label {
        team: Some(team),
        car: None,
    };
    match label.check() {
        Ok(()) => html(&shared, assets::INDEX_HTML),
        Err(e) => (StatusCode::NOT_FOUND, format!("no such team: {e}\n")).into_response(),
    }
}

/// The Race Dashboard's links (`/dashboard/<id>`, what its monitor prints) open
/// the session's page.
async fn origin_link(Path(id): Path<String>) -> Response {
    match SessionId::parse(&id) {
        Ok(id) => axum::response::Redirect::to(&format!("/session/{id}")).into_response(),
        Err(e) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
    }
}

fn html(shared: &Shared, body: &'static str) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, shared.csp.clone()),
            // The path names a session; no need to tell other sites.
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn config_json(State(shared): State<Arc<Shared>>) -> Response {
    let body = serde_json::json!({
        "ws_url": shared.config.ws_url,
        "stale_after_s": shared.config.stale_after.as_secs_f64(),
    });
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body.to_string(),
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    match assets::get(&file) {
        Some((content_type, body)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                // Revalidated on each load, so a new binary's page is never mixed
                // with an old script.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    match shared.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    match shared.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's end of a connection has TCP_NODELAY: found among this
    /// process's sockets by its peer (the test's client) and asked with
    /// getsockopt(2).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_sockets_have_tcp_nodelay() {
        use std::os::fd::AsRawFd;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            WebConfig::default(),
            Arc::new(Health::default()),
            async {
                let _ = stopped.await;
            },
        ));
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 12];
        client.read_exact(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"));
        let client_addr = client.local_addr().unwrap();
        let peer_of = |fd: i32| -> Option<std::net::SocketAddr> {
            let mut storage: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // SAFETY: getpeername(2) writes at most `len` bytes into `storage`.
            let got = unsafe { libc::getpeername(fd, (&raw mut storage).cast(), &raw mut len) };
            (got == 0 && i32::from(storage.sin_family) == libc::AF_INET).then(|| {
                std::net::SocketAddr::from((
                    u32::from_be(storage.sin_addr.s_addr).to_be_bytes(),
                    u16::from_be(storage.sin_port),
                ))
            })
        };
        let nodelay_of = |fd: i32| -> i32 {
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt(2) writes one c_int into `value`.
            unsafe {
                libc::getsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&raw mut value).cast(),
                    &raw mut len,
                );
            }
            value
        };
        let accepted: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&fd| fd != client.as_raw_fd() && peer_of(fd) == Some(client_addr))
            .collect();
        assert_eq!(accepted.len(), 1, "the server's end of the connection");
        assert_eq!(
            nodelay_of(accepted[0]),
            1,
            "TCP_NODELAY on the accepted socket"
        );
        let _ = stop.send(());
        drop(client);
        server.await.unwrap().unwrap();
    }

    #[test]
    fn the_policy_names_the_broker_origin_and_nothing_a_flag_could_smuggle() {
        assert_eq!(ws_origin("ws://127.0.0.1:8080"), "ws://127.0.0.1:8080");
        assert_eq!(
            ws_origin("wss://nats.example.com/ws?x=1"),
            "wss://nats.example.com"
        );
        assert_eq!(ws_origin("ws://a; script-src *"), "");
        assert_eq!(ws_origin("http://example.com"), "");
        let csp = content_security_policy(Some("ws://localhost:8080"));
        let csp = csp.to_str().unwrap();
        assert!(
            csp.contains("connect-src 'self' ws://localhost:8080;"),
            "{csp}"
        );
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
    }
}
