//! Short links: the rules every link obeys ([`Target`], [`Slug`], [`link`]), the store that
//! keeps them ([`LinkStore`], which also creates many at once for imports), the cached lookup
//! the redirect path answers from ([`Redirects`]) and click recording off the request path
//! ([`clicks`]). The HTTP side lives in `pier-api`.

mod bulk;
pub mod clicks;
mod fields;
mod flush;
pub mod geo;
pub mod link;
mod quarantine;
mod redirect;
mod shared;
pub mod sketch;
mod slug;
pub mod stats;
mod store;
mod target;

pub use bulk::NotCreated;
pub use clicks::{ClickBuffer, ClickSettings, RecentClick, Visit, Visitor};
pub use fields::{CheckedFields, LinkFields, LinkPatch, MAX_CLICKS};
pub use link::{Link, LinkId, PasswordChange, RedirectStatus, Tag, Title};
pub use redirect::{Availability, Destination, Redirects};
pub use shared::SharedTier;
pub use slug::{RESERVED, Slug, SlugError};
pub use store::{LinkError, LinkFilter, LinkStore, ListPosition, links_statement};
pub use target::{Target, TargetError};

/// The links tables, their click statistics and the slug quarantine.
pub const MIGRATIONS: &[pier_db::Migration] = pier_db::migrations!(
    7 => "0007_links",
    8 => "0008_link_stats",
    18 => "0018_slug_quarantine",
);
