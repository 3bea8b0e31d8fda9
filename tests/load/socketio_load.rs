//! Socket.IO publish → receive latency, and a server's ceiling, with a load
//! that costs little itself (docs/BENCHMARKS.md, "Socket.IO: the gateway beside
//! the origin"). The Python generator beside it (`socketio_load.py`) is the
//! origin's own client library, but at 4,000 frames/s it takes more of a
//! 2-core machine than the servers it measures; this one takes a fraction.
//!
//! ```text
//! cargo run --release --example socketio_load -- --url http://127.0.0.1:8099 \
//!     --monitors 40 --hz 100 --seconds 15
//! ```
//!
//! It speaks what the origin's monitor and page speak, to either server:
//! `request_session_id` → `session_id_assigned`, `join_session`, and
//! `telemetry_update {session_id, telemetry}` from each monitor to the page
//! that joined its session. M monitors send at R Hz each, phases staggered;
//! each frame carries `seq`, `sent_ns` (since the generator's start: sender and
//! receiver are one process) and `w` (1 inside the measured window). Engine.IO
//! v4 over WebSocket, by hand: `0{…}` open, `40` connect, `2`/`3` ping/pong,
//! `42[…]` events. Frames are text built from a template and read back by
//! searching for the generator's own fields, not parsed: the generator's cost
//! per frame stays a few microseconds.
//!
//! One JSON line on stdout: offered and delivered rates, frames lost, latency
//! percentiles (ms) and the generator's own CPU.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// The server's HTTP address (the origin's, or `paddock serve --http-addr`).
    #[arg(long, default_value = "http://127.0.0.1:8099")]
    url: String,
    /// paddock's `--gateway-token`, sent as `?token=…`.
    #[arg(long)]
    token: Option<String>,
    #[arg(long, default_value_t = 40)]
    monitors: usize,
    /// Pages following each monitor's session.
    #[arg(long, default_value_t = 1)]
    pages: usize,
    /// Frames per second per monitor.
    #[arg(long, default_value_t = 100.0)]
    hz: f64,
    /// Measured seconds, after the warm-up.
    #[arg(long, default_value_t = 15.0)]
    seconds: f64,
    /// Seconds sent but not measured.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Seconds to wait for frames still in flight.
    #[arg(long, default_value_t = 3.0)]
    drain: f64,
    /// Bytes of each `42["telemetry_update",…]` packet (padded).
    #[arg(long, default_value_t = 800)]
    frame_bytes: usize,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A connected Socket.IO client: a writer task fed by `out`, and the text
/// packets received (pings already answered).
struct Client {
    out: mpsc::UnboundedSender<String>,
    packets: mpsc::UnboundedReceiver<String>,
}

async fn connect(args: &Args) -> anyhow::Result<Client> {
    let mut url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        args.url.replacen("http", "ws", 1).trim_end_matches('/')
    );
    if let Some(token) = &args.token {
        url.push_str("&token=");
        url.push_str(token);
    }
    let (ws, _) = tokio_tungstenite::connect_async(&url).await?;
    set_nodelay(&ws);
    let (mut sink, mut stream) = ws.split();
    let (out, mut outgoing) = mpsc::unbounded_channel::<String>();
    let (deliver, packets) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(text) = outgoing.recv().await {
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
    });
    let pong = out.clone();
    tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            if text.as_str() == "2" {
                let _ = pong.send("3".into());
            } else if deliver.send(text.as_str().to_owned()).is_err() {
                break;
            }
        }
    });
    let mut client = Client { out, packets };
    client.expect("0").await?;
    client.out.send("40".into())?;
    client.expect("40").await?;
    Ok(client)
}

/// The origin's clients set no socket options of their own, but
/// websocket-client (python-socketio's) sets TCP_NODELAY; so does this one.
fn set_nodelay(ws: &Ws) {
    if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_ref() {
        let _ = tcp.set_nodelay(true);
    }
}

impl Client {
    /// The next packet starting with `prefix`, within 10 s.
    async fn expect(&mut self, prefix: &str) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.packets.recv()).await {
                Ok(Some(packet)) if packet.starts_with(prefix) => return Ok(packet),
                Ok(Some(_)) => continue,
                Ok(None) => anyhow::bail!("the connection closed waiting for {prefix}"),
                Err(_) => anyhow::bail!("no {prefix} within 10 s"),
            }
        }
    }
}

/// The number after `"key":` in a packet's text.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    text[at..at + digits].parse().ok()
}

/// What one dashboard saw.
#[derive(Default)]
struct Seen {
    latencies_ns: Vec<u64>,
    received_all: u64,
    duplicates: u64,
}

/// The frame body after the generator's own fields: the origin monitor's LMU
/// frame (tests/data), padded to `--frame-bytes` per packet.
fn template(args: &Args) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/origin-telemetry-lmu.json"
    );
    let loaded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("tests/data holds the frame"))
            .expect("the frame is JSON");
    let telemetry = loaded.get("telemetry").cloned().unwrap_or(loaded);
    let body = serde_json::to_string(&telemetry).expect("a frame serialises");
    let rest = &body[1..body.len() - 1];
    let sample = packet(
        "3f2b8c1e-9a4d-4e7b-8c61-2d5f0a9b7e13",
        1_000_000_000,
        1_000_000_000_000_000,
        1,
        rest,
    );
    let pad = args
        .frame_bytes
        .saturating_sub(sample.len() + r#","pad":"""#.len());
    if pad > 0 {
        format!("{rest},\"pad\":\"{}\"", "x".repeat(pad))
    } else {
        rest.to_owned()
    }
}

fn packet(session: &str, seq: u64, sent_ns: u64, w: u8, rest: &str) -> String {
    format!(
        r#"42["telemetry_update",{{"session_id":"{session}","telemetry":{{"seq":{seq},"sent_ns":{sent_ns},"w":{w},{rest}}}}}]"#
    )
}

/// The generator's own CPU time (user + system), where the OS tells it.
#[cfg(unix)]
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[cfg(not(unix))]
fn cpu_seconds() -> f64 {
    0.0
}

fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let k = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[k] as f64 / 1e6)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = Instant::now();
    let rest = Arc::new(template(&args));
    // Connect every pair first: a monitor, its session, the page that follows it.
    let mut pairs = Vec::with_capacity(args.monitors);
    for _ in 0..args.monitors {
        let mut monitor = connect(&args).await?;
        monitor.out.send(r#"42["request_session_id",{}]"#.into())?;
        let assigned = monitor.expect(r#"42["session_id_assigned""#).await?;
        let session = assigned
            .split('"')
            .skip_while(|s| *s != "session_id")
            .nth(2)
            .ok_or_else(|| anyhow::anyhow!("no session_id in {assigned}"))?
            .to_owned();
        let mut pages = Vec::with_capacity(args.pages);
        for _ in 0..args.pages {
            let page = connect(&args).await?;
            page.out.send(format!(
                r#"42["join_session",{{"session_id":"{session}"}}]"#
            ))?;
            pages.push(page);
        }
        pairs.push((monitor, pages, session));
    }
    let period = Duration::from_secs_f64(1.0 / args.hz);
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let window_start = start + Duration::from_secs_f64(args.warmup);
    let window_end = window_start + Duration::from_secs_f64(args.seconds);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let cpu0 = cpu_seconds();
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    let count = pairs.len();
    for (k, (monitor, pages, session)) in pairs.into_iter().enumerate() {
        let rest = Arc::clone(&rest);
        let phase = period.mul_f64(k as f64 / count as f64);
        senders.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(start + phase, period);
            let (mut seq, mut sent) = (0u64, 0u64);
            loop {
                let due = tick.tick().await;
                if due >= window_end {
                    break;
                }
                let w = u8::from(due >= window_start);
                let now = base.elapsed().as_nanos() as u64;
                if monitor
                    .out
                    .send(packet(&session, seq, now, w, &rest))
                    .is_err()
                {
                    break;
                }
                sent += u64::from(w);
                seq += 1;
            }
            (sent, monitor)
        }));
        for mut page in pages {
            let mut stopped = stopped.clone();
            readers.push(tokio::spawn(async move {
                let mut seen = Seen::default();
                let mut last_seq = None;
                loop {
                    let text = tokio::select! {
                        biased;
                        text = page.packets.recv() => match text {
                            Some(text) => text,
                            None => break,
                        },
                        _ = stopped.changed() => break,
                    };
                    let now = base.elapsed().as_nanos() as u64;
                    if !text.starts_with(r#"42["telemetry_update""#) {
                        continue;
                    }
                    seen.received_all += 1;
                    let (Some(seq), Some(sent_ns)) = (
                        number_after(&text, r#""seq":"#),
                        number_after(&text, r#""sent_ns":"#),
                    ) else {
                        continue;
                    };
                    // One monitor's frames arrive in order: a repeat is a duplicate.
                    if last_seq.is_some_and(|last| seq <= last) {
                        seen.duplicates += 1;
                        continue;
                    }
                    last_seq = Some(seq);
                    if number_after(&text, r#""w":"#) == Some(1) {
                        seen.latencies_ns.push(now.saturating_sub(sent_ns));
                    }
                }
                seen
            }));
        }
    }
    let mut offered = 0;
    let mut monitors = Vec::new();
    for sender in senders {
        let (sent, monitor) = sender.await?;
        offered += sent;
        monitors.push(monitor);
    }
    let sending_s = (tokio::time::Instant::now() - start).as_secs_f64();
    let cpu_sending = cpu_seconds() - cpu0;
    tokio::time::sleep(Duration::from_secs_f64(args.drain)).await;
    stop.send_replace(true);
    let (mut latencies, mut received_all, mut duplicates) = (Vec::new(), 0, 0);
    for reader in readers {
        let seen = reader.await?;
        latencies.extend(seen.latencies_ns);
        received_all += seen.received_all;
        duplicates += seen.duplicates;
    }
    drop(monitors);
    latencies.sort_unstable();
    let delivered = latencies.len() as u64;
    let expected = offered * args.pages as u64;
    let ms = |p| percentile(&latencies, p);
    println!(
        "{}",
        serde_json::json!({
            "monitors": args.monitors,
            "pages_per_monitor": args.pages,
            "hz": args.hz,
            "offered_per_s": args.monitors as f64 * args.hz,
            "delivered_per_s": args.monitors as f64 * args.hz * args.pages as f64,
            "frame_bytes": args.frame_bytes,
            "sent": offered,
            "delivered": delivered,
            "expected": expected,
            "lost": expected.saturating_sub(delivered),
            "duplicates": duplicates,
            "received_all": received_all,
            "p50_ms": ms(50.0),
            "p90_ms": ms(90.0),
            "p99_ms": ms(99.0),
            "p999_ms": ms(99.9),
            "max_ms": latencies.last().map(|&ns| ns as f64 / 1e6),
            "generator_cpu_percent": 100.0 * cpu_sending / sending_s,
        })
    );
    Ok(())
}
