//! The command line. Every setting can also come from the environment (`PIER_*`) or the file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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

/// Settings shared by every command. Values are checked by `Config::load`, so errors name the
/// setting the same way whichever source it came from.
#[derive(Debug, Default, Args)]
pub struct ConfigArgs {
    /// A TOML file of settings [default: ./pier.toml when present]
    #[arg(long, env = "PIER_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the API [default: 127.0.0.1:8080]
    #[arg(long, env = "PIER_LISTEN", global = true, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Address of the admin listener serving /metrics [default: 127.0.0.1:9464]
    #[arg(long, env = "PIER_ADMIN_LISTEN", global = true, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Directory of the embedded database [default: ./pier-data]
    #[arg(long, env = "PIER_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// sqlite://PATH or postgres://… [default: sqlite://<data-dir>/pier.db]
    #[arg(
        long,
        env = "PIER_DATABASE_URL",
        global = true,
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// redis://… for a cluster's shared state
    #[arg(
        long,
        env = "PIER_REDIS_URL",
        global = true,
        value_name = "URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,
    /// The first API key to create instead of a random one (see `pier keys generate`)
    #[arg(
        long,
        env = "PIER_BOOTSTRAP_API_KEY",
        global = true,
        value_name = "KEY",
        hide_env_values = true,
        hide = true
    )]
    pub bootstrap_api_key: Option<String>,
    /// auto, json or pretty [default: auto]
    #[arg(long, env = "PIER_LOG_FORMAT", global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Log filter, e.g. info or pier=debug [default: info]
    #[arg(long, env = "PIER_LOG", global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Largest request body in bytes [default: 1048576]
    #[arg(
        long,
        env = "PIER_BODY_LIMIT_BYTES",
        global = true,
        value_name = "BYTES"
    )]
    pub body_limit_bytes: Option<String>,
    /// Seconds shutdown waits for in-flight requests [default: 30]
    #[arg(
        long,
        env = "PIER_SHUTDOWN_TIMEOUT_SECS",
        global = true,
        value_name = "SECS"
    )]
    pub shutdown_timeout_secs: Option<String>,
    /// Database pool size [default: 16]
    #[arg(long, env = "PIER_DB_MAX_CONNECTIONS", global = true, value_name = "N")]
    pub db_max_connections: Option<String>,
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
pub enum WorkspacesCommand {
    /// Create a workspace and print its first owner key on its own line
    Create {
        /// The workspace's name
        name: String,
    },
    /// List workspaces
    List,
}
