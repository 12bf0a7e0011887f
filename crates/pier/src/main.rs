use std::process::ExitCode;

use clap::Parser;
use pier::cli::{Cli, Command};
use pier::{Config, admin, launch, shutdown_signal, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let shutdown = shutdown_signal();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("pier: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format, &config.log_level);
    let result = match cli.command {
        Command::Serve => launch(config, shutdown).await,
        Command::Migrate => admin::migrate(&config).await,
        Command::Config => admin::print_config(&config),
        Command::Keys(command) => admin::keys(&config, command).await,
        Command::Workspaces(command) => admin::workspaces(&config, command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes, outermost first.
            eprintln!("pier: {err:#}");
            ExitCode::FAILURE
        }
    }
}
