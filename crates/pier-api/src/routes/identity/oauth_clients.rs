//! `/v1/oauth/clients`: register (a confidential client's secret is shown once), list, read and
//! delete OAuth clients. Deleting a client ends every token issued to it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use pier_auth::Permission;
use pier_auth::oauth::{ClientId, ClientRequest, ClientType, GrantType, NewClient};
use pier_core::Label;
use serde::{Deserialize, Serialize};

use super::IdentityState;
use super::views::ClientView;
use crate::AppState;
use crate::extract::{ApiJson, Authed, perm};
use crate::pagination::{CursorScope, Page, PageParams, Pagination};
use crate::problem::{ApiError, ApiResult};
use crate::response::located;

/// The body of `POST /v1/oauth/clients`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Reporting app", "client_type": "confidential",
    "redirect_uris": ["https://app.example/callback"],
    "grant_types": ["authorization_code", "refresh_token"], "scopes": ["links:read"]}))]
pub struct CreateClient {
    #[schema(schema_with = client_name)]
    name: String,
    /// `confidential` (the default) gets a secret; `public` (a browser or native app) does
    /// not, and may only use `authorization_code` with PKCE.
    #[schema(value_type = Option<ClientType>, nullable)]
    client_type: Option<String>,
    /// Where the authorization endpoint may send the user back, each compared byte for byte:
    /// absolute, `https` (or `http` to a loopback address), no fragment, in normal form.
    #[serde(default)]
    #[schema(max_items = 10)]
    redirect_uris: Vec<String>,
    #[schema(value_type = Vec<GrantType>, min_items = 1, max_items = 3)]
    grant_types: Vec<String>,
    /// The most a token may carry; each must be within the caller's own permissions.
    #[schema(value_type = Vec<Permission>, min_items = 1)]
    scopes: Vec<String>,
}

fn client_name() -> utoipa::openapi::Object {
    pier_core::schema::trimmed_text(Label::MAX_CHARS, "")
        .description(Some("A name users see on the consent page"))
        .build()
}

/// A new client with its secret, shown only in this response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = created_example)]
pub struct CreatedClient {
    #[serde(flatten)]
    client: ClientView,
    /// A confidential client's secret, for HTTP Basic or the `client_secret` form field at the
    /// token endpoint. Store it now: it is not shown again. Absent for a public client.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
}

fn created_example() -> serde_json::Value {
    let mut client = ClientView::example();
    client["client_secret"] = "pier_cs_hcrC3RQ6Gq8sU3f4NfQnJx2bxZpE0rVq6v0c5y9ZK1o".into();
    client
}

impl From<CreateClient> for ClientRequest {
    fn from(body: CreateClient) -> Self {
        Self {
            name: body.name,
            client_type: body.client_type,
            redirect_uris: body.redirect_uris,
            grant_types: body.grant_types,
            scopes: body.scopes,
        }
    }
}

/// Register a client. The response's `client_secret` is the only time the secret is shown.
#[utoipa::path(
    post,
    path = "/v1/oauth/clients",
    operation_id = "createOAuthClient",
    tag = "oauth",
    security(("bearer" = [])),
    request_body = CreateClient,
    responses((status = 201, body = CreatedClient, headers(("Location" = String))))
)]
pub async fn create(
    State(identity): State<IdentityState>,
    auth: Authed<perm::OAuthClientsWrite>,
    ApiJson(body): ApiJson<CreateClient>,
) -> ApiResult<Response> {
    let new = NewClient::new(body.into(), &auth.principal).map_err(ApiError::validation)?;
    let (client, secret) = identity
        .oauth()
        .create_client(auth.principal.workspace_id(), new, auth.principal.subject())
        .await?;
    tracing::info!(client_id = %client.client_id, "OAuth client registered");
    let location = format!("/v1/oauth/clients/{}", client.client_id);
    let body = Json(CreatedClient {
        client: client.into(),
        client_secret: secret.map(|s| s.expose().to_owned()),
    });
    Ok(located(StatusCode::CREATED, &location, body))
}

/// List the workspace's clients, newest first.
#[utoipa::path(
    get,
    path = "/v1/oauth/clients",
    operation_id = "listOAuthClients",
    tag = "oauth",
    security(("bearer" = [])),
    params(PageParams),
    responses((status = 200, body = Page<ClientView>))
)]
pub async fn list(
    State(state): State<AppState>,
    State(identity): State<IdentityState>,
    auth: Authed<perm::OAuthClientsRead>,
    page: Pagination,
) -> ApiResult<Page<ClientView>> {
    let workspace = auth.principal.workspace_id();
    let scope = CursorScope::new("oauth_clients", workspace);
    let after = page.position::<(i64, String)>(state.cursors(), &scope)?;
    let rows = identity
        .oauth()
        .list_clients(workspace, after, page.fetch_limit())
        .await?;
    let page = page.page(state.cursors(), &scope, rows, |c| {
        (c.created_at.as_micros(), c.client_id.as_str().to_owned())
    });
    Ok(page.map(ClientView::from))
}

fn client_id(id: &str) -> ApiResult<ClientId> {
    ClientId::parse(id).map_err(|_| ApiError::not_found("OAuth client"))
}

/// Read one client. Another workspace's client is `404`.
#[utoipa::path(
    get,
    path = "/v1/oauth/clients/{id}",
    operation_id = "getOAuthClient",
    tag = "oauth",
    security(("bearer" = [])),
    params(("id" = inline(ClientId), Path, description = "The client id")),
    responses((status = 200, body = ClientView))
)]
pub async fn get(
    State(identity): State<IdentityState>,
    auth: Authed<perm::OAuthClientsRead>,
    Path(id): Path<String>,
) -> ApiResult<Json<ClientView>> {
    let client = identity
        .oauth()
        .client(auth.principal.workspace_id(), &client_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("OAuth client"))?;
    Ok(Json(client.into()))
}

/// Delete a client: every grant and token issued to it ends at once. A client registered by a
/// higher role is `403` (an admin cannot delete an owner's); another workspace's is `404`.
#[utoipa::path(
    delete,
    path = "/v1/oauth/clients/{id}",
    operation_id = "deleteOAuthClient",
    tag = "oauth",
    security(("bearer" = [])),
    params(("id" = inline(ClientId), Path, description = "The client id")),
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete(
    State(identity): State<IdentityState>,
    auth: Authed<perm::OAuthClientsWrite>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = client_id(&id)?;
    let workspace = auth.principal.workspace_id();
    let client = identity
        .oauth()
        .client(workspace, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("OAuth client"))?;
    // The rule of API keys: nobody ends what outranks them (ASVS 5.0 V8.2.1). A client's role
    // never changes, so reading it first races with nothing.
    if !auth.principal.role().outranks_or_equals(client.role) {
        return Err(ApiError::forbidden(format!(
            "a {} credential cannot delete a client registered by a {}",
            auth.principal.role(),
            client.role
        )));
    }
    if !identity.oauth().delete_client(workspace, &id).await? {
        return Err(ApiError::not_found("OAuth client"));
    }
    tracing::info!(client_id = %id, "OAuth client deleted");
    Ok(StatusCode::NO_CONTENT)
}
