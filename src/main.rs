use std::process::ExitCode;

use clap::Parser;
use paddock::cli::{Cli, Command};
use paddock::shutdown;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.logs_to_terminal() {
        paddock::telemetry::init(cli.log_format, cli.command.default_log_level());
    }
    let result = match &cli.command {
        Command::Serve(args) => paddock::serve(args, shutdown::signal()).await,
        Command::Demo(args) => paddock::demo::run(args, shutdown::signal()).await,
        Command::Sessions(args) => paddock::ops::run(args).await,
        Command::Monitor(args) => paddock::monitor::run(args, shutdown::signal()).await,
        Command::Watch(args) => paddock::watch::run(args, shutdown::signal()).await,
        Command::Bench(args) => paddock::bench::run(args).await,
        Command::Auth(args) => paddock::credentials::run(args),
        Command::Broker(command) => paddock::broker::run(command),
        Command::BenchHotpath(args) => {
            paddock::bench::hotpath(args.frames, args.frame == "rich", args.lap_field.0.clone())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with the cause chain: "cannot …: because …".
            eprintln!("paddock: {e:#}");
            ExitCode::FAILURE
        }
    }
}
