//! The server's secret key, under which secrets are sealed at rest (see `pier_core::seal`). It
//! never lives in the database: it comes from the `secret_key` setting, or, for the embedded
//! SQLite database, from `<data_dir>/secret.key`, created on first start. A cluster on
//! PostgreSQL must configure it, the same on every node.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use pier_core::MasterKey;
use pier_db::Backend;

use crate::config::Config;

pub const FILE_NAME: &str = "secret.key";

pub fn load(config: &Config) -> anyhow::Result<MasterKey> {
    if let Some(key) = &config.server.secret_key {
        return Ok(key.expose().clone());
    }
    if config.database_url().backend() == Backend::Postgres {
        bail!(
            "secret_key (PIER_SECRET_KEY) must be set with PostgreSQL, to the same value on every \
             node; make one with `pier generate-secret-key`"
        );
    }
    from_file(&config.server.data_dir.join(FILE_NAME))
}

/// Reads the key file, creating it (readable by its owner only) if it does not exist yet.
fn from_file(path: &Path) -> anyhow::Result<MasterKey> {
    let shown = path.display();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let fresh = MasterKey::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            writeln!(file, "{}", fresh.to_hex())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write the secret key to {shown}"))?;
            tracing::info!(path = %shown, "created the secret key; back it up with the database");
            Ok(fresh)
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the secret key from {shown}"))?;
            MasterKey::parse(&text).map_err(|e| anyhow::anyhow!("the secret key in {shown} {e}"))
        }
        Err(err) => Err(err).with_context(|| format!("cannot create the secret key at {shown}")),
    }
}
