//! How a game source's monitor attaches to its session before it reads the
//! game: connect (watching the link), keep `--session`'s credentials fresh,
//! find the page, watch for endings, create the session (or reuse
//! `--session`) and announce it. One copy for EA F1 (cmd/f1.rs), the
//! datagram and shared-memory sources (cmd/datagrams.rs) and ACC's
//! broadcasting API (cmd/acc_broadcast.rs): above `monitoring` and
//! `endings`, below them.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc::{Receiver, UnboundedReceiver};

use super::endings::{Checks, Endings};
use super::monitoring::{MonitorArgs, announce, create_session};
use crate::client::SessionsClient;
use crate::client::connect::{Link, connect_observed};
use crate::client::creds::Stopped;
use crate::protocol::documents::Label;
use crate::protocol::id::SessionId;
use crate::protocol::subjects::Endpoint;

/// A monitor attached to its session, what its loop reads and writes through.
pub(super) struct Attached {
    pub nats: async_nats::Client,
    /// The connection going down and coming back (to send the setup again).
    pub links: UnboundedReceiver<Link>,
    /// `--session`'s credentials' renewal, refused once the session ended.
    pub renewal: Receiver<Stopped>,
    pub client: SessionsClient,
    /// The page's address, for a new session's printed link.
    pub dashboard: Option<String>,
    /// The labels of the sessions it creates.
    pub label: Label,
    pub checks: Checks,
    pub endings: Endings,
    /// When the next frame goes as the ending check.
    pub check_at: tokio::time::Instant,
    /// The session written to.
    pub id: String,
}

/// Attaches the monitor of `args` to its session; `None` when `shutdown`
/// came first (nothing to do then).
pub(super) async fn attach<S: Future<Output = ()>>(
    args: &MonitorArgs,
    shutdown: &mut Pin<&mut S>,
) -> anyhow::Result<Option<Attached>> {
    let config = args.connect.config();
    let (nats, links) = connect_observed(&config, "paddock-monitor").await?;
    let renewing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renewal = match &args.session {
        Some(id) => super::args::keep_credentials_fresh(
            &config,
            &nats,
            SessionId::parse(id)?,
            Endpoint::RenewMonitor,
            renewing,
        ),
        None => tokio::sync::mpsc::channel(1).1,
    };
    let client = SessionsClient::new(
        nats.clone(),
        args.connect.nats_url.clone(),
        Duration::from_secs(5),
    );
    let dashboard = tokio::select! {
        url = args.dashboard.resolve(&client) => url,
        () = shutdown.as_mut() => return Ok(None),
    };
    let label = args.label.label();
    // A session ended meanwhile (deleted, or idle past its expiry) is noticed,
    // as `paddock monitor` notices it: its frames would only be refused.
    let (checks, endings) = super::endings::watch(&nats, &client, args).await?;
    let check_at = checks.first();
    let id = match &args.session {
        Some(id) => id.clone(),
        None => tokio::select! {
            id = create_session(&client, &label) => id?,
            () = shutdown.as_mut() => return Ok(None),
        },
    };
    announce(args, dashboard.as_deref(), &id)?;
    Ok(Some(Attached {
        nats,
        links,
        renewal,
        client,
        dashboard,
        label,
        checks,
        endings,
        check_at,
        id,
    }))
}
