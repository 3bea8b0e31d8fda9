use std::process::ExitCode;

use clap::Parser;
use paddock::cmd::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.logs_to_terminal() {
        cmd::telemetry::init(cli.log_format, cli.command.default_log_level());
    }
    match cmd::run(&cli).await {
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
