//! `/v1/links`: create, list, read, change (merge patch) and delete short links.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use pier_core::{Patch, patch, schema, whole};
use pier_core::{Timestamp, ValidationErrors};
use pier_links::{
    Link, LinkFields, LinkFilter, LinkId, LinkPatch, MAX_CLICKS, RedirectStatus, Slug, Tag, Target,
    Title,
};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Array, ArrayBuilder, Object, SchemaType, Type};

use super::LinksState;
use crate::AppState;
use crate::extract::{ApiJson, ApiQuery, Authed, ETag, IfMatch, OnResource, perm};
use crate::pagination::{CursorScope, Page, PageParams, Pagination};
use crate::problem::{ApiError, ApiResult};
use crate::response::located;

/// A short link as the API shows it (its password never).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = LinkView::example)]
pub struct LinkView {
    pub(crate) id: LinkId,
    /// The path the link answers on; unique across the service, case-sensitive.
    pub(crate) slug: String,
    /// The link itself: the configured base URL and the slug.
    pub(crate) short_url: String,
    /// Where visitors are sent.
    pub(crate) url: String,
    pub(crate) title: Option<String>,
    pub(crate) tags: Vec<String>,
    /// 301, 302 (the default), 307 or 308.
    #[schema(example = 302)]
    pub(crate) redirect_status: u16,
    /// After this, the link answers `410 Gone`.
    pub(crate) expires_at: Option<Timestamp>,
    /// After this many human visits, the link answers `410 Gone`.
    pub(crate) max_clicks: Option<i64>,
    /// Whether visitors must enter a password.
    pub(crate) has_password: bool,
    /// The API key that created the link.
    pub(crate) created_by: String,
    /// Human visits recorded so far (bots are counted apart); written within about a second.
    pub(crate) clicks: i64,
    pub(crate) created_at: Timestamp,
    pub(crate) updated_at: Timestamp,
}

impl LinkView {
    /// What the OpenAPI document shows of a link.
    pub(crate) fn example() -> serde_json::Value {
        serde_json::json!({"id": "link_01m8pd9e61ya13bwk7fzzb9vzj", "slug": "spring",
            "short_url": "https://s.example/spring", "url": "https://example.com/spring-sale",
            "title": "Spring sale", "tags": ["campaign"], "redirect_status": 302,
            "expires_at": null, "max_clicks": null, "has_password": false,
            "created_by": "key_01m8pd91emf07nqws6p476403x", "clicks": 0,
            "created_at": "2026-11-30T12:00:00.000000Z", "updated_at": "2026-11-30T12:00:00.000000Z"})
    }

    pub(crate) fn new(link: Link, base: &str) -> Self {
        Self {
            short_url: format!("{base}/{}", link.slug),
            id: link.id,
            slug: link.slug,
            url: link.url,
            title: link.title,
            tags: link.tags,
            redirect_status: link.redirect_status.code(),
            expires_at: link.expires_at,
            max_clicks: link.max_clicks,
            has_password: link.has_password,
            created_by: link.created_by,
            clicks: link.clicks,
            created_at: link.created_at,
            updated_at: link.updated_at,
        }
    }
}

/// The ETag of a link: its version, which clicks do not move, so a client's `If-Match` holds
/// while visitors follow the link.
fn etag(link: &Link) -> ETag {
    ETag::of(&(link.id.as_str(), link.version))
}

fn respond(state: &AppState, status: StatusCode, link: Link) -> Response {
    let tag = etag(&link).header_value();
    let mut response = (
        status,
        Json(LinkView::new(link, state.links().short_link_base())),
    )
        .into_response();
    response.headers_mut().insert(header::ETAG, tag);
    response
}

/// The body of `POST /v1/links`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://example.com/spring-sale", "slug": "spring",
                          "title": "Spring sale", "tags": ["campaign"], "redirect_status": 302}))]
pub struct CreateLink {
    #[schema(value_type = Target)]
    pub(crate) url: String,
    #[schema(schema_with = slug)]
    pub(crate) slug: Option<String>,
    #[schema(schema_with = title)]
    pub(crate) title: Option<String>,
    #[schema(schema_with = tags)]
    pub(crate) tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(schema_with = redirect_status)]
    pub(crate) redirect_status: Option<u16>,
    /// When the link stops working (`410 Gone`); must be in the future.
    pub(crate) expires_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(schema_with = max_clicks)]
    pub(crate) max_clicks: Option<i64>,
    #[schema(schema_with = password)]
    pub(crate) password: Option<String>,
}

/// A merge patch of a link (RFC 7396): fields left out stay as they are; `null` clears
/// `title`, `tags`, `expires_at`, `max_clicks` and `password`, and resets `redirect_status`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "Summer sale", "expires_at": "2030-09-01T00:00:00Z"}))]
pub struct UpdateLink {
    #[serde(default)]
    #[schema(value_type = Target)]
    url: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Slug, inline)]
    slug: Patch<String>,
    #[serde(default)]
    #[schema(schema_with = title)]
    title: Patch<String>,
    #[serde(default)]
    #[schema(schema_with = tags)]
    tags: Patch<Vec<String>>,
    #[serde(default, deserialize_with = "patch::whole")]
    #[schema(schema_with = redirect_status)]
    redirect_status: Patch<u16>,
    /// When the link stops working (`410 Gone`); must be in the future.
    #[serde(default)]
    #[schema(value_type = Option<Timestamp>)]
    expires_at: Patch<Timestamp>,
    #[serde(default, deserialize_with = "patch::whole")]
    #[schema(schema_with = max_clicks)]
    max_clicks: Patch<i64>,
    #[serde(default)]
    #[schema(schema_with = password)]
    password: Patch<String>,
}

// The fields' schemas, from the rules that check them, with their descriptions (a field's own
// doc comment does not reach a schema made by a function).

fn slug() -> Object {
    schema::nullable(Slug::schema_builder().description(Some(
        "Letters, digits, `-` or `_`, not one of Pier's own paths; omit (or `null`) for a \
         random 7-character slug",
    )))
}

fn title() -> Object {
    schema::nullable(Title::schema().description(Some("Shown in lists; trimmed")))
}

fn tags() -> Array {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(Tag::schema())
        .max_items(Some(Tag::MAX_PER_LINK))
        .description(Some(
            "Tags to find the link by; trimmed, duplicates kept once",
        ))
        .build()
}

fn redirect_status() -> Object {
    let mut schema = schema::nullable(RedirectStatus::schema().description(Some(
        "301 or 308 (permanent: browsers may not come back, so later clicks go uncounted), \
         302 (the default) or 307",
    )));
    schema
        .enum_values
        .get_or_insert_with(Vec::new)
        .push(serde_json::Value::Null);
    schema
}

fn max_clicks() -> Object {
    schema::nullable(schema::integer(&MAX_CLICKS).description(Some(
        "After this many human visits, the link answers `410 Gone`",
    )))
}

fn password() -> Object {
    schema::nullable(pier_core::password::schema().description(Some(
        "Visitors must enter it before being redirected. Write-only: stored as an Argon2id \
         hash, never shown",
    )))
}

impl From<CreateLink> for LinkPatch {
    fn from(c: CreateLink) -> Self {
        Self {
            url: Patch::Set(c.url),
            slug: Patch::given(c.slug),
            title: Patch::given(c.title),
            tags: Patch::given(c.tags),
            redirect_status: Patch::given(c.redirect_status),
            expires_at: Patch::given(c.expires_at),
            max_clicks: Patch::given(c.max_clicks),
            password: Patch::given(c.password),
        }
    }
}

impl From<UpdateLink> for LinkPatch {
    fn from(u: UpdateLink) -> Self {
        Self {
            url: u.url,
            slug: u.slug,
            title: u.title,
            tags: u.tags,
            redirect_status: u.redirect_status,
            expires_at: u.expires_at,
            max_clicks: u.max_clicks,
            password: u.password,
        }
    }
}

/// Create a link. Honours `Idempotency-Key`.
#[utoipa::path(
    post,
    path = "/v1/links",
    operation_id = "createLink",
    tag = "links",
    security(("bearer" = [])),
    request_body = CreateLink,
    responses(
        (status = 201, body = LinkView, headers(("Location" = String), ("ETag" = String))),
        (status = 409, description = "`slug_taken`: another link has this slug, or another workspace's link gave it up within the slug quarantine", body = crate::Problem)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    State(links): State<LinksState>,
    auth: Authed<perm::LinksWrite>,
    ApiJson(body): ApiJson<CreateLink>,
) -> ApiResult<Response> {
    let now = state.clock().now();
    let fields = LinkFields::for_new(body.into(), now)
        .map_err(ApiError::validation)?
        .hashed(links.hashing())
        .await?;
    let principal = &auth.principal;
    let link = links
        .store()
        .create(principal.workspace_id(), principal.subject(), fields)
        .await?;
    tracing::info!(link_id = %link.id, slug = %link.slug, "link created");
    let location = format!("/v1/links/{}", link.id);
    Ok(located(
        StatusCode::CREATED,
        &location,
        respond(&state, StatusCode::CREATED, link),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListLinks {
    // `tag` and `q` are described by their schema functions (see
    // `openapi::describe_from_schema`).
    #[param(schema_with = tag_filter)]
    tag: Option<String>,
    #[param(schema_with = text_filter)]
    q: Option<String>,
    /// Only links created after this time.
    created_after: Option<Timestamp>,
    /// Only links created before this time.
    created_before: Option<Timestamp>,
}

/// The longest `q`.
const MAX_QUERY_CHARS: usize = 200;

fn tag_filter() -> Object {
    Tag::schema()
        .description(Some("Only links with this tag."))
        .build()
}

fn text_filter() -> Object {
    schema::plain_text(1, MAX_QUERY_CHARS)
        .description(Some(
            "Only links whose slug, URL or title contains this text (ASCII letters in any \
             case). No index serves a search: it reads the links newest first (the tag's, with \
             `tag`) until a page is full, so a text that few links contain reads most of them \
             (about a second for 1,000,000 links). Bound it with `tag`, `created_after` or \
             `created_before`.",
        ))
        .build()
}

impl ListLinks {
    /// The filter these parameters ask for, checked.
    pub(crate) fn filter(self) -> ApiResult<LinkFilter> {
        let mut errors = ValidationErrors::new();
        let tag = self
            .tag
            .as_deref()
            .and_then(|t| errors.check("tag", "invalid", Tag::parse(t)));
        if let Some(q) = &self.q {
            errors.check(
                "q",
                "invalid",
                pier_core::validation::plain_text(q, 1, MAX_QUERY_CHARS),
            );
        }
        errors.into_result().map_err(ApiError::validation)?;
        Ok(LinkFilter {
            tag: tag.map(|t| t.as_str().to_owned()),
            q: self.q,
            created_after: self.created_after,
            created_before: self.created_before,
        })
    }
}

/// List links, newest first.
#[utoipa::path(
    get,
    path = "/v1/links",
    operation_id = "listLinks",
    tag = "links",
    security(("bearer" = [])),
    params(ListLinks, PageParams),
    responses((status = 200, body = Page<LinkView>))
)]
pub async fn list(
    State(state): State<AppState>,
    State(links): State<LinksState>,
    auth: Authed<perm::LinksRead>,
    page: Pagination,
    ApiQuery(query): ApiQuery<ListLinks>,
) -> ApiResult<Page<LinkView>> {
    let filter = query.filter()?;
    let micros = |t: Option<Timestamp>| t.map(|t| t.as_micros().to_string());
    let workspace = auth.principal.workspace_id();
    let scope = CursorScope::new("links", workspace)
        .filter("tag", filter.tag.as_deref())
        .filter("q", filter.q.as_deref())
        .filter("created_after", micros(filter.created_after).as_deref())
        .filter("created_before", micros(filter.created_before).as_deref());
    let after = page.position(state.cursors(), &scope)?;
    let rows = links
        .store()
        .list(workspace, &filter, after, page.fetch_limit())
        .await?;
    let base = links.short_link_base();
    let page = page.page(state.cursors(), &scope, rows, |l| {
        (l.created_at.as_micros(), l.id.as_str().to_owned())
    });
    Ok(page.map(|l| LinkView::new(l, base)))
}

pub(crate) async fn load(
    state: &AppState,
    auth_workspace: &pier_core::WorkspaceId,
    id: &str,
) -> ApiResult<Link> {
    let not_found = || ApiError::not_found("link");
    let id = LinkId::parse(id).map_err(|_| not_found())?;
    state
        .links()
        .store()
        .get(auth_workspace, &id)
        .await?
        .ok_or_else(not_found)
}

/// Read one link. Another workspace's link is `404`.
#[utoipa::path(
    get,
    path = "/v1/links/{id}",
    operation_id = "getLink",
    tag = "links",
    security(("bearer" = [])),
    params(("id" = inline(LinkId), Path, description = "The link id")),
    responses((status = 200, body = LinkView, headers(("ETag" = String))))
)]
pub async fn get(
    State(state): State<AppState>,
    auth: OnResource<perm::LinksRead>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let link = load(&state, auth.principal.workspace_id(), &id).await?;
    Ok(respond(&state, StatusCode::OK, link))
}

/// Read the workspace's link with this slug.
#[utoipa::path(
    get,
    path = "/v1/links/by-slug/{slug}",
    operation_id = "getLinkBySlug",
    tag = "links",
    security(("bearer" = [])),
    params(("slug" = inline(Slug), Path, description = "The slug, case-sensitive")),
    responses((status = 200, body = LinkView, headers(("ETag" = String))))
)]
pub async fn get_by_slug(
    State(state): State<AppState>,
    State(links): State<LinksState>,
    auth: Authed<perm::LinksRead>,
    Path(slug): Path<String>,
) -> ApiResult<Response> {
    let link = links
        .store()
        .get_by_slug(auth.principal.workspace_id(), &slug)
        .await?
        .ok_or_else(|| ApiError::not_found("link"))?;
    Ok(respond(&state, StatusCode::OK, link))
}

/// Change a link with a JSON merge patch. Honours `If-Match`; without it, the change applies
/// to the link as it is when the request arrives.
#[utoipa::path(
    patch,
    path = "/v1/links/{id}",
    operation_id = "updateLink",
    tag = "links",
    security(("bearer" = [])),
    request_body(content = UpdateLink, content_type = "application/merge-patch+json"),
    params(
        ("id" = inline(LinkId), Path, description = "The link id"),
        ("If-Match" = Option<String>, Header, description = "Change only if the ETag still matches")
    ),
    responses(
        (status = 200, body = LinkView, headers(("ETag" = String))),
        (status = 409, description = "`slug_taken`: another link has this slug, or another workspace's link gave it up within the slug quarantine", body = crate::Problem),
        (status = 412, description = "`precondition_failed`: the link changed since the ETag was read", body = crate::Problem)
    )
)]
pub async fn update(
    State(state): State<AppState>,
    State(links): State<LinksState>,
    auth: OnResource<perm::LinksWrite>,
    if_match: IfMatch,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<UpdateLink>,
) -> ApiResult<Response> {
    let link = load(&state, auth.principal.workspace_id(), &id).await?;
    if_match.check(&etag(&link))?;
    let base = link
        .fields()
        .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
    let fields = base
        .patch(patch.into(), state.clock().now())
        .map_err(ApiError::validation)?
        .hashed(links.hashing())
        .await?;
    match links.store().update(&link, fields).await? {
        Some(updated) => Ok(respond(&state, StatusCode::OK, updated)),
        // Another change landed between our read and write: the client's view is stale.
        None if if_match.is_present() => Err(ApiError::precondition_failed()),
        None => Err(ApiError::conflict(
            "concurrent_update",
            "the link changed while this request ran; retry it",
        )),
    }
}

/// Delete a link; its slug answers `404` at once. The slug is free at once for this workspace,
/// and for others once the slug quarantine (`links.slug_quarantine_secs`, 30 days by default)
/// has passed. Honours `If-Match`.
#[utoipa::path(
    delete,
    path = "/v1/links/{id}",
    operation_id = "deleteLink",
    tag = "links",
    security(("bearer" = [])),
    params(
        ("id" = inline(LinkId), Path, description = "The link id"),
        ("If-Match" = Option<String>, Header, description = "Delete only if the ETag still matches")
    ),
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete(
    State(state): State<AppState>,
    State(links): State<LinksState>,
    auth: OnResource<perm::LinksWrite>,
    if_match: IfMatch,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let link = load(&state, auth.principal.workspace_id(), &id).await?;
    if_match.check(&etag(&link))?;
    if links.store().delete(&link).await? {
        tracing::info!(link_id = %link.id, "link deleted");
        return Ok(StatusCode::NO_CONTENT);
    }
    Err(if if_match.is_present() {
        ApiError::precondition_failed()
    } else {
        ApiError::conflict(
            "concurrent_update",
            "the link changed while this request ran; retry it",
        )
    })
}
