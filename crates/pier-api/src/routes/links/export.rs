//! `GET /v1/links/export`: every link of a workspace, streamed page by page (see
//! [`super::bulk`] for the formats).

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt, stream};
use pier_core::WorkspaceId;
use pier_links::{Link, LinkFilter, LinkStore, ListPosition, Tag};
use serde::Deserialize;

use super::LinksState;
use super::bulk::BulkFormat;
use super::crud::{LinkView, ListLinks};
use crate::extract::{ApiQuery, Authed, perm};
use crate::middleware::RequestId;
use crate::problem::{ApiError, ApiResult};

/// Links an export reads from the store at a time.
const EXPORT_PAGE: u32 = 500;

/// A CSV cell of an exported link.
type Cell = fn(&LinkView) -> String;

/// The columns an export writes, each with its cell; those an import does not read, it skips.
pub(super) const EXPORTED: [(&str, Cell); 14] = [
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
pub struct ExportParams {
    /// `ndjson` (the default) or `csv`.
    #[param(inline)]
    format: Option<BulkFormat>,
}

/// Download every link of the workspace (or those the filters select), newest first. The body
/// is streamed as it is read; a failure once it has begun cuts it short, so a complete export
/// is one whose transfer completed.
#[utoipa::path(
    get,
    path = "/v1/links/export",
    operation_id = "exportLinks",
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
    State(links): State<LinksState>,
    auth: Authed<perm::LinksRead>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    ApiQuery(params): ApiQuery<ExportParams>,
    ApiQuery(query): ApiQuery<ListLinks>,
) -> ApiResult<Response> {
    let format = params.format.unwrap_or_default();
    let walk = Walk {
        store: links.store().clone(),
        workspace: auth.principal.workspace_id().clone(),
        filter: query.filter()?,
        base: links.short_link_base().to_owned(),
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
            BulkFormat::Csv => {
                csv_records(views.map(|view| EXPORTED.map(|(_, cell)| inert(cell(&view)))))
            }
        }
    }
}

/// The characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection).
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A cell a spreadsheet shows as text: one that would start a formula gets a leading `'`,
/// which an import takes off again ([`as_written`]).
fn inert(cell: String) -> String {
    if cell.starts_with(FORMULA_STARTS) {
        format!("'{cell}")
    } else {
        cell
    }
}

/// A cell as it was before [`inert`].
pub(super) fn as_written(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(FORMULA_STARTS) => rest,
        _ => cell,
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
