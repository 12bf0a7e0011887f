//! The command line. Every setting is a flag and a `PIER_*` environment variable, derived from
//! the configuration's declaration of it, and can also come from the settings file.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Parser, Subcommand};

use crate::config::{Config, Sources};

#[derive(Debug, Parser)]
#[command(
    name = "pier",
    version,
    about = "Short links, durable jobs, reliable webhooks and rate limits in one service."
)]
pub struct Cli {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The settings file; every other setting is a flag added from the configuration's keys (see
/// [`with_settings`]).
#[derive(Debug, Default, Args)]
pub struct ConfigArgs {
    /// A TOML file of settings [default: ./pier.toml when present]
    #[arg(long, env = "PIER_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Settings that are flags of `serve` alone: a global `--role` would clash with
/// `keys create --role`.
const SERVE_ONLY: &[&str] = &["role"];

/// The command line with a flag (and environment variable) for every setting.
pub fn with_settings(command: clap::Command) -> clap::Command {
    let arg = |key: crate::config::Key| {
        let first_line = key.doc.lines().next().unwrap_or_default().trim();
        clap::Arg::new(key.path())
            .long(key.flag())
            .env(key.env())
            .value_name("VALUE")
            .help(first_line.to_owned())
            .hide(!key.has_flag())
            .hide_env_values(key.is_secret())
    };
    let (serve_only, global): (Vec<_>, Vec<_>) =
        Config::keys().partition(|key| SERVE_ONLY.contains(&key.path().as_str()));
    command
        .args(global.into_iter().map(|key| arg(key).global(true)))
        .mut_subcommand("serve", |serve| serve.args(serve_only.into_iter().map(arg)))
}

/// The settings the command line gave, environment before flags so that flags win.
pub fn sources(matches: &ArgMatches, file: Option<PathBuf>) -> Sources {
    let mut from_env = Vec::new();
    let mut from_flags = Vec::new();
    for key in Config::keys() {
        let path = key.path();
        let matches = match SERVE_ONLY.contains(&path.as_str()) {
            true => match matches.subcommand_matches("serve") {
                Some(serve) => serve,
                None => continue,
            },
            false => matches,
        };
        let Ok(Some(value)) = matches.try_get_one::<String>(&path) else {
            continue;
        };
        match matches.value_source(&path) {
            Some(ValueSource::EnvVariable) => from_env.push((path, value.clone())),
            Some(ValueSource::CommandLine) => from_flags.push((path, value.clone())),
            _ => {}
        }
    }
    from_env.extend(from_flags);
    Sources {
        file,
        values: from_env,
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (creates the database and a first API key on a fresh start)
    Serve,
    /// Apply database migrations and exit
    Migrate,
    /// Print the effective configuration, secrets redacted
    Config,
    /// Manage API keys offline, against the same database
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage workspaces offline, against the same database
    #[command(subcommand)]
    Workspaces(WorkspacesCommand),
    /// Manage users (the people who sign in) offline, against the same database
    #[command(subcommand)]
    Users(UsersCommand),
    /// Print a fresh secret key for the secret_key setting (PIER_SECRET_KEY)
    GenerateSecretKey,
    /// Copy the embedded SQLite database, consistently, while the service runs
    Backup {
        /// The file to write; it must not exist yet
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
    /// Webhook tools for receivers
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Check a delivery's signature: the body on standard input, the headers as flags. Exits 0
    /// and prints `valid` when it verifies, else prints why on standard error and exits 1
    Verify {
        /// The endpoint's signing secret, whsec_… (or set PIER_WEBHOOK_SECRET, which keeps it
        /// out of the process list)
        #[arg(long, env = "PIER_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// The webhook-id header
        #[arg(long)]
        id: String,
        /// The webhook-timestamp header
        #[arg(long)]
        timestamp: String,
        /// The webhook-signature header
        #[arg(long)]
        signature: String,
        /// How far the timestamp may be from now, in seconds
        #[arg(long, default_value_t = pier_webhook_verify::TOLERANCE_SECS)]
        tolerance_secs: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (once) on its own line
    Create {
        /// The workspace [default: the only one, if there is exactly one]
        #[arg(long, value_name = "ws_…")]
        workspace: Option<String>,
        /// A label for the key
        #[arg(long)]
        name: String,
        /// owner, admin, member or viewer
        #[arg(long, default_value = "member")]
        role: String,
        /// Comma-separated permissions that narrow the role, e.g. jobs:read,jobs:write
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        /// When the key stops working (RFC 3339)
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
    },
    /// List a workspace's keys (never their secrets)
    List {
        /// The workspace [default: the only one, if there is exactly one]
        #[arg(long, value_name = "ws_…")]
        workspace: Option<String>,
    },
    /// Revoke a key
    Revoke {
        /// The workspace [default: the only one, if there is exactly one]
        #[arg(long, value_name = "ws_…")]
        workspace: Option<String>,
        /// The key id, key_…
        id: String,
    },
    /// Print a fresh key without storing it, e.g. for PIER_BOOTSTRAP_API_KEY
    Generate,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user in a workspace and print their one-time password on a line of its own, as
    /// `password: …` (shown once; they choose their own at first sign-in), or with --invite an
    /// invitation link, as `invitation: …`. A user who exists already is added to the
    /// workspace instead, keeping their password
    Create {
        /// Their email address, which is their login
        #[arg(long)]
        email: String,
        /// Their name as others see it [default: the part of the email before the @]
        #[arg(long)]
        name: Option<String>,
        /// The workspace [default: the only one, if there is exactly one]
        #[arg(long, value_name = "ws_…")]
        workspace: Option<String>,
        /// owner, admin, member or viewer
        #[arg(long, default_value = "member")]
        role: String,
        /// Print a link (valid for auth.invitation_ttl_secs, usable once) where they choose
        /// their password, instead of a one-time password
        #[arg(long)]
        invite: bool,
    },
    /// List a workspace's members
    List {
        /// The workspace [default: the only one, if there is exactly one]
        #[arg(long, value_name = "ws_…")]
        workspace: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkspacesCommand {
    /// Create a workspace and print its first owner key on its own line
    Create {
        /// The workspace's name
        name: String,
    },
    /// List workspaces
    List,
}
