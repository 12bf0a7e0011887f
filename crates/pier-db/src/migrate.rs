//! Migrations. Each crate that owns tables keeps its migrations for both backends in its own
//! `migrations/{sqlite,postgres}/` directories and lists them with [`migrations!`]; the binary
//! hands every crate's list to [`Db::migrate`], which orders them by version. Versions are
//! numbered across the whole workspace (the runner refuses duplicates), and a merged migration
//! is never edited: sqlx records each one's checksum and refuses to start on a mismatch.

use std::borrow::Cow;
use std::collections::BTreeMap;

use sqlx::migrate::{MigrateError, MigrationType, Migrator};

use crate::{Db, Pools};

/// One numbered migration, written for both backends.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    /// The file name without `.sql`, e.g. `0002_jobs`.
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// Lists the calling crate's migrations, embedding `migrations/sqlite/NAME.sql` and
/// `migrations/postgres/NAME.sql`: `migrations!(2 => "0002_jobs", 3 => "0003_more")`.
#[macro_export]
macro_rules! migrations {
    ($($version:literal => $name:literal),* $(,)?) => {
        &[$($crate::Migration {
            version: $version,
            name: $name,
            sqlite: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite/", $name, ".sql")),
            postgres: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres/", $name, ".sql")),
        }),*]
    };
}

fn migrator(sets: &[&[Migration]], postgres: bool) -> Result<Migrator, MigrateError> {
    let mut ordered = BTreeMap::new();
    for migration in sets.iter().flat_map(|set| set.iter()) {
        if let Some(other) = ordered.insert(migration.version, migration) {
            return Err(MigrateError::Source(
                format!(
                    "migrations {} and {} share version {}",
                    other.name, migration.name, migration.version
                )
                .into(),
            ));
        }
    }
    let migrations = ordered
        .into_values()
        .map(|m| {
            let sql = if postgres { m.postgres } else { m.sqlite };
            sqlx::migrate::Migration::new(
                m.version,
                Cow::Borrowed(m.name),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect();
    Ok(Migrator {
        migrations: Cow::Owned(migrations),
        ignore_missing: false,
        // PostgreSQL takes an advisory lock, so nodes starting together migrate once.
        locking: true,
        no_tx: false,
    })
}

impl Db {
    /// Applies every pending migration of `sets` (one list per crate), in version order.
    pub async fn migrate(&self, sets: &[&[Migration]]) -> Result<(), MigrateError> {
        match &self.0 {
            Pools::Sqlite { writer, .. } => migrator(sets, false)?.run(writer).await,
            Pools::Postgres { pool, .. } => migrator(sets, true)?.run(pool).await,
        }
    }
}
