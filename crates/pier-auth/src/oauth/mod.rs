//! OAuth 2 (RFC 6749 as profiled by RFC 9700): registered clients, the grants tokens are issued
//! under, single-use authorization codes bound to PKCE, and rotating refresh tokens.
//!
//! Every token belongs to a grant: one client's credentials exchange, or one user's consent to
//! one client. Revoking the grant (a revocation request, a reused refresh token or code, the
//! client's deletion, the user leaving the workspace) ends every token issued under it on the
//! next request, since bearer JWTs are only accepted while their grant is live.

mod clients;
mod grants;
mod store;

pub use clients::{
    ClientId, ClientRequest, ClientType, GrantType, MAX_REDIRECT_URIS, NewClient, OAuthClient,
    check_redirect_uri,
};
pub use grants::{
    Grant, GrantError, GrantId, GrantLifetimes, Issued, LiveGrant, NewCode, is_s256_challenge,
};
pub use store::{OAuthStore, clients_statement};
