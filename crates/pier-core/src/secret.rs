//! Secrets stay secret (`docs/architecture.md`, invariant 6): a [`Secret`] prints as `[redacted]` in `Debug`,
//! `Display` and serialized configuration, so it cannot leak through logs or `pier config`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The only way to read the value; grep for it to audit where secrets are used.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_serialize_hide_the_value() {
        let s = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(
            serde_json::to_string(&s).expect("serializes"),
            "\"[redacted]\""
        );
        assert_eq!(s.expose(), "hunter2");
    }
}

/// A connection URL that may carry credentials (`postgres://user:password@…`,
/// `redis://:password@…`, `…?password=…`). `Debug`, `Display` and serialization show it with every
/// credential replaced by `[redacted]`; [`expose`](Self::expose) gives the real URL to the driver.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its credentials replaced, safe to print and log.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// Query parameters whose values are credentials in some driver's URL syntax.
fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token", "auth", "key"]
        .iter()
        .any(|word| name.contains(word))
}

/// Replaces every credential in a `scheme://user:password@host/path?query` URL: the password of
/// the user info and the value of every `name=value` parameter whose name suggests a credential.
/// When in doubt it hides too much rather than too little: text without `://` is hidden whole,
/// and when a raw `/`, `?` or `#` in a password makes the user info ambiguous, everything up to
/// the last `@` counts as user info.
pub fn redact_url(url: &str) -> String {
    const HIDDEN: &str = "[redacted]";
    let Some((scheme, rest)) = url.split_once("://") else {
        return HIDDEN.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@').or_else(|| {
        let ambiguous = rest[..authority_end].contains(':');
        ambiguous.then(|| rest.rfind('@')).flatten()
    });
    let mut out = format!("{scheme}://");
    let tail = match at {
        Some(at) => {
            match rest[..at].split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:{HIDDEN}")),
                None => out.push_str(&rest[..at]),
            }
            &rest[at..]
        }
        None => rest,
    };
    // Parameters, wherever they are: split on `?` and `&`, keeping the separators.
    let mut segment_start = 0;
    for (i, c) in tail.char_indices().chain([(tail.len(), '&')]) {
        if c != '?' && c != '&' {
            continue;
        }
        let segment = &tail[segment_start..i];
        match segment.split_once('=') {
            Some((name, _)) if is_secret_param(name) => {
                out.push_str(&format!("{name}={HIDDEN}"));
            }
            _ => out.push_str(segment),
        }
        if i < tail.len() {
            out.push(c);
        }
        segment_start = i + 1;
    }
    out
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn hides_every_credential_form() {
        let cases = [
            ("redis://:pw@h:6379/0", "redis://:[redacted]@h:6379/0"),
            ("rediss://user:pw@h:6380", "rediss://user:[redacted]@h:6380"),
            ("postgres://u:pw@h/db", "postgres://u:[redacted]@h/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://u@h/db?sslmode=require&password=pw",
                "postgres://u@h/db?sslmode=require&password=[redacted]",
            ),
            (
                "postgresql://h/db?user=u&PassWord=pw&sslpassword=x",
                "postgresql://h/db?user=u&PassWord=[redacted]&sslpassword=[redacted]",
            ),
            ("postgres://u:p@ss@h/db", "postgres://u:[redacted]@h/db"),
            (
                "postgres://u:p?w@h/db?x=1",
                "postgres://u:[redacted]@h/db?x=1",
            ),
            ("redis://h", "redis://h"),
            (
                "postgres://h:5432/db?application_name=a@b&password=pw",
                "postgres://h:[redacted]@b&password=[redacted]",
            ),
            (
                "postgres://h/db?application_name=a@b&password=pw",
                "postgres://h/db?application_name=a@b&password=[redacted]",
            ),
            ("not a url pw", "[redacted]"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
