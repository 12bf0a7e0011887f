//! `/v1/auth/invitation`: the page an invitation link opens, where a new user chooses their
//! password, and the request that sets it and signs them in. The link's secret is the only
//! credential, so both are public; the token travels in the query (never logged: logs name the
//! route, not the path) and the form.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pier_auth::Opaque;
use serde::Deserialize;

use super::oauth_form::Form;
use super::sessions::opened;
use crate::AppState;
use crate::html::{self, escape};
use crate::problem::ApiError;
use crate::session_cookie;

/// The body of `POST /v1/auth/invitation`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"token": "pier_iv_hcrC3RQ6Gq8sU3f4NfQnJx2bxZpE0rVq6v0c5y9ZK1o",
    "password": "correct horse battery staple"}))]
pub struct AcceptInvitation {
    /// The `token` of the invitation link.
    token: String,
    #[schema(schema_with = super::sessions::new_password)]
    password: String,
}

/// The page an invitation link opens: a form to choose a password.
#[utoipa::path(
    get,
    path = "/v1/auth/invitation",
    operation_id = "invitationPage",
    tag = "auth",
    params(("token" = String, Query, description = "The invitation's secret, `pier_iv_…`")),
    responses(
        (status = 200, description = "The form", content_type = "text/html"),
        (status = 400, description = "The link is malformed", content_type = "text/html"),
    )
)]
pub async fn page(RawQuery(query): RawQuery) -> Response {
    let token = Form::from_pairs(query.unwrap_or_default().as_bytes())
        .ok()
        .and_then(|form| form.get("token").map(str::to_owned))
        .and_then(|token| Opaque::parse(Opaque::INVITATION, &token));
    let Some(token) = token else {
        return message(
            StatusCode::BAD_REQUEST,
            "This invitation link is not valid.",
        );
    };
    let body = format!(
        "<p>Choose the password you will sign in with (at least {min} characters).</p>\
         <form method=\"post\" action=\"/v1/auth/invitation\">\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">\
         <label>Password <input type=\"password\" name=\"password\" minlength=\"{min}\" \
         autocomplete=\"new-password\" required autofocus></label> \
         <button type=\"submit\">Set password</button></form>",
        min = pier_auth::MIN_PASSWORD_CHARS,
        token = escape(token.expose()),
    );
    html::page(StatusCode::OK, "Welcome to Pier", &body, html::PAGE_POLICY)
}

/// Accept an invitation: sets the password, ends the link, and signs in (the session and its
/// cookie, as `POST /v1/auth/login` answers; the page's form gets a page instead).
#[utoipa::path(
    post,
    path = "/v1/auth/invitation",
    operation_id = "acceptInvitation",
    tag = "auth",
    security(()),
    request_body(content(
        (AcceptInvitation = "application/json"),
        (AcceptInvitation = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Signed in: the session (a page for the form), and its id in a `Set-Cookie`",
            content((super::sessions::SessionView = "application/json"), (String = "text/html"))),
        (status = 403, description = "`forbidden`: sent from another site", body = crate::Problem),
        (status = 410, description = "`invitation_invalid`: the link is unknown, used or expired (a page for the form)",
            content((crate::Problem = "application/problem+json"), (String = "text/html"))),
        (status = 422, description = "`validation_failed`: the password is too short or long (a page for the form)",
            content((crate::Problem = "application/problem+json"), (String = "text/html"))),
    )
)]
pub async fn accept(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if session_cookie::is_cross_site(&headers) {
        return ApiError::forbidden("accepting an invitation from another site is refused")
            .into_response();
    }
    let from_page = Form::parse(&headers, &body).ok();
    let (token, password) = match &from_page {
        Some(form) => (
            form.get("token").unwrap_or_default().to_owned(),
            form.get("password").unwrap_or_default().to_owned(),
        ),
        None => match serde_json::from_slice::<AcceptInvitation>(&body) {
            Ok(json) if is_json(&headers) => (json.token, json.password),
            _ => {
                return ApiError::bad_request(
                    "malformed_json",
                    "send {\"token\", \"password\"} as JSON (or the invitation page's form)",
                )
                .into_response();
            }
        },
    };
    match state
        .identity()
        .sessions()
        .accept_invitation(&token, &password)
        .await
    {
        Ok(signed_in) if from_page.is_some() => {
            let text = format!(
                "Your password is set, {}: you are signed in.",
                escape(&signed_in.user.display_name)
            );
            let mut page = message(StatusCode::OK, &text);
            let mut api = opened(&state, signed_in);
            if let Some(cookie) = api.headers_mut().remove(header::SET_COOKIE) {
                page.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            page
        }
        Ok(signed_in) => opened(&state, signed_in),
        Err(err) if from_page.is_some() => {
            let refused = ApiError::from(err);
            message(refused.status(), &escape(refused.detail()))
        }
        Err(err) => ApiError::from(err).into_response(),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"))
}

fn message(status: StatusCode, text: &str) -> Response {
    html::page(
        status,
        "Invitation",
        &format!("<p>{text}</p>"),
        html::PAGE_POLICY,
    )
}
