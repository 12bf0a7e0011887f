//! Reading a link's click statistics over a time range: a series of human and bot visits per
//! hour or day, totals, the unique-visitor estimate, the top referring hosts and the latest
//! clicks. Everything comes from what the click flusher wrote (see [`crate::flush`]), so
//! clicks of the last second or so are not in it yet.

use pier_core::{Timestamp, WorkspaceId};
use pier_db::{Db, with_reader};

use crate::clicks::{DAY_MICROS, HOUR_MICROS, RecentClick, Visitor};
use crate::geo::Country;
use crate::link::LinkId;
use crate::sketch::Sketch;

/// The width of a series' buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Hour,
    Day,
}

impl Interval {
    pub fn micros(self) -> i64 {
        match self {
            Self::Hour => HOUR_MICROS,
            Self::Day => DAY_MICROS,
        }
    }

    /// The start of the bucket holding `at` (buckets are aligned to UTC hours and days).
    pub fn floor(self, at: Timestamp) -> i64 {
        at.as_micros() - at.as_micros().rem_euclid(self.micros())
    }
}

/// What to read: `[from, to)`, bucketed by `interval`. The caller bounds the range.
#[derive(Debug, Clone, Copy)]
pub struct StatsQuery {
    pub from: Timestamp,
    pub to: Timestamp,
    pub interval: Interval,
}

/// One bucket of the series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub start: Timestamp,
    pub clicks: i64,
    pub bots: i64,
}

/// A link's statistics over a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStats {
    /// Human visits.
    pub clicks: i64,
    pub bots: i64,
    /// Distinct human visitors of the days the range touches, estimated.
    pub unique_visitors: u64,
    /// Every bucket from the one holding `from` to the one before `to`, empty ones included.
    pub series: Vec<Bucket>,
    /// Hosts by human visits, most first.
    pub top_referrers: Vec<(String, i64)>,
    /// Countries (ISO codes) by human visits, most first; empty without a GeoIP database.
    pub top_countries: Vec<(String, i64)>,
    /// The latest clicks in the range, newest first.
    pub recent: Vec<RecentClick>,
}

/// Referring hosts and countries listed at most.
const TOP: i64 = 10;
/// Recent clicks listed at most.
const RECENT_LISTED: i64 = 20;

/// The statistics of `link` of `workspace` (the caller has checked the link is theirs).
pub async fn read(
    db: &Db,
    (workspace, link): (&WorkspaceId, &LinkId),
    query: &StatsQuery,
) -> Result<LinkStats, sqlx::Error> {
    let step = query.interval.micros();
    let start = query.interval.floor(query.from);
    let end = query.to.as_micros();
    let (first_day, ws, id) = (
        Interval::Day.floor(query.from),
        workspace.as_str(),
        link.as_str(),
    );
    let hours: Vec<(i64, i64, i64)> = with_reader!(db, pool => {
        sqlx::query_as(
            "SELECT hour, humans, bots FROM link_clicks_hourly \
             WHERE workspace_id = $1 AND link_id = $2 AND hour >= $3 AND hour < $4",
        )
        .bind(ws)
        .bind(id)
        .bind(start)
        .bind(end)
        .fetch_all(pool)
        .await
    })?;
    let sketches: Vec<String> = with_reader!(db, pool => {
        sqlx::query_scalar(
            "SELECT sketch FROM link_visitors_daily \
             WHERE workspace_id = $1 AND link_id = $2 AND day >= $3 AND day < $4",
        )
        .bind(ws)
        .bind(id)
        .bind(first_day)
        .bind(end)
        .fetch_all(pool)
        .await
    })?;
    let top = |table: &str, column: &str| {
        format!(
            "SELECT {column}, CAST(SUM(clicks) AS BIGINT) AS n FROM {table} \
             WHERE workspace_id = $1 AND link_id = $2 AND day >= $3 AND day < $4 \
             GROUP BY {column} ORDER BY n DESC, {column} LIMIT $5"
        )
    };
    let mut tops = Vec::with_capacity(2);
    for sql in [
        top("link_referrers_daily", "host"),
        top("link_countries_daily", "country"),
    ] {
        let rows: Vec<(String, i64)> = with_reader!(db, pool => {
            sqlx::query_as(&sql)
                .bind(ws)
                .bind(id)
                .bind(first_day)
                .bind(end)
                .bind(TOP)
                .fetch_all(pool)
                .await
        })?;
        tops.push(rows);
    }
    let top_countries = tops.pop().unwrap_or_default();
    let top_referrers = tops.pop().unwrap_or_default();
    let recent: Vec<(i64, String, Option<String>, Option<String>)> = with_reader!(db, pool => {
        sqlx::query_as(
            "SELECT at, visitor, referrer, country FROM link_clicks_recent \
             WHERE workspace_id = $1 AND link_id = $2 AND at >= $3 AND at < $4 \
             ORDER BY seq DESC LIMIT $5",
        )
        .bind(ws)
        .bind(id)
        .bind(query.from.as_micros())
        .bind(end)
        .bind(RECENT_LISTED)
        .fetch_all(pool)
        .await
    })?;

    let mut series: Vec<Bucket> = (0..)
        .map(|i| start + i * step)
        .take_while(|at| *at < end)
        .map(|at| Bucket {
            start: Timestamp::from_micros(at),
            clicks: 0,
            bots: 0,
        })
        .collect();
    for (hour, humans, bots) in &hours {
        let index = usize::try_from((hour - start) / step).unwrap_or(usize::MAX);
        if let Some(bucket) = series.get_mut(index) {
            bucket.clicks += humans;
            bucket.bots += bots;
        }
    }
    let mut visitors = Sketch::default();
    for hex in &sketches {
        visitors.merge(&Sketch::from_hex(hex).unwrap_or_default());
    }
    Ok(LinkStats {
        clicks: series.iter().map(|b| b.clicks).sum(),
        bots: series.iter().map(|b| b.bots).sum(),
        unique_visitors: visitors.estimate(),
        series,
        top_referrers,
        top_countries,
        recent: recent
            .into_iter()
            .map(|(at, visitor, referrer, country)| RecentClick {
                at: Timestamp::from_micros(at),
                visitor: visitor.parse().unwrap_or(Visitor::Unknown),
                referrer,
                country: country.as_deref().and_then(Country::parse),
            })
            .collect(),
    })
}
