//! The production shutdown signal. The processor itself only takes a future, so
//! tests pass their own and never send signals to the test runner.

use std::future::Future;

/// Completes on SIGINT (ctrl-c), SIGTERM (systemd, docker, kill) or SIGHUP
/// (the terminal closed: its default action would end the process without
/// ending what it started, such as the demo's cars and broker).
///
/// The handlers are installed when this is called, not when the future is first
/// polled: a command that is still starting (`serve` waiting for its broker) is
/// then stopped cleanly by a signal, instead of by the default action's kill.
pub fn signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &'static str| {
            let stream = signal(kind);
            async move {
                match stream {
                    Ok(mut stream) => {
                        stream.recv().await;
                        tracing::info!("received {name}");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for {name}");
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        let (interrupt, terminate, hangup) = (
            listen(SignalKind::interrupt(), "SIGINT"),
            listen(SignalKind::terminate(), "SIGTERM"),
            // Under nohup (SIGHUP ignored) a closed terminal must not stop it.
            (!hangup_ignored()).then(|| listen(SignalKind::hangup(), "SIGHUP")),
        );
        async move {
            tokio::select! {
                () = interrupt => {}
                () = terminate => {}
                () = async {
                    match hangup {
                        Some(hangup) => hangup.await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
        tracing::info!("received ctrl-c");
    }
}

/// Whether SIGHUP is ignored, as `nohup` leaves it for the command it runs.
#[cfg(unix)]
fn hangup_ignored() -> bool {
    // SAFETY: sigaction(2) with no new action only reads the current one into
    // a zeroed struct of the right type.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == libc::SIG_IGN
    }
}
