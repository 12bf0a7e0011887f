//! The outermost layer: every response leaves through here.
//!
//! It assigns the request id (the client's `X-Request-Id` when sane, else a fresh one), opens
//! the request's span (continuing the client's W3C `traceparent` when tracing is on), renders
//! problems (adding the request id, logging the cause of server errors once), converts bare
//! error statuses from the framework into problems, and records each request once: an
//! access-log line and the `pier_http_*` metrics, labelled by route template (never the raw
//! path).

use std::collections::{HashMap, HashSet};
use std::sync::{OnceLock, RwLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use pier_core::{Clock, SystemClock};
use tracing::Instrument;
use tracing::field::Empty;

use crate::problem::{PROBLEM_JSON, Problem};

const REQUEST_ID: &str = "x-request-id";
const TRACEPARENT: &str = "traceparent";

/// The request's id, in its extensions for handlers that report it themselves.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The route template a request matched, which [`record_route`] leaves on the response.
#[derive(Debug, Clone, Copy)]
struct RouteLabel(&'static str);

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
    let request_id = request_id(req.headers());
    let method = method_label(req.method());
    // `workspace_id` is filled in by authentication, the route and status below.
    let span = tracing::info_span!("request",
        otel.kind = "server", http.request.method = method,
        http.route = Empty, http.response.status_code = Empty, request_id = %request_id,
        workspace_id = Empty, trace_id = Empty, span_id = Empty);
    let traceparent = req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok());
    pier_core::trace::start(&span, traceparent);
    req.extensions_mut().insert(RequestId(request_id.clone()));

    let mut response = next.run(req).instrument(span.clone()).await;
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map_or(UNMATCHED, |r| r.0);
    let status = response.status().as_u16();
    span.record("http.route", route);
    span.record("http.response.status_code", i64::from(status));
    span.in_scope(|| {
        render_problem(&mut response, &request_id);
        conclude(&mut response, &request_id, method, route, started);
    });
    response
}

/// The request's id: the client's `X-Request-Id` when sane, else a fresh one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(sane_request_id)
        .unwrap_or_else(|| format!("req_{}", pier_core::id::new_body(SystemClock.now())))
}

/// Records a finished request once (its access-log line and the `pier_http_*` metrics) and
/// gives the client its id.
fn conclude(
    response: &mut Response,
    request_id: &str,
    method: &'static str,
    route: &'static str,
    started: Instant,
) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (requests, duration) = route_metrics(method, route, status);
    requests.increment(1);
    duration.record(latency_ms / 1000.0);
    tracing::info!(
        target: "pier::access",
        method = %method,
        route,
        status,
        latency_ms,
        "request"
    );
}

/// What the edge and [`record_route`] do for a request, for one answered before the router
/// (see `routes::redirect::shortcut`): the same id, metrics and access-log line, without the
/// span (such a request has no work worth tracing).
pub(crate) async fn bypassing_the_router(
    headers: &HeaderMap,
    method: &Method,
    route: &'static str,
    answer: impl Future<Output = Response>,
) -> Response {
    let started = Instant::now();
    let method = method_label(method);
    let in_flight = InFlight::enter(method, route);
    let mut response = answer.await;
    drop(in_flight);
    conclude(&mut response, &request_id(headers), method, route, started);
    response
}

/// Marks an error response that carries its own body (an HTML page for a browser), which the
/// edge must not replace with a problem document.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OwnBody;

fn render_problem(response: &mut Response, request_id: &str) {
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
    problem.request_id = Some(request_id.to_owned());
    if let Some(cause) = &problem.cause {
        tracing::error!(error = format!("{cause:#}"), "request failed");
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

/// Notes the matched route template (never the raw path) for the access log and metrics, and
/// counts the request in flight on its route while it runs.
pub async fn record_route(req: Request, next: Next) -> Response {
    let Some(path) = req.extensions().get::<MatchedPath>() else {
        return next.run(req).await;
    };
    let route = intern(path.as_str());
    let in_flight = InFlight::enter(method_label(req.method()), route);
    let mut response = next.run(req).await;
    drop(in_flight);
    response.extensions_mut().insert(RouteLabel(route));
    response
}

/// `pier_http_requests_in_flight{method,route}`, raised while the guard lives (so a request
/// whose client went away, and whose future is dropped, is not counted forever).
struct InFlight(metrics::Gauge);

impl InFlight {
    fn enter(method: &'static str, route: &'static str) -> Self {
        static HANDLES: Handles<(&'static str, &'static str), metrics::Gauge> = OnceLock::new();
        let gauge = handle(
            &HANDLES,
            (method, route),
            |&(method, route)| metrics::gauge!("pier_http_requests_in_flight", "method" => method, "route" => route),
        );
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
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

/// Metric handles by label values, registered once: building a metric's labels on every
/// request would allocate and hash them each time. Each map is bounded like the labels:
/// methods and routes are closed sets, and statuses count by class.
type Handles<K, V> = OnceLock<RwLock<HashMap<K, V>>>;

fn handle<K, V>(handles: &'static Handles<K, V>, key: K, register: impl FnOnce(&K) -> V) -> V
where
    K: std::hash::Hash + Eq,
    V: Clone,
{
    let handles = handles.get_or_init(RwLock::default);
    if let Some(found) = handles.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return found.clone();
    }
    let registered = register(&key);
    handles
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_insert(registered)
        .clone()
}

/// The request counter and latency histogram of a method, route and status.
fn route_metrics(
    method: &'static str,
    route: &'static str,
    status: u16,
) -> (metrics::Counter, metrics::Histogram) {
    type Key = (&'static str, &'static str, &'static str);
    static HANDLES: Handles<Key, (metrics::Counter, metrics::Histogram)> = OnceLock::new();
    handle(
        &HANDLES,
        (method, route, status_class(status)),
        |&(method, route, class)| {
            (
                metrics::counter!(
                    "pier_http_requests_total",
                    "method" => method,
                    "route" => route,
                    "status_class" => class
                ),
                metrics::histogram!(
                    "pier_http_request_duration_seconds",
                    "method" => method,
                    "route" => route
                ),
            )
        },
    )
}

fn status_class(status: u16) -> &'static str {
    match status {
        0..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
