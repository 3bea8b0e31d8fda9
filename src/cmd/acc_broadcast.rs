//! `paddock monitor --source acc-broadcast`: Assetto Corsa Competizione's
//! broadcasting API as a session: every car on track as the field, the
//! focused car (the player's, unless the game's camera follows another) as
//! frames.
//!
//! Unlike the games that send to a port of ours, ACC answers whoever
//! registers: this sends the registration to `--acc-host` from a socket of
//! its own, then asks for the entry list and the track, and feeds every
//! datagram to the pure decoder (src/sources/acc_broadcast.rs). A car the
//! entry list does not know asks for the list again (at most once a second).
//! When the game goes quiet for [`SILENCE`] (it restarted, or the session
//! changed server) the monitor registers again every [`SILENCE`] until it
//! answers; a refusal (a wrong `--acc-password`) stops it with the game's
//! reason.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::attach::{Attached, attach};
use super::datagrams::Sends;
use super::monitoring::{FieldSends, MonitorArgs, after};
use crate::protocol::id::SessionId;
use crate::protocol::subjects::{self, DataKind};
use crate::sources::acc_broadcast::{self as acc, Decoder};

/// The largest datagram read: an entry list of 128 cars is some 300 bytes, an
/// entry with four drivers some 200; the track data's camera lists are longer.
const DATAGRAM: usize = 32 * 1024;

/// No datagram for this long: register again (ACC sends every car's update
/// every `--acc-update-interval` while it is up).
const SILENCE: Duration = Duration::from_secs(3);

/// The display name ACC shows for this connection.
const DISPLAY_NAME: &str = "paddock";

pub(super) async fn run(
    args: &MonitorArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let game = tokio::net::lookup_host(&args.acc.acc_host)
        .await
        .with_context(|| format!("--acc-host {}: not an address", args.acc.acc_host))?
        .next()
        .with_context(|| format!("--acc-host {}: no address", args.acc.acc_host))?;
    let listen = args.listen.unwrap_or_else(|| {
        let any: std::net::IpAddr = if game.is_ipv4() {
            [0, 0, 0, 0].into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        (any, 0).into()
    });
    let socket = tokio::net::UdpSocket::bind(listen)
        .await
        .with_context(|| format!("cannot open a UDP socket on {listen}"))?;
    let interval_ms = i32::try_from(args.acc.acc_update_interval.as_millis())
        .unwrap_or(i32::MAX)
        .max(1);
    let registration = acc::register(DISPLAY_NAME, &args.acc.acc_password, interval_ms, "");

    let mut shutdown = std::pin::pin!(shutdown);
    let Some(Attached {
        nats,
        mut renewal,
        checks,
        mut endings,
        mut check_at,
        id,
        ..
    }) = attach(args, &mut shutdown).await?
    else {
        return Ok(());
    };
    let session = SessionId::parse(&id)?;
    let subject = subjects::data(&session, DataKind::Telemetry);
    let field_subject = subjects::data(&session, DataKind::Field);
    say!(
        "monitor: registering with ACC's broadcasting API at udp {game} (broadcasting.json: \
         updListenerPort {}, connectionPassword as --acc-password)",
        game.port()
    );
    socket.send_to(&registration, game).await.ok();

    let mut decoder = Decoder::new();
    let mut buffer = vec![0u8; DATAGRAM];
    let mut dirty = false;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.hz));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut field_ticker = FieldSends::ticker(args.field_hz);
    let mut watchdog = tokio::time::interval(SILENCE);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut until_deadline = std::pin::pin!(after(args.duration));
    let mut sends = Sends::default();
    let mut fields = FieldSends::default();
    let mut heard = Instant::now();
    let mut registrations = 1u64;
    let mut entry_list_asked: Option<Instant> = None;
    let mut reported = Instant::now();
    let started = Instant::now();
    let progress = |decoder: &Decoder, sends: Sends, fields: FieldSends, registrations: u64| {
        let c = decoder.counts();
        say!(
            "monitor: acc broadcasting: {registrations} registrations, {} messages read, {} \
             malformed, {} cars; {} frames sent, {} skipped while disconnected; {} fields \
             sent, {} not valid",
            c.read,
            c.malformed,
            decoder.cars(),
            sends.sent,
            sends.skipped,
            fields.sent,
            fields.refused
        );
    };

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut until_deadline => break,
            e = endings.of_session(&id, &mut renewal) => return Err(e),
            received = socket.recv_from(&mut buffer) => {
                let len = match received {
                    Ok((len, from)) if from == game => len,
                    // Only the game's datagrams; an earlier send's ICMP
                    // refusal (the game not up yet) is reported here too.
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "udp receive");
                        continue;
                    }
                };
                heard = Instant::now();
                let outcome = decoder.read(&buffer[..len]);
                match outcome.registered {
                    Some(Ok(connection)) => {
                        say!("monitor: ACC accepted the registration (connection {connection})");
                        socket.send_to(&acc::request_entry_list(connection), game).await.ok();
                        socket.send_to(&acc::request_track_data(connection), game).await.ok();
                        entry_list_asked = Some(Instant::now());
                    }
                    Some(Err(why)) => anyhow::bail!(
                        "ACC refused the registration at {game}: {why} (is --acc-password \
                         broadcasting.json's connectionPassword?)"
                    ),
                    None => {}
                }
                if outcome.wants_entry_list
                    && let Some(connection) = decoder.connection_id()
                    && entry_list_asked.is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
                {
                    socket.send_to(&acc::request_entry_list(connection), game).await.ok();
                    entry_list_asked = Some(Instant::now());
                }
                dirty |= outcome.frame;
                fields.changed(outcome.field);
            }
            _ = watchdog.tick() => {
                if heard.elapsed() >= SILENCE {
                    registrations += 1;
                    tracing::info!(%game, "ACC is quiet: registering again");
                    socket.send_to(&registration, game).await.ok();
                }
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
                    progress(&decoder, sends, fields, registrations);
                    reported = Instant::now();
                }
            }
        }
    }
    if let Some(connection) = decoder.connection_id() {
        socket
            .send_to(&acc::unregister(connection), game)
            .await
            .ok();
    }
    if dirty && let Some(frame) = decoder.frame() {
        sends.last(&nats, &subject, frame).await?;
    }
    fields
        .tick(&nats, &field_subject, || decoder.field())
        .await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), nats.flush()).await;
    progress(&decoder, sends, fields, registrations);
    say!(
        "monitor: stopped after {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
