//! Opaque secrets: OAuth client secrets, authorization codes, refresh tokens and invitations. Each is a
//! prefix naming its kind plus 256 random bits; only its SHA-256 is stored. The prefixes keep
//! one kind from passing for another (a refresh token is never an API key or a JWT) and make
//! leaks easy to scan for.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

const BYTES: usize = 32;

/// One opaque secret. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Opaque(String);

impl Opaque {
    pub const CLIENT_SECRET: &'static str = "pier_cs_";
    pub const CODE: &'static str = "pier_ac_";
    pub const REFRESH_TOKEN: &'static str = "pier_rt_";
    pub const INVITATION: &'static str = "pier_iv_";

    pub(crate) fn generate(prefix: &str) -> Self {
        Self(format!(
            "{prefix}{}",
            URL_SAFE_NO_PAD.encode(rand::random::<[u8; BYTES]>())
        ))
    }

    /// `text`, if it has the shape of a secret of this kind.
    pub fn parse(prefix: &str, text: &str) -> Option<Self> {
        let body = text.strip_prefix(prefix)?;
        let ok = body.len() == 43
            && URL_SAFE_NO_PAD
                .decode(body)
                .is_ok_and(|bytes| bytes.len() == BYTES);
        ok.then(|| Self(text.to_owned()))
    }

    /// The hex SHA-256 stored in its place.
    pub(crate) fn hash(&self) -> String {
        hash(&self.0)
    }

    /// The secret itself: shown once, never logged.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

pub(crate) fn hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl fmt::Debug for Opaque {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Opaque([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_do_not_pass_for_each_other() {
        let token = Opaque::generate(Opaque::REFRESH_TOKEN);
        assert_eq!(
            Opaque::parse(Opaque::REFRESH_TOKEN, token.expose()),
            Some(token.clone())
        );
        assert_eq!(Opaque::parse(Opaque::CODE, token.expose()), None);
        assert_eq!(Opaque::parse(Opaque::REFRESH_TOKEN, "pier_rt_short"), None);
        assert!(!format!("{token:?}").contains(token.expose()));
        assert_ne!(token.hash(), token.expose());
    }
}
