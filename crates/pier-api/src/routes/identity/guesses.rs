//! Limits on guessing a user's password, at sign-in and at a password change.
//!
//! Every attempt spends, before the password is checked (so concurrent guesses cannot all pass
//! a check made before any failed), one unit of three quotas:
//! - the client address's (`failed_logins_per_ip`), against spraying many accounts;
//! - the account's from that address (`failed_logins_per_account_address`), given back when
//!   the password is right;
//! - the account's shared by every address it has not signed in from in the last 90 days
//!   (`failed_logins_per_account`), against one account guessed from many addresses. An
//!   address the owner signs in from never spends it, so strangers exhausting it cannot lock
//!   the owner out there (ASVS 5.0 V6.1.1, V6.3.1).
//!
//! With the defaults an attacker gets at most 730 guesses a day at one account from addresses
//! it has not used (10 at once, then 30 an hour), plus 970 a day (10, then 10 every 15 minutes)
//! from each address the owner signed in from, which the attacker would have to share.

use axum::response::{IntoResponse, Response};
use pier_auth::Email;
use pier_ratelimit::Policy;

use crate::AppState;
use crate::problem::ApiError;
use crate::rate_limit::refusal;

/// The three quotas of the module docs.
#[derive(Debug)]
pub struct FailedLogins {
    /// Per client address (IPv6 by /64).
    pub per_ip: Policy,
    /// Per account and client address.
    pub per_account_address: Policy,
    /// Per account, shared by the addresses it has not signed in from.
    pub per_account: Policy,
}

/// The key of the per-account-and-address quota: an address holds no space.
fn pair(email: &Email, client: &str) -> String {
    format!("{client} {}", email.as_str())
}

/// Spends one guess at `email`'s password from `client` (its [`ip_key`]), or returns the `429`
/// to answer.
///
/// [`ip_key`]: crate::middleware::ip_key
pub(crate) async fn spend(state: &AppState, email: &Email, client: &str) -> Result<(), Response> {
    let limits = state.identity().failed_logins();
    let familiar = state
        .identity()
        .sessions()
        .is_familiar(email, client)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    let mut quotas = vec![
        (&limits.per_ip, client.to_owned()),
        (&limits.per_account_address, pair(email, client)),
    ];
    if !familiar {
        quotas.push((&limits.per_account, email.as_str().to_owned()));
    }
    for (policy, key) in quotas {
        match state.limiter().check(policy, &key, 1).await {
            Ok(decision) if decision.allowed => {}
            Ok(decision) => return Err(refusal(&[(policy, &decision)])),
            Err(err) => return Err(ApiError::internal(err).into_response()),
        }
    }
    Ok(())
}

/// The right password from `client`: the account's quota from there is whole again.
pub(crate) async fn forgive(state: &AppState, email: &Email, client: &str) {
    let policy = &state.identity().failed_logins().per_account_address;
    if let Err(err) = state.limiter().reset(policy, &pair(email, client)).await {
        tracing::warn!(error = %err, "could not reset the account's failed sign-ins");
    }
}
