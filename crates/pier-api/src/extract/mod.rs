//! Extractors that hand handlers already-checked input, and turn every rejection into a problem.

mod auth;
mod conditional;
mod json;
mod objects_only;
mod query;

pub use auth::{Authed, OnResource, RequiredPermission, perm};
pub use conditional::{ETag, IfMatch};
pub use json::ApiJson;
pub(crate) use objects_only::ObjectsOnly;
pub use query::ApiQuery;
