//! The one typed configuration: defaults, then the file (`--config`, `PIER_CONFIG`, or
//! `./pier.toml` when present), then `PIER_*` environment variables, then flags. Everything is
//! validated at start; a bad setting stops the process with one line naming it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pier_auth::KeySecret;
use pier_core::{Secret, SecretUrl};
use pier_db::DatabaseUrl;
use serde::{Deserialize, Serialize, Serializer};

use crate::cli::ConfigArgs;

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, human-readable when it is.
    Auto,
    Json,
    Pretty,
}

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Where `/metrics` listens; keep it private.
    pub admin_listen: SocketAddr,
    /// Where the embedded database lives when no `database_url` is given.
    pub data_dir: PathBuf,
    /// The database; defaults to `sqlite://<data_dir>/pier.db`.
    #[serde(serialize_with = "redacted_url")]
    pub database_url: DatabaseUrl,
    /// Redis, for the shared cache tier and rate limits of a cluster.
    pub redis_url: Option<SecretUrl>,
    /// The key the first start creates, instead of a random one.
    pub bootstrap_api_key: Option<Secret<KeySecret>>,
    pub log_format: LogFormat,
    /// A tracing filter, e.g. `info` or `pier=debug,sqlx=warn`.
    pub log_level: String,
    /// The largest request body accepted.
    pub body_limit_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    #[serde(rename = "shutdown_timeout_secs", serialize_with = "seconds")]
    pub shutdown_timeout: Duration,
    /// The size of the database connection pool.
    pub db_max_connections: u32,
}

fn redacted_url<S: Serializer>(url: &DatabaseUrl, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&url.redacted())
}

fn seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// The file's keys: the same names as the flags, in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    admin_listen: Option<String>,
    data_dir: Option<String>,
    database_url: Option<String>,
    redis_url: Option<String>,
    bootstrap_api_key: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    body_limit_bytes: Option<u64>,
    shutdown_timeout_secs: Option<u64>,
    db_max_connections: Option<u64>,
}

/// A configuration error: one line that names the setting and how it can be given.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

fn invalid(setting: &str, flag: &str, env: &str, problem: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{setting} (--{flag} / {env}): {problem}"))
}

fn number<T: TryFrom<u64>>(
    flag_or_env: Option<&str>,
    file: Option<u64>,
    default: T,
    (setting, flag, env): (&str, &str, &str),
) -> Result<T, ConfigError> {
    let raw = match flag_or_env {
        Some(text) => Some(text.trim().parse::<u64>().map_err(|_| {
            invalid(
                setting,
                flag,
                env,
                format!("`{text}` is not a whole number"),
            )
        })?),
        None => file,
    };
    match raw {
        None => Ok(default),
        Some(0) => Err(invalid(setting, flag, env, "must be greater than zero")),
        Some(n) => {
            T::try_from(n).map_err(|_| invalid(setting, flag, env, format!("{n} is too large")))
        }
    }
}

impl Config {
    /// Layers the sources and validates the result.
    pub fn load(args: &ConfigArgs) -> Result<Self, ConfigError> {
        let file = read_file(args.config.as_deref())?;
        let pick =
            |flag: &Option<String>, file: &Option<String>| flag.clone().or_else(|| file.clone());

        let listen = pick(&args.listen, &file.listen).unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen.parse().map_err(|_| {
            invalid(
                "listen",
                "listen",
                "PIER_LISTEN",
                format!("`{listen}` is not an IP:port address"),
            )
        })?;
        let admin =
            pick(&args.admin_listen, &file.admin_listen).unwrap_or_else(|| "127.0.0.1:9464".into());
        let admin_listen = admin.parse().map_err(|_| {
            invalid(
                "admin_listen",
                "admin-listen",
                "PIER_ADMIN_LISTEN",
                format!("`{admin}` is not an IP:port address"),
            )
        })?;

        let data_dir = PathBuf::from(
            pick(&args.data_dir, &file.data_dir).unwrap_or_else(|| "./pier-data".into()),
        );
        if data_dir.as_os_str().is_empty() {
            return Err(invalid(
                "data_dir",
                "data-dir",
                "PIER_DATA_DIR",
                "must not be empty",
            ));
        }
        let database_url = match pick(&args.database_url, &file.database_url) {
            None => DatabaseUrl::sqlite_in(&data_dir),
            Some(url) => url
                .parse()
                .map_err(|e| invalid("database_url", "database-url", "PIER_DATABASE_URL", e))?,
        };
        let redis_url = pick(&args.redis_url, &file.redis_url)
            .map(|url| {
                let url = SecretUrl::new(url);
                redis::Client::open(url.expose())
                    .map(|_| url.clone())
                    .map_err(|_| {
                        invalid(
                            "redis_url",
                            "redis-url",
                            "PIER_REDIS_URL",
                            format!("`{url}` is not a usable Redis URL"),
                        )
                    })
            })
            .transpose()?;
        let bootstrap_api_key = pick(&args.bootstrap_api_key, &file.bootstrap_api_key)
            .map(|key| {
                KeySecret::parse(key.trim()).map(Secret::new).map_err(|_| {
                    ConfigError(
                        "bootstrap_api_key (PIER_BOOTSTRAP_API_KEY): not a valid Pier key; \
                         make one with `pier keys generate`"
                            .to_owned(),
                    )
                })
            })
            .transpose()?;

        let log_format = match pick(&args.log_format, &file.log_format).as_deref() {
            None | Some("auto") => LogFormat::Auto,
            Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => {
                return Err(invalid(
                    "log_format",
                    "log-format",
                    "PIER_LOG_FORMAT",
                    format!("`{other}` is not one of auto, json, pretty"),
                ));
            }
        };
        let log_level = pick(&args.log_level, &file.log_level).unwrap_or_else(|| "info".into());
        tracing_subscriber::EnvFilter::try_new(&log_level)
            .map_err(|e| invalid("log_level", "log-level", "PIER_LOG", e))?;

        let body_limit_bytes = number(
            args.body_limit_bytes.as_deref(),
            file.body_limit_bytes,
            1024 * 1024,
            (
                "body_limit_bytes",
                "body-limit-bytes",
                "PIER_BODY_LIMIT_BYTES",
            ),
        )?;
        let shutdown_secs = number::<u64>(
            args.shutdown_timeout_secs.as_deref(),
            file.shutdown_timeout_secs,
            30,
            (
                "shutdown_timeout_secs",
                "shutdown-timeout-secs",
                "PIER_SHUTDOWN_TIMEOUT_SECS",
            ),
        )?;
        let db_max_connections = number(
            args.db_max_connections.as_deref(),
            file.db_max_connections,
            16,
            (
                "db_max_connections",
                "db-max-connections",
                "PIER_DB_MAX_CONNECTIONS",
            ),
        )?;

        Ok(Self {
            listen,
            admin_listen,
            data_dir,
            database_url,
            redis_url,
            bootstrap_api_key,
            log_format,
            log_level,
            body_limit_bytes,
            shutdown_timeout: Duration::from_secs(shutdown_secs),
            db_max_connections,
        })
    }
}

fn read_file(explicit: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let default = Path::new("pier.toml");
    let path = match explicit {
        Some(path) => path,
        None if default.exists() => default,
        None => return Ok(FileConfig::default()),
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "config (--config / PIER_CONFIG): cannot read {}: {e}",
            path.display()
        ))
    })?;
    toml::from_str(&text).map_err(|e| {
        let message = e.message().to_owned();
        ConfigError(format!("config file {}: {message}", path.display()))
    })
}
