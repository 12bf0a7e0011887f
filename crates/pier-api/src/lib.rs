//! Pier's HTTP API: one router per resource, the shared extractors and middleware that implement
//! the API contract (`docs/api-conventions.md`), and the OpenAPI document generated from the code.
//! This crate translates HTTP to calls on the capability crates; it owns no business rules.

pub mod extract;
mod guesses;
mod html;
pub mod middleware;
mod oauth_form;
mod openapi;
pub mod pagination;
pub mod problem;
pub mod rate_limit;
mod response;
mod routes;
pub mod session_cookie;
mod state;

pub use guesses::FailedLogins;
pub use problem::{ApiError, ApiResult, Problem};
pub use rate_limit::ApiProtection;
pub use routes::{probes, redirect_shortcut, redis_up, router};
pub use state::{AppState, AppStateParts, PasswordGuesses, Redis};
