//! One `pier serve` per SQLite database. Two processes on one file would each keep caches and
//! buffers the other's writes never reach (nothing relays between them, as PostgreSQL's
//! notifications do between nodes), so a second one is refused at start. The lock is an OS lock
//! on a file beside the database, held for as long as the process lives: a process that dies,
//! however it dies, leaves no lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use anyhow::Context;
use pier_db::DatabaseUrl;

/// Holds the lock until dropped; holds nothing on PostgreSQL, whose nodes share one database.
#[derive(Debug)]
pub(crate) struct ServeLock {
    _held: Option<File>,
}

/// Takes the serving lock of `database`, or says which process-wide rule it would break.
pub(crate) fn acquire(database: &DatabaseUrl) -> anyhow::Result<ServeLock> {
    let DatabaseUrl::Sqlite(path) = database else {
        return Ok(ServeLock { _held: None });
    };
    let lock_path = lock_path(path);
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open the lock file {}", lock_path.display()))?;
    // `File::try_lock` is stable since Rust 1.89, which builds this workspace; the declared
    // `rust-version` (1.85) is already below what the code needs (let chains, 1.88).
    #[allow(clippy::incompatible_msrv)]
    let locked = file.try_lock();
    match locked {
        Ok(()) => Ok(ServeLock { _held: Some(file) }),
        Err(TryLockError::WouldBlock) => anyhow::bail!(
            "another pier is already serving {} (it holds {}); stop it, or give this one \
             another data_dir or database_url",
            path.display(),
            lock_path.display()
        ),
        Err(TryLockError::Error(err)) => {
            Err(err).with_context(|| format!("cannot lock the lock file {}", lock_path.display()))
        }
    }
}

/// `pier.db` → `pier.db.lock`.
fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}
