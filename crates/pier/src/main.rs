use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use pier::cli::{self, Cli, Command};
use pier::{Config, admin, launch, shutdown_signal, telemetry, webhook_verify};

#[tokio::main]
async fn main() -> ExitCode {
    let matches = cli::with_settings(Cli::command()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let shutdown = shutdown_signal();
    let config = match Config::load(&cli::sources(&matches, cli.config.config.clone())) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("pier: {err}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match telemetry::init(config.server.log_format, &config.server.log_level.0) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("pier: {err:#}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve => launch(config, shutdown).await,
        Command::Migrate => admin::migrate(&config).await,
        Command::Config => admin::print_config(&config),
        Command::Keys(command) => admin::keys(&config, command).await,
        Command::Workspaces(command) => admin::workspaces(&config, command).await,
        Command::Users(command) => admin::users(&config, command).await,
        Command::Webhooks(command) => webhook_verify::run(command),
        Command::Backup { to } => admin::backup(&config, &to).await,
        Command::GenerateSecretKey => {
            println!("{}", pier_core::MasterKey::generate().to_hex());
            Ok(())
        }
    };
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes, outermost first.
            eprintln!("pier: {err:#}");
            ExitCode::FAILURE
        }
    }
}
