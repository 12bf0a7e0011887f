//! Short links. So far, the two rules every link obeys, shared by the API, bulk import and the
//! redirect path: what a target may be ([`Target`]) and what a slug may be ([`Slug`]). The
//! store, the redirect path and click analytics build on them.

mod slug;
mod target;

pub use slug::{RESERVED, Slug, SlugError};
pub use target::{Target, TargetError};
