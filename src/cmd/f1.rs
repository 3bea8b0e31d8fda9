//! `paddock monitor --source f1`: EA F1 24/25's UDP telemetry as a session.
//!
//! The game sends its packets to one address and port (its telemetry
//! settings); this binds there, feeds every datagram to the pure decoder
//! (src/sources/f1.rs) and sends the player's car as frames at most `--hz` a
//! second — the latest state, so a burst of packets is one frame, and nothing
//! read is older than 1/hz when it leaves. The setup goes as a request when it
//! changes. Packets that are not F1 24/25, are cut short or name no car are
//! counted on the progress line and otherwise ignored. A session deleted or
//! expired under it stops it, as it stops `paddock monitor` (cmd/endings.rs).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::connection::State;
use serde_json::Value;

use super::attach::{Attached, attach};
use super::datagrams::Sends;
use super::monitoring::{FieldSends, MonitorArgs, after, announce, create_session, send_setup_of};
use crate::protocol::id::SessionId;
use crate::protocol::subjects::{self, DataKind};
use crate::sources::f1::Decoder;

/// The largest datagram read: F1's largest packet is 1,460 bytes; anything
/// longer is not F1 (and is counted as malformed, from its first bytes).
const DATAGRAM: usize = 2048;

pub(super) async fn run(
    args: &MonitorArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let listen = args.listen_on(20777);
    let socket = tokio::net::UdpSocket::bind(listen)
        .await
        .with_context(|| format!("cannot listen for F1 telemetry on {listen}"))?;
    let listening = socket.local_addr()?;
    let mut shutdown = std::pin::pin!(shutdown);
    let Some(Attached {
        nats,
        mut links,
        mut renewal,
        client,
        dashboard,
        label,
        checks,
        mut endings,
        mut check_at,
        mut id,
    }) = attach(args, &mut shutdown).await?
    else {
        return Ok(());
    };
    let mut subject = subjects::data(&SessionId::parse(&id)?, DataKind::Telemetry);
    let mut field_subject = subjects::data(&SessionId::parse(&id)?, DataKind::Field);
    say!(
        "monitor: listening for F1 24/25 telemetry on udp {listening}; set the game's UDP \
         telemetry to this machine's address, port {}, format 2024 or 2025",
        listening.port()
    );

    let mut decoder = Decoder::new();
    let mut buffer = vec![0u8; DATAGRAM];
    let mut dirty = false;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.hz));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut until_deadline = std::pin::pin!(after(args.duration));
    let mut sends = Sends::default();
    // Every car, at a rate of its own: it changes slower than the player's car.
    let mut field_ticker = FieldSends::ticker(args.field_hz);
    let mut fields = FieldSends::default();
    let mut reported = Instant::now();
    let started = Instant::now();
    // Setups go one at a time off the packet loop (a slow answer must not leave
    // datagrams in the socket's buffer), and only the latest: changes made
    // while one is on its way replace each other rather than queue or drop.
    let (setups, mut setup_rx) = tokio::sync::watch::channel::<Option<(String, Value)>>(None);
    let setup_client = client.clone();
    let setup_task = tokio::spawn(async move {
        // Also true once the loop has gone, for a last change not yet sent.
        while setup_rx.changed().await.is_ok() {
            let latest = setup_rx.borrow_and_update().clone();
            if let Some((id, setup)) = latest
                && let Err(e) = send_setup_of(&setup_client, &id, &setup).await
            {
                say!("monitor: {e:#}");
            }
        }
    });
    let progress = |decoder: &Decoder, Sends { sent, skipped }: Sends, fields: FieldSends| {
        let c = decoder.counts();
        say!(
            "monitor: f1 {}: {} packets read, {} not used (motion, events and other ids \
             paddock does not read), {} rejected ({} not F1 24/25, {} malformed or of unknown \
             ids); {} frames sent, {} skipped while disconnected; {} fields sent, {} not \
             valid",
            decoder
                .format()
                .map_or("(no packets yet)".to_string(), |f| f.year().to_string()),
            c.read,
            c.ignored,
            c.rejected(),
            c.other_format,
            c.malformed,
            sent,
            skipped,
            fields.sent,
            fields.refused
        );
    };

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut until_deadline => break,
            e = endings.of_session(&id, &mut renewal) => return Err(e),
            Some(_) = links.recv() => {
                // A link back: the processor may have lost the setup meanwhile.
                if nats.connection_state() == State::Connected
                    && let Some(setup) = decoder.setup()
                {
                    setups.send_replace(Some((id.clone(), setup.clone())));
                }
            }
            received = socket.recv_from(&mut buffer) => {
                let (len, _) = match received {
                    Ok(got) => got,
                    // Windows reports an earlier send's ICMP refusal here; the
                    // socket is still good.
                    Err(e) => {
                        tracing::debug!(error = %e, "udp receive");
                        continue;
                    }
                };
                let outcome = decoder.read(&buffer[..len]);
                if outcome.new_session {
                    if args.new_session_per_race && args.session.is_none() {
                        id = create_session(&client, &label).await?;
                        subject = subjects::data(&SessionId::parse(&id)?, DataKind::Telemetry);
                        field_subject = subjects::data(&SessionId::parse(&id)?, DataKind::Field);
                        say!("monitor: the game started another session; a new paddock session:");
                        announce(args, dashboard.as_deref(), &id)?;
                    } else {
                        say!(
                            "monitor: the game started another session (uid {}); its frames go on \
                             in session {id} (--new-session-per-race starts a new one)",
                            decoder.session_uid().unwrap_or(0)
                        );
                    }
                }
                if outcome.setup && let Some(setup) = decoder.setup() {
                    setups.send_replace(Some((id.clone(), setup.clone())));
                }
                dirty |= outcome.frame;
                fields.changed(outcome.field);
            }
            _ = field_ticker.tick() => {
                fields.tick(&nats, &field_subject, || decoder.field()).await?;
            }
            _ = ticker.tick() => {
                if dirty && let Some(frame) = decoder.frame() {
                    dirty = false;
                    sends.latest(&nats, &checks, &mut check_at, &id, &subject, frame).await?;
                }
                if !args.progress.is_zero() && reported.elapsed() >= args.progress {
                    progress(&decoder, sends, fields);
                    reported = Instant::now();
                }
            }
        }
    }
    // The latest state read goes out, however recently the last frame went.
    if dirty && let Some(frame) = decoder.frame() {
        sends.last(&nats, &subject, frame).await?;
    }
    fields
        .tick(&nats, &field_subject, || decoder.field())
        .await?;
    drop(setups);
    let _ = tokio::time::timeout(Duration::from_secs(5), setup_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), nats.flush()).await;
    progress(&decoder, sends, fields);
    say!(
        "monitor: stopped after {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
