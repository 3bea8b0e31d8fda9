//! The README's front door, walked as a newcomer walks it: `paddock demo` from
//! the repository's own `nats.conf` (only its ports moved to free ones, so the
//! test never takes 4222/8080/8081/8222 from a developer's machine), three live
//! cars, the page, the commands the demo prints run as printed, and ctrl-c
//! leaving nothing behind. Also what a start that cannot work does: a broker too
//! small for paddock's buckets is refused at once, in one message with the
//! numbers, and a signal stops `serve` at any moment of its start-up.
//!
//! Linux only where it looks for what outlives the demo (`/proc`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A file of the repository, as shipped.
fn shipped(path: &str) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The ports the demo would take on a developer's machine, moved.
struct Ports {
    nats: u16,
    monitoring: u16,
    websocket: u16,
    http: u16,
}

impl Ports {
    fn free() -> Self {
        Ports {
            nats: free_port(),
            monitoring: free_port(),
            websocket: free_port(),
            http: free_port(),
        }
    }
}

/// The shipped nats.conf with only its ports changed. Each line it changes must
/// be there exactly once: a reshaped nats.conf fails here, not silently.
fn nats_conf_on(ports: &Ports) -> String {
    let mut conf = shipped("nats.conf");
    for (from, to) in [
        ("\nport: 4222\n", format!("\nport: {}\n", ports.nats)),
        (
            "\nhttp_port: 8222\n",
            format!("\nhttp_port: {}\n", ports.monitoring),
        ),
        (
            "\n  port: 8080\n",
            format!("\n  port: {}\n", ports.websocket),
        ),
        (
            "\"http://127.0.0.1:8081\", \"http://localhost:8081\"",
            format!(
                "\"http://127.0.0.1:{0}\", \"http://localhost:{0}\"",
                ports.http
            ),
        ),
    ] {
        assert_eq!(
            conf.matches(from).count(),
            1,
            "nats.conf no longer has {from:?} once: update this test"
        );
        conf = conf.replace(from, &to);
    }
    conf
}

/// The broker binary the tests use, for the demo to start (`NATS_SERVER_BIN`).
fn nats_server_bin() -> PathBuf {
    paddock::broker::locate(
        std::env::var_os("NATS_SERVER_BIN")
            .map(PathBuf::from)
            .as_deref(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .0
}

/// A `paddock` process whose stdout and stderr lines arrive on one channel.
struct Watched {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watched {
    fn spawn(mut command: std::process::Command) -> Self {
        // As from a terminal: SIGHUP at its default, whatever this test process
        // inherited (under `nohup cargo test` it is ignored, and paddock, which
        // leaves an ignored SIGHUP ignored as nohup asks, would not stop on it).
        // SAFETY: signal(2) between fork and exec, async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the paddock binary starts");
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        for (pipe, tx) in [
            (
                Box::new(stdout) as Box<dyn std::io::Read + Send>,
                tx.clone(),
            ),
            (Box::new(stderr), tx),
        ] {
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if std::env::var_os("TEST_LOG").is_some() {
                        eprintln!("demo: {line}");
                    }
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Watched {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one satisfies `found`, within `patience`.
    fn until(&mut self, patience: Duration, what: &str, found: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| {
                    panic!(
                        "no {what} within {patience:?}; it printed:\n{}",
                        self.printed()
                    )
                });
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if found(&line) {
                        return line;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "paddock ended before printing {what}; it printed:\n{}",
                    self.printed()
                ),
            }
        }
    }

    fn printed(&self) -> String {
        self.seen.join("\n")
    }

    /// Sends `signal` and waits up to `patience` for the exit status.
    fn signal_and_wait(&mut self, signal: i32, patience: Duration) -> (Option<i32>, Duration) {
        let sent = Instant::now();
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
        loop {
            // What it prints while stopping, kept as it comes: a stop that
            // takes too long shows where it got to.
            while let Ok(line) = self.lines.try_recv() {
                self.seen
                    .push(format!("{:>6.2}s {line}", sent.elapsed().as_secs_f64()));
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.try_recv() {
                    self.seen.push(line);
                }
                return (status.code(), sent.elapsed());
            }
            assert!(
                sent.elapsed() < patience,
                "paddock did not exit within {patience:?} of signal {signal}; it printed:\n{}",
                self.printed()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The processes whose parent is `pid` (Linux: /proc/<pid>/task/*/children).
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return children;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            children.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    children
}

/// Whether `pid` still runs (a zombie waiting for its new parent does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after_name = stat.rsplit_once(')')?.1.trim_start().to_string();
            after_name.chars().next()
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// The processes whose working directory is `dir` (what the demo started
/// there: its broker).
fn running_in(dir: &Path) -> Vec<u32> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir))
        .filter(|&pid| running(pid))
        .collect()
}

/// Waits up to `patience` for every pid in `pids` to be gone.
fn all_gone(pids: &[u32], patience: Duration) -> Vec<u32> {
    let deadline = Instant::now() + patience;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| running(p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `paddock demo` as the README runs it, in a directory holding the shipped
/// nats.conf (ports moved), with an empty HOME.
fn demo(dir: &Path, ports: &Ports) -> Watched {
    std::fs::write(dir.join("nats.conf"), nats_conf_on(ports)).unwrap();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut command = paddock();
    command
        .arg("demo")
        .current_dir(dir)
        .env("HOME", &home)
        .env_remove("XDG_CACHE_HOME")
        .env("NATS_SERVER_BIN", nats_server_bin())
        .env("NATS_URL", format!("nats://127.0.0.1:{}", ports.nats))
        .env("PADDOCK_HTTP_ADDR", format!("127.0.0.1:{}", ports.http));
    for var in [
        "PADDOCK_KV_MAX_BYTES",
        "PADDOCK_MAX_MEMORY",
        "PADDOCK_STORE",
    ] {
        command.env_remove(var);
    }
    Watched::spawn(command)
}

/// Runs a command line the demo printed, word for word, in the demo's directory.
fn run_printed(dir: &Path, line: &str) -> (i32, String, String) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (program, args) = words.split_first().expect("a command");
    let program = if Path::new(program).is_relative() && program.contains('/') {
        dir.join(program)
    } else {
        PathBuf::from(program)
    };
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the printed command runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_demo_runs_three_cars_and_ctrl_c_leaves_nothing_running() {
    let dir = fresh_dir("readme-demo");
    let ports = Ports::free();
    let mut demo = demo(&dir, &ports);

    // Ready: the processor runs and it says what to run in another terminal.
    let ready = Duration::from_secs(90);
    demo.until(ready, "the processor running", |l| {
        l.contains("processor running")
    });
    let list_command = demo
        .until(ready, "the `sessions list` command", |l| {
            l.trim_end().ends_with(&format!(
                "sessions list --nats-url nats://127.0.0.1:{}",
                ports.nats
            ))
        })
        .trim()
        .to_string();
    let mut ids = Vec::new();
    let mut links = Vec::new();
    while links.len() < 3 {
        let line = demo.until(ready, "three cars' dashboard links", |l| {
            l.starts_with("session ") || l.trim_start().starts_with("open it: ")
        });
        if let Some(id) = line.strip_prefix("session ") {
            ids.push(id.trim().to_string());
        } else {
            links.push(line.trim().trim_start_matches("open it: ").to_string());
        }
    }
    let broker_pids = children_of(demo.child.id());
    assert_eq!(
        broker_pids.len(),
        1,
        "the demo started one nats-server: {broker_pids:?}"
    );

    // `paddock sessions list`, as printed: three live sessions of the demo's team.
    let deadline = Instant::now() + ready;
    let listed = loop {
        let (code, stdout, stderr) = run_printed(&dir, &list_command);
        if code == 0 && ids.iter().all(|id| stdout.contains(id.as_str())) {
            break stdout;
        }
        assert!(
            Instant::now() < deadline,
            "`{list_command}` did not list the three cars: exit {code}\n{stdout}{stderr}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        listed.contains("Demo"),
        "the demo's cars carry a team label:\n{listed}"
    );

    // The page answers: the index, a car's page, the team's page.
    let http = format!("127.0.0.1:{}", ports.http);
    for path in ["/", &format!("/session/{}", ids[0]), "/team/Demo"] {
        let (status, _) = http_get(&http, path).await.expect("the page answers");
        assert_eq!(status, 200, "GET {path}");
    }
    for link in &links {
        assert!(
            link.starts_with(&format!("http://{http}/session/")),
            "a printed link opens the page: {link}"
        );
    }
    let (status, ready_text) = http_get(&http, "/readyz").await.unwrap();
    assert_eq!(status, 200, "/readyz: {ready_text}");

    // The other printed commands, as printed.
    let watch = demo
        .seen
        .iter()
        .find(|l| l.trim_start().starts_with("watch it: "))
        .expect("each car's watch command")
        .trim()
        .trim_start_matches("watch it: ")
        .to_string();
    // `watch` draws a full screen and needs a terminal: `--plain` is the same view
    // as lines (its own test covers the screen).
    let (code, stdout, stderr) = run_printed(
        &dir,
        &format!("timeout --preserve-status -s INT 3 {watch} --plain"),
    );
    assert!(
        code == 0 && stdout.contains("lap"),
        "`{watch} --plain` exit {code}:\n{stdout}{stderr}"
    );
    let team = list_command.replace("sessions list", "watch --team Demo --plain");
    let (code, stdout, stderr) =
        run_printed(&dir, &format!("timeout --preserve-status -s INT 3 {team}"));
    assert!(
        code == 0 && stdout.contains("#1") && stdout.contains("#3"),
        "`{team}` exit {code}:\n{stdout}{stderr}"
    );
    // As printed, with a car's id for `<session id>`.
    let share = demo
        .seen
        .iter()
        .find(|l| l.contains("sessions share <session id>"))
        .expect("the demo prints the share command")
        .trim()
        .replace("<session id>", &ids[0]);
    let (code, stdout, stderr) = run_printed(&dir, &share);
    assert_eq!(code, 0, "`{share}`: {stderr}");
    assert!(stdout.contains(&format!("/session/{}", ids[0])), "{stdout}");

    // Ctrl-C: everything stops within 5 s, exit 0, and nothing is left.
    let (code, took) = demo.signal_and_wait(libc::SIGINT, Duration::from_secs(5));
    assert_eq!(
        code,
        Some(0),
        "exit status after ctrl-c:\n{}",
        demo.printed()
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(
        all_gone(&broker_pids, Duration::from_secs(1)),
        Vec::<u32>::new(),
        "left running"
    );
    assert_eq!(
        running_in(&dir),
        Vec::<u32>::new(),
        "left running in its directory"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", ports.nats)).is_err(),
        "something still listens on the demo's broker port"
    );
    assert!(
        demo.printed().contains("ended its 3 sessions"),
        "the demo ends its cars' sessions:\n{}",
        demo.printed()
    );

    // Again, in the same place (the broker's store kept): three cars, this
    // run's, not six.
    let mut again = self::demo(&dir, &ports);
    again.until(ready, "the processor running again", |l| {
        l.contains("processor running")
    });
    let mut fresh = Vec::new();
    while fresh.len() < 3 {
        let line = again.until(ready, "three cars again", |l| l.starts_with("session "));
        fresh.push(line.trim_start_matches("session ").trim().to_string());
    }
    let deadline = Instant::now() + ready;
    loop {
        let (code, stdout, stderr) = run_printed(&dir, &list_command);
        let listed = stdout.lines().filter(|l| l.contains("Demo")).count();
        if code == 0 && listed == 3 && fresh.iter().all(|id| stdout.contains(id.as_str())) {
            assert!(
                ids.iter().all(|id| !stdout.contains(id.as_str())),
                "the first run's cars are still live:\n{stdout}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "`{list_command}` after a second start: exit {code}\n{stdout}{stderr}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Closing the terminal (SIGHUP) stops it as ctrl-c does.
    let (code, _) = again.signal_and_wait(libc::SIGHUP, Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", again.printed());
    assert!(
        again.printed().contains("ended its 3 sessions"),
        "{}",
        again.printed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_killed_outright_leaves_no_broker_behind() {
    let dir = fresh_dir("readme-kill");
    let ports = Ports::free();
    let mut demo = demo(&dir, &ports);
    demo.until(Duration::from_secs(90), "the processor running", |l| {
        l.contains("processor running")
    });
    let broker_pids = children_of(demo.child.id());
    assert_eq!(broker_pids.len(), 1, "{broker_pids:?}");
    // Its cars are live and sending before it is killed.
    for _ in 0..3 {
        demo.until(Duration::from_secs(90), "its cars", |l| {
            l.starts_with("session ")
        });
    }
    std::thread::sleep(Duration::from_secs(2));
    demo.signal_and_wait(libc::SIGKILL, Duration::from_secs(5));
    assert_eq!(
        all_gone(&broker_pids, Duration::from_secs(10)),
        Vec::<u32>::new(),
        "the demo's nats-server outlived it"
    );
    // The cars it could not end are ended by the next demo, which then shows
    // its own three.
    std::thread::sleep(Duration::from_secs(3));
    let mut again = self::demo(&dir, &ports);
    again.until(Duration::from_secs(90), "the earlier cars ended", |l| {
        l.contains("ended 3 sessions an earlier demo left live")
    });
    let (code, _) = again.signal_and_wait(libc::SIGINT, Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", again.printed());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A broker from the shipped nats.conf with its JetStream storage cut to
/// `max_file_store`.
fn broker_with_file_store(
    dir: &Path,
    ports: &Ports,
    max_file_store: &str,
) -> paddock::broker::LocalBroker {
    let conf = nats_conf_on(ports);
    let line = conf
        .lines()
        .find(|l| l.trim_start().starts_with("max_file_store:"))
        .expect("nats.conf sets max_file_store");
    let conf = conf.replace(line, &format!("  max_file_store: {max_file_store}"));
    assert_eq!(conf.matches("store_dir: \".paddock/nats\"").count(), 1);
    let store = dir.join("store");
    let conf = conf.replace(".paddock/nats", store.to_str().unwrap());
    let file = dir.join("nats.conf");
    std::fs::write(&file, conf).unwrap();
    paddock::broker::LocalBroker::start(paddock::broker::BrokerConfig {
        config_file: Some(file),
        port: Some(ports.nats),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_too_small_for_the_buckets_is_refused_at_once_with_the_numbers() {
    let dir = fresh_dir("readme-small");
    let ports = Ports::free();
    let broker = broker_with_file_store(&dir, &ports, "256MB");
    let http = format!("127.0.0.1:{}", ports.http);
    let started = Instant::now();
    let serve = Running::spawn(&["serve", "--nats-url", &broker.url(), "--http-addr", &http]);
    let code = serve.exit_code();
    let took = started.elapsed();
    assert_eq!(code, 1);
    assert!(
        took < Duration::from_secs(15),
        "refused after {took:?}, not at once"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refusal_names_the_numbers_and_what_to_change() {
    let dir = fresh_dir("readme-small-words");
    let ports = Ports::free();
    let broker = broker_with_file_store(&dir, &ports, "256MB");
    let (code, _, stderr) = run_paddock(&["serve", "--nats-url", &broker.url()]).await;
    assert_eq!(code, 1, "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    for words in [
        "1.0 GiB in all",
        "paddock_sessions 375 MiB",
        "max_file_store",
        "--kv-max-bytes",
    ] {
        assert!(last.contains(words), "the refusal lacks {words:?}:\n{last}");
    }
    // What it says to do works: a budget that fits starts.
    let fits = Running::spawn(&[
        "serve",
        "--nats-url",
        &broker.url(),
        "--kv-max-bytes",
        "200MiB",
    ]);
    wait_for_processors(&connect(&broker.url()).await, 1).await;
    assert_eq!(fits.stop("-TERM"), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_at_once_on_a_signal_while_it_waits_for_a_broker() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    for signal in ["-INT", "-TERM"] {
        let serve = Running::spawn(&["serve", "--nats-url", &url]);
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        assert_eq!(serve.stop(signal), 0, "{signal}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{signal}: {:?}",
            started.elapsed()
        );
    }
}

/// docs/SECURITY.md's "Run it" of the shared-secret roles, run as written: its
/// server.conf (the store in a temporary directory, roles.conf as shipped), the
/// passwords its command line names, then the processor, a monitor and ops'
/// delete with the words of the page. A role roles.conf needs and the page does
/// not give stops the broker, and fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_md_roles_run_it_works_as_written() {
    let doc = shipped("docs/SECURITY.md");
    let block = doc
        .split("Run it: include the file")
        .nth(1)
        .and_then(|rest| rest.split("```console\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("SECURITY.md's roles 'Run it' block");
    // Commands: `$ ` lines with their `\` continuations; output lines after them.
    let mut commands: Vec<(String, Vec<String>)> = Vec::new();
    for line in block.lines() {
        match line.strip_prefix("$ ") {
            Some(command) => commands.push((command.to_string(), Vec::new())),
            None => {
                let (command, output) = commands.last_mut().expect("a command first");
                if command.ends_with('\\') {
                    command.pop();
                    command.push(' ');
                    command.push_str(line.trim());
                } else {
                    output.push(line.to_string());
                }
            }
        }
    }
    let dir = fresh_dir("readme-roles");
    let store = dir.join("store");
    let (_, server_conf) = commands
        .iter()
        .find(|(c, _)| c == "cat server.conf")
        .expect("the page shows server.conf");
    let server_conf = server_conf
        .join("\n")
        .replace("/var/lib/nats", store.to_str().unwrap());
    std::fs::write(dir.join("server.conf"), server_conf).unwrap();
    std::fs::create_dir_all(dir.join("security")).unwrap();
    std::fs::write(
        dir.join("security/roles.conf"),
        shipped("deploy/security/roles.conf"),
    )
    .unwrap();

    // The broker, with every password its command line names.
    let (start, _) = commands
        .iter()
        .find(|(c, _)| c.contains("nats-server -c server.conf"))
        .expect("the page starts nats-server");
    let password = |user: &str| format!("{user}-secret-{}", std::process::id());
    let mut broker = std::process::Command::new(nats_server_bin());
    broker.current_dir(&dir);
    for word in start.split_whitespace() {
        if let Some(var) = word.strip_suffix("=…") {
            let user = var
                .strip_prefix("PADDOCK_")
                .and_then(|v| v.strip_suffix("_PASSWORD"))
                .expect("PADDOCK_<ROLE>_PASSWORD")
                .to_lowercase();
            broker.env(var, password(&user));
        }
    }
    let port = free_port();
    broker
        .args(["-c", "server.conf", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut broker = KillOnDrop(broker.spawn().expect("nats-server starts"));
    let url = format!("nats://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = broker.0.try_wait().unwrap() {
            let mut log = String::new();
            std::io::Read::read_to_string(broker.0.stderr.as_mut().unwrap(), &mut log).unwrap();
            panic!("nats-server, started as SECURITY.md says, exited ({status}):\n{log}");
        }
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The page's paddock commands, each as a process: `…` is the password of
    // the user the line names, `<id>` the session the monitor printed.
    let paddock_line = |starts: &str| -> String {
        commands
            .iter()
            .map(|(c, _)| c)
            .find(|c| c.contains(starts))
            .unwrap_or_else(|| panic!("SECURITY.md runs `{starts}`"))
            .clone()
    };
    let command_of = |line: &str, id: Option<&str>| -> std::process::Command {
        let mut words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let mut command = paddock();
        let mut user = None;
        while let Some((var, value)) = words.first().and_then(|w| w.split_once('=')) {
            if var == "NATS_USER" {
                user = Some(value.to_string());
            }
            let value = if value == "…" {
                password(user.as_deref().expect("NATS_USER before NATS_PASSWORD"))
            } else {
                value.to_string()
            };
            command.env(var, value);
            words.remove(0);
        }
        assert_eq!(words.first().map(String::as_str), Some("paddock"), "{line}");
        let mut args = words.split_off(1);
        for i in 0..args.len() {
            if args[i] == "--user" {
                user = Some(args[i + 1].clone());
            }
            if args[i] == "…" {
                args[i] = password(user.as_deref().expect("--user before --password"));
            }
            if args[i] == "<id>" {
                args[i] = id.expect("a session id").to_string();
            }
        }
        command.args(args).args(["--nats-url", &url]);
        command
    };
    let serve = command_of(&paddock_line("paddock serve"), None);
    let _serve = Running::from_child(
        { serve }
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut monitor_command = command_of(&paddock_line("paddock monitor"), None);
    monitor_command.args(["--hz", "5"]);
    let monitor = Running::from_child(
        monitor_command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let id = monitor
        .line()
        .strip_prefix("session ")
        .expect("the monitor prints its session")
        .to_string();
    // Ops may send the dashboard's requests (the table above): its stints too.
    let stints = paddock_line("paddock sessions delete").replace("delete", "stints");
    let out = command_of(&stints, Some(&id)).output().unwrap();
    assert!(
        out.status.success(),
        "ops' `sessions stints`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = command_of(&paddock_line("paddock sessions delete"), Some(&id))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ops' delete as SECURITY.md writes it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The monitor hears of it and stops (exit 1: its session was deleted).
    assert_eq!(monitor.exit_code(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Ctrl-C while the demo is still starting (its broker coming up, the
/// processor opening its buckets) stops it within 2 s, exit 0, and its broker
/// with it.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_stops_at_once_when_interrupted_while_starting() {
    for wait in [Duration::from_millis(150), Duration::from_millis(600)] {
        let dir = fresh_dir("readme-early");
        let ports = Ports::free();
        let mut demo = demo(&dir, &ports);
        std::thread::sleep(wait);
        let (code, took) = demo.signal_and_wait(libc::SIGINT, Duration::from_secs(2));
        assert_eq!(code, Some(0), "after {wait:?}:\n{}", demo.printed());
        assert!(took < Duration::from_secs(2), "after {wait:?}: {took:?}");
        // Whatever it had started by then runs in its directory.
        assert_eq!(
            all_gone(&running_in(&dir), Duration::from_secs(1)),
            Vec::<u32>::new(),
            "after {wait:?}: left running"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A machine that already runs a broker without a WebSocket listener where
/// nats.conf puts one (Debian's nats-server on 4222 is such a broker): the
/// demo runs its own from nats.conf beside it, so the pages it links can
/// connect, and at ctrl-c stops its own and only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_a_broker_without_websocket_the_demo_runs_its_own_for_the_page() {
    if std::net::TcpStream::connect(("127.0.0.1", 8080)).is_ok() {
        panic!(
            "cannot run: something listens on 127.0.0.1:8080, where the demo looks for \
             nats.conf's WebSocket listener; stop it to run this test"
        );
    }
    let dir = fresh_dir("readme-demo-beside");
    let ports = Ports::free();
    let existing = NatsServer::start_on(ports.nats);
    let mut demo = demo(&dir, &ports);
    let ready = Duration::from_secs(90);
    let said = demo.until(ready, "the demo saying it runs its own broker", |l| {
        l.contains("has no WebSocket listener")
    });
    assert!(
        said.contains(&format!("running at nats://127.0.0.1:{}", ports.nats))
            && said.contains("starts its own on nats://127.0.0.1:"),
        "{said}"
    );
    // The page is served with the WebSocket listener of the demo's broker.
    demo.until(ready, "the page told nats.conf's WebSocket listener", |l| {
        l.contains(&format!("ws_url=\"ws://127.0.0.1:{}\"", ports.websocket))
    });
    demo.until(ready, "the processor running", |l| {
        l.contains("processor running")
    });
    let list_command = demo
        .until(ready, "the `sessions list` command", |l| {
            l.contains("sessions list --nats-url")
        })
        .trim()
        .to_string();
    assert!(
        !list_command.ends_with(&format!(":{}", ports.nats)),
        "the printed commands reach the demo's broker: {list_command}"
    );
    demo.until(ready, "a car's page", |l| {
        l.trim_start().starts_with("open it: ")
    });
    let deadline = Instant::now() + ready;
    loop {
        let (code, stdout, stderr) = run_printed(&dir, &list_command);
        if code == 0 && stdout.contains("3 live sessions") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "`{list_command}`: {stdout}{stderr}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let broker_pids = children_of(demo.child.id());
    assert_eq!(
        broker_pids.len(),
        1,
        "the demo's own nats-server: {broker_pids:?}"
    );

    let (code, _) = demo.signal_and_wait(libc::SIGINT, Duration::from_secs(5));
    assert_eq!(code, Some(0), "after ctrl-c:\n{}", demo.printed());
    assert_eq!(
        all_gone(&broker_pids, Duration::from_secs(1)),
        Vec::<u32>::new(),
        "the demo's broker left running"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", ports.nats)).is_ok(),
        "the broker that was running before the demo still runs"
    );
    drop(existing);
}
