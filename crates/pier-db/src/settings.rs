//! Server-wide settings kept in the database, so every node of a cluster agrees on them.

use rand::RngCore;

use crate::{Db, with_reader, with_writer};

/// Returns the 32-byte secret named `name`, creating it on first use. The first writer wins, so
/// nodes starting at the same moment still end up sharing one value.
pub async fn server_secret(db: &Db, name: &str) -> Result<[u8; 32], sqlx::Error> {
    let mut fresh = [0u8; 32];
    rand::rng().fill_bytes(&mut fresh);
    with_writer!(db, pool => {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(hex::encode(fresh))
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    let stored: String = with_reader!(db, pool => {
        sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_one(pool)
            .await
    })?;
    let mut secret = [0u8; 32];
    hex::decode_to_slice(&stored, &mut secret).map_err(|_| {
        sqlx::Error::Protocol(format!("setting `{name}` is not a 32-byte hex value"))
    })?;
    Ok(secret)
}
