//! `paddock monitor --source forza`: Forza's "Data Out" UDP telemetry (Forza
//! Motorsport (2023) and 7, Forza Horizon 4 and 5) as a session.
//!
//! The game sends every packet to one address and port (its Data Out
//! settings); this binds there and hands the datagrams to the pure decoder
//! (src/sources/forza.rs) through the shared loop (cmd/datagrams.rs).

use std::future::Future;

use anyhow::Context;

use super::monitoring::MonitorArgs;
use crate::sources::forza::{Counts, Decoder};

/// Where Data Out is usually pointed: the port most Forza tools document.
/// (Forza Horizon 6's own notes ask to avoid 5200–5300, the range its outgoing
/// socket binds in, so that game is best pointed at another, with --listen.)
pub(super) const PORT: u16 = 5300;

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
            race_off,
            malformed,
        } = self.counts();
        format!(
            "forza {}: {read} packets read, {race_off} with the race off (menus, pause), \
             {malformed} rejected (of no Data Out length)",
            self.format().map_or("(no packets yet)", |f| f.game())
        )
    }
}

pub(super) async fn run(
    args: &MonitorArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let listen = args.listen_on(PORT);
    let socket = tokio::net::UdpSocket::bind(listen)
        .await
        .with_context(|| format!("cannot listen for Forza's Data Out on {listen}"))?;
    let listening = socket.local_addr()?;
    let hello = format!(
        "monitor: listening for Forza's Data Out on udp {listening}; in the game set Data Out \
         On, Data Out IP Address to this machine's address, Data Out IP Port to {} (and \
         Forza Motorsport's packet format to Dash)",
        listening.port()
    );
    super::datagrams::run(args, Some(socket), Decoder::new(), None, &hello, shutdown).await
}
