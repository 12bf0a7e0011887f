//! Discovery: the public keys that verify access tokens (RFC 7517) and the authorization server
//! metadata (RFC 8414).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use pier_auth::Permission;
use pier_auth::oauth::GrantType;

use crate::AppState;

/// Verifiers may cache the key set briefly; a new key is looked up again by `kid`.
const KEYS_CACHE: HeaderValue = HeaderValue::from_static("public, max-age=300");

/// The public keys access tokens are signed with.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    operation_id = "jwks",
    tag = "oauth",
    responses((status = 200, description = "A JWK set", content_type = "application/json"))
)]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let keys = state.identity().access_tokens().keys().jwks();
    ([(header::CACHE_CONTROL, KEYS_CACHE)], Json(keys)).into_response()
}

/// What a client needs to know to use Pier as an OAuth authorization server.
#[utoipa::path(
    get,
    path = "/.well-known/oauth-authorization-server",
    operation_id = "oauthMetadata",
    tag = "oauth",
    responses((status = 200, description = "RFC 8414 metadata", content_type = "application/json"))
)]
pub async fn metadata(State(state): State<AppState>) -> Json<serde_json::Value> {
    let issuer = state.identity().access_tokens().issuer();
    let grants: Vec<_> = GrantType::ALL.iter().map(|g| g.as_str()).collect();
    let scopes: Vec<_> = Permission::ALL.iter().map(|p| p.as_str()).collect();
    Json(serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/v1/oauth/authorize"),
        "token_endpoint": format!("{issuer}/v1/oauth/token"),
        "revocation_endpoint": format!("{issuer}/v1/oauth/revoke"),
        "introspection_endpoint": format!("{issuer}/v1/oauth/introspect"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": grants,
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post"],
        "scopes_supported": scopes,
        "authorization_response_iss_parameter_supported": true,
    }))
}
