//! `GET /v1/links/{id}/stats`: a link's clicks over a time range.

use axum::Json;
use axum::extract::{Path, State};
use pier_core::{Timestamp, ValidationErrors};
use pier_links::stats::{self, Interval, LinkStats, StatsQuery};
use pier_links::{LinkId, RecentClick};
use serde::{Deserialize, Serialize};

use super::LinksState;
use crate::AppState;
use crate::extract::{ApiQuery, OnResource, perm};
use crate::problem::{ApiError, ApiResult};

/// The longest series: 31 days of hours, or about three years of days.
const MAX_HOURS: i64 = 31 * 24;
const MAX_DAYS: i64 = 3 * 366;
/// The range when `from` is left out.
const DEFAULT_DAYS: i64 = 7;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// The start of the range (default: seven days before `to`).
    from: Option<Timestamp>,
    /// The end of the range, excluded (default: now).
    to: Option<Timestamp>,
    /// `hour` (at most 31 days) or `day` (the default; at most about three years). Buckets are
    /// aligned to UTC hours and days.
    #[param(schema_with = interval)]
    interval: Option<String>,
}

/// Visits in one bucket of the series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatsBucket {
    start: Timestamp,
    /// Human visits.
    clicks: i64,
    bots: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatsTotals {
    /// Human visits.
    clicks: i64,
    /// Visits by crawlers, link previews and other automated clients, never in `clicks`.
    bots: i64,
    /// Distinct human visitors (by address and user agent) of the days the range touches,
    /// estimated to within a few percent; no address is stored.
    unique_visitors: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TopReferrer {
    /// The referring page's host; `(other)` gathers hosts beyond the 100 kept per day.
    host: String,
    clicks: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TopCountry {
    /// ISO 3166-1 alpha-2.
    #[schema(example = "NZ")]
    country: String,
    clicks: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecentClickView {
    at: Timestamp,
    /// `browser`, `bot` or `unknown`.
    visitor: String,
    referrer: Option<String>,
    /// ISO 3166-1 alpha-2, when a GeoIP database is configured.
    country: Option<String>,
}

/// A link's statistics over a range.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"link_id": "link_01m8pd9e61ya13bwk7fzzb9vzj",
    "from": "2026-11-28T00:00:00.000000Z", "to": "2026-11-30T00:00:00.000000Z", "interval": "day",
    "totals": {"clicks": 130, "bots": 12, "unique_visitors": 97},
    "series": [{"start": "2026-11-28T00:00:00.000000Z", "clicks": 50, "bots": 5},
               {"start": "2026-11-29T00:00:00.000000Z", "clicks": 80, "bots": 7}],
    "top_referrers": [{"host": "news.example", "clicks": 70}],
    "top_countries": [{"country": "NZ", "clicks": 40}],
    "recent": [{"at": "2026-11-29T23:59:10.000000Z", "visitor": "browser",
                "referrer": "news.example", "country": "NZ"}]}))]
pub struct LinkStatsView {
    link_id: LinkId,
    from: Timestamp,
    to: Timestamp,
    interval: String,
    totals: StatsTotals,
    /// Every bucket of the range, empty ones included, oldest first.
    series: Vec<StatsBucket>,
    /// Up to 10 hosts, by human visits.
    top_referrers: Vec<TopReferrer>,
    /// Up to 10 countries, by human visits; empty unless a GeoIP database is configured.
    top_countries: Vec<TopCountry>,
    /// Up to 20 of the latest clicks in the range, newest first.
    recent: Vec<RecentClickView>,
}

fn interval() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["hour", "day"]))
        .build()
}

impl StatsParams {
    fn check(self, now: Timestamp) -> Result<(StatsQuery, &'static str), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let (interval, name, max_buckets) = match self.interval.as_deref() {
            None | Some("day") => (Interval::Day, "day", MAX_DAYS),
            Some("hour") => (Interval::Hour, "hour", MAX_HOURS),
            Some(_) => {
                errors.add("interval", "invalid", "must be `hour` or `day`");
                (Interval::Day, "day", MAX_DAYS)
            }
        };
        let to = self.to.unwrap_or(now);
        let from = self.from.unwrap_or_else(|| {
            Timestamp::from_micros(to.as_micros() - DEFAULT_DAYS * Interval::Day.micros())
        });
        if from >= to {
            errors.add("from", "invalid", "must be before `to`");
        } else if (to.as_micros() - interval.floor(from)) / interval.micros() >= max_buckets {
            let message = format!("the range may hold at most {max_buckets} {name}s");
            errors.add("from", "range_too_long", message);
        }
        errors.into_result()?;
        Ok((StatsQuery { from, to, interval }, name))
    }
}

/// A link's clicks over a range: totals, a series per hour or day, the unique-visitor
/// estimate, top referrers and the latest clicks. Clicks appear about a second after the visit.
#[utoipa::path(
    get,
    path = "/v1/links/{id}/stats",
    operation_id = "getLinkStats",
    tag = "links",
    security(("bearer" = [])),
    params(("id" = inline(LinkId), Path, description = "The link id"), StatsParams),
    responses((status = 200, body = LinkStatsView))
)]
pub async fn get(
    State(state): State<AppState>,
    State(links): State<LinksState>,
    auth: OnResource<perm::LinksRead>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<StatsParams>,
) -> ApiResult<Json<LinkStatsView>> {
    let (query, interval) = params
        .check(state.clock().now())
        .map_err(ApiError::validation)?;
    let not_found = || ApiError::not_found("link");
    let id = LinkId::parse(&id).map_err(|_| not_found())?;
    let link = links
        .store()
        .get(auth.principal.workspace_id(), &id)
        .await?
        .ok_or_else(not_found)?;
    let stats = stats::read(state.db(), (&link.workspace_id, &link.id), &query).await?;
    Ok(Json(view(link.id, &query, interval, stats)))
}

fn view(link_id: LinkId, query: &StatsQuery, interval: &str, stats: LinkStats) -> LinkStatsView {
    LinkStatsView {
        link_id,
        from: query.from,
        to: query.to,
        interval: interval.to_owned(),
        totals: StatsTotals {
            clicks: stats.clicks,
            bots: stats.bots,
            unique_visitors: stats.unique_visitors,
        },
        series: stats
            .series
            .into_iter()
            .map(|b| StatsBucket {
                start: b.start,
                clicks: b.clicks,
                bots: b.bots,
            })
            .collect(),
        top_referrers: stats
            .top_referrers
            .into_iter()
            .map(|(host, clicks)| TopReferrer { host, clicks })
            .collect(),
        top_countries: stats
            .top_countries
            .into_iter()
            .map(|(country, clicks)| TopCountry { country, clicks })
            .collect(),
        recent: stats
            .recent
            .into_iter()
            .map(|r: RecentClick| RecentClickView {
                at: r.at,
                visitor: r.visitor.as_str().to_owned(),
                referrer: r.referrer,
                country: r.country.map(|c| c.as_str().to_owned()),
            })
            .collect(),
    }
}
