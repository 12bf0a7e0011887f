//! The OAuth token endpoint (RFC 6749 §3.2), revocation (RFC 7009) and introspection
//! (RFC 7662). All three take form parameters and authenticate the client: HTTP Basic or the
//! `client_id`/`client_secret` form fields (never both), or for a public client its `client_id`
//! alone.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pier_auth::oauth::{ClientType, Grant, GrantError, GrantType, Issued, OAuthClient};
use pier_auth::{AccessTokens, Permission, PermissionSet, TokenSubject};
use serde::Serialize;

use super::oauth_form::{Form, OAuthError, no_store};
use crate::AppState;

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"access_token": "eyJhbGciOiJFZERTQSIsInR5cCI6ImF0K2p3dCJ9.e30.c2ln",
    "token_type": "Bearer", "expires_in": 900, "scope": "links:read",
    "refresh_token": "pier_rt_hcrC3RQ6Gq8sU3f4NfQnJx2bxZpE0rVq6v0c5y9ZK1o"}))]
pub struct TokenResponse {
    /// A JWT (`typ: at+jwt`, EdDSA), to send as `Authorization: Bearer`.
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: u64,
    /// The permissions the token carries, space-separated.
    scope: String,
    /// For `authorization_code` and `refresh_token` grants of clients that may refresh: the
    /// next refresh token. Each works once; a used one presented again revokes the grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

/// The form of `POST /v1/oauth/token`.
#[derive(Debug, utoipa::ToSchema)]
#[schema(example = json!({"grant_type": "client_credentials", "scope": "links:read"}))]
#[allow(dead_code)] // Documents the form; the handler reads the raw parameters.
pub struct TokenForm {
    /// `client_credentials`, `authorization_code` or `refresh_token`.
    grant_type: String,
    /// Space-separated permissions to narrow the token to.
    scope: Option<String>,
    /// For `authorization_code`.
    code: Option<String>,
    /// For `authorization_code`: the one the code was issued for.
    redirect_uri: Option<String>,
    /// For `authorization_code`: the PKCE verifier (RFC 7636).
    code_verifier: Option<String>,
    /// For `refresh_token`.
    refresh_token: Option<String>,
    /// Unless sent with HTTP Basic.
    client_id: Option<String>,
    /// A confidential client's secret, unless sent with HTTP Basic.
    client_secret: Option<String>,
}

/// The form of the revocation and introspection endpoints.
#[derive(Debug, utoipa::ToSchema)]
#[schema(example = json!({"token": "pier_rt_hcrC3RQ6Gq8sU3f4NfQnJx2bxZpE0rVq6v0c5y9ZK1o"}))]
#[allow(dead_code)] // Documents the form; the handlers read the raw parameters.
pub struct TokenQueryForm {
    /// An access token or a refresh token.
    token: String,
    /// `access_token` or `refresh_token`; a hint only.
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// An introspection answer (RFC 7662 §2.2): `{"active": false}` for any token that is not
/// active or not this client's workspace's.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"active": true, "scope": "links:read",
    "client_id": "client_01m8pd91emf07nqws6p476403x", "sub": "client_01m8pd91emf07nqws6p476403x",
    "token_type": "access_token", "exp": 1796040000, "iat": 1796039100,
    "iss": "https://pier.example", "aud": "https://pier.example/v1",
    "jti": "01m8pd91emf07nqws6p476403x", "workspace_id": "ws_01m8hpqca6yrpxjm9wy9jmw19v"}))]
pub struct Introspection {
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    /// `access_token` or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workspace_id: Option<String>,
}

/// Issue tokens. Errors are RFC 6749 error objects, not problem documents.
#[utoipa::path(
    post,
    path = "/v1/oauth/token",
    operation_id = "oauthToken",
    tag = "oauth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = TokenResponse, headers(("Cache-Control" = String))),
        (status = 400, body = OAuthError),
        (status = 401, body = OAuthError, headers(("WWW-Authenticate" = String))),
    )
)]
pub async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    issue(&state, &headers, &body)
        .await
        .map_or_else(IntoResponse::into_response, |t| {
            (no_store(), Json(t)).into_response()
        })
}

async fn issue(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<TokenResponse, OAuthError> {
    let form = Form::parse(headers, body)?;
    let grant_type = form.require("grant_type")?;
    let Ok(grant_type) = grant_type.parse::<GrantType>() else {
        return Err(OAuthError::new(
            "unsupported_grant_type",
            "Pier offers authorization_code, client_credentials and refresh_token (no implicit \
             or password grant)",
        ));
    };
    let client = authenticate_client(state, headers, &form).await?;
    if !client.allows(grant_type) {
        return Err(OAuthError::new(
            "unauthorized_client",
            format!("this client is not registered for the {grant_type} grant"),
        ));
    }
    let requested = form.get("scope").map(parse_scope).transpose()?;
    let (issued, scopes) = match grant_type {
        GrantType::ClientCredentials => {
            let allowed = client.permissions();
            let scopes = narrowed(requested, allowed)?;
            let grant = state
                .identity()
                .oauth()
                .grant_client_credentials(&client, scopes)
                .await?;
            let issued = Issued {
                grant,
                refresh_token: None,
            };
            (issued, scopes)
        }
        GrantType::AuthorizationCode => {
            let issued = state
                .identity()
                .oauth()
                .redeem_code(
                    &client,
                    form.require("code")?,
                    form.require("redirect_uri")?,
                    form.require("code_verifier")?,
                )
                .await
                .map_err(grant_error)?;
            let scopes = narrowed(requested, issued.grant.scopes)?;
            (issued, scopes)
        }
        GrantType::RefreshToken => {
            let issued = state
                .identity()
                .oauth()
                .refresh(&client, form.require("refresh_token")?)
                .await
                .map_err(grant_error)?;
            let scopes = narrowed(requested, issued.grant.scopes)?;
            (issued, scopes)
        }
    };
    let (access_token, _) = state
        .identity()
        .access_tokens()
        .issue(&subject(&issued.grant, scopes))
        .map_err(|e| {
            tracing::error!(error = %e, "could not sign an access token");
            OAuthError::new("server_error", "could not sign the token")
        })?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: state.identity().access_tokens().lifetime().as_secs(),
        scope: scopes.to_names(),
        refresh_token: issued.refresh_token.map(|t| t.expose().to_owned()),
    })
}

fn subject(grant: &Grant, scopes: PermissionSet) -> TokenSubject<'_> {
    TokenSubject {
        subject: grant.subject(),
        client_id: &grant.client_id,
        workspace_id: &grant.workspace_id,
        grant_id: &grant.id,
        scopes,
    }
}

fn grant_error(err: GrantError) -> OAuthError {
    match err {
        GrantError::InvalidGrant(why) => OAuthError::new("invalid_grant", why),
        GrantError::InvalidScope(why) => OAuthError::new("invalid_scope", why),
        GrantError::Database(e) => e.into(),
    }
}

/// Space-separated permission names (RFC 6749 §3.3).
pub(crate) fn parse_scope(text: &str) -> Result<PermissionSet, OAuthError> {
    text.split(' ')
        .map(|name| {
            name.parse::<Permission>()
                .map_err(|e| OAuthError::new("invalid_scope", e))
        })
        .collect()
}

/// The requested scopes, which must lie within `allowed`; all of `allowed` when none are asked.
fn narrowed(
    requested: Option<PermissionSet>,
    allowed: PermissionSet,
) -> Result<PermissionSet, OAuthError> {
    match requested {
        None => Ok(allowed),
        Some(scopes) if scopes.is_subset_of(allowed) => Ok(scopes),
        Some(_) => Err(OAuthError::new(
            "invalid_scope",
            "the requested scope exceeds what was granted to this client",
        )),
    }
}

/// The client a request authenticates as: by HTTP Basic (RFC 6749 §2.3.1, both parts
/// form-urlencoded) or by form fields, not both; a public client by `client_id` alone.
async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    form: &Form,
) -> Result<OAuthClient, OAuthError> {
    let refused = || OAuthError::new("invalid_client", "client authentication failed");
    let basic = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => Some(basic_credentials(value.as_bytes()).ok_or_else(refused)?),
    };
    let (id, secret) = match (basic, form.get("client_secret")) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "authenticate the client one way: HTTP Basic or form fields, not both",
            ));
        }
        (Some((id, secret)), None) => {
            if form.get("client_id").is_some_and(|form_id| form_id != id) {
                return Err(OAuthError::invalid_request(
                    "`client_id` differs from the one in the Authorization header",
                ));
            }
            (id, Some(secret))
        }
        (None, secret) => (
            form.get("client_id").ok_or_else(refused)?.to_owned(),
            secret.map(str::to_owned),
        ),
    };
    state
        .identity()
        .oauth()
        .authenticate_client(&id, secret.as_deref())
        .await?
        .ok_or_else(refused)
}

fn basic_credentials(value: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

/// A confidential client, authenticated (the endpoints below are not for public clients).
async fn confidential_client(
    state: &AppState,
    headers: &HeaderMap,
    form: &Form,
) -> Result<OAuthClient, OAuthError> {
    let client = authenticate_client(state, headers, form).await?;
    match client.client_type {
        ClientType::Confidential => Ok(client),
        ClientType::Public => Err(OAuthError::new(
            "invalid_client",
            "a public client cannot use this endpoint",
        )),
    }
}

/// Revoke a token (RFC 7009): its whole grant ends, with every access and refresh token issued
/// under it. Answers `200` whether or not the token was valid or the client's.
#[utoipa::path(
    post,
    path = "/v1/oauth/revoke",
    operation_id = "oauthRevoke",
    tag = "oauth",
    request_body(content = TokenQueryForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Revoked, or there was nothing of this client's to revoke"),
        (status = 400, body = OAuthError),
        (status = 401, body = OAuthError, headers(("WWW-Authenticate" = String))),
    )
)]
pub async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let outcome = async {
        let form = Form::parse(&headers, &body)?;
        let token = form.require("token")?;
        let client = authenticate_client(&state, &headers, &form).await?;
        if AccessTokens::looks_like_jwt(token) {
            if let Ok(claims) = state.identity().access_tokens().verify(token).await {
                if claims.client_id == client.client_id.as_str() {
                    state
                        .identity()
                        .oauth()
                        .revoke_grant(&client, &claims.gid)
                        .await?;
                }
            }
        } else {
            state
                .identity()
                .oauth()
                .revoke_refresh_token(&client, token)
                .await?;
        }
        Ok::<_, OAuthError>(())
    };
    match outcome.await {
        Ok(()) => (StatusCode::OK, no_store()).into_response(),
        Err(err) => err.into_response(),
    }
}

/// Introspect a token (RFC 7662). Only confidential clients may ask, and only about tokens of
/// their own workspace: any other token is `{"active": false}`.
#[utoipa::path(
    post,
    path = "/v1/oauth/introspect",
    operation_id = "oauthIntrospect",
    tag = "oauth",
    request_body(content = TokenQueryForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = Introspection),
        (status = 400, body = OAuthError),
        (status = 401, body = OAuthError, headers(("WWW-Authenticate" = String))),
    )
)]
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let outcome = async {
        let form = Form::parse(&headers, &body)?;
        let token = form.require("token")?;
        let client = confidential_client(&state, &headers, &form).await?;
        let answer = describe(&state, token).await?;
        let ours = answer.workspace_id.as_deref() == Some(client.workspace_id.as_str());
        Ok::<_, OAuthError>(if ours {
            answer
        } else {
            Introspection::default()
        })
    };
    match outcome.await {
        Ok(answer) => (no_store(), Json(answer)).into_response(),
        Err(err) => err.into_response(),
    }
}

async fn describe(state: &AppState, token: &str) -> Result<Introspection, OAuthError> {
    if AccessTokens::looks_like_jwt(token) {
        let Ok(claims) = state.identity().access_tokens().verify(token).await else {
            return Ok(Introspection::default());
        };
        if state
            .identity()
            .oauth()
            .live_grant(&claims.gid)
            .await?
            .is_none()
        {
            return Ok(Introspection::default());
        }
        return Ok(Introspection {
            active: true,
            scope: Some(claims.scope),
            client_id: Some(claims.client_id),
            sub: Some(claims.sub),
            token_type: Some("access_token"),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            iss: Some(claims.iss),
            aud: Some(claims.aud),
            jti: Some(claims.jti),
            workspace_id: Some(claims.workspace_id),
        });
    }
    let Some(grant) = state.identity().oauth().refresh_token_grant(token).await? else {
        return Ok(Introspection::default());
    };
    Ok(Introspection {
        active: true,
        scope: Some(grant.scopes.to_names()),
        client_id: Some(grant.client_id.as_str().to_owned()),
        sub: Some(grant.subject().to_owned()),
        token_type: Some("refresh_token"),
        exp: Some(grant.expires_at.as_micros().div_euclid(1_000_000)),
        workspace_id: Some(grant.workspace_id.as_str().to_owned()),
        ..Introspection::default()
    })
}
