//! A TCP proxy the test controls: the leaf link between a track's broker and
//! its hub runs through it, so a test can cut the uplink and restore it.
//! Cutting closes every connection through it and refuses new ones (accepted
//! and closed at once, as a router with the uplink down would answer), until
//! restored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Proxy {
    /// Where the near side dials (`127.0.0.1:<port>`).
    pub port: u16,
    open: Arc<AtomicBool>,
    /// Bumped on every cut: each connection ends when it changes.
    cuts: watch::Sender<u64>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Forwards `127.0.0.1:<port>` to `127.0.0.1:<target>`.
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("an address").port();
        let open = Arc::new(AtomicBool::new(true));
        let (cuts, _) = watch::channel(0u64);
        let accept = {
            let open = Arc::clone(&open);
            let cuts = cuts.clone();
            tokio::spawn(async move {
                while let Ok((mut near, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        drop(near);
                        continue;
                    }
                    let mut cut = cuts.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut far) = TcpStream::connect(("127.0.0.1", target)).await else {
                            return;
                        };
                        let _ = near.set_nodelay(true);
                        let _ = far.set_nodelay(true);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut near, &mut far) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        Proxy {
            port,
            open,
            cuts,
            accept,
        }
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Lets connections through again (the near side redials by itself).
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
