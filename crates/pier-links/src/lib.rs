//! Short links: the rules every link obeys ([`Target`], [`Slug`], [`link`]), the store that
//! keeps them ([`LinkStore`]), the cached lookup the redirect path answers from
//! ([`Redirects`]) and click recording off the request path ([`clicks`]). The HTTP side lives
//! in `pier-api`.

pub mod clicks;
pub mod link;
pub mod password;
mod redirect;
mod slug;
mod store;
mod target;

pub use clicks::{ClickBuffer, ClickSettings, Visitor};
pub use link::{Link, LinkFields, LinkId, PasswordChange, RedirectStatus, Tag, Title};
pub use redirect::{Availability, Destination, Redirects};
pub use slug::{RESERVED, Slug, SlugError};
pub use store::{LinkError, LinkFilter, LinkStore, ListPosition};
pub use target::{Target, TargetError};

/// The links tables.
pub const MIGRATIONS: &[pier_db::Migration] = pier_db::migrations!(7 => "0007_links");
