//! `/v1/auth`: signing in and out with a password, the current session, and changing the
//! password. A session lives in a cookie (see [`crate::session_cookie`]); every other route
//! accepts it in place of an API key.

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pier_auth::{Email, Permission, Role, SessionLimits, SignedIn, User, UserId, WorkspaceId};
use pier_core::{Timestamp, ValidationErrors};
use serde::{Deserialize, Serialize};

use super::guesses;
use crate::AppState;
use crate::extract::ApiJson;
use crate::middleware::{SignedInSession, ip_key};
use crate::problem::{ApiError, ApiResult};
use crate::session_cookie;

const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// The body of `POST /v1/auth/login`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "ann@example.com", "password": "correct horse battery staple"}))]
pub struct Login {
    #[schema(schema_with = email)]
    email: String,
    #[schema(schema_with = password)]
    password: String,
    /// The workspace to act in; defaults to the one the user joined first.
    #[schema(value_type = Option<WorkspaceId>, nullable)]
    workspace_id: Option<String>,
}

fn email() -> utoipa::openapi::Object {
    Email::schema().build()
}

fn password() -> utoipa::openapi::Object {
    pier_core::schema::string(1, pier_core::password::MAX_CHARS).build()
}

pub(super) fn new_password() -> utoipa::openapi::Object {
    pier_core::schema::plain_text(
        pier_auth::MIN_PASSWORD_CHARS,
        pier_core::password::MAX_CHARS,
    )
    .description(Some("8 to 1,024 characters, no control characters"))
    .build()
}

/// The body of `POST /v1/auth/password`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"current_password": "k7m2…", "new_password": "correct horse battery staple"}))]
pub struct ChangePassword {
    #[schema(schema_with = password)]
    current_password: String,
    #[schema(schema_with = new_password)]
    new_password: String,
}

/// The signed-in user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionUser {
    #[schema(value_type = String, example = "usr_01m8qyr7y2xgm1tfz3wgbwc1ry")]
    id: UserId,
    email: String,
    display_name: String,
}

/// The current session. Its id is only ever in the cookie.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "user": {"id": "usr_01m8qyr7y2xgm1tfz3wgbwc1ry", "email": "ann@example.com",
             "display_name": "Ann"},
    "workspace_id": "ws_01m8hpqca6yrpxjm9wy9jmw19v", "role": "member",
    "permissions": ["workspace:read", "links:read", "links:write"],
    "must_change_password": false, "csrf_token": "x0Qm2K9S1y3cJH8b6pW4tLrV7nZ5aDfE-gUiOoYk_Be",
    "created_at": "2026-12-01T09:00:00.000000Z", "idle_expires_at": "2026-12-01T10:00:00.000000Z",
    "expires_at": "2026-12-01T21:00:00.000000Z"}))]
pub struct SessionView {
    user: SessionUser,
    #[schema(value_type = String, example = "ws_01m8hpqca6yrpxjm9wy9jmw19v")]
    workspace_id: WorkspaceId,
    role: Role,
    permissions: Vec<Permission>,
    /// The account has a one-time password: until `POST /v1/auth/password`, nothing else is
    /// allowed.
    must_change_password: bool,
    /// Send it as `X-CSRF-Token` with every request that changes anything.
    csrf_token: String,
    created_at: Timestamp,
    /// When the session ends unless used before.
    idle_expires_at: Timestamp,
    /// When the session ends however much it is used.
    expires_at: Timestamp,
}

fn view(signed_in: &SignedInSession, user: &User, limits: SessionLimits) -> SessionView {
    let session = &signed_in.session;
    SessionView {
        user: SessionUser {
            id: user.id.clone(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
        },
        workspace_id: session.workspace_id.clone(),
        role: session.role,
        permissions: session.permissions().iter().collect(),
        must_change_password: session.must_change_password,
        csrf_token: signed_in.secret.csrf_token(),
        created_at: session.created_at,
        idle_expires_at: session.idle_until(limits),
        expires_at: session.expires_at,
    }
}

/// A new session: its description, and the cookie that carries its id.
pub(super) fn opened(state: &AppState, signed_in: SignedIn) -> Response {
    let limits = state.identity().sessions().limits();
    let cookie = session_cookie::set(state.identity().cookie_secure(), &signed_in.secret, limits);
    let current = SignedInSession {
        secret: signed_in.secret,
        session: signed_in.session,
    };
    let body = view(&current, &signed_in.user, limits);
    (
        [
            (header::SET_COOKIE, cookie),
            (header::CACHE_CONTROL, NO_STORE),
        ],
        Json(body),
    )
        .into_response()
}

/// Sign in with an email and a password. An unknown email and a wrong password get the same
/// answer after the same work; attempts are limited per client address, per account and
/// address, and per account from addresses it has not signed in from (so strangers cannot lock
/// the owner out where they sign in); signing in gives the account its quota there back.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    operation_id = "login",
    tag = "auth",
    security(()),
    request_body = Login,
    responses(
        (status = 200, description = "Signed in: the session, and its id in a `Set-Cookie`", body = SessionView),
        (status = 401, description = "`wrong_credentials`: the email or the password is wrong", body = crate::Problem),
        (status = 403, description = "`forbidden`: the user is not a member of that workspace, or the browser sent the request from another site", body = crate::Problem),
        (status = 422, description = "`validation_failed`: a field is malformed", body = crate::Problem),
        (status = 429, description = "`quota_exceeded`: too many failed sign-ins for this account or from this address", body = crate::Problem),
        (status = 503, description = "`server_busy`: too many passwords are being checked on this node; retry after `Retry-After`", body = crate::Problem)
    )
)]
pub async fn login(State(state): State<AppState>, req: Request) -> Response {
    if session_cookie::is_cross_site(req.headers()) {
        return ApiError::forbidden("signing in from another site is refused").into_response();
    }
    let client = ip_key(&state, &req).unwrap_or_default();
    let headers = req.headers().clone();
    let body = match ApiJson::<Login>::from_request(req, &state).await {
        Ok(ApiJson(body)) => body,
        Err(rejection) => return rejection.into_response(),
    };
    let mut errors = ValidationErrors::new();
    let email = errors.check("email", "invalid", Email::parse(&body.email));
    if body.password.is_empty() || body.password.len() > 4 * pier_core::password::MAX_CHARS {
        errors.add("password", "invalid", "must be 1 to 1,024 characters");
    }
    let workspace = body
        .workspace_id
        .as_deref()
        .and_then(|id| errors.check("workspace_id", "invalid", WorkspaceId::parse(id)));
    if let Err(errors) = errors.into_result() {
        return ApiError::validation(errors).into_response();
    }
    let Some(email) = email else {
        return ApiError::internal(anyhow::anyhow!("validated email missing")).into_response();
    };

    if let Err(refused) = guesses::spend(&state, &email, &client).await {
        return refused;
    }
    // Whatever session the browser held ends: sign-in always starts a new id (no fixation).
    if let Some(old) = session_cookie::read(&headers, state.identity().cookie_secure())
        && let Err(err) = state.identity().sessions().sign_out(&old).await
    {
        return ApiError::from(err).into_response();
    }
    match state
        .identity()
        .sessions()
        .sign_in(&email, &body.password, workspace.as_ref(), Some(&client))
        .await
    {
        Ok(signed_in) => {
            guesses::forgive(&state, &email, &client).await;
            opened(&state, signed_in)
        }
        Err(err) => ApiError::from(err).into_response(),
    }
}

/// The session the request was authenticated with, or a problem for any other credential.
fn current(req: &Request) -> ApiResult<SignedInSession> {
    req.extensions()
        .get::<SignedInSession>()
        .cloned()
        .ok_or_else(|| {
            ApiError::bad_request(
                "not_a_session",
                "this request is authenticated by an API key, not a sign-in session",
            )
        })
}

/// The current session.
#[utoipa::path(
    get,
    path = "/v1/auth/session",
    operation_id = "getSession",
    tag = "auth",
    security(("session" = [])),
    responses(
        (status = 200, body = SessionView),
        (status = 400, description = "`not_a_session`: the request used an API key", body = crate::Problem)
    )
)]
pub async fn session(State(state): State<AppState>, req: Request) -> ApiResult<Response> {
    let signed_in = current(&req)?;
    let user = state
        .identity()
        .sessions()
        .user(&signed_in.session.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let body = view(&signed_in, &user, state.identity().sessions().limits());
    Ok(([(header::CACHE_CONTROL, NO_STORE)], Json(body)).into_response())
}

/// Sign out: the session ends on every node at once, and the browser forgets the cookie.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    operation_id = "logout",
    tag = "auth",
    security(("session" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 400, description = "`not_a_session`: the request used an API key", body = crate::Problem)
    )
)]
pub async fn logout(State(state): State<AppState>, req: Request) -> ApiResult<Response> {
    let signed_in = current(&req)?;
    state
        .identity()
        .sessions()
        .sign_out(&signed_in.secret)
        .await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            session_cookie::clear(state.identity().cookie_secure()),
        )],
    )
        .into_response())
}

/// Change the password. Every session of the user ends, and every OAuth grant they gave (its
/// refresh and access tokens); this session continues under a new id, set in the response's
/// cookie. A wrong current password spends a guess as a failed sign-in does.
#[utoipa::path(
    post,
    path = "/v1/auth/password",
    operation_id = "changePassword",
    tag = "auth",
    security(("session" = [])),
    request_body = ChangePassword,
    responses(
        (status = 200, description = "Changed: the new session, and its id in a `Set-Cookie`", body = SessionView),
        (status = 400, description = "`not_a_session`: the request used an API key", body = crate::Problem),
        (status = 401, description = "`wrong_credentials`: the current password is wrong", body = crate::Problem),
        (status = 422, description = "`validation_failed`: the new password is too short or too long", body = crate::Problem),
        (status = 429, description = "`quota_exceeded`: too many wrong current passwords for this account or from this address", body = crate::Problem),
        (status = 503, description = "`server_busy`: too many passwords are being checked on this node; retry after `Retry-After`", body = crate::Problem)
    )
)]
pub async fn change_password(State(state): State<AppState>, req: Request) -> ApiResult<Response> {
    let signed_in = current(&req)?;
    let client = ip_key(&state, &req).unwrap_or_default();
    let ApiJson(body) = ApiJson::<ChangePassword>::from_request(req, &state).await?;
    let user = state
        .identity()
        .sessions()
        .user(&signed_in.session.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let email = Email::parse(&user.email).map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
    // A stolen session must not become an unlimited oracle for the password: the current
    // password is a guess like a sign-in's (ASVS 5.0 V6.3.1).
    if let Err(refused) = guesses::spend(&state, &email, &client).await {
        return Ok(refused);
    }
    let renewed = state
        .identity()
        .sessions()
        .change_password(
            &signed_in.session,
            &body.current_password,
            &body.new_password,
        )
        .await?;
    guesses::forgive(&state, &email, &client).await;
    Ok(opened(&state, renewed))
}
