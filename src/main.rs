use clap::Parser;
use paddock::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    paddock::telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve(args) => paddock::serve(&args, paddock::shutdown::signal()).await,
        Command::Demo(args) => paddock::demo::run(&args, paddock::shutdown::signal()).await,
    }
}
