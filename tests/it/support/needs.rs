//! Programs some test groups drive that Rust does not bring: chromium with its
//! chromedriver (the browser tests) and Prometheus's `promtool` (the `/metrics`
//! check). Without one, outside CI, the group is left out: its tests pass at
//! once, and one line per group (not per test) says what is missing and the
//! command that installs it. Under `CI=true` nothing is left out: the same line
//! fails the test.
//!
//! libtest keeps what a passing test prints (`eprintln!` included) unless run
//! with `--nocapture`, and writing to stderr past it lands in the middle of
//! libtest's `test … ok` lines. So the lines are written when the test binary
//! exits (`atexit`), after its `test result:` line, with or without
//! `--nocapture`: a plain `cargo test` shows them there.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, Once};

/// The groups' lines, said when the process exits.
static LEFT_OUT: Mutex<Vec<String>> = Mutex::new(Vec::new());
static SAY_AT_EXIT: Once = Once::new();

extern "C" fn say_left_out() {
    // No panic may unwind out of an atexit handler: a poisoned lock still
    // holds the lines, and a failed write is let go.
    let lines = LEFT_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut stderr = std::io::stderr().lock();
    for line in lines.iter() {
        let _ = writeln!(stderr, "{line}");
    }
}

/// A group of tests that needs programs Rust does not bring.
pub struct Group {
    /// What the line calls it: `browser tests`.
    name: &'static str,
    /// The command that installs what it needs (Debian's packages).
    install: &'static str,
    /// The line goes out once per run, however many of the group's tests run.
    said: Once,
}

impl Group {
    pub const fn new(name: &'static str, install: &'static str) -> Self {
        Group {
            name,
            install,
            said: Once::new(),
        }
    }

    /// For a test of this group that cannot run: `what` was not found. Outside
    /// CI, says so (once per group, when the tests end) and returns, for the
    /// test to return too, passing; under `CI=true`, fails the test with the
    /// same line.
    pub fn left_out(&self, what: &str) {
        let line = format!(
            "{} left out: {what} not found (install: {})",
            self.name, self.install
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{line}, but CI=true leaves nothing out");
        }
        self.said.call_once(|| {
            LEFT_OUT
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(line);
            SAY_AT_EXIT.call_once(|| {
                // SAFETY: registers a function that takes no arguments, touches
                // only statics, and does not unwind.
                unsafe { libc::atexit(say_left_out) };
            });
        });
    }
}

/// The first of `names` found in a directory of PATH.
pub fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}
