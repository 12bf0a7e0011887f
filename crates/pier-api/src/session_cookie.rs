//! The session cookie and the rules that keep it from being abused by other sites.
//!
//! The cookie is `__Host-pier_session`: `Secure`, `HttpOnly`, `SameSite=Lax`, `Path=/`, no
//! `Domain`, so no script reads it, no plain-HTTP page receives it and no sibling subdomain can
//! plant one. A browser keeps `__Host-` cookies only from secure origins, so a node set up for
//! plain HTTP (`auth.cookie_secure = false`, the default when it listens on a loopback address,
//! for development) uses `pier_session` without `Secure`, and only such a node reads that name.
//!
//! A request authenticated by the cookie that changes anything (any method but `GET`, `HEAD`
//! and `OPTIONS`) must also prove it comes from a page of ours: it carries the session's
//! anti-CSRF token in `X-CSRF-Token` (a synchronizer token: another site cannot read it), and
//! it is refused when the browser says it is cross-site (`Sec-Fetch-Site`) or names a foreign
//! `Origin`. Requests with a bearer token send no cookie and need none of this. Signing in is
//! refused cross-site too, so another site cannot sign a visitor in to an account it controls.

use axum::http::{HeaderMap, HeaderValue, Method, header};
use pier_auth::{SessionLimits, SessionSecret};
use subtle::ConstantTimeEq;

const SECURE_NAME: &str = "__Host-pier_session";
const LOCAL_NAME: &str = "pier_session";
/// The header that carries the session's anti-CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The session id a request's cookies carry, if any. `secure` is the node's setting
/// (`auth.cookie_secure`): the plain name is only read where it is also the name written.
pub fn read(headers: &HeaderMap, secure: bool) -> Option<SessionSecret> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SECURE_NAME || (!secure && *name == LOCAL_NAME))
        .and_then(|(_, value)| SessionSecret::parse(value.trim()))
}

/// Whether a request names a cookie of ours at all (valid or not).
pub fn is_present(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(SECURE_NAME) || v.contains(LOCAL_NAME))
}

/// The `Set-Cookie` value that hands `secret` to the browser until the session's absolute end.
pub fn set(secure: bool, secret: &SessionSecret, limits: SessionLimits) -> HeaderValue {
    cookie(secure, secret.expose(), limits.absolute.as_secs())
}

/// The `Set-Cookie` value that makes the browser forget the session.
pub fn clear(secure: bool) -> HeaderValue {
    cookie(secure, "", 0)
}

/// The cookie, `__Host-` and `Secure` unless the node is configured for plain HTTP: decided by
/// configuration, never by the request's `Host`, which a proxy may rewrite to `127.0.0.1`
/// (ASVS 5.0 V3.3.1).
fn cookie(secure: bool, value: &str, max_age: u64) -> HeaderValue {
    let text = if secure {
        format!("{SECURE_NAME}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}")
    } else {
        format!("{LOCAL_NAME}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}")
    };
    // A session id is base64url: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether the browser says the request comes from another site (`Sec-Fetch-Site`).
pub fn is_cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
}

/// Why a cookie-authenticated request was refused as a possible cross-site forgery, if it was.
pub fn forgery(
    method: &Method,
    headers: &HeaderMap,
    secret: &SessionSecret,
) -> Option<&'static str> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if text("sec-fetch-site") == Some("cross-site") {
        return Some("a cross-site request cannot use the session cookie");
    }
    if let Some(origin) = text(header::ORIGIN.as_str()) {
        let host = text(header::HOST.as_str()).unwrap_or_default();
        let same = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host));
        if !same {
            return Some("a request from another origin cannot use the session cookie");
        }
    }
    let expected = secret.csrf_token();
    let sent = text(CSRF_HEADER).unwrap_or_default();
    if !bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
        return Some("send the session's csrf_token in the X-CSRF-Token header");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    #[test]
    fn the_plain_name_counts_only_on_a_node_set_up_for_plain_http() {
        let id = "A".repeat(43);
        let plain = format!("other=1; {LOCAL_NAME}={id}");
        // Whatever the request says its host is.
        for host in ["localhost:8080", "127.0.0.1", "pier.example"] {
            let sent = headers(&[("host", host), ("cookie", &plain)]);
            assert!(read(&sent, false).is_some(), "{host}");
            assert!(read(&sent, true).is_none(), "{host}");
        }
        let secure = format!("{SECURE_NAME}={id}");
        assert!(read(&headers(&[("cookie", &secure)]), true).is_some());
    }

    #[test]
    fn cookies_are_secure_unless_set_up_for_plain_http() {
        let limits = SessionLimits {
            idle: std::time::Duration::from_secs(60),
            absolute: std::time::Duration::from_secs(600),
        };
        let id = SessionSecret::parse(&"A".repeat(43)).expect("id");
        let remote = set(true, &id, limits);
        let remote = remote.to_str().expect("text");
        assert!(remote.starts_with("__Host-pier_session="), "{remote}");
        for flag in [
            "; Secure",
            "; HttpOnly",
            "; SameSite=Lax",
            "; Path=/",
            "; Max-Age=600",
        ] {
            assert!(remote.contains(flag), "{remote} lacks {flag}");
        }
        assert!(!remote.contains("Domain"));
        let local = set(false, &id, limits);
        assert!(!local.to_str().expect("text").contains("Secure"));
    }
}
