//! Extractors that hand handlers already-checked input, and turn every rejection into a problem.

mod auth;
mod conditional;
mod json;
mod query;

pub use auth::{Authed, RequiredPermission, perm};
pub use conditional::{ETag, IfMatch};
pub use json::ApiJson;
pub use query::ApiQuery;
