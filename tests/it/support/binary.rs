//! The paddock binary, run as a user runs it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::PATIENCE;

/// The paddock binary built for these tests, as a command to add arguments to.
pub fn paddock() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_paddock"));
    // Its stdout is a pipe, 80 columns wide to the commands (QR codes), whatever
    // width the shell running the tests exported.
    command.env_remove("COLUMNS");
    command
}

/// Runs the binary to completion; returns (exit code, stdout, stderr).
pub async fn run_paddock(args: &[&str]) -> (i32, String, String) {
    // Waits on a blocking thread, so an in-process processor keeps running.
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || paddock().args(args).output())
        .await
        .expect("the waiting thread panicked")
        .expect("the paddock binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running paddock process whose stdout lines are collected as they come. Its
/// methods block: use it from a multi-threaded test runtime, so the in-process
/// processor keeps running on the other worker.
///
/// Its stderr (the logs) is kept, the last [`STDERR_LINES`] lines, and printed
/// into the test's output when it is dropped: a failing test shows why a
/// process did not come up, or what it did before it stopped.
pub struct Running {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

/// How many of a process's last stderr lines a failing test prints.
const STDERR_LINES: usize = 200;

impl Running {
    pub fn spawn(args: &[&str]) -> Self {
        let child = paddock()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::piped()
            })
            .spawn()
            .expect("the paddock binary starts");
        Self::from_child(child)
    }

    /// A child spawned with its stdout piped.
    pub fn from_child(mut child: Child) -> Self {
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(pipe) = child.stderr.take() {
            let kept = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut kept = kept.lock().unwrap();
                    if kept.len() == STDERR_LINES {
                        kept.pop_front();
                    }
                    kept.push_back(line);
                }
            });
        }
        Running {
            child,
            lines,
            stderr,
        }
    }

    /// The next stdout line, waiting up to `PATIENCE`.
    pub fn line(&self) -> String {
        self.lines
            .recv_timeout(PATIENCE)
            .expect("no output line in time")
    }

    /// Lines printed within `window`.
    pub fn lines_for(&self, window: Duration) -> Vec<String> {
        let end = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => out.push(line),
                Err(_) => break,
            }
        }
        out
    }

    /// The exit code of a process that stops by itself within `PATIENCE`.
    pub fn exit_code(mut self) -> i32 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "paddock did not exit by itself");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (e.g. "-INT") and waits for the exit code.
    pub fn stop(mut self, signal: &str) -> i32 {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "paddock did not exit after {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread drains what the pipe still holds.
        std::thread::sleep(Duration::from_millis(20));
        let kept = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        if kept.is_empty() {
            return;
        }
        // Into the test's captured output: shown only if the test fails, and
        // then for every process it ran, stopped or not (a processor stopped
        // earlier in the test is often the one that explains the failure).
        eprintln!(
            "--- paddock (pid {}): the last {} lines of its stderr ---",
            self.child.id(),
            kept.len()
        );
        for line in kept.iter() {
            eprintln!("{line}");
        }
    }
}

/// `paddock serve` against `url` with its own defaults, plus `extra` flags: the
/// processor users run. The one flag added, a 200 ms write-behind window
/// (`--persist-interval`, 1 s by default), only makes recovery tests wait less.
/// A test that lifts a bound (e.g. `--max-frame-rate 0`) says why where it does.
pub fn serve_binary(url: &str, extra: &[&str]) -> Running {
    let mut args = vec!["serve", "--nats-url", url, "--persist-interval", "200ms"];
    args.extend_from_slice(extra);
    Running::spawn(&args)
}

/// `paddock sessions create` with `auth init`'s creator credentials from `dir`,
/// saving the session's credentials there: what a team does in per-session mode.
/// Answers the new session's id and what the command printed.
pub async fn create_with_creator(url: &str, dir: &std::path::Path) -> (String, String) {
    let creds = dir.join("creator.creds");
    let (code, stdout, stderr) = run_paddock(&[
        "sessions",
        "create",
        "--nats-url",
        url,
        "--creds",
        creds.to_str().unwrap(),
        "--inbox-prefix",
        "_INBOX_creator",
        "--credentials-dir",
        dir.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    (stdout.lines().next().unwrap().to_string(), stdout)
}

/// `paddock serve` in per-session mode with what `auth init` wrote into `dir`
/// (its credentials and the issuer's key), plus `extra` flags.
pub fn serve_issuing(url: &str, dir: &std::path::Path, extra: &[&str]) -> Running {
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let account = std::fs::read_to_string(dir.join("issuer.account")).unwrap();
    let (creds, seed) = (path("processor.creds"), path("issuer.seed"));
    let mut args = vec![
        "serve",
        "--nats-url",
        url,
        "--creds",
        &creds,
        "--issuer-account",
        account.trim(),
        "--issuer-signing-seed",
        &seed,
    ];
    args.extend_from_slice(extra);
    Running::spawn(&args)
}
