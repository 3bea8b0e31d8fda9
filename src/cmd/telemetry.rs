//! Structured logging: `RUST_LOG` picks what is logged (default `info`, with the
//! NATS client's own chatter at `warn`), and
//! `--log-format json` gives one JSON object per line for log shippers.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. Logs go to stderr, keeping stdout for output a
/// script may read.
pub fn init(format: LogFormat, default_level: &str) {
    // async-nats logs its own connection events at info; ours (connect.rs) say the
    // same with context, so by default only its warnings and errors come through,
    // and for commands a person runs none: they report a failed connection
    // themselves, once (an async-nats error line would say it a second time).
    let nats = if default_level == "info" {
        "warn"
    } else {
        "off"
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},async_nats={nats}")));
    // Colours only on a terminal: escape codes in a log file or the journal are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A failed write of a log line is dropped; reporting it would write to the
        // same closed stderr with `eprintln!`, which panics (`… 2>&1 | tee` after
        // ctrl-c ended `tee`).
        .log_internal_errors(false)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
