//! `paddock monitor --source gt7`: Gran Turismo 7's Simulator Interface
//! (PlayStation 4 and 5) as a session.
//!
//! The console sends telemetry only to whoever asked: this sends its heartbeat
//! (one byte naming the format) to the console's port every 10 s, from the
//! socket it receives on, and hands the encrypted datagrams to the pure decoder
//! (src/sources/gt7.rs) through the shared loop (cmd/datagrams.rs).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};

use super::monitoring::MonitorArgs;
use crate::sources::gt7::{self, Counts, Decoder, Format};

/// The console forgets a listener some seconds after its last heartbeat; the
/// public readers send one every 10 s (PDTools), which keeps it sending.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

impl super::datagrams::Game for Decoder {
    fn read(&mut self, datagram: &[u8]) -> bool {
        Decoder::read(self, datagram)
    }

    fn frame(&self) -> Option<serde_json::Value> {
        Decoder::frame(self)
    }

    fn take_new_race(&mut self) -> Option<&'static str> {
        Decoder::take_new_race(self)
    }

    fn progress(&self) -> String {
        let Counts {
            read,
            off_track,
            wrong_magic,
            malformed,
        } = self.counts();
        format!(
            "gt7 {}: {read} packets read, {off_track} with the car off track (menus, pause, \
             loading), {} rejected ({wrong_magic} not decrypting to GT7's, {malformed} of no \
             GT7 length)",
            self.format()
                .map_or("(no packets yet)".to_string(), |f| format!(
                    "format {}",
                    char::from(f.heartbeat())
                )),
            wrong_magic + malformed,
        )
    }
}

pub(super) async fn run(
    args: &MonitorArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let Some(console) = args.gt7.console else {
        bail!(
            "--source gt7 needs --console <the PlayStation's IP address> to send its heartbeat to"
        );
    };
    let format = Format::from(args.gt7.gt7_format);
    let listen = args.listen_on(gt7::LISTEN_PORT);
    let socket = tokio::net::UdpSocket::bind(listen)
        .await
        .with_context(|| format!("cannot listen for GT7's telemetry on {listen}"))?;
    let listening = socket.local_addr()?;
    let to = SocketAddr::new(console, args.gt7.console_port);
    let hello = format!(
        "monitor: asking the console at {to} for GT7's telemetry (format {}) every {}s and \
         listening on udp {listening} (GT7 answers to port {})",
        char::from(format.heartbeat()),
        HEARTBEAT_EVERY.as_secs(),
        gt7::LISTEN_PORT
    );
    let heartbeat = super::datagrams::Heartbeat {
        to,
        body: vec![format.heartbeat()],
        every: HEARTBEAT_EVERY,
    };
    super::datagrams::run(
        args,
        Some(socket),
        Decoder::new(),
        Some(heartbeat),
        &hello,
        shutdown,
    )
    .await
}
