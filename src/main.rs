use std::process::ExitCode;

use clap::Parser;
use paddock::cmd::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.logs_to_terminal() {
        cmd::telemetry::init(cli.log_format, cli.command.default_log_level());
    }
    // Built here rather than by #[tokio::main]: `serve` sizes it from its flags.
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = cli.command.worker_threads() {
        runtime.worker_threads(workers);
    }
    let result = match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(cmd::run(&cli)),
        Err(e) => Err(anyhow::Error::new(e).context("cannot start the runtime")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with the cause chain: "cannot …: because …".
            // Not `eprintln!`: with stderr closed it would panic (exit 101).
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "paddock: {e:#}");
            ExitCode::FAILURE
        }
    }
}
