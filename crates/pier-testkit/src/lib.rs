//! Test support for every Pier crate: a fresh database per test on SQLite or PostgreSQL, and
//! [`on_both_backends!`], which runs a scenario on each.
//!
//! PostgreSQL and Redis cases need servers: they are `#[ignore]`d with the reason, so a plain
//! `cargo test` reports them as ignored rather than passed, and run with
//! `cargo test -- --include-ignored` once `PIER_TEST_DATABASE_URL` (and `PIER_TEST_REDIS_URL`)
//! are set. A case that runs without its variable fails instead of passing silently.

pub mod mmdb;

use pier_db::{DatabaseUrl, Db, Migration};
use sqlx::Connection;

/// The reason PostgreSQL cases are ignored by default.
pub const NEEDS_POSTGRES: &str = "needs PostgreSQL: set PIER_TEST_DATABASE_URL";

/// Which database a test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// A base URL; each database is created fresh from it.
    Postgres(String),
}

impl Backend {
    /// PostgreSQL at `PIER_TEST_DATABASE_URL`. Panics when it is unset: a case that needs
    /// PostgreSQL must not pass without it.
    pub fn postgres() -> Self {
        Self::Postgres(required_env("PIER_TEST_DATABASE_URL"))
    }

    /// A URL of a new, empty database on this backend, inside `dir` for SQLite.
    pub async fn fresh_database_url(&self, dir: &std::path::Path) -> String {
        match self {
            Self::Sqlite => format!("sqlite://{}", dir.join("pier.db").display()),
            Self::Postgres(base) => fresh_postgres_database(base).await,
        }
    }
}

/// Redis at `PIER_TEST_REDIS_URL`; panics when it is unset, like [`Backend::postgres`].
pub fn redis_url() -> String {
    required_env("PIER_TEST_REDIS_URL")
}

fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!("{name} is not set: this case needs the server it names and cannot run"),
    }
}

/// A fresh, migrated database that lives as long as the value.
#[derive(Debug)]
pub struct TestDb {
    pub db: Db,
    _dir: tempfile::TempDir,
}

impl TestDb {
    /// A new database on `backend` with `schema` (each crate's migrations) applied.
    pub async fn new(backend: &Backend, schema: &[&[Migration]]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url: DatabaseUrl = backend
            .fresh_database_url(dir.path())
            .await
            .parse()
            .expect("a valid test database URL");
        let db = url.connect(8).await.expect("test database opens");
        db.migrate(schema).await.expect("migrations apply");
        Self { db, _dir: dir }
    }
}

/// Creates a uniquely named database next to `base_url`'s and returns its URL, so tests run in
/// parallel without seeing each other.
pub async fn fresh_postgres_database(base_url: &str) -> String {
    let name = format!(
        "pier_test_{}",
        pier_core::id::new_body(pier_core::Clock::now(&pier_core::SystemClock))
    );
    let mut conn = sqlx::PgConnection::connect(base_url)
        .await
        .expect("PIER_TEST_DATABASE_URL is reachable");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    conn.close().await.ok();
    with_database(base_url, &name)
}

/// `base_url` with its database name replaced.
fn with_database(base_url: &str, name: &str) -> String {
    let (without_query, query) = match base_url.split_once('?') {
        Some((url, q)) => (url, format!("?{q}")),
        None => (base_url, String::new()),
    };
    let scheme_end = without_query.find("://").map_or(0, |i| i + 3);
    let prefix = match without_query[scheme_end..].find('/') {
        Some(slash) => &without_query[..scheme_end + slash],
        None => without_query,
    };
    format!("{prefix}/{name}{query}")
}

/// Runs each scenario `async fn name(backend: Backend)` once per backend, as `sqlite::name` and
/// `postgres::name` (the latter ignored unless asked for; see the crate docs).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs PostgreSQL: set PIER_TEST_DATABASE_URL"]
                async fn $name() {
                    super::$name($crate::Backend::postgres()).await
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            with_database("postgres://u@h:5432/test?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
