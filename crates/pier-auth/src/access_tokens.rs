//! JWT access tokens (RFC 9068): issued by the token endpoint, accepted as bearer tokens.
//!
//! Verification is strict in the ways RFC 8725 asks. The header must say `typ: at+jwt` and
//! `alg: EdDSA` (the only algorithm on the allow-list, so `none` and HMAC tokens made with a
//! public key fail), must name a `kid` that is one of Pier's own keys, and may not carry `jku`,
//! `x5u`, `jwk` or `x5c` (nothing is ever fetched or taken from the token to verify it). The
//! claims must include `iss` and `aud` with Pier's values, `exp`, `nbf`, `iat`, `sub` and `jti`;
//! the clock may be off by [`LEEWAY`] at most. A token is also only as good as its grant: the
//! caller checks the grant (`gid`) is live, so revocation takes effect on the next request.
//!
//! The Ed25519 check is most of a bearer request's cost, and a client sends the same token for
//! its whole life, so a token that passed is remembered (by its SHA-256, for a minute): the
//! time claims are checked again on every use, the signature about once a minute. Only tokens
//! that passed are kept, so forged ones cannot crowd out real ones.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Header, Validation};
use pier_cache::{Cache, Settings};
use pier_core::{Clock, Timestamp, WorkspaceId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::signing_keys::{ALGORITHM, KeyError, SigningKeys};
use crate::{ClientId, GrantId, PermissionSet};

/// How far the clocks of Pier's nodes and its clients may disagree.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// Tokens longer than this are refused unread.
const MAX_TOKEN_BYTES: usize = 4096;
/// The media type of access tokens (RFC 9068 §2.1).
const TYPE: &str = "at+jwt";
/// Tokens whose signature passed, remembered (see the module docs).
const VERIFIED: Settings = Settings {
    capacity: 10_000,
    ttl: Duration::from_secs(60),
    // Never used: only tokens that passed are cached.
    negative_ttl: Duration::from_secs(0),
    jitter: 0.2,
};

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user the token acts for, or the client itself (client credentials).
    pub sub: String,
    pub client_id: String,
    /// Space-separated permissions.
    pub scope: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    /// The workspace the token acts in.
    pub workspace_id: String,
    /// The grant the token was issued under.
    pub gid: String,
}

/// Why a presented token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Keys(#[from] KeyError),
}

/// What an issued token carries besides the standard claims.
#[derive(Debug, Clone)]
pub struct TokenSubject<'a> {
    pub subject: &'a str,
    pub client_id: &'a ClientId,
    pub workspace_id: &'a WorkspaceId,
    pub grant_id: &'a GrantId,
    pub scopes: PermissionSet,
}

/// Issues and verifies access tokens.
#[derive(Debug, Clone)]
pub struct AccessTokens {
    keys: SigningKeys,
    clock: Arc<dyn Clock>,
    verified: Cache<AccessClaims>,
    issuer: String,
    audience: String,
    lifetime: Duration,
}

impl AccessTokens {
    /// `issuer` is Pier's public base URL; tokens are for its API, `<issuer>/v1`.
    pub fn new(keys: SigningKeys, clock: Arc<dyn Clock>, issuer: &str, lifetime: Duration) -> Self {
        let issuer = issuer.trim_end_matches('/').to_owned();
        Self {
            keys,
            verified: Cache::new("access_tokens", VERIFIED, clock.clone()),
            clock,
            audience: format!("{issuer}/v1"),
            issuer,
            lifetime,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    pub fn keys(&self) -> &SigningKeys {
        &self.keys
    }

    /// Signs a token for `subject`; returns it with its expiry.
    pub fn issue(&self, subject: &TokenSubject<'_>) -> Result<(String, Timestamp), TokenError> {
        let key = self
            .keys
            .newest()
            .ok_or(TokenError::Invalid("no signing key"))?;
        let now = self.clock.now();
        let expires = now.saturating_add(self.lifetime);
        let seconds = |t: Timestamp| t.as_micros().div_euclid(1_000_000);
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: subject.subject.to_owned(),
            client_id: subject.client_id.as_str().to_owned(),
            scope: subject.scopes.to_names(),
            exp: seconds(expires),
            nbf: seconds(now),
            iat: seconds(now),
            jti: pier_core::id::new_body(now),
            workspace_id: subject.workspace_id.as_str().to_owned(),
            gid: subject.grant_id.as_str().to_owned(),
        };
        let header = Header {
            typ: Some(TYPE.to_owned()),
            kid: Some(key.kid.clone()),
            ..Header::new(ALGORITHM)
        };
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|_| TokenError::Invalid("could not sign"))?;
        Ok((token, expires))
    }

    /// Whether `token` has the shape of a JWT (three dot-separated parts), as opposed to an
    /// API key.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.bytes().filter(|b| *b == b'.').count() == 2
    }

    /// Verifies a token's header, signature and claims (not its grant: see the module docs).
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid("too long"));
        }
        let digest = hex::encode(Sha256::digest(token.as_bytes()));
        let claims = self
            .verified
            .get_or_load(&digest, || async {
                self.check_signed(token).await.map(Some)
            })
            .await
            .map_err(unshare)?
            .ok_or(TokenError::Invalid("signature or claims"))?;
        // Time is checked here rather than by the library, against Pier's clock (the one
        // every other expiry uses, and the one tests move), on every use.
        let now = self.clock.now().as_micros().div_euclid(1_000_000);
        let leeway = LEEWAY.as_secs() as i64;
        if claims.exp + leeway <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf - leeway > now {
            return Err(TokenError::Invalid("not valid yet"));
        }
        Ok(claims)
    }

    /// Everything about a token that does not change with time: header, key, signature, claims.
    async fn check_signed(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid("malformed"))?;
        if header.alg != ALGORITHM {
            return Err(TokenError::Invalid("algorithm not allowed"));
        }
        let typ = header
            .typ
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if typ != TYPE && typ != "application/at+jwt" {
            return Err(TokenError::Invalid("not an access token (typ)"));
        }
        if header.jku.is_some()
            || header.x5u.is_some()
            || header.jwk.is_some()
            || header.x5c.is_some()
        {
            return Err(TokenError::Invalid(
                "key references in the header are refused",
            ));
        }
        let kid = header.kid.as_deref().unwrap_or_default();
        let well_formed = !kid.is_empty()
            && kid.len() <= 64
            && kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err(TokenError::Invalid("unknown key"));
        }
        let key = self
            .keys
            .find(kid)
            .await?
            .ok_or(TokenError::Invalid("unknown key"))?;
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &self.validation())
            .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => TokenError::Invalid("issuer"),
            jsonwebtoken::errors::ErrorKind::InvalidAudience => TokenError::Invalid("audience"),
            jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(_) => {
                TokenError::Invalid("a required claim is missing")
            }
            _ => TokenError::Invalid("signature or claims"),
        })?;
        Ok(data.claims)
    }

    fn validation(&self) -> Validation {
        let mut validation = Validation::new(ALGORITHM);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.required_spec_claims = ["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]
            .into_iter()
            .map(str::to_owned)
            .collect::<HashSet<_>>();
        validation
    }
}

/// The error of a check that several callers waited on, as this caller's own.
fn unshare(shared: Arc<TokenError>) -> TokenError {
    Arc::try_unwrap(shared).unwrap_or_else(|shared| match &*shared {
        TokenError::Expired => TokenError::Expired,
        TokenError::Invalid(why) => TokenError::Invalid(why),
        TokenError::Keys(KeyError::Sealed(kid)) => TokenError::Keys(KeyError::Sealed(kid.clone())),
        TokenError::Keys(KeyError::Corrupt(kid)) => {
            TokenError::Keys(KeyError::Corrupt(kid.clone()))
        }
        TokenError::Keys(KeyError::Generate) => TokenError::Keys(KeyError::Generate),
        TokenError::Keys(KeyError::Database(e)) => {
            TokenError::Keys(KeyError::Database(sqlx::Error::Protocol(e.to_string())))
        }
    })
}
