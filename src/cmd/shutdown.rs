//! The production shutdown signal. The processor itself only takes a future, so
//! tests pass their own and never send signals to the test runner.

use std::future::Future;

/// Completes on SIGINT (ctrl-c) or SIGTERM (systemd, docker, kill).
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
        let (interrupt, terminate) = (
            listen(SignalKind::interrupt(), "SIGINT"),
            listen(SignalKind::terminate(), "SIGTERM"),
        );
        async move {
            tokio::select! {
                () = interrupt => {}
                () = terminate => {}
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
