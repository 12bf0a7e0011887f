//! Middleware, outermost first: [`edge`] (request ids, problem rendering, the access log),
//! [`record_route`], [`authenticate`] and [`idempotency`].

mod authn;
mod edge;
mod idempotency;

pub use authn::authenticate;
pub use edge::{RequestContext, edge, record_route};
pub use idempotency::idempotency;
