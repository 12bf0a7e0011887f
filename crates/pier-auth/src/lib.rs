//! Who is calling and what they may do: workspaces, API keys, users and their memberships,
//! roles, permissions and scopes.
//!
//! The permission matrix (roles are fixed bundles of permissions; a key's scopes can only narrow
//! its role):
//!
//! | permission       | owner | admin | member | viewer |
//! |------------------|:-----:|:-----:|:------:|:------:|
//! | `workspace:read` |   ✓   |   ✓   |   ✓    |   ✓    |
//! | `api_keys:read`  |   ✓   |   ✓   |        |        |
//! | `api_keys:write` |   ✓   |   ✓   |        |        |
//! | `jobs:read`      |   ✓   |   ✓   |   ✓    |   ✓    |
//! | `jobs:write`     |   ✓   |   ✓   |   ✓    |        |
//! | `jobs:work`      |   ✓   |   ✓   |   ✓    |        |
//! | `rate_limits:read`  |   ✓   |   ✓   |   ✓    |   ✓    |
//! | `rate_limits:write` |   ✓   |   ✓   |        |        |
//! | `rate_limits:check` |   ✓   |   ✓   |   ✓    |        |
//! | `links:read`     |   ✓   |   ✓   |   ✓    |   ✓    |
//! | `links:write`    |   ✓   |   ✓   |   ✓    |        |
//! | `webhooks:read` |   ✓   |   ✓   |   ✓    |   ✓    |
//! | `webhooks:write`|   ✓   |   ✓   |        |        |
//! | `events:publish`|   ✓   |   ✓   |   ✓    |        |
//! | `oauth_clients:read`  |   ✓   |   ✓   |        |        |
//! | `oauth_clients:write` |   ✓   |   ✓   |        |        |
//! | `permissions:read`    |   ✓   |   ✓   |        |        |
//! | `permissions:write`   |   ✓   |   ✓   |        |        |
//! | `flags:read`        |   ✓   |   ✓   |   ✓    |   ✓    |
//! | `flags:write`       |   ✓   |   ✓   |   ✓    |        |
//! | `flags:evaluate`    |   ✓   |   ✓   |   ✓    |   ✓    |
//!
//! Beyond the matrix, a key or a user can be granted one link, queue or webhook endpoint (see
//! [`ResourceGrants`]). A caller may only create or revoke keys whose role is not above its own
//! (an admin cannot mint or revoke an owner key) and whose permissions it holds itself.

mod access_tokens;
mod api_keys;
mod bootstrap;
mod invitations;
mod key_secret;
pub mod key_use;
pub mod oauth;
mod opaque;
mod permission;
mod principal;
mod resource_grants;
mod sessions;
mod sign_in_addresses;
mod signing_keys;
mod users;
mod workspaces;

/// The tables this crate owns: `workspaces` and `api_keys` came with the foundation migration
/// (see [`pier_db::MIGRATIONS`]); `users`, `memberships`, `sessions`, and later changes, are listed here.
pub const MIGRATIONS: &[pier_db::Migration] = pier_db::migrations!(11 => "0011_users", 12 => "0012_sessions", 13 => "0013_oauth", 14 => "0014_resource_grants", 17 => "0017_sign_in_addresses", 23 => "0023_listed_by_filter");

pub use access_tokens::{AccessClaims, AccessTokens, LEEWAY, TokenError, TokenSubject};
pub use api_keys::{
    ApiKey, ApiKeyFilter, ApiKeyId, ApiKeyStore, KeyName, KeyRequest, NewApiKey, api_keys_statement,
};
pub use bootstrap::{Bootstrap, bootstrap};
pub use invitations::Invitation;
pub use key_secret::{InvalidKeySecret, KeySecret};
pub use oauth::{ClientId, GrantId, clients_statement};
pub use opaque::Opaque;
pub use permission::{Permission, PermissionSet, Role};
pub use pier_core::WorkspaceId;
pub use principal::{AuthError, Authenticator, Principal};
pub use resource_grants::{
    Action, Decision, GrantFilter, Relation, Resource, ResourceGrant, ResourceGrantId,
    ResourceGrants, ResourceType, grants_statement,
};
pub use sessions::{Session, SessionError, SessionLimits, SessionSecret, SessionStore, SignedIn};
pub use signing_keys::{KeyError, KeySchedule, SigningKey, SigningKeys};
pub use users::{
    CreatedUser, Email, MIN_PASSWORD_CHARS, Member, Membership, User, UserError, UserId, UserStore,
    check_password,
};
pub use workspaces::{Workspace, WorkspaceName, WorkspaceStore};
