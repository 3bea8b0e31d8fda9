//! The monitor's loop for sims that give the player's car whole each time:
//! in every UDP datagram (Forza's Data Out, Gran Turismo 7's Simulator
//! Interface), or in shared memory read once a tick (ACC, AC and iRacing on
//! Windows: cmd/shm.rs). What is read goes to the game's pure decoder
//! (src/sources/), and the car leaves as frames at most `--hz` a second — the
//! latest state, so a burst of packets is one frame and nothing read is older
//! than 1/hz when it leaves. What the decoder cannot read is counted on the
//! progress line. A session deleted or expired under it stops it, as it stops
//! `paddock monitor` (cmd/endings.rs). When the decoder sees a new race begin
//! (Forza, GT7), the monitor says so, and with `--new-session-per-race` it
//! leaves the old session to the race that was and asks for a new one, as the
//! F1 loop does on a new session UID.
//!
//! EA F1 has a loop of its own (cmd/f1.rs): its car comes in seven packets,
//! with game sessions, which none of these has.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use bytes::Bytes;
use serde_json::Value;
use tokio::net::UdpSocket;

use super::attach::{Attached, attach};
use super::monitoring::{MonitorArgs, announce, create_session, send_setup_of, stamped};
use crate::client::connect::Link;
use crate::protocol::id::SessionId;
use crate::protocol::subjects::{self, DataKind};

/// A game's decoder as the loop drives it.
pub(super) trait Game {
    /// Reads one datagram; true when the car's frame changed.
    fn read(&mut self, datagram: &[u8]) -> bool;
    /// The car's frame, once one was read.
    fn frame(&self) -> Option<Value>;
    /// What the decoder has read and refused, for the progress line.
    fn progress(&self) -> String;
    /// Reads the game's latest state where it is polled rather than sent
    /// (shared memory), once a tick before the frame goes; true when the
    /// car's frame changed.
    fn poll(&mut self) -> bool {
        false
    }
    /// The car's setup, when the game gives one that was not sent yet (it
    /// changed, or the game just started); sent as an acknowledged request.
    fn take_setup(&mut self) -> Option<Value> {
        None
    }
    /// Why the game started a new race since the last call (another car, a
    /// restart), once; the datagram just read is the new race's.
    fn take_new_race(&mut self) -> Option<&'static str> {
        None
    }
}

/// The next datagram from `socket`; never, when the game sends none.
async fn receive(
    socket: Option<&UdpSocket>,
    buffer: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(socket) => socket.recv_from(buffer).await,
        None => std::future::pending().await,
    }
}

/// A datagram the game must keep receiving to keep sending (GT7's: the
/// console sends only to who asked in the last few seconds).
pub(super) struct Heartbeat {
    pub to: SocketAddr,
    pub body: Vec<u8>,
    pub every: Duration,
}

/// The largest datagram read: Forza's is 331 bytes, GT7's 344; anything longer
/// is not theirs (and is counted as malformed, cut to this length).
const DATAGRAM: usize = 2048;

/// One car's frames sent, and those skipped while disconnected (the F1 loop and
/// this one send the same way).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Sends {
    pub sent: u64,
    pub skipped: u64,
}

impl Sends {
    /// Sends the car's latest frame, stamped: published, or as the ending
    /// check's request when one is due (cmd/endings.rs); skipped, and counted,
    /// while the connection is down.
    pub(super) async fn latest(
        &mut self,
        nats: &async_nats::Client,
        checks: &super::endings::Checks,
        check_at: &mut tokio::time::Instant,
        id: &str,
        subject: &str,
        frame: Value,
    ) -> anyhow::Result<()> {
        if nats.connection_state() != State::Connected {
            self.skipped += 1;
            return Ok(());
        }
        let body = Bytes::from(stamped(frame).to_string());
        if !checks.send(check_at, id, subject, body.clone()) {
            nats.publish(subject.to_string(), body).await?;
        }
        self.sent += 1;
        Ok(())
    }

    /// The last frame read, at the end, however recently the one before went:
    /// a plain publish, when connected.
    pub(super) async fn last(
        &mut self,
        nats: &async_nats::Client,
        subject: &str,
        frame: Value,
    ) -> anyhow::Result<()> {
        if nats.connection_state() == State::Connected {
            nats.publish(subject.to_string(), Bytes::from(stamped(frame).to_string()))
                .await?;
            self.sent += 1;
        }
        Ok(())
    }
}

pub(super) async fn run(
    args: &MonitorArgs,
    socket: Option<UdpSocket>,
    mut decoder: impl Game,
    heartbeat: Option<Heartbeat>,
    listening: &str,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
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
    say!("{listening}");

    let mut buffer = vec![0u8; DATAGRAM];
    let (mut setup, mut was_down) = (None::<Value>, false);
    let mut dirty = false;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.hz));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The first beat at once: the game sends nothing until it has one. (Without
    // a heartbeat the branch is off; the day only keeps the interval valid.)
    let every = heartbeat
        .as_ref()
        .map_or(Duration::from_secs(86_400), |h| h.every);
    let mut beats = tokio::time::interval(every);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat_failed = false;
    let mut until_deadline = std::pin::pin!(super::monitoring::after(args.duration));
    let mut sends = Sends::default();
    let mut reported = Instant::now();
    let started = Instant::now();
    let progress = |decoder: &dyn Game, Sends { sent, skipped }: Sends| {
        say!(
            "monitor: {}; {} frames sent, {} skipped while disconnected",
            decoder.progress(),
            sent,
            skipped
        );
    };

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut until_deadline => break,
            e = endings.of_session(&id, &mut renewal) => return Err(e),
            // The setup (where the game gives one) again after an outage, in
            // case the processor lost it; the frames carry the rest.
            Some(link) = links.recv() => match link {
                Link::Down => was_down = true,
                Link::Up if was_down => {
                    was_down = false;
                    if let Some(setup) = &setup {
                        tokio::select! {
                            sent = send_setup_of(&client, &id, setup) => sent?,
                            () = &mut shutdown => break,
                        }
                    }
                }
                Link::Up => {}
            },
            _ = beats.tick(), if heartbeat.is_some() && socket.is_some() => {
                let (Some(beat), Some(socket)) = (&heartbeat, &socket) else { continue };
                match socket.send_to(&beat.body, beat.to).await {
                    Ok(_) => beat_failed = false,
                    // Said once per outage: the console may be off, or asleep.
                    Err(e) if !beat_failed => {
                        say!("monitor: heartbeat to {} not sent: {e}", beat.to);
                        beat_failed = true;
                    }
                    Err(e) => tracing::debug!(error = %e, "heartbeat"),
                }
            }
            received = receive(socket.as_ref(), &mut buffer) => {
                let (len, _) = match received {
                    Ok(got) => got,
                    // Windows reports an earlier send's ICMP refusal here (a
                    // heartbeat to a console that is off); the socket is still good.
                    Err(e) => {
                        tracing::debug!(error = %e, "udp receive");
                        continue;
                    }
                };
                dirty |= decoder.read(&buffer[..len]);
                if let Some(why) = decoder.take_new_race() {
                    if args.new_session_per_race && args.session.is_none() {
                        // The frame just read is the new race's: it goes to
                        // the new session at the next tick, the old one keeps
                        // the race that was.
                        id = create_session(&client, &label).await?;
                        subject = subjects::data(&SessionId::parse(&id)?, DataKind::Telemetry);
                        say!("monitor: the game started another race ({why}); a new paddock session:");
                        announce(args, dashboard.as_deref(), &id)?;
                        if let Some(setup) = &setup {
                            tokio::select! {
                                sent = send_setup_of(&client, &id, setup) => sent?,
                                () = &mut shutdown => break,
                            }
                        }
                    } else {
                        say!(
                            "monitor: the game started another race ({why}); its frames go on in \
                             session {id} (--new-session-per-race starts a new one)"
                        );
                    }
                }
            }
            _ = ticker.tick() => {
                dirty |= decoder.poll();
                if let Some(new) = decoder.take_setup() {
                    tokio::select! {
                        sent = send_setup_of(&client, &id, &new) => sent?,
                        () = &mut shutdown => break,
                    }
                    setup = Some(new);
                }
                if dirty && let Some(frame) = decoder.frame() {
                    dirty = false;
                    sends.latest(&nats, &checks, &mut check_at, &id, &subject, frame).await?;
                }
                if !args.progress.is_zero() && reported.elapsed() >= args.progress {
                    progress(&decoder, sends);
                    reported = Instant::now();
                }
            }
        }
    }
    // The latest state read goes out, however recently the last frame went.
    if dirty && let Some(frame) = decoder.frame() {
        sends.last(&nats, &subject, frame).await?;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), nats.flush()).await;
    progress(&decoder, sends);
    say!(
        "monitor: stopped after {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
