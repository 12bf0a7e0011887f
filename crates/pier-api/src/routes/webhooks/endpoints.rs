//! `/v1/webhook-endpoints`: where a workspace's events are delivered. Create (the signing secret
//! is in the response), list, read, change (merge patch), delete; read and rotate the secret;
//! the attempts log; and recovery of failed deliveries.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use pier_core::{Patch, Timestamp, ValidationErrors, patch, schema, whole};
use pier_webhooks::model::bounds;
use pier_webhooks::{Endpoint, EndpointFields, EndpointId, EndpointPatch, EventTypeName};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Array, ArrayBuilder, Object};

use super::WebhooksState;
use super::views::AttemptView;
use crate::AppState;
use crate::extract::{ApiJson, Authed, ETag, IfMatch, OnResource, perm};
use crate::pagination::{CursorScope, Page, PageParams, Pagination};
use crate::problem::{ApiError, ApiResult};
use crate::response::located;

/// The body of `POST /v1/webhook-endpoints`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://example.com/webhooks/pier", "description": "Billing",
                          "event_types": ["invoice.paid"], "rate_limit_per_second": 50}))]
pub struct CreateEndpoint {
    #[schema(schema_with = url)]
    url: String,
    #[schema(schema_with = description)]
    description: Option<String>,
    #[schema(schema_with = event_types)]
    event_types: Option<Vec<String>>,
    /// Defaults to true.
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(schema_with = rate_limit)]
    rate_limit_per_second: Option<u32>,
    /// Deliver one event at a time, in publish order (a later event waits while an earlier one
    /// is retrying). Defaults to false.
    ordered: Option<bool>,
    /// Also sign every delivery with an Ed25519 key of the endpoint's own (`v1a`), which
    /// receivers verify with its public key (`public_key`, `whpk_…`) and so never hold a
    /// secret. Defaults to false.
    ed25519: Option<bool>,
    #[schema(schema_with = metadata)]
    metadata: Option<BTreeMap<String, String>>,
}

/// A merge patch of an endpoint (RFC 7396): fields left out stay as they are; `null` clears
/// `description`, `event_types` (all events), `rate_limit_per_second` and `metadata`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled": true, "event_types": ["invoice.paid", "invoice.voided"]}))]
pub struct UpdateEndpoint {
    #[serde(default)]
    #[schema(schema_with = url)]
    url: Patch<String>,
    #[serde(default)]
    #[schema(schema_with = description)]
    description: Patch<String>,
    #[serde(default)]
    #[schema(schema_with = event_types)]
    event_types: Patch<Vec<String>>,
    /// Enabling an endpoint that Pier disabled clears `disabled_reason`.
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    enabled: Patch<bool>,
    #[serde(default, deserialize_with = "patch::whole")]
    #[schema(schema_with = rate_limit)]
    rate_limit_per_second: Patch<u32>,
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    ordered: Patch<bool>,
    /// Turning it on gives the endpoint an Ed25519 key.
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    ed25519: Patch<bool>,
    #[serde(default)]
    #[schema(schema_with = metadata)]
    metadata: Patch<BTreeMap<String, String>>,
}

// The fields' schemas, from the rules that check them (a field's own doc comment does not
// reach a schema made by a function).

fn url() -> Object {
    schema::string(1, 8192)
        .pattern(Some(schema::HTTP_URL))
        .description(Some(
            "An absolute `http` or `https` URL without credentials, on a public address \
             (loopback, private, link-local and other internal ranges are refused unless the \
             server allows private targets)",
        ))
        .build()
}

fn description() -> Object {
    schema::nullable(
        schema::trimmed_text(bounds::DESCRIPTION_CHARS, "").description(Some("For people")),
    )
}

fn event_types() -> Array {
    ArrayBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::Type::Array,
            utoipa::openapi::Type::Null,
        ]))
        .items(<EventTypeName as utoipa::PartialSchema>::schema())
        .max_items(Some(bounds::EVENT_TYPE_FILTERS))
        .description(Some(
            "The event types the endpoint receives; empty or omitted for all",
        ))
        .build()
}

fn rate_limit() -> Object {
    schema::nullable(
        schema::integer(&bounds::RATE_LIMIT_PER_SECOND)
            .description(Some("Deliveries per second at most; omit for no limit")),
    )
}

fn metadata() -> Object {
    let mut object = schema::nullable(
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::Object)
            .additional_properties(Some(schema::plain_text(0, bounds::METADATA_VALUE_CHARS)))
            .max_properties(Some(bounds::METADATA_ENTRIES))
            .description(Some("Your own string pairs, kept with the endpoint")),
    );
    object.property_names = Some(Box::new(
        schema::plain_text(1, bounds::METADATA_KEY_CHARS)
            .build()
            .into(),
    ));
    object
}

impl From<CreateEndpoint> for EndpointPatch {
    fn from(c: CreateEndpoint) -> Self {
        Self {
            url: Patch::Set(c.url),
            description: Patch::given(c.description),
            event_types: Patch::given(c.event_types),
            enabled: Patch::given(c.enabled),
            rate_limit_per_second: Patch::given(c.rate_limit_per_second),
            ordered: Patch::given(c.ordered),
            ed25519: Patch::given(c.ed25519),
            metadata: Patch::given(c.metadata),
        }
    }
}

impl From<UpdateEndpoint> for EndpointPatch {
    fn from(u: UpdateEndpoint) -> Self {
        Self {
            url: u.url,
            description: u.description,
            event_types: u.event_types,
            enabled: u.enabled,
            rate_limit_per_second: u.rate_limit_per_second,
            ordered: u.ordered,
            ed25519: u.ed25519,
            metadata: u.metadata,
        }
    }
}

/// A new endpoint with its signing secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = created_example)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    endpoint: Endpoint,
    /// The signing secret, `whsec_` and base64. Also readable later at
    /// `/v1/webhook-endpoints/{id}/secret`.
    secret: String,
    /// With `ed25519`, the public key that verifies its `v1a` signatures, `whpk_` and base64.
    public_key: Option<String>,
}

fn created_example() -> serde_json::Value {
    let mut endpoint = Endpoint::example();
    endpoint["secret"] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into();
    endpoint
}

/// The keys that sign an endpoint's deliveries now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                          "previous": ["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"],
                          "public_key": null, "previous_public_keys": []}))]
pub struct EndpointSecret {
    /// The current secret: the one to verify with.
    secret: String,
    /// Secrets rotated out that still sign (every live secret's signature is in the header)
    /// until their overlap ends.
    previous: Vec<String>,
    /// With `ed25519`, the current public key (`whpk_…`) that verifies the `v1a` signatures.
    public_key: Option<String>,
    /// Public keys of rotated-out Ed25519 keys that still sign.
    previous_public_keys: Vec<String>,
}

impl EndpointSecret {
    fn new(keys: &pier_webhooks::Keys) -> ApiResult<Self> {
        let mut secrets = keys.hmac.iter().map(|s| s.to_whsec());
        let mut public = keys.ed25519.iter().map(|k| k.public_key().to_whpk());
        let secret = secrets
            .next()
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("an endpoint without a secret")))?;
        Ok(Self {
            secret,
            previous: secrets.collect(),
            public_key: public.next(),
            previous_public_keys: public.collect(),
        })
    }
}

/// The ETag of an endpoint: its version.
fn etag(endpoint: &Endpoint) -> ETag {
    ETag::of(&(endpoint.id.as_str(), endpoint.version))
}

/// The endpoint as `principal` may see it: the `viewer` role gets its URL without userinfo,
/// query or fragment, where receivers keep credentials (ASVS 5.0 V8.2.3: access to fields by
/// role); the other roles, who may be given the endpoint's secrets, see it whole.
fn shown_to(principal: &pier_auth::Principal, endpoint: Endpoint) -> Endpoint {
    if principal.role() == pier_auth::Role::Viewer {
        endpoint.without_url_secrets()
    } else {
        endpoint
    }
}

fn respond(status: StatusCode, principal: &pier_auth::Principal, endpoint: Endpoint) -> Response {
    let tag = etag(&endpoint).header_value();
    let endpoint = shown_to(principal, endpoint);
    let mut response = (status, Json(endpoint)).into_response();
    response.headers_mut().insert(header::ETAG, tag);
    response
}

pub(crate) async fn load(
    state: &AppState,
    auth: &pier_auth::Principal,
    id: &str,
) -> ApiResult<Endpoint> {
    let not_found = || ApiError::not_found("webhook endpoint");
    let id = EndpointId::parse(id).map_err(|_| not_found())?;
    state
        .webhooks()
        .store()
        .endpoint(auth.workspace_id(), &id)
        .await?
        .ok_or_else(not_found)
}

/// Create an endpoint. The response carries its signing secret. Honours `Idempotency-Key`.
#[utoipa::path(
    post,
    path = "/v1/webhook-endpoints",
    operation_id = "createWebhookEndpoint",
    tag = "webhooks",
    security(("bearer" = [])),
    request_body = CreateEndpoint,
    responses(
        (status = 201, body = CreatedEndpoint, headers(("Location" = String), ("ETag" = String))),
        (status = 422, description = "`validation_failed`: a field breaks its rule, e.g. a `url` on a private address (`not_public`)", body = crate::Problem)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    State(webhooks): State<WebhooksState>,
    auth: Authed<perm::WebhooksWrite>,
    ApiJson(body): ApiJson<CreateEndpoint>,
) -> ApiResult<Response> {
    let fields = EndpointFields::for_new(body.into(), webhooks.store().guard())
        .map_err(ApiError::validation)?;
    check_resolved(&state, &fields).await?;
    let (endpoint, keys) = webhooks
        .store()
        .create_endpoint(auth.principal.workspace_id(), &fields)
        .await?;
    tracing::info!(endpoint_id = %endpoint.id, "webhook endpoint created");
    let location = format!("/v1/webhook-endpoints/{}", endpoint.id);
    let tag = etag(&endpoint).header_value();
    let shown = EndpointSecret::new(&keys)?;
    let body = CreatedEndpoint {
        endpoint,
        secret: shown.secret,
        public_key: shown.public_key,
    };
    let mut response = located(StatusCode::CREATED, &location, Json(body));
    response.headers_mut().insert(header::ETAG, tag);
    Ok(response)
}

/// How long a create or update waits for the URL's host to resolve.
const RESOLVE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Refuses a URL whose host resolves to a non-public address now. A name that does not resolve
/// (yet, or within [`RESOLVE_WAIT`]) passes: every send checks again.
async fn check_resolved(state: &AppState, fields: &EndpointFields) -> ApiResult<()> {
    let resolved = tokio::time::timeout(
        RESOLVE_WAIT,
        state
            .webhooks()
            .store()
            .guard()
            .check_resolved(fields.url()),
    )
    .await;
    match resolved {
        Ok(Err(err)) if err.is_refusal() => Err(ApiError::validation(ValidationErrors::single(
            "url",
            err.code(),
            err.to_string(),
        ))),
        _ => Ok(()),
    }
}

/// List endpoints, oldest first.
#[utoipa::path(
    get,
    path = "/v1/webhook-endpoints",
    operation_id = "listWebhookEndpoints",
    tag = "webhooks",
    security(("bearer" = [])),
    params(PageParams),
    responses((status = 200, body = Page<Endpoint>))
)]
pub async fn list(
    State(state): State<AppState>,
    State(webhooks): State<WebhooksState>,
    auth: Authed<perm::WebhooksRead>,
    page: Pagination,
) -> ApiResult<Page<Endpoint>> {
    let workspace = auth.principal.workspace_id();
    let scope = CursorScope::new("webhook-endpoints", workspace);
    let after: Option<String> = page.position(state.cursors(), &scope)?;
    let rows: Vec<Endpoint> = webhooks
        .store()
        .endpoints(workspace, after, page.fetch_limit())
        .await?
        .into_iter()
        .map(|endpoint| shown_to(&auth.principal, endpoint))
        .collect();
    Ok(page.page(state.cursors(), &scope, rows, |e| e.id.as_str().to_owned()))
}

/// Read an endpoint. Another workspace's endpoint is `404`.
#[utoipa::path(
    get,
    path = "/v1/webhook-endpoints/{id}",
    operation_id = "getWebhookEndpoint",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = inline(EndpointId), Path, description = "The endpoint id")),
    responses((status = 200, body = Endpoint, headers(("ETag" = String))))
)]
pub async fn get(
    State(state): State<AppState>,
    auth: OnResource<perm::WebhooksRead>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let endpoint = load(&state, &auth.principal, &id).await?;
    Ok(respond(StatusCode::OK, &auth.principal, endpoint))
}

/// Change an endpoint with a JSON merge patch. Honours `If-Match`.
#[utoipa::path(
    patch,
    path = "/v1/webhook-endpoints/{id}",
    operation_id = "updateWebhookEndpoint",
    tag = "webhooks",
    security(("bearer" = [])),
    request_body(content = UpdateEndpoint, content_type = "application/merge-patch+json"),
    params(
        ("id" = inline(EndpointId), Path, description = "The endpoint id"),
        ("If-Match" = Option<String>, Header, description = "Change only if the ETag still matches")
    ),
    responses(
        (status = 200, body = Endpoint, headers(("ETag" = String))),
        (status = 412, description = "`precondition_failed`: the endpoint changed since the ETag was read", body = crate::Problem)
    )
)]
pub async fn update(
    State(state): State<AppState>,
    State(webhooks): State<WebhooksState>,
    auth: OnResource<perm::WebhooksWrite>,
    if_match: IfMatch,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<UpdateEndpoint>,
) -> ApiResult<Response> {
    let endpoint = load(&state, &auth.principal, &id).await?;
    if_match.check(&etag(&endpoint))?;
    let url_changed = !matches!(patch.url, Patch::Keep);
    let fields = EndpointFields::patch(&endpoint, patch.into(), webhooks.store().guard())
        .map_err(ApiError::validation)?;
    if url_changed {
        check_resolved(&state, &fields).await?;
    }
    match webhooks.store().update_endpoint(&endpoint, &fields).await? {
        Some(updated) => Ok(respond(StatusCode::OK, &auth.principal, updated)),
        None => Err(stale(&if_match)),
    }
}

fn stale(if_match: &IfMatch) -> ApiError {
    if if_match.is_present() {
        ApiError::precondition_failed()
    } else {
        ApiError::conflict(
            "concurrent_update",
            "the endpoint changed while this request ran; retry it",
        )
    }
}

/// Delete an endpoint with its secrets and delivery history; deliveries still pending end as
/// failed. Honours `If-Match`.
#[utoipa::path(
    delete,
    path = "/v1/webhook-endpoints/{id}",
    operation_id = "deleteWebhookEndpoint",
    tag = "webhooks",
    security(("bearer" = [])),
    params(
        ("id" = inline(EndpointId), Path, description = "The endpoint id"),
        ("If-Match" = Option<String>, Header, description = "Delete only if the ETag still matches")
    ),
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete(
    State(state): State<AppState>,
    State(webhooks): State<WebhooksState>,
    auth: OnResource<perm::WebhooksWrite>,
    if_match: IfMatch,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let endpoint = load(&state, &auth.principal, &id).await?;
    if_match.check(&etag(&endpoint))?;
    if webhooks.store().delete_endpoint(&endpoint).await? {
        tracing::info!(endpoint_id = %endpoint.id, "webhook endpoint deleted");
        return Ok(StatusCode::NO_CONTENT);
    }
    Err(stale(&if_match))
}

/// Read the endpoint's signing secret (and Ed25519 public key), and the rotated-out ones that
/// still sign.
#[utoipa::path(
    get,
    path = "/v1/webhook-endpoints/{id}/secret",
    operation_id = "getWebhookEndpointSecret",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = inline(EndpointId), Path, description = "The endpoint id")),
    responses((status = 200, body = EndpointSecret))
)]
pub async fn secret(
    State(state): State<AppState>,
    State(webhooks): State<WebhooksState>,
    auth: OnResource<perm::WebhooksWrite>,
    Path(id): Path<String>,
) -> ApiResult<Json<EndpointSecret>> {
    let endpoint = load(&state, &auth.principal, &id).await?;
    let keys = webhooks
        .store()
        .secrets(&endpoint.workspace_id, &endpoint.id)
        .await?;
    EndpointSecret::new(&keys).map(Json)
}

/// Issue a new signing secret (and Ed25519 key, with `ed25519`). The old ones keep signing for
/// the overlap (24 hours by default): during it every delivery carries both signatures, so
/// receivers switch without a gap.
#[utoipa::path(
    post,
    path = "/v1/webhook-endpoints/{id}/secret/rotate",
    operation_id = "rotateWebhookEndpointSecret",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = inline(EndpointId), Path, description = "The endpoint id")),
    responses((status = 200, body = EndpointSecret))
)]
pub async fn rotate(
    State(state): State<AppState>,
    State(webhooks): State<WebhooksState>,
    auth: OnResource<perm::WebhooksWrite>,
    Path(id): Path<String>,
) -> ApiResult<Json<EndpointSecret>> {
    let endpoint = load(&state, &auth.principal, &id).await?;
    webhooks
        .store()
        .rotate_secret(&endpoint.workspace_id, &endpoint.id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    tracing::info!(endpoint_id = %endpoint.id, "webhook signing secret rotated");
    secret(State(state), State(webhooks), auth, Path(id)).await
}

/// The attempts made to an endpoint, newest first.
#[utoipa::path(
    get,
    path = "/v1/webhook-endpoints/{id}/attempts",
    operation_id = "listWebhookAttempts",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = inline(EndpointId), Path, description = "The endpoint id"), PageParams),
    responses((status = 200, body = Page<AttemptView>))
)]
pub async fn attempts(
    State(state): State<AppState>,
    State(webhooks): State<WebhooksState>,
    auth: OnResource<perm::WebhooksRead>,
    page: Pagination,
    Path(id): Path<String>,
) -> ApiResult<Page<AttemptView>> {
    let endpoint = load(&state, &auth.principal, &id).await?;
    let scope = CursorScope::new("webhook-attempts", &endpoint.workspace_id)
        .filter("endpoint", Some(endpoint.id.as_str()));
    let before: Option<String> = page.position(state.cursors(), &scope)?;
    let rows = webhooks
        .store()
        .attempts(
            &endpoint.workspace_id,
            &endpoint.id,
            before,
            page.fetch_limit(),
        )
        .await?;
    let page = page.page(state.cursors(), &scope, rows, |a| a.id.as_str().to_owned());
    Ok(page.map(AttemptView::from))
}

/// The body of a recover request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"since": "2026-11-29T00:00:00Z"}))]
pub struct Recover {
    /// Send again the failed deliveries of events published at or after this time.
    since: Timestamp,
}

/// How many deliveries a recover sent again.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"recovered": 12}))]
pub struct Recovered {
    /// At most 10,000 per call; call again for more.
    recovered: u64,
}

/// Send again the endpoint's failed deliveries since a time, each with a fresh retry schedule
/// (in their original order on an ordered endpoint).
#[utoipa::path(
    post,
    path = "/v1/webhook-endpoints/{id}/recover",
    operation_id = "recoverWebhookEndpoint",
    tag = "webhooks",
    security(("bearer" = [])),
    request_body = Recover,
    params(("id" = inline(EndpointId), Path, description = "The endpoint id")),
    responses(
        (status = 202, body = Recovered),
        (status = 409, description = "`endpoint_disabled`: enable the endpoint first", body = crate::Problem)
    )
)]
pub async fn recover(
    State(state): State<AppState>,
    State(webhooks): State<WebhooksState>,
    auth: OnResource<perm::WebhooksWrite>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Recover>,
) -> ApiResult<(StatusCode, Json<Recovered>)> {
    let endpoint = load(&state, &auth.principal, &id).await?;
    let recovered = webhooks.store().recover(&endpoint, body.since).await?;
    tracing::info!(endpoint_id = %endpoint.id, recovered, "webhook deliveries recovered");
    Ok((StatusCode::ACCEPTED, Json(Recovered { recovered })))
}
