//! The authorization endpoint (RFC 6749 §4.1, RFC 7636, RFC 9700): a signed-in user sees
//! which client asks for what, and approves or denies; the client gets a code at its redirect
//! URI.
//!
//! Until the client and its redirect URI are known good, errors are shown to the user and never
//! redirected (an open redirector would otherwise be one link away). The redirect URI must be
//! one the client registered, byte for byte. PKCE with `S256` is required of every client.
//! Approval is a form post from the consent page, which carries the session's anti-CSRF token
//! and is refused cross-site; the page cannot be framed (clickjacking).

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pier_auth::oauth::{GrantType, NewCode, OAuthClient, is_s256_challenge};
use pier_auth::{PermissionSet, Session, SessionSecret};

use super::oauth_form::Form;
use super::oauth_token::parse_scope;
use crate::AppState;
use crate::html::{self, escape};
use crate::session_cookie;

/// A request the client made, checked: who asks, where the answer goes, for what.
struct Checked {
    client: OAuthClient,
    redirect_uri: String,
    state: Option<String>,
    challenge: String,
    scope: Option<String>,
}

/// What went wrong: shown to the user, or sent back to the client.
enum Refusal {
    /// The client or redirect URI is not trustworthy: a page, never a redirect.
    Page(StatusCode, String),
    /// An RFC 6749 §4.1.2.1 error for the client, at its redirect URI.
    Redirect(String, &'static str, String, Option<String>),
}

/// The consent page's form: the authorization request's parameters, the session's anti-CSRF
/// token and the user's decision.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // Documents the form; the handler reads the raw parameters.
#[schema(example = json!({"response_type": "code",
    "client_id": "client_01m8pd91emf07nqws6p476403x",
    "redirect_uri": "https://app.example/callback", "scope": "links:read", "state": "af0ifjsldkj",
    "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    "code_challenge_method": "S256", "csrf_token": "Wm9vQm9vLWNzcmYtdG9rZW4tZXhhbXBsZS0xMjM0NTY",
    "decision": "approve"}))]
pub struct ConsentForm {
    response_type: String,
    client_id: String,
    redirect_uri: String,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: String,
    code_challenge_method: String,
    csrf_token: String,
    /// `approve`; anything else denies.
    decision: String,
}

/// Start authorizing a client: shows the consent page to the signed-in user.
#[utoipa::path(
    get,
    path = "/v1/oauth/authorize",
    operation_id = "oauthAuthorize",
    tag = "oauth",
    params(
        ("response_type" = String, Query, description = "`code`"),
        ("client_id" = String, Query),
        ("redirect_uri" = String, Query, description = "One the client registered, exactly"),
        ("scope" = Option<String>, Query, description = "Space-separated permissions"),
        ("state" = Option<String>, Query, description = "Echoed back to the client"),
        ("code_challenge" = String, Query, description = "BASE64URL(SHA-256(code_verifier))"),
        ("code_challenge_method" = String, Query, description = "`S256`"),
    ),
    responses(
        (status = 200, description = "The consent page", content_type = "text/html"),
        (status = 303, description = "An error for the client, at its redirect URI"),
        (status = 400, description = "An unknown client or redirect URI", content_type = "text/html"),
        (status = 401, description = "Not signed in", content_type = "text/html"),
    )
)]
pub async fn authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let outcome = async {
        let params = Form::from_pairs(query.unwrap_or_default().as_bytes())
            .map_err(|e| Refusal::Page(StatusCode::BAD_REQUEST, e.error_description))?;
        let checked = check(&state, &params).await?;
        let (secret, session) = signed_in(&state, &headers, &checked).await?;
        let scopes = granted(&checked, &session)?;
        Ok::<_, Refusal>(consent_page(&checked, &secret, scopes))
    };
    outcome
        .await
        .unwrap_or_else(|refusal| refused(&state, refusal))
}

/// The user's answer on the consent page: `decision=approve` sends a code to the client,
/// anything else `access_denied`.
#[utoipa::path(
    post,
    path = "/v1/oauth/authorize",
    operation_id = "oauthDecide",
    tag = "oauth",
    request_body(content = ConsentForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "To the client's redirect URI, with a code or an error"),
        (status = 400, description = "An unknown client or redirect URI", content_type = "text/html"),
        (status = 401, description = "Not signed in", content_type = "text/html"),
        (status = 403, description = "A forged or cross-site form", content_type = "text/html"),
    )
)]
pub async fn decide(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let outcome = async {
        let form = Form::parse(&headers, &body)
            .map_err(|e| Refusal::Page(StatusCode::BAD_REQUEST, e.error_description))?;
        let checked = check(&state, &form).await?;
        let (secret, session) = signed_in(&state, &headers, &checked).await?;
        // The consent form carries the anti-CSRF token as a field; the cookie rules are the
        // API's (no cross-site request, no foreign origin).
        let mut with_token = headers.clone();
        if let Ok(token) = HeaderValue::from_str(form.get("csrf_token").unwrap_or_default()) {
            with_token.insert(session_cookie::CSRF_HEADER, token);
        }
        if let Some(why) = session_cookie::forgery(&Method::POST, &with_token, &secret) {
            return Err(Refusal::Page(StatusCode::FORBIDDEN, why.to_owned()));
        }
        if form.get("decision") != Some("approve") {
            return Err(to_client(
                &checked,
                "access_denied",
                "the user denied the request",
            ));
        }
        let scopes = granted(&checked, &session)?;
        let code = state
            .identity()
            .oauth()
            .issue_code(NewCode {
                client: &checked.client,
                user_id: &session.user_id,
                workspace_id: &session.workspace_id,
                redirect_uri: &checked.redirect_uri,
                scopes,
                code_challenge: &checked.challenge,
            })
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "could not store an authorization code");
                to_client(
                    &checked,
                    "server_error",
                    "the server could not issue a code",
                )
            })?;
        tracing::info!(client_id = %checked.client.client_id, user_id = %session.user_id,
            "OAuth client authorized");
        Ok::<_, Refusal>(redirect(
            &state,
            &checked.redirect_uri,
            &[("code", code.expose())],
            checked.state.as_deref(),
        ))
    };
    outcome
        .await
        .unwrap_or_else(|refusal| refused(&state, refusal))
}

/// Checks the client and redirect URI first (errors to the user), then the rest (errors to the
/// client).
async fn check(state: &AppState, params: &Form) -> Result<Checked, Refusal> {
    let page = |why: &str| Refusal::Page(StatusCode::BAD_REQUEST, why.to_owned());
    let client_id = params
        .get("client_id")
        .ok_or_else(|| page("client_id is missing"))?;
    let client = state
        .identity()
        .oauth()
        .find_client(client_id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "could not read an OAuth client");
            Refusal::Page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server could not handle the request".to_owned(),
            )
        })?
        .ok_or_else(|| page("no such client"))?;
    let redirect_uri = params
        .get("redirect_uri")
        .filter(|uri| client.redirect_uris.iter().any(|r| r == uri))
        .ok_or_else(|| page("the redirect_uri is missing or not one this client registered"))?
        .to_owned();
    let checked = Checked {
        client,
        redirect_uri,
        state: params.get("state").map(str::to_owned),
        challenge: params.get("code_challenge").unwrap_or_default().to_owned(),
        scope: params.get("scope").map(str::to_owned),
    };
    if params.get("response_type") != Some("code") {
        return Err(to_client(
            &checked,
            "unsupported_response_type",
            "only response_type=code is offered",
        ));
    }
    if !checked.client.allows(GrantType::AuthorizationCode) {
        return Err(to_client(
            &checked,
            "unauthorized_client",
            "this client is not registered for the authorization_code grant",
        ));
    }
    if params.get("code_challenge_method") != Some("S256") || !is_s256_challenge(&checked.challenge)
    {
        return Err(to_client(
            &checked,
            "invalid_request",
            "PKCE is required: code_challenge (43 base64url characters) with \
             code_challenge_method=S256",
        ));
    }
    Ok(checked)
}

/// The session of the user at the keyboard, which must be in the client's workspace.
async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
    checked: &Checked,
) -> Result<(SessionSecret, Session), Refusal> {
    let not_signed_in = || {
        Refusal::Page(
            StatusCode::UNAUTHORIZED,
            "Sign in to Pier first (POST /v1/auth/login), then open this link again.".to_owned(),
        )
    };
    let secret = session_cookie::read(headers, state.identity().cookie_secure())
        .ok_or_else(not_signed_in)?;
    let session = state
        .identity()
        .sessions()
        .authenticate(&secret)
        .await
        .map_err(|_| not_signed_in())?
        .ok_or_else(not_signed_in)?;
    if session.must_change_password {
        return Err(Refusal::Page(
            StatusCode::FORBIDDEN,
            "Choose a new password first.".to_owned(),
        ));
    }
    if session.workspace_id != checked.client.workspace_id {
        return Err(Refusal::Page(
            StatusCode::FORBIDDEN,
            "This application belongs to another workspace: sign in to that workspace to \
             authorize it."
                .to_owned(),
        ));
    }
    Ok((secret, session))
}

/// What the user can grant: the scopes asked for (all the client's when none), within the
/// client's registration and the user's own role.
fn granted(checked: &Checked, session: &Session) -> Result<PermissionSet, Refusal> {
    let allowed = checked
        .client
        .permissions()
        .intersect(session.permissions());
    let asked = match &checked.scope {
        Some(scope) => parse_scope(scope)
            .map_err(|e| to_client(checked, "invalid_scope", &e.error_description))?,
        None => checked.client.permissions(),
    };
    let scopes = asked.intersect(allowed);
    if scopes.iter().next().is_none() {
        return Err(to_client(
            checked,
            "invalid_scope",
            "none of the requested scopes can be granted by this user to this client",
        ));
    }
    Ok(scopes)
}

fn to_client(checked: &Checked, error: &'static str, description: &str) -> Refusal {
    Refusal::Redirect(
        checked.redirect_uri.clone(),
        error,
        description.to_owned(),
        checked.state.clone(),
    )
}

fn refused(state: &AppState, refusal: Refusal) -> Response {
    match refusal {
        Refusal::Page(status, why) => html::page(
            status,
            "Cannot authorize",
            &format!("<p>{}</p>", escape(&why)),
            html::PAGE_POLICY,
        ),
        Refusal::Redirect(uri, error, description, client_state) => {
            let params = [
                ("error", error),
                ("error_description", description.as_str()),
            ];
            redirect(state, &uri, &params, client_state.as_deref())
        }
    }
}

/// `303 See Other` to `uri` with `params`, `state` and the issuer added to its query: codes
/// and errors alike carry `iss` (RFC 9207 §2, as the metadata's
/// `authorization_response_iss_parameter_supported` promises), so a client talking to several
/// servers can tell which one answered.
fn redirect(
    state: &AppState,
    uri: &str,
    params: &[(&str, &str)],
    client_state: Option<&str>,
) -> Response {
    let Ok(mut url) = url::Url::parse(uri) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    {
        let mut query = url.query_pairs_mut();
        query.extend_pairs(params);
        if let Some(client_state) = client_state {
            query.append_pair("state", client_state);
        }
        query.append_pair("iss", state.identity().access_tokens().issuer());
    }
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(url.as_str()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn consent_page(checked: &Checked, secret: &SessionSecret, scopes: PermissionSet) -> Response {
    let hidden = |name: &str, value: &str| {
        format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
            escape(value)
        )
    };
    let mut fields = [
        ("response_type", "code"),
        ("client_id", checked.client.client_id.as_str()),
        ("redirect_uri", &checked.redirect_uri),
        ("code_challenge", &checked.challenge),
        ("code_challenge_method", "S256"),
        ("csrf_token", &secret.csrf_token()),
    ]
    .iter()
    .map(|(n, v)| hidden(n, v))
    .collect::<String>();
    fields.push_str(&hidden("scope", &scopes.to_names()));
    if let Some(state) = &checked.state {
        fields.push_str(&hidden("state", state));
    }
    let list: String = scopes
        .iter()
        .map(|p| format!("<li><code>{p}</code></li>"))
        .collect();
    let destination = url::Url::parse(&checked.redirect_uri)
        .ok()
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let body = format!(
        "<p><strong>{name}</strong> asks to act for you in this workspace with:</p><ul>{list}</ul>\
         <p>You will be sent back to <code>{to}</code>.</p>\
         <form method=\"post\" action=\"/v1/oauth/authorize\">{fields}\
         <button type=\"submit\" name=\"decision\" value=\"approve\">Allow</button> \
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
        name = escape(&checked.client.name),
        to = escape(&destination),
    );
    // The form posts here, and the answer redirects to the client: both must be allowed.
    let policy = html::PAGE_POLICY.replace(
        "form-action 'self'",
        &format!("form-action 'self' {destination}"),
    );
    html::page(StatusCode::OK, "Authorize access", &body, &policy)
}
