//! What the processor's readiness depends on, for `/readyz` and `/metrics`
//! (`crate::web`): the broker connection, recovery done, storage accepting writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use async_nats::Client;

use super::app::App;
use super::store::StartupProgress;

/// Filled in as the processor starts; read by the HTTP endpoints, which start
/// first so `/healthz` answers while the processor still waits for its broker.
#[derive(Debug, Default)]
pub struct Health {
    client: OnceLock<Client>,
    app: OnceLock<Arc<App>>,
    stopping: AtomicBool,
    /// What start-up is waiting for (the store writes it while it opens).
    progress: StartupProgress,
    /// Why start-up failed for good, said until the process ends.
    failed: OnceLock<String>,
}

impl Health {
    /// The processor's connection exists (it may still be connecting).
    pub fn connecting(&self, client: Client) {
        let _ = self.client.set(client);
    }

    /// Where start-up reports what it waits for: give it to the store's
    /// configuration (`StoreConfig::progress`).
    pub fn progress(&self) -> StartupProgress {
        self.progress.clone()
    }

    /// Start-up failed for good (e.g. the buckets do not fit the broker): said
    /// by `/readyz` until the process ends.
    pub fn failed(&self, why: impl std::fmt::Display) {
        let _ = self.failed.set(format!("failed to start: {why}"));
    }

    /// Recovery is done and every subscription confirmed: the processor serves.
    pub fn started(&self, app: Arc<App>) {
        let _ = self.app.set(app);
    }

    /// Shutdown has begun: no longer ready, so a load balancer stops sending.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// The running processor's state, once it has started.
    pub fn app(&self) -> Option<&Arc<App>> {
        self.app.get()
    }

    /// `Ok` when the processor serves, else why not, in words for an operator.
    pub fn readiness(&self) -> Result<(), String> {
        if let Some(failed) = self.failed.get() {
            return Err(failed.clone());
        }
        if self.stopping.load(Ordering::Relaxed) {
            return Err("shutting down".into());
        }
        let Some(client) = self.client.get() else {
            return Err("starting: not connected to the NATS broker yet".into());
        };
        let state = client.connection_state();
        if state != async_nats::connection::State::Connected {
            return Err(format!("not connected to the NATS broker ({state})"));
        }
        let Some(app) = self.app.get() else {
            return Err(self
                .progress
                .get()
                .unwrap_or_else(|| "starting: recovering sessions and subscribing".into()));
        };
        if let Some(why) = app.metrics.storage_refusing() {
            return Err(format!("storage refuses writes: {why}"));
        }
        let load = app.sessions.load();
        if load.over_budget {
            return Err(format!(
                "over its memory budget: {} of {} bytes of frames held (--max-memory); new \
                 sessions are refused until sessions end",
                load.held.frames, load.budget
            ));
        }
        Ok(())
    }
}
