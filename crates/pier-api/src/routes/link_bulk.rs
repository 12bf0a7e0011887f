//! `/v1/links/import` and `/v1/links/export`: many links in one request, as NDJSON (one JSON
//! object a line) or CSV (a header row naming the columns, then one link a row, its tags in one
//! cell separated by `,`). An export re-imports: its CSV starts with the columns an import
//! reads, and an import skips the read-only columns an export adds after them.

use std::collections::HashSet;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::{StreamExt, TryStreamExt, stream};
use pier_core::{FieldError, Timestamp, ValidationErrors, WorkspaceId};
use pier_links::{Link, LinkFilter, LinkStore, ListPosition, NotCreated, Tag};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::extract::{ApiQuery, Authed, perm};
use crate::middleware::RequestContext;
use crate::problem::{ApiError, ApiResult};
use crate::routes::links::{Checked, CreateLink, LinkView, ListLinks, UpdateLink};

/// The largest import body: 100,000 rows of about 300 bytes.
pub const MAX_IMPORT_BYTES: usize = 32 * 1024 * 1024;
/// The most rows one import takes.
const MAX_ROWS: usize = 100_000;
/// The most passwords one import sets: each takes tens of milliseconds of Argon2id, and the
/// whole import must finish within the request's time limit.
const MAX_PASSWORDS: usize = 100;
/// Links an export reads from the store at a time.
const EXPORT_PAGE: u32 = 500;

/// The formats of imports and exports.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BulkFormat {
    /// One JSON object a line (`application/x-ndjson`).
    #[default]
    Ndjson,
    /// A header row, then one link a row (`text/csv`).
    Csv,
}

impl BulkFormat {
    fn of_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next()?.trim();
        if essence.eq_ignore_ascii_case("application/x-ndjson") {
            Some(Self::Ndjson)
        } else if essence.eq_ignore_ascii_case("text/csv") {
            Some(Self::Csv)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }

    fn attachment(self) -> &'static str {
        match self {
            Self::Ndjson => "attachment; filename=\"links.ndjson\"",
            Self::Csv => "attachment; filename=\"links.csv\"",
        }
    }
}

/// A field an import reads from a CSV column of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Url,
    Slug,
    Title,
    Tags,
    RedirectStatus,
    ExpiresAt,
    MaxClicks,
    Password,
}

/// The columns an import reads, in the order an export writes them (less `password`, which
/// is never shown).
const IMPORTED: [(&str, Column); 8] = [
    ("url", Column::Url),
    ("slug", Column::Slug),
    ("title", Column::Title),
    ("tags", Column::Tags),
    ("redirect_status", Column::RedirectStatus),
    ("expires_at", Column::ExpiresAt),
    ("max_clicks", Column::MaxClicks),
    ("password", Column::Password),
];

/// A CSV cell of an exported link.
type Cell = fn(&LinkView) -> String;

/// The columns an export writes, each with its cell; those an import does not read, it skips.
const EXPORTED: [(&str, Cell); 14] = [
    ("url", |v| v.url.clone()),
    ("slug", |v| v.slug.clone()),
    ("title", |v| v.title.clone().unwrap_or_default()),
    ("tags", |v| v.tags.join(&Tag::SEPARATOR.to_string())),
    ("redirect_status", |v| v.redirect_status.to_string()),
    ("expires_at", |v| {
        v.expires_at.map(|t| t.to_string()).unwrap_or_default()
    }),
    ("max_clicks", |v| {
        v.max_clicks.map(|n| n.to_string()).unwrap_or_default()
    }),
    ("has_password", |v| v.has_password.to_string()),
    ("clicks", |v| v.clicks.to_string()),
    ("id", |v| v.id.to_string()),
    ("short_url", |v| v.short_url.clone()),
    ("created_by", |v| v.created_by.clone()),
    ("created_at", |v| v.created_at.to_string()),
    ("updated_at", |v| v.updated_at.to_string()),
];

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportParams {
    /// `true`: every row is created, or none (any invalid row or taken slug is a `422`).
    /// `false` (the default): every valid row is created, and the report names the others.
    atomic: Option<bool>,
}

/// What an import did, row by row.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    created: usize,
    failed: usize,
    /// One entry per row, in input order.
    rows: Vec<ImportRow>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportRow {
    /// CSV: the record's number after the header, from 1. NDJSON: the line's number, from 1
    /// (blank lines are skipped).
    row: usize,
    #[serde(flatten)]
    outcome: ImportOutcome,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ImportOutcome {
    Created { link: Box<LinkView> },
    Failed { errors: Vec<FieldError> },
}

/// A row as read: its number and, if valid, its checked fields (passwords not yet hashed).
type ReadRow = (usize, Result<Checked, ValidationErrors>);

/// Create many links from CSV or NDJSON, each row checked as `POST /v1/links` checks its body.
///
/// CSV columns: `url` (required), `slug`, `title`, `tags` (one cell, separated by `,`),
/// `redirect_status`, `expires_at`, `max_clicks`, `password`; an empty cell leaves its field
/// out. NDJSON: one `POST /v1/links` body a line. Either way the read-only fields of an export
/// (`id`, `clicks`, …) are skipped, so an export re-imports. At most 100,000 rows, 100 of them
/// with a password, and 32 MiB. An atomic import that refuses rows answers `422` naming them
/// as `rows[N].field` (N as in the report).
#[utoipa::path(
    post,
    path = "/v1/links/import",
    tag = "links",
    security(("bearer" = [])),
    params(ImportParams),
    request_body(content(
        (String = "text/csv", example = "url,slug,tags\nhttps://example.com/,spring,\"a,b\"\n"),
        (CreateLink = "application/x-ndjson")
    )),
    responses(
        (status = 200, description = "Every row's outcome", body = ImportReport),
        (status = 413, description = "The body is larger than 32 MiB", body = crate::Problem),
        (status = 415, description = "The body is neither CSV nor NDJSON", body = crate::Problem),
        (status = 422, description = "A bad CSV header, too many rows or passwords, or (atomic) \
                                      refused rows", body = crate::Problem)
    )
)]
pub async fn import(
    State(state): State<AppState>,
    auth: Authed<perm::LinksWrite>,
    ApiQuery(params): ApiQuery<ImportParams>,
    req: Request,
) -> ApiResult<Json<ImportReport>> {
    let format = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(BulkFormat::of_content_type)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the rows as `Content-Type: text/csv` or `application/x-ndjson`",
            )
        })?;
    let body = Bytes::from_request(req, &state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "an import body may be at most 32 MiB; split the rows into several imports",
                )
            } else {
                ApiError::bad_request("unreadable_body", rejection.body_text())
            }
        })?;
    let now = state.clock().now();
    // Parsing and checking 100,000 rows takes a while: keep it off the async executor.
    let rows = tokio::task::spawn_blocking(move || read_rows(format, &body, now))
        .await
        .map_err(ApiError::internal)??;
    let atomic = params.atomic.unwrap_or(false);
    let mut report = Vec::with_capacity(rows.len());
    let mut valid = Vec::with_capacity(rows.len());
    for (row, result) in rows {
        match result {
            Ok(checked) => valid.push((row, checked)),
            Err(errors) => report.push(failed(row, errors)),
        }
    }
    if atomic && !report.is_empty() {
        return Err(refused(report));
    }
    let mut numbers = Vec::with_capacity(valid.len());
    let mut fields = Vec::with_capacity(valid.len());
    for (row, checked) in valid {
        numbers.push(row);
        fields.push(checked.into_fields().await?);
    }
    let principal = &auth.principal;
    let outcomes = state
        .links()
        .create_many(
            principal.workspace_id(),
            principal.subject(),
            fields,
            atomic,
        )
        .await?;
    let base = state.short_link_base();
    for (row, outcome) in numbers.into_iter().zip(outcomes) {
        let outcome = match outcome {
            Ok(link) => ImportOutcome::Created {
                link: Box::new(LinkView::new(link, base)),
            },
            Err(NotCreated::SlugTaken(slug)) => ImportOutcome::Failed {
                errors: ValidationErrors::single(
                    "slug",
                    "taken",
                    format!("the slug `{slug}` is taken"),
                )
                .into_vec(),
            },
            Err(NotCreated::RolledBack) => continue,
        };
        report.push(ImportRow { row, outcome });
    }
    report.sort_by_key(|r| r.row);
    let created = report
        .iter()
        .filter(|r| matches!(r.outcome, ImportOutcome::Created { .. }))
        .count();
    let failed = report.len() - created;
    if atomic && failed > 0 {
        return Err(refused(report));
    }
    tracing::info!(created, failed, atomic, "links imported");
    Ok(Json(ImportReport {
        created,
        failed,
        rows: report,
    }))
}

fn failed(row: usize, errors: ValidationErrors) -> ImportRow {
    ImportRow {
        row,
        outcome: ImportOutcome::Failed {
            errors: errors.into_vec(),
        },
    }
}

/// The `422` of an atomic import: the failed rows' errors, each named `rows[N].field` (or
/// `rows[N]` for the row as a whole).
fn refused(report: Vec<ImportRow>) -> ApiError {
    let mut all = ValidationErrors::new();
    for ImportRow { row, outcome } in report {
        let ImportOutcome::Failed { errors } = outcome else {
            continue;
        };
        for e in errors {
            let field = match e.field.as_str() {
                ROW => format!("rows[{row}]"),
                field => format!("rows[{row}].{field}"),
            };
            all.add(&field, &e.code, e.message);
        }
    }
    ApiError::validation(all)
}

/// The field an error about a row as a whole names.
const ROW: &str = "row";

/// Reads and checks every row; what makes the whole body unusable (a bad CSV header, too many
/// rows or passwords) is a `422` of its own.
fn read_rows(format: BulkFormat, body: &[u8], now: Timestamp) -> ApiResult<Vec<ReadRow>> {
    // Spreadsheets save "CSV UTF-8" with a byte order mark.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let parsed = match format {
        BulkFormat::Ndjson => Ok(ndjson_rows(body)),
        BulkFormat::Csv => csv_rows(body),
    }
    .map_err(ApiError::validation)?;
    let mut errors = ValidationErrors::new();
    errors.check_range("rows", parsed.len(), &(1..=MAX_ROWS));
    let passwords = parsed
        .iter()
        .filter(|(_, r)| r.as_ref().is_ok_and(|c| c.password.is_some()))
        .count();
    if passwords > MAX_PASSWORDS {
        let message = format!(
            "an import may set at most {MAX_PASSWORDS} passwords; create the other links with \
             POST /v1/links"
        );
        errors.add("password", "too_many", message);
    }
    errors.into_result().map_err(ApiError::validation)?;
    Ok(parsed
        .into_iter()
        .map(|(row, read)| {
            let checked = read.and_then(|create| UpdateLink::from(create).apply(None, now));
            (row, checked)
        })
        .collect())
}

type ParsedRow = (usize, Result<CreateLink, ValidationErrors>);

/// One `CreateLink` a non-blank line, numbered by line; reading stops past [`MAX_ROWS`].
fn ndjson_rows(body: &[u8]) -> Vec<ParsedRow> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.trim_ascii().is_empty())
        .take(MAX_ROWS + 1)
        .map(|(i, line)| (i + 1, json_row(line)))
        .collect()
}

/// A line as a `CreateLink`, its errors named as a JSON body's are. The read-only fields of an
/// exported link are skipped, so an export re-imports.
fn json_row(line: &[u8]) -> Result<CreateLink, ValidationErrors> {
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(line)
        .map_err(|err| {
            let code = if err.is_data() {
                "invalid"
            } else {
                "malformed_json"
            };
            // serde_json ends its messages with the position, which the row number gives.
            let message = err.to_string();
            let message = message.split(" at line ").next().unwrap_or_default();
            ValidationErrors::single(ROW, code, message)
        })?;
    object.retain(|name, _| !is_read_only(name));
    serde_path_to_error::deserialize(serde_json::Value::Object(object)).map_err(|err| {
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        match message.strip_prefix("missing field `") {
            Some(rest) => {
                let field = rest.trim_end_matches('`');
                ValidationErrors::single(field, "required", "must be given and not null")
            }
            None => ValidationErrors::single(&path, "invalid", message),
        }
    })
}

/// Whether an import skips this column (or JSON field): an export writes it, but it is not
/// the owner's to set.
fn is_read_only(name: &str) -> bool {
    !IMPORTED.iter().any(|(n, _)| *n == name) && EXPORTED.iter().any(|(n, _)| *n == name)
}

/// One `CreateLink` a record after the header, numbered from 1; reading stops past
/// [`MAX_ROWS`].
fn csv_rows(body: &[u8]) -> Result<Vec<ParsedRow>, ValidationErrors> {
    let mut reader = csv::ReaderBuilder::new().from_reader(body);
    let header = reader
        .headers()
        .map_err(|e| ValidationErrors::single("header", "invalid", csv_error(&e)))?;
    let columns = header_columns(header)?;
    Ok(reader
        .records()
        .take(MAX_ROWS + 1)
        .enumerate()
        .map(|(i, record)| {
            let create = record
                .map_err(|e| ValidationErrors::single(ROW, "invalid", csv_error(&e)))
                .and_then(|record| csv_row(&columns, &record));
            (i + 1, create)
        })
        .collect())
}

/// What each column of the header holds; `None` for a read-only column of an export.
fn header_columns(header: &csv::StringRecord) -> Result<Vec<Option<Column>>, ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let mut seen = HashSet::new();
    let mut columns = Vec::with_capacity(header.len());
    for name in header.iter().map(str::trim) {
        if !seen.insert(name) {
            errors.add(
                name,
                "duplicate_column",
                "names a column the header already has",
            );
        }
        let column = IMPORTED.iter().find(|(n, _)| *n == name).map(|(_, c)| *c);
        if column.is_none() && !is_read_only(name) {
            let known: Vec<&str> = IMPORTED.iter().map(|(n, _)| *n).collect();
            let message = format!("is not a column; expected {}", known.join(", "));
            errors.add(name, "unknown_column", message);
        }
        columns.push(column);
    }
    if !columns.contains(&Some(Column::Url)) {
        errors.add("url", "required", "the header must name a `url` column");
    }
    errors.into_result().map(|()| columns)
}

/// A record as a `CreateLink`. An empty cell leaves its field out; a cell that is not even
/// of its field's type is an error here, the rest are `POST /v1/links`'s rules.
fn csv_row(
    columns: &[Option<Column>],
    record: &csv::StringRecord,
) -> Result<CreateLink, ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let mut create = CreateLink {
        url: String::new(),
        slug: None,
        title: None,
        tags: None,
        redirect_status: None,
        expires_at: None,
        max_clicks: None,
        password: None,
    };
    let cells = columns.iter().zip(record.iter());
    for (column, text) in cells.filter(|(_, text)| !text.is_empty()) {
        match column {
            Some(Column::Url) => create.url = text.to_owned(),
            Some(Column::Slug) => create.slug = Some(text.to_owned()),
            Some(Column::Title) => create.title = Some(text.to_owned()),
            Some(Column::Tags) => {
                create.tags = Some(text.split(Tag::SEPARATOR).map(str::to_owned).collect());
            }
            Some(Column::RedirectStatus) => {
                create.redirect_status = whole(text, "redirect_status", &mut errors);
            }
            Some(Column::ExpiresAt) => {
                let at = Timestamp::parse_rfc3339(text).ok_or("must be an RFC 3339 timestamp");
                create.expires_at = errors.check("expires_at", "invalid", at);
            }
            Some(Column::MaxClicks) => create.max_clicks = whole(text, "max_clicks", &mut errors),
            Some(Column::Password) => create.password = Some(text.to_owned()),
            None => {}
        }
    }
    errors.into_result().map(|()| create)
}

fn whole<T: std::str::FromStr>(
    text: &str,
    field: &str,
    errors: &mut ValidationErrors,
) -> Option<T> {
    let parsed = text.parse().map_err(|_| "must be a whole number");
    errors.check(field, "invalid", parsed)
}

/// A CSV error without the position the row number already gives.
fn csv_error(err: &csv::Error) -> String {
    match err.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("has {len} cells where the header has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8".to_owned(),
        _ => err.to_string(),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `ndjson` (the default) or `csv`.
    format: Option<BulkFormat>,
}

/// Download every link of the workspace (or those the filters select), newest first. The body
/// is streamed as it is read; a failure once it has begun cuts it short, so a complete export
/// is one whose transfer completed.
#[utoipa::path(
    get,
    path = "/v1/links/export",
    tag = "links",
    security(("bearer" = [])),
    params(ExportParams, ListLinks),
    responses((
        status = 200,
        description = "NDJSON: one link (as `GET /v1/links/{id}` shows it) a line. CSV: a header \
                       row, then one link a row; the password is never exported.",
        content((String = "application/x-ndjson"), (String = "text/csv")),
        headers(("Content-Disposition" = String))
    ))
)]
pub async fn export(
    State(state): State<AppState>,
    auth: Authed<perm::LinksRead>,
    Extension(ctx): Extension<RequestContext>,
    ApiQuery(params): ApiQuery<ExportParams>,
    ApiQuery(query): ApiQuery<ListLinks>,
) -> ApiResult<Response> {
    let format = params.format.unwrap_or_default();
    let walk = Walk {
        store: state.links().clone(),
        workspace: auth.principal.workspace_id().clone(),
        filter: query.filter()?,
        base: state.short_link_base().to_owned(),
        format,
        after: None,
        done: false,
    };
    // The first page is read before answering, so its failure is still a problem.
    let mut body = match format {
        BulkFormat::Ndjson => Vec::new(),
        BulkFormat::Csv => {
            csv_records([EXPORTED.map(|(name, _)| name)]).map_err(ApiError::internal)?
        }
    };
    let rest = match walk.next().await.map_err(ApiError::internal)? {
        Some((page, rest)) => {
            body.extend_from_slice(&page);
            Some(rest)
        }
        None => None,
    };
    let request_id = ctx.request_id().to_owned();
    let rest = stream::try_unfold(rest, |walk| async move {
        match walk {
            Some(walk) => Ok(walk.next().await?.map(|(page, rest)| (page, Some(rest)))),
            None => Ok(None),
        }
    })
    .inspect_err(move |err: &anyhow::Error| {
        tracing::error!(request_id, error = format!("{err:#}"), "export cut short");
    });
    let stream = stream::once(async { Ok(Bytes::from(body)) }).chain(rest);
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        ),
        (
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static(format.attachment()),
        ),
    ];
    Ok((headers, Body::from_stream(stream)).into_response())
}

/// An export's walk through the store, one page at a time by keyset.
struct Walk {
    store: LinkStore,
    workspace: WorkspaceId,
    filter: LinkFilter,
    base: String,
    format: BulkFormat,
    after: Option<ListPosition>,
    done: bool,
}

impl Walk {
    /// The next page, rendered, and the walk to go on with; `None` once every link is out.
    async fn next(mut self) -> anyhow::Result<Option<(Bytes, Self)>> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .store
            .list(
                &self.workspace,
                &self.filter,
                self.after.take(),
                EXPORT_PAGE,
            )
            .await?;
        self.done = page.len() < EXPORT_PAGE as usize;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        self.after = Some((last.created_at.as_micros(), last.id.as_str().to_owned()));
        let rendered = self.render(page)?;
        Ok(Some((Bytes::from(rendered), self)))
    }

    fn render(&self, page: Vec<Link>) -> anyhow::Result<Vec<u8>> {
        let views = page.into_iter().map(|link| LinkView::new(link, &self.base));
        match self.format {
            BulkFormat::Ndjson => {
                let mut out = Vec::new();
                for view in views {
                    serde_json::to_writer(&mut out, &view)?;
                    out.push(b'\n');
                }
                Ok(out)
            }
            BulkFormat::Csv => csv_records(views.map(|view| EXPORTED.map(|(_, cell)| cell(&view)))),
        }
    }
}

/// CSV records, each cell quoted where it needs to be.
fn csv_records<R, T>(records: impl IntoIterator<Item = R>) -> anyhow::Result<Vec<u8>>
where
    R: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    let mut writer = csv::Writer::from_writer(Vec::new());
    for record in records {
        writer.write_record(record)?;
    }
    Ok(writer.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_header_reimports_with_the_importable_columns_first() {
        let header = csv::StringRecord::from(EXPORTED.map(|(name, _)| name).to_vec());
        let columns = header_columns(&header).expect("every exported column is known");
        let importable: Vec<Option<Column>> = IMPORTED
            .iter()
            .map(|(_, column)| Some(*column))
            .filter(|column| *column != Some(Column::Password))
            .collect();
        assert_eq!(columns[..importable.len()], importable);
        assert!(columns[importable.len()..].iter().all(Option::is_none));
    }

    #[test]
    fn headers_name_known_columns_once_and_a_url() {
        let fields = |names: &[&str]| {
            let errors = header_columns(&csv::StringRecord::from(names.to_vec()))
                .expect_err("refused")
                .into_vec();
            errors
                .into_iter()
                .map(|e| (e.field, e.code))
                .collect::<Vec<_>>()
        };
        let pair = |field: &str, code: &str| (field.to_owned(), code.to_owned());
        assert_eq!(
            fields(&["url", "colour"]),
            [pair("colour", "unknown_column")]
        );
        assert_eq!(
            fields(&["url", "title", "url"]),
            [pair("url", "duplicate_column")]
        );
        assert_eq!(fields(&["slug"]), [pair("url", "required")]);
    }
}
