//! Numbered migrations, one directory per backend, embedded in the binary. A merged migration is
//! never edited: sqlx records each one's checksum and refuses to start on a mismatch.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::Db;

macro_rules! migrations {
    ($backend:literal: $($version:literal => $file:literal),* $(,)?) => {
        vec![$(Migration::new(
            $version,
            Cow::Borrowed($file),
            MigrationType::Simple,
            Cow::Borrowed(include_str!(concat!("../migrations/", $backend, "/", $file, ".sql"))),
            false,
        )),*]
    };
}

fn migrator(migrations: Vec<Migration>) -> Migrator {
    Migrator {
        migrations: Cow::Owned(migrations),
        ignore_missing: false,
        // PostgreSQL takes an advisory lock, so nodes starting together migrate once.
        locking: true,
        no_tx: false,
    }
}

impl Db {
    /// Applies every pending migration.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            Self::Sqlite(db) => {
                migrator(migrations!("sqlite": 1 => "0001_foundation", 2 => "0002_jobs"))
                    .run(&db.writer)
                    .await
            }
            Self::Postgres(pool) => {
                migrator(migrations!("postgres": 1 => "0001_foundation", 2 => "0002_jobs"))
                    .run(pool)
                    .await
            }
        }
    }
}
