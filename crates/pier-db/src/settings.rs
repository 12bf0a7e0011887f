//! Server-wide settings kept in the database, so every node of a cluster agrees on them.

use rand::RngCore;

use crate::{Db, on_reader, on_writer};

/// Returns the 32-byte secret named `name`, creating it on first use. The first writer wins, so
/// nodes starting at the same moment still end up sharing one value.
pub async fn server_secret(db: &Db, name: &str) -> Result<[u8; 32], sqlx::Error> {
    let mut fresh = [0u8; 32];
    rand::rng().fill_bytes(&mut fresh);
    let fresh_hex: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
    on_writer!(db, |pool| {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&fresh_hex)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    let stored: String = on_reader!(db, |pool| {
        sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_one(pool)
            .await
    })?;
    decode_hex32(&stored).ok_or_else(|| {
        sqlx::Error::Protocol(format!("setting `{name}` is not a 32-byte hex value"))
    })
}

fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
