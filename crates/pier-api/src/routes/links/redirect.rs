//! `GET` and `HEAD /{slug}`: the redirect, and `POST /{slug}` for a password link's form.
//!
//! A slug's destination comes from the redirect cache (see [`pier_links::Redirects`]), so a hot
//! link costs no database read, and its click goes to a buffer written in the background, so
//! the answer never waits for a database write (except the one conditional write that keeps
//! `max_clicks` exact). Browsers get small HTML pages for unknown, gone and password-protected
//! links; other clients get problem documents. Unknown slugs are limited per client address
//! ([`super::redirect_misses`]).

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pier_links::clicks::referrer_host;
use pier_links::sketch::visitor_hash;
use pier_links::{Availability, Destination, Slug, Visit, Visitor};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::LinksState;
use super::redirect_misses::Misses;
use crate::AppState;
use crate::html;
use crate::middleware::{bypassing_the_router, ip_key};
use crate::problem::ApiError;
use crate::rate_limit::{client_ip, refusal};

/// The longest password form accepted, in bytes.
const MAX_FORM_BYTES: usize = 4 * 1024;

/// Temporary redirects: browsers ask again every time, so every click reaches us.
const TEMPORARY: HeaderValue = HeaderValue::from_static("private, max-age=0");
/// Permanent redirects may be kept by browsers; a day bounds how long an edit takes to reach
/// them.
const PERMANENT: HeaderValue = HeaderValue::from_static("public, max-age=86400");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// Follow a short link. Not part of the JSON API: the answer is a redirect, or an HTML page
/// for browsers (unknown or gone links, password forms).
#[utoipa::path(
    get,
    path = "/{slug}",
    operation_id = "followLink",
    tag = "links",
    security(()),
    params(("slug" = inline(Slug), Path, description = "The link's slug")),
    responses(
        (status = 302, description = "The link's redirect (the default status)", headers(("Location" = String))),
        (status = 301, description = "The link's redirect, if it is set to 301", headers(("Location" = String))),
        (status = 307, description = "The link's redirect, if it is set to 307", headers(("Location" = String))),
        (status = 308, description = "The link's redirect, if it is set to 308", headers(("Location" = String))),
        (status = 200, description = "The password form of a protected link", content_type = "text/html"),
        (status = 404, description = "`not_found`: no link has this slug (a page for browsers)",
            content((crate::Problem = "application/problem+json"), (String = "text/html"))),
        (status = 410, description = "`link_gone`: the link expired or used its clicks (a page for browsers)",
            content((crate::Problem = "application/problem+json"), (String = "text/html"))),
        (status = 429, description = "`quota_exceeded`: too many slugs that match no link from this address; retry after `Retry-After` (a page for browsers)",
            content((crate::Problem = "application/problem+json"), (String = "text/html")))
    )
)]
pub async fn follow(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    req: Request,
) -> Response {
    // The request is borrowed, not taken apart: extracting `HeaderMap` would copy it.
    let headers = req.headers();
    let peer = req.extensions().get();
    let dest = match open_destination(&state, &slug, headers, peer).await {
        Ok(dest) => dest,
        Err(response) => return response,
    };
    if dest.needs_password() {
        return password_page(StatusCode::OK, &slug, None);
    }
    arrive(&state, &dest, req.method(), headers, peer).await
}

/// The redirect of a link that asks for nothing but its lookup and a click (no password, no
/// click limit, not expired), answered before the router and the API's middleware, or `None`
/// for the full route to answer. Each layer costs little, but together they halved the
/// redirect's rate (`bench/RESULTS.md`); what they give a redirect (request id, metrics,
/// access-log line) is given here too. Only from this node's cache: a slug it does not hold
/// goes to the full route, which limits lookups of unknown slugs.
pub fn shortcut<'a, B>(
    state: &'a AppState,
    req: &'a axum::http::Request<B>,
) -> impl Future<Output = Option<Response>> + Send + 'a {
    // Borrowed apart, as a body need not be `Sync`.
    let (method, path, headers, extensions) = (
        req.method(),
        req.uri().path(),
        req.headers(),
        req.extensions(),
    );
    async move {
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let slug = path.strip_prefix('/')?;
        Slug::check(slug).ok()?;
        let dest = state.links().store().redirects().cached(slug).await??;
        let plain = !dest.needs_password() && dest.max_clicks.is_none();
        if !plain || dest.availability(state.clock().now()) != Availability::Open {
            return None;
        }
        let answer = arrive(state, &dest, method, headers, extensions.get());
        Some(bypassing_the_router(headers, method, "/{slug}", answer).await)
    }
}

/// Sends a `GET` on to an open destination, spending and counting its click. A `HEAD` is a
/// check, not a visit: it is answered without either.
async fn arrive(
    state: &AppState,
    dest: &Destination,
    method: &Method,
    headers: &HeaderMap,
    peer: Option<&ConnectInfo<SocketAddr>>,
) -> Response {
    if method == Method::HEAD {
        return redirect(dest, dest.status.code());
    }
    visit(state, dest, headers, peer, dest.status.code()).await
}

/// Unlock a password-protected link with its form (`password=…`, form-encoded). Guesses are
/// limited per link and client address, and per link from every address together.
#[utoipa::path(
    post,
    path = "/{slug}",
    operation_id = "unlockLink",
    tag = "links",
    security(()),
    params(("slug" = inline(Slug), Path, description = "The link's slug")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`password=…`", example = "password=open%20sesame"),
    responses(
        (status = 303, description = "The password is right (or the link has none): on to the target", headers(("Location" = String))),
        (status = 401, description = "The password is wrong: the form again", content_type = "text/html"),
        (status = 404, description = "`not_found`: no link has this slug (a page for browsers)",
            content((crate::Problem = "application/problem+json"), (String = "text/html"))),
        (status = 410, description = "`link_gone`: the link expired or used its clicks (a page for browsers)",
            content((crate::Problem = "application/problem+json"), (String = "text/html"))),
        (status = 429, description = "`quota_exceeded`: too many guesses at this link from this address, or from everywhere; or too many slugs that match no link from this address", body = crate::Problem),
        (status = 503, description = "`server_busy`: too many passwords are being checked on this node; retry after `Retry-After`", body = crate::Problem)
    )
)]
pub async fn unlock(
    State(state): State<AppState>,
    State(links): State<LinksState>,
    Path(slug): Path<String>,
    req: Request,
) -> Response {
    let client = ip_key(&state, &req).unwrap_or_default();
    let peer = req.extensions().get();
    let dest = match open_destination(&state, &slug, req.headers(), peer).await {
        Ok(dest) if dest.needs_password() => dest,
        // The password was removed while the form was open: nothing to check, on you go.
        Ok(dest) => return visit(&state, &dest, req.headers(), peer, 303).await,
        Err(response) => return response,
    };
    // Per link and address, and per link from everywhere together: guesses spread over many
    // addresses are bounded too (ASVS 5.0 V6.3.1).
    let guesses = links.password_guesses();
    let quotas = [
        (
            &guesses.per_link_address,
            format!("{}:{client}", dest.link_id),
        ),
        (&guesses.per_link, dest.link_id.to_string()),
    ];
    for (policy, key) in quotas {
        match state.limiter().check(policy, &key, 1).await {
            Ok(decision) if decision.allowed => {}
            Ok(decision) => return refusal(&[(policy, &decision)]),
            Err(err) => return ApiError::internal(err).into_response(),
        }
    }
    let (parts, body) = req.into_parts();
    let Ok(form) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };

    let password = form_password(&form);
    let matches = dest.password_matches(links.hashing(), &password).await;
    match matches {
        Ok(true) => {
            let peer = parts.extensions.get();
            let mut response = visit(&state, &dest, &parts.headers, peer, 303).await;
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, NO_STORE);
            response
        }
        Ok(false) => password_page(StatusCode::UNAUTHORIZED, &slug, Some("Wrong password.")),
        Err(busy) => ApiError::from(busy).into_response(),
    }
}

fn form_password(form: &Bytes) -> String {
    form_urlencoded::parse(form)
        .find(|(name, _)| name == "password")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

/// The destination of `slug` if it takes visitors now, else the page or problem to answer.
async fn open_destination(
    state: &AppState,
    slug: &str,
    headers: &HeaderMap,
    peer: Option<&ConnectInfo<SocketAddr>>,
) -> Result<Arc<Destination>, Response> {
    // A path that cannot be a slug is unknown without asking the cache or the database.
    if Slug::check(slug).is_err() {
        return Err(not_found(headers));
    }
    let redirects = state.links().store().redirects();
    let found = match redirects.cached(slug).await {
        Some(found) => found,
        None => {
            // A lookup: not for an address that has used up its misses.
            if let Some(refused) = Misses::of(state, headers, peer).exhausted(headers).await {
                return Err(refused);
            }
            redirects
                .resolve(slug)
                .await
                .map_err(|err| ApiError::from(err).into_response())?
        }
    };
    let Some(dest) = found else {
        let refused = Misses::of(state, headers, peer).spend(headers).await;
        return Err(refused.unwrap_or_else(|| not_found(headers)));
    };
    match dest.availability(state.clock().now()) {
        Availability::Open => Ok(dest),
        Availability::Expired => Err(gone(headers, "This link has expired.")),
        Availability::Exhausted => Err(gone(headers, "This link has been used up.")),
    }
}

/// Admits the visitor (spending a click where the link counts them) and redirects.
async fn visit(
    state: &AppState,
    dest: &Destination,
    headers: &HeaderMap,
    peer: Option<&ConnectInfo<SocketAddr>>,
    status: u16,
) -> Response {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let agent = text(header::USER_AGENT);
    let ip = client_ip(headers, peer, &state.http().protection.trusted_proxies);
    // Sixteen bytes either way, without allocating on the redirect path.
    let address = match ip {
        Some(IpAddr::V4(ip)) => ip.to_ipv6_mapped().octets(),
        Some(IpAddr::V6(ip)) => ip.octets(),
        None => [0; 16],
    };
    let country = state
        .links()
        .countries()
        .zip(ip)
        .and_then(|(db, ip)| db.country(ip));
    let referrer = text(header::REFERER).and_then(referrer_host);
    let visit = Visit {
        visitor: Visitor::classify(agent),
        identity: visitor_hash(
            state.links().visitor_key(),
            &address,
            agent.unwrap_or_default(),
        ),
        referrer: referrer.as_deref(),
        country,
    };
    match state.links().store().redirects().admit(dest, &visit).await {
        Ok(true) => redirect(dest, status),
        Ok(false) => gone(headers, "This link has been used up."),
        Err(err) => ApiError::from(err).into_response(),
    }
}

fn redirect(dest: &Destination, status: u16) -> Response {
    let Ok(location) = HeaderValue::from_str(&dest.url) else {
        // Stored targets are validated URLs, always valid header text.
        return ApiError::internal(anyhow::anyhow!("link target is not header text"))
            .into_response();
    };
    let cache = if dest.status.is_permanent() {
        PERMANENT
    } else {
        TEMPORARY
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
    let mut response = status.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::CACHE_CONTROL, cache);
    response
}

/// Whether the client reads HTML: a browser navigating says so in `Accept`.
pub(super) fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

fn not_found(headers: &HeaderMap) -> Response {
    if wants_html(headers) {
        page(
            StatusCode::NOT_FOUND,
            "Link not found",
            "<p>No link lives at this address.</p>",
        )
    } else {
        ApiError::not_found("link").into_response()
    }
}

fn gone(headers: &HeaderMap, why: &'static str) -> Response {
    if wants_html(headers) {
        page(
            StatusCode::GONE,
            "Link unavailable",
            &format!("<p>{why}</p>"),
        )
    } else {
        ApiError::new(StatusCode::GONE, "link_gone", why).into_response()
    }
}

/// The form of a protected link; `error` says why it is shown again.
fn password_page(status: StatusCode, slug: &str, error: Option<&str>) -> Response {
    // Slugs are letters, digits, `-` and `_`: nothing to escape.
    let error = error.map_or(String::new(), |e| format!("<p role=\"alert\">{e}</p>"));
    let body = format!(
        "<p>This link is protected by a password.</p>{error}\
         <form method=\"post\" action=\"/{slug}\">\
         <label>Password <input type=\"password\" name=\"password\" required autofocus></label> \
         <button type=\"submit\">Continue</button></form>"
    );
    page(status, "Password required", &body)
}

pub(super) fn page(status: StatusCode, title: &str, body: &str) -> Response {
    html::page(status, title, body, html::PAGE_POLICY)
}
