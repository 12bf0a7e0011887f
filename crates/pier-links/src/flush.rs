//! Writing a batch of buffered clicks (see [`crate::clicks`]) in one transaction: the hourly
//! counts and links' totals, the day's visitor sketches and referring hosts, and the recent
//! clicks. Rows of links deleted since their clicks were buffered are not written. Each part is
//! one or a few statements over the whole batch, bound as a JSON list.

use std::collections::{HashMap, HashSet};

use pier_db::{Db, JsonList, Tx, with_tx};
use serde::Serialize;

use crate::clicks::{LinkClicks, OTHER_HOSTS};
use crate::geo::Country;
use crate::sketch::Sketch;

/// Referring hosts kept per link and day; visits from further hosts count under "(other)".
const HOSTS_PER_DAY: usize = 100;
/// Recent clicks kept per link.
const RECENT_KEPT: i64 = 100;

/// Writes `batch`, which is in link id order; returns how many clicks it held.
pub(crate) async fn write(db: &Db, batch: &[(String, LinkClicks)]) -> Result<usize, sqlx::Error> {
    // Relaxed: a crash of the machine may lose the last second of counts, never a link.
    let mut tx = db.begin_relaxed().await?;
    lock_links(&mut tx, batch).await?;
    let clicks = write_counts(&mut tx, batch).await?;
    write_visitors(&mut tx, batch).await?;
    write_referrers(&mut tx, batch).await?;
    write_countries(&mut tx, batch).await?;
    write_recent(&mut tx, batch).await?;
    tx.commit().await?;
    Ok(clicks)
}

/// Runs `sql`, whose `{rows}` is the row source over `rows` bound as `$1`.
async fn execute<T: Serialize>(tx: &mut Tx, sql: &str, rows: &[T]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let list = JsonList::new(rows)?;
    let sql = sql.replace("{rows}", &tx.backend().json_rows("$1"));
    with_tx!(tx, conn => {
        sqlx::query(&sql)
            .bind(list.as_str())
            .persistent(false)
            .execute(conn)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Like [`execute`], returning the rows the statement selects.
async fn fetch<T, R>(tx: &mut Tx, sql: &str, rows: &[T]) -> Result<Vec<R>, sqlx::Error>
where
    T: Serialize,
    R: Send
        + Unpin
        + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    let list = JsonList::new(rows)?;
    let sql = sql
        .replace("{rows}", &tx.backend().json_rows("$1"))
        .replace("{for_update}", tx.backend().for_update());
    with_tx!(tx, conn => {
        sqlx::query_as(&sql)
            .bind(list.as_str())
            .persistent(false)
            .fetch_all(conn)
            .await
    })
}

/// Locks the batch's links (PostgreSQL; SQLite has one writer) in id order before anything
/// else. Every row a flush writes belongs to one of its links, so two flushes that share a link
/// queue on the first link they share, whatever order their statements would lock rows in;
/// deleting a link locks its row first too.
async fn lock_links(tx: &mut Tx, batch: &[(String, LinkClicks)]) -> Result<(), sqlx::Error> {
    if tx.backend().for_update().is_empty() || batch.is_empty() {
        return Ok(());
    }
    let ids: Vec<[&str; 1]> = batch.iter().map(|(link, _)| [link.as_str()]).collect();
    let lock = "SELECT id FROM links WHERE id IN (SELECT value ->> 0 FROM {rows}) \
                ORDER BY id {for_update}";
    let _: Vec<(String,)> = fetch(tx, lock, &ids).await?;
    Ok(())
}

/// Only rows of links that still exist.
const LINK_EXISTS: &str = "EXISTS (SELECT 1 FROM links WHERE links.id = k.link_id)";

async fn write_counts(tx: &mut Tx, batch: &[(String, LinkClicks)]) -> Result<usize, sqlx::Error> {
    let mut hourly = Vec::new();
    let mut totals = Vec::new();
    let mut clicks = 0;
    for (link, counts) in batch {
        let mut uncounted = 0;
        let ws = counts.workspace_id.as_str();
        for h in &counts.hours {
            hourly.push((ws, link.as_str(), h.hour, h.humans, h.bots));
            uncounted += h.humans - h.counted;
            clicks += usize::try_from(h.humans + h.bots).unwrap_or(0);
        }
        if uncounted > 0 {
            totals.push((link.as_str(), uncounted));
        }
    }
    let upsert = format!(
        "INSERT INTO link_clicks_hourly (workspace_id, link_id, hour, humans, bots) \
         SELECT k.ws, k.link_id, k.hour, k.humans, k.bots FROM (SELECT value ->> 0 AS ws, \
         value ->> 1 AS link_id, CAST(value ->> 2 AS BIGINT) AS hour, \
         CAST(value ->> 3 AS BIGINT) AS humans, CAST(value ->> 4 AS BIGINT) AS bots \
         FROM {{rows}}) AS k WHERE {LINK_EXISTS} \
         ON CONFLICT (workspace_id, link_id, hour) DO UPDATE SET \
         humans = link_clicks_hourly.humans + excluded.humans, \
         bots = link_clicks_hourly.bots + excluded.bots"
    );
    execute(tx, &upsert, &hourly).await?;
    let add = "UPDATE links SET clicks = clicks + k.n FROM (SELECT value ->> 0 AS link_id, \
               CAST(value ->> 1 AS BIGINT) AS n FROM {rows}) AS k WHERE links.id = k.link_id";
    execute(tx, add, &totals).await?;
    Ok(clicks)
}

/// The rows of the `(workspace_id, link_id, day)` keys listed in `{rows}`.
const DAY_KEYS: &str = "(workspace_id, link_id, day) IN \
                        (SELECT value ->> 0, value ->> 1, CAST(value ->> 2 AS BIGINT) FROM {rows})";

type DayKey<'a> = (&'a str, &'a str, i64);

fn day_keys(batch: &[(String, LinkClicks)]) -> Vec<DayKey<'_>> {
    batch
        .iter()
        .flat_map(|(link, c)| {
            let ws = c.workspace_id.as_str();
            c.days.iter().map(move |d| (ws, link.as_str(), d.day))
        })
        .collect()
}

/// Sketches merge in this process, not in SQL: each day's row is created if missing, then
/// read under a row lock (PostgreSQL; SQLite has one writer), merged and written back, so two
/// nodes flushing the same link and day cannot lose each other's visitors.
async fn write_visitors(tx: &mut Tx, batch: &[(String, LinkClicks)]) -> Result<(), sqlx::Error> {
    let keys = day_keys(batch);
    if keys.is_empty() {
        return Ok(());
    }
    let create = format!(
        "INSERT INTO link_visitors_daily (workspace_id, link_id, day, sketch) \
         SELECT k.ws, k.link_id, k.day, '' FROM (SELECT value ->> 0 AS ws, \
         value ->> 1 AS link_id, CAST(value ->> 2 AS BIGINT) AS day FROM {{rows}}) AS k \
         WHERE {LINK_EXISTS} ON CONFLICT (workspace_id, link_id, day) DO NOTHING"
    );
    execute(tx, &create, &keys).await?;
    let read = format!(
        "SELECT workspace_id, link_id, day, sketch FROM link_visitors_daily WHERE {DAY_KEYS} \
         ORDER BY workspace_id, link_id, day {{for_update}}"
    );
    let stored: Vec<(String, String, i64, String)> = fetch(tx, &read, &keys).await?;
    let mut sketches: HashMap<DayKey<'_>, Sketch> = stored
        .iter()
        .map(|(ws, link, day, hex)| {
            let sketch = Sketch::from_hex(hex).unwrap_or_default();
            ((ws.as_str(), link.as_str(), *day), sketch)
        })
        .collect();
    for (link, clicks) in batch {
        for day in &clicks.days {
            let key = (clicks.workspace_id.as_str(), link.as_str(), day.day);
            if let Some(sketch) = sketches.get_mut(&key) {
                sketch.merge(&day.visitors.clone().into_sketch());
            }
        }
    }
    let rows: Vec<(&str, &str, i64, String)> = sketches
        .into_iter()
        .map(|((ws, link, day), sketch)| (ws, link, day, sketch.to_hex()))
        .collect();
    let update = "UPDATE link_visitors_daily SET sketch = k.sketch FROM (SELECT value ->> 0 AS \
                  ws, value ->> 1 AS link_id, CAST(value ->> 2 AS BIGINT) AS day, \
                  value ->> 3 AS sketch FROM {rows}) AS k \
                  WHERE link_visitors_daily.workspace_id = k.ws \
                  AND link_visitors_daily.link_id = k.link_id AND link_visitors_daily.day = k.day";
    execute(tx, update, &rows).await
}

/// A day keeps its first [`HOSTS_PER_DAY`] hosts; later new hosts count under "(other)".
async fn write_referrers(tx: &mut Tx, batch: &[(String, LinkClicks)]) -> Result<(), sqlx::Error> {
    let keys = day_keys(batch);
    if keys.is_empty() {
        return Ok(());
    }
    let read = format!(
        "SELECT workspace_id, link_id, day, host FROM link_referrers_daily WHERE {DAY_KEYS}"
    );
    let stored: Vec<(String, String, i64, String)> = fetch(tx, &read, &keys).await?;
    let mut known: HashMap<DayKey<'_>, HashSet<&str>> = HashMap::new();
    for (ws, link, day, host) in &stored {
        known
            .entry((ws.as_str(), link.as_str(), *day))
            .or_default()
            .insert(host.as_str());
    }
    let mut counts: HashMap<(DayKey<'_>, &str), i64> = HashMap::new();
    for (link, clicks) in batch {
        for day in &clicks.days {
            let key = (clicks.workspace_id.as_str(), link.as_str(), day.day);
            let hosts = known.entry(key).or_default();
            for (host, n) in &day.referrers {
                let host = if hosts.contains(host.as_str()) || hosts.len() < HOSTS_PER_DAY {
                    hosts.insert(host.as_str());
                    host.as_str()
                } else {
                    OTHER_HOSTS
                };
                *counts.entry((key, host)).or_default() += n;
            }
        }
    }
    let rows: Vec<(&str, &str, i64, &str, i64)> = counts
        .into_iter()
        .map(|(((ws, link, day), host), n)| (ws, link, day, host, n))
        .collect();
    add_daily_counts(tx, "link_referrers_daily", "host", &rows).await
}

/// Visits by country; ISO codes are a closed set, so this needs no cap.
async fn write_countries(tx: &mut Tx, batch: &[(String, LinkClicks)]) -> Result<(), sqlx::Error> {
    let rows: Vec<(&str, &str, i64, &str, i64)> = batch
        .iter()
        .flat_map(|(link, c)| {
            let ws = c.workspace_id.as_str();
            c.days.iter().flat_map(move |d| {
                d.countries
                    .iter()
                    .map(move |(country, n)| (ws, link.as_str(), d.day, country.as_str(), *n))
            })
        })
        .collect();
    add_daily_counts(tx, "link_countries_daily", "country", &rows).await
}

/// Adds `(workspace_id, link_id, day, value, clicks)` rows to a table of daily counts by
/// `column` (a referring host, a country).
async fn add_daily_counts(
    tx: &mut Tx,
    table: &str,
    column: &str,
    rows: &[(&str, &str, i64, &str, i64)],
) -> Result<(), sqlx::Error> {
    let upsert = format!(
        "INSERT INTO {table} (workspace_id, link_id, day, {column}, clicks) \
         SELECT k.ws, k.link_id, k.day, k.v, k.n FROM (SELECT value ->> 0 AS ws, \
         value ->> 1 AS link_id, CAST(value ->> 2 AS BIGINT) AS day, value ->> 3 AS v, \
         CAST(value ->> 4 AS BIGINT) AS n FROM {{rows}}) AS k WHERE {LINK_EXISTS} \
         ON CONFLICT (workspace_id, link_id, day, {column}) DO UPDATE SET \
         clicks = {table}.clicks + excluded.clicks"
    );
    execute(tx, &upsert, rows).await
}

/// Appends the batch's latest clicks and trims each link's log to [`RECENT_KEPT`].
async fn write_recent(tx: &mut Tx, batch: &[(String, LinkClicks)]) -> Result<(), sqlx::Error> {
    type Row<'a> = (
        &'a str,
        &'a str,
        i64,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
    );
    let rows: Vec<Row<'_>> = batch
        .iter()
        .flat_map(|(link, c)| {
            let ws = c.workspace_id.as_str();
            c.recent.iter().map(move |r| {
                let referrer = r.referrer.as_deref();
                let country = r.country.as_ref().map(Country::as_str);
                let at = r.at.as_micros();
                (ws, link.as_str(), at, r.visitor.as_str(), referrer, country)
            })
        })
        .collect();
    let insert = format!(
        "INSERT INTO link_clicks_recent (workspace_id, link_id, at, visitor, referrer, country) \
         SELECT k.ws, k.link_id, k.at, k.visitor, k.referrer, k.country FROM (SELECT \
         value ->> 0 AS ws, value ->> 1 AS link_id, CAST(value ->> 2 AS BIGINT) AS at, \
         value ->> 3 AS visitor, value ->> 4 AS referrer, value ->> 5 AS country \
         FROM {{rows}}) AS k WHERE {LINK_EXISTS} ORDER BY k.at"
    );
    execute(tx, &insert, &rows).await?;
    let links: Vec<[&str; 2]> = batch
        .iter()
        .map(|(link, c)| [c.workspace_id.as_str(), link.as_str()])
        .collect();
    let trim = format!(
        "DELETE FROM link_clicks_recent WHERE (workspace_id, link_id) IN \
         (SELECT value ->> 0, value ->> 1 FROM {{rows}}) \
         AND seq <= (SELECT r.seq FROM link_clicks_recent r \
         WHERE r.workspace_id = link_clicks_recent.workspace_id \
         AND r.link_id = link_clicks_recent.link_id ORDER BY r.seq DESC \
         LIMIT 1 OFFSET {RECENT_KEPT})"
    );
    execute(tx, &trim, &links).await
}
