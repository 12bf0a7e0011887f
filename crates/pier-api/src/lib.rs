//! Pier's HTTP API: one folder of routes per capability (`routes/`), the shared extractors and
//! middleware that implement the API contract (`docs/api-conventions.md`), and the OpenAPI
//! document generated from the code. This crate translates HTTP to calls on the capability
//! crates; it owns no business rules.

pub mod extract;
mod html;
pub mod middleware;
mod openapi;
pub mod pagination;
pub mod problem;
pub mod rate_limit;
mod response;
mod routes;
pub mod session_cookie;
mod state;

pub use problem::{ApiError, ApiResult, Problem};
pub use rate_limit::ApiProtection;
pub use routes::{
    FailedLogins, FlagsParts, FlagsState, IdentityParts, IdentityState, JobsParts, JobsState,
    LinksParts, LinksState, PasswordGuesses, RateLimitsParts, RateLimitsState, WebhooksState,
    probes, redirect_shortcut, redis_up, router,
};
pub use state::{AppState, AppStateParts, HttpSettings, Redis};
