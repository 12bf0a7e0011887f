//! The outermost layer: every response leaves through here.
//!
//! It assigns the request id (the client's `X-Request-Id` when sane, else a fresh one), renders
//! problems (adding the request id, logging the cause of server errors once), converts bare error
//! statuses from the framework into problems, and records each request once: an access-log
//! line and the `pier_http_*` metrics, labelled by route template (never the raw path).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use pier_core::{Clock, SystemClock};

use crate::problem::{PROBLEM_JSON, Problem};

const REQUEST_ID: &str = "x-request-id";

/// Facts about the request that inner layers learn and the access log reports.
#[derive(Debug, Clone)]
pub struct RequestContext(Arc<ContextInner>);

#[derive(Debug)]
struct ContextInner {
    request_id: String,
    route: OnceLock<&'static str>,
    workspace_id: OnceLock<String>,
}

impl RequestContext {
    fn new(request_id: String) -> Self {
        Self(Arc::new(ContextInner {
            request_id,
            route: OnceLock::new(),
            workspace_id: OnceLock::new(),
        }))
    }

    pub fn request_id(&self) -> &str {
        &self.0.request_id
    }

    pub(crate) fn set_workspace(&self, workspace_id: &str) {
        let _ = self.0.workspace_id.set(workspace_id.to_owned());
    }
}

/// The method as a metrics label, from a closed set: a client cannot add label values (and so
/// series) by inventing methods.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Accepts a client's id if it is short and plain, so it is safe to log and echo.
fn sane_request_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let ok = (1..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| text.to_owned())
}

pub async fn edge(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(sane_request_id)
        .unwrap_or_else(|| format!("req_{}", pier_core::id::new_body(SystemClock.now())));
    let ctx = RequestContext::new(request_id);
    req.extensions_mut().insert(ctx.clone());
    let method = method_label(req.method());

    let mut response = next.run(req).await;
    render_problem(&mut response, &ctx);
    if let Ok(value) = HeaderValue::from_str(ctx.request_id()) {
        response.headers_mut().insert(REQUEST_ID, value);
    }

    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let route = ctx.0.route.get().copied().unwrap_or(UNMATCHED);
    let workspace_id = ctx.0.workspace_id.get().map(String::as_str);
    let (requests, duration) = route_metrics(method, route, status);
    requests.increment(1);
    duration.record(latency_ms / 1000.0);
    tracing::info!(
        target: "pier::access",
        method = %method,
        route,
        status,
        latency_ms,
        request_id = ctx.request_id(),
        workspace_id,
        "request"
    );
    response
}

/// Marks an error response that carries its own body (an HTML page for a browser), which the
/// edge must not replace with a problem document.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OwnBody;

fn render_problem(response: &mut Response, ctx: &RequestContext) {
    let problem = match response.extensions_mut().remove::<Problem>() {
        Some(problem) => problem,
        None if response.status().as_u16() >= 400
            && !is_problem(response)
            && response.extensions().get::<OwnBody>().is_none() =>
        {
            Problem::for_status(response.status())
        }
        None => return,
    };
    let mut problem = problem;
    problem.request_id = Some(ctx.request_id().to_owned());
    if let Some(cause) = &problem.cause {
        tracing::error!(
            request_id = ctx.request_id(),
            error = format!("{cause:#}"),
            "request failed"
        );
    }
    let body = problem.render(response.headers_mut());
    *response.body_mut() = Body::from(body);
}

fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()))
}

/// Notes the matched route template (never the raw path) for the access log and metrics.
pub async fn record_route(req: Request, next: Next) -> Response {
    if let (Some(ctx), Some(path)) = (
        req.extensions().get::<RequestContext>(),
        req.extensions().get::<MatchedPath>(),
    ) {
        let _ = ctx.0.route.set(intern(path.as_str()));
    }
    next.run(req).await
}

/// The route label of requests that matched no route.
const UNMATCHED: &str = "<unmatched>";

/// Route templates as `'static` strings, each leaked once: the router's templates are a fixed,
/// small set, and requests then carry their route without allocating.
fn intern(route: &str) -> &'static str {
    static ROUTES: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let routes = ROUTES.get_or_init(RwLock::default);
    if let Some(known) = routes.read().unwrap_or_else(|e| e.into_inner()).get(route) {
        return known;
    }
    let mut routes = routes.write().unwrap_or_else(|e| e.into_inner());
    match routes.get(route) {
        Some(known) => known,
        None => {
            let leaked: &'static str = Box::leak(route.to_owned().into_boxed_str());
            routes.insert(leaked);
            leaked
        }
    }
}

type RouteKey = (&'static str, &'static str, u16);

/// The request counter and latency histogram of a method, route and status, registered once:
/// building a metric's labels on every request would allocate and hash them each time. The
/// set is bounded like the labels: methods and routes are closed sets, statuses are three
/// digits.
fn route_metrics(
    method: &'static str,
    route: &'static str,
    status: u16,
) -> (metrics::Counter, metrics::Histogram) {
    static HANDLES: OnceLock<RwLock<HashMap<RouteKey, (metrics::Counter, metrics::Histogram)>>> =
        OnceLock::new();
    let handles = HANDLES.get_or_init(RwLock::default);
    let key = (method, route, status);
    if let Some(found) = handles.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return found.clone();
    }
    let registered = (
        metrics::counter!(
            "pier_http_requests_total",
            "method" => method,
            "route" => route,
            "status" => status.to_string()
        ),
        metrics::histogram!(
            "pier_http_request_duration_seconds",
            "method" => method,
            "route" => route
        ),
    );
    handles
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_insert(registered)
        .clone()
}
