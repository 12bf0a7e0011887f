//! Middleware, outermost first: [`edge`] (request ids, problem rendering, the access log),
//! [`cors`] (when origins are allowed), [`record_route`], [`compression`] (not on the redirect), [`authenticate`], [`limit_per_key`] (or [`limit_per_ip`] on public
//! routes), [`idempotency`] and [`deadline`].

mod authn;
mod compress;
mod cors;
mod deadline;
mod edge;
mod idempotency;
mod limits;

pub use authn::{SignedInSession, authenticate};
pub use compress::{MIN_BYTES as COMPRESS_MIN_BYTES, compression};
pub use cors::{MAX_AGE as CORS_MAX_AGE, cors, preflight_no_content};
pub use deadline::{Deadline, deadline};
pub(crate) use edge::OwnBody;
pub(crate) use edge::bypassing_the_router;
pub use edge::{RequestId, edge, record_route};
pub use idempotency::{
    KEY_MAX as IDEMPOTENCY_KEY_MAX, KEY_PATTERN as IDEMPOTENCY_KEY_PATTERN, idempotency,
};
pub(crate) use limits::{after_refused_credentials, ip_key};
pub use limits::{limit_per_ip, limit_per_key};
