//! Parsing database URLs and opening pools with the settings each backend needs.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use pier_core::SecretUrl;

use crate::{Db, Pools};

/// A validated database location.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file, created with its parent directory if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (it may carry a password, so it is never printed whole).
    Postgres(SecretUrl),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDatabaseUrl(String);

impl FromStr for DatabaseUrl {
    type Err = InvalidDatabaseUrl;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // The driver's message can quote the URL, so only its kind of failure is shown.
            PgConnectOptions::from_str(url).map_err(|_| {
                InvalidDatabaseUrl(format!(
                    "`{}` is not a usable PostgreSQL URL",
                    pier_core::secret::redact_url(url)
                ))
            })?;
            return Ok(Self::Postgres(SecretUrl::new(url)));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"));
        match path {
            Some(p) if p.is_empty() || p.starts_with(":memory:") => Err(InvalidDatabaseUrl(
                "SQLite needs a file path (e.g. sqlite://./pier-data/pier.db); in-memory \
                 databases are not supported"
                    .to_owned(),
            )),
            Some(p) => Ok(Self::Sqlite(PathBuf::from(
                p.split('?').next().unwrap_or(p),
            ))),
            None => Err(InvalidDatabaseUrl(
                "expected a URL starting with sqlite:// or postgres://".to_owned(),
            )),
        }
    }
}

impl DatabaseUrl {
    pub fn sqlite_in(data_dir: &Path) -> Self {
        Self::Sqlite(data_dir.join("pier.db"))
    }

    pub fn backend(&self) -> crate::Backend {
        match self {
            Self::Sqlite(_) => crate::Backend::Sqlite,
            Self::Postgres(_) => crate::Backend::Postgres,
        }
    }

    /// The URL with any password replaced, safe to log.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Postgres(url) => url.redacted(),
        }
    }

    /// Opens the pools. `max_connections` bounds PostgreSQL and the SQLite readers.
    pub async fn connect(&self, max_connections: u32) -> Result<Db, sqlx::Error> {
        match self {
            Self::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let base = SqliteConnectOptions::new()
                    .filename(path)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL syncs the WAL on every commit, so an acknowledged write survives an
                    // OS crash or power loss too (NORMAL would survive only process crashes).
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true);
                // No ping before each use (sqlx's default): it would double the round trips of
                // every statement, and a broken connection fails its statement anyway.
                let writer = SqlitePoolOptions::new()
                    .test_before_acquire(false)
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(base.clone().create_if_missing(true))
                    .await?;
                let reader = SqlitePoolOptions::new()
                    .test_before_acquire(false)
                    .max_connections(max_connections.max(1))
                    .connect_with(base.read_only(true))
                    .await?;
                Ok(Db(Pools::Sqlite { writer, reader }))
            }
            Self::Postgres(url) => {
                let options = PgConnectOptions::from_str(url.expose())?.application_name("pier");
                // No ping before each use (sqlx's default), which would double the round trips
                // of every statement; a connection that broke fails its statement, and the pool
                // replaces it.
                let pool = PgPoolOptions::new()
                    .test_before_acquire(false)
                    .max_connections(max_connections.max(2))
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options.clone())
                    .await?;
                let listen = crate::listen::ListenOptions::new(options);
                Ok(Db(Pools::Postgres { pool, listen }))
            }
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes_and_rejects_others() {
        assert_eq!(
            "sqlite://./data/p.db".parse::<DatabaseUrl>(),
            Ok(DatabaseUrl::Sqlite(PathBuf::from("./data/p.db")))
        );
        assert!(matches!(
            "postgres://u:pw@localhost/db".parse::<DatabaseUrl>(),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!("mysql://localhost/db".parse::<DatabaseUrl>().is_err());
        assert!("sqlite::memory:".parse::<DatabaseUrl>().is_err());
    }

    #[test]
    fn redacts_postgres_passwords() {
        let url: DatabaseUrl = "postgres://app:s3cret@db.internal:5432/pier"
            .parse()
            .expect("url");
        assert_eq!(
            url.redacted(),
            "postgres://app:[redacted]@db.internal:5432/pier"
        );
        assert!(!format!("{url:?}").contains("s3cret"));
    }

    /// An acknowledged write survives power loss: the SQLite writer syncs the WAL on every
    /// commit.
    #[tokio::test]
    async fn the_sqlite_writer_syncs_every_commit() {
        let dir = tempfile::tempdir().expect("dir");
        let db = DatabaseUrl::sqlite_in(dir.path())
            .connect(2)
            .await
            .expect("opens");
        let (journal, synchronous): (String, i64) = crate::with_writer!(&db, pool => {
            let journal = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(pool).await;
            let synchronous = sqlx::query_scalar("PRAGMA synchronous").fetch_one(pool).await;
            journal.and_then(|j| synchronous.map(|s| (j, s)))
        })
        .expect("pragmas");
        assert_eq!(
            (journal.as_str(), synchronous),
            ("wal", 2),
            "WAL with synchronous = FULL"
        );
        db.close().await;
    }
}
