//! Middleware, outermost first: [`edge`] (request ids, problem rendering, the access log),
//! [`record_route`], [`authenticate`], [`idempotency`] and [`deadline`].

mod authn;
mod deadline;
mod edge;
mod idempotency;

pub use authn::authenticate;
pub use deadline::{Deadline, deadline};
pub use edge::{RequestContext, edge, record_route};
pub use idempotency::idempotency;
