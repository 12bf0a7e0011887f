//! `POST /v1/links/import`: many links in one request (see [`super::bulk`] for the
//! formats), each row checked as `POST /v1/links` checks its body.

use std::collections::HashSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use pier_core::{FieldError, Timestamp, ValidationErrors};
use pier_links::{CheckedFields, LinkFields, NotCreated, Tag};
use serde::{Deserialize, Serialize};

use super::LinksState;
use super::bulk::BulkFormat;
use super::crud::{CreateLink, LinkView};
use super::export::EXPORTED;
use crate::AppState;
use crate::extract::{ApiQuery, Authed, ObjectsOnly, perm};
use crate::problem::{ApiError, ApiResult};

/// The largest import body: 100,000 rows of about 300 bytes.
pub const MAX_IMPORT_BYTES: usize = 32 * 1024 * 1024;
/// The most rows one import takes.
const MAX_ROWS: usize = 100_000;
/// The most passwords one import sets: each takes tens of milliseconds of Argon2id, and the
/// whole import must finish within the request's time limit.
const MAX_PASSWORDS: usize = 100;

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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportParams {
    /// `true`: every row is created, or none (any invalid row or taken slug is a `422`).
    /// `false` (the default): every valid row is created, and the report names the others.
    atomic: Option<bool>,
}

/// What an import did, row by row.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"created": 1, "failed": 1, "rows": [
    {"row": 1, "status": "created", "link": LinkView::example()},
    {"row": 2, "status": "failed",
     "errors": [{"field": "url", "code": "scheme_not_allowed", "message": "must use http or https, not `ftp:`"}]}]}))]
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
type ReadRow = (usize, Result<CheckedFields, ValidationErrors>);

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
    operation_id = "importLinks",
    tag = "links",
    security(("bearer" = [])),
    params(ImportParams),
    request_body(content(
        (String = "text/csv", example = "url,slug,tags\nhttps://example.com/,spring,\"a,b\"\n"),
        (CreateLink = "application/x-ndjson")
    )),
    responses(
        (status = 200, description = "Every row's outcome", body = ImportReport),
        (status = 413, description = "`payload_too_large`: the body is larger than 32 MiB", body = crate::Problem),
        (status = 415, description = "`unsupported_media_type`: the body is neither CSV nor NDJSON", body = crate::Problem),
        (status = 422, description = "`validation_failed`: a bad CSV header, too many rows or passwords, \
                                      or (atomic) refused rows", body = crate::Problem)
    )
)]
pub async fn import(
    State(state): State<AppState>,
    State(links): State<LinksState>,
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
        fields.push(checked.hashed(links.hashing()).await?);
    }
    let principal = &auth.principal;
    let outcomes = links
        .store()
        .create_many(
            principal.workspace_id(),
            principal.subject(),
            fields,
            atomic,
        )
        .await?;
    let base = links.short_link_base();
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
            let checked = read.and_then(|create| LinkFields::for_new(create.into(), now));
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
    serde_path_to_error::deserialize(ObjectsOnly(serde_json::Value::Object(object))).map_err(
        |err| {
            let path = err.path().to_string();
            let message = err.into_inner().to_string();
            match message.strip_prefix("missing field `") {
                Some(rest) => {
                    let field = rest.trim_end_matches('`');
                    ValidationErrors::single(field, "required", "must be given and not null")
                }
                None => ValidationErrors::single(&path, "invalid", message),
            }
        },
    )
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
        let text = super::export::as_written(text);
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
