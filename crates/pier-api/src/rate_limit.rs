//! The HTTP side of rate limiting: the `RateLimit-Policy` and `RateLimit` fields of
//! draft-ietf-httpapi-ratelimit-headers-10, `429` responses, and the client address that
//! per-IP limits count by.
//!
//! ```text
//! RateLimit-Policy: "per-key";q=60000;w=60;pier-burst=2000
//! RateLimit: "per-key";r=1999;t=1
//! ```
//!
//! Both are structured-field lists (RFC 9651) of string items: `q` is the quota per window `w`
//! (seconds); `r` the units left, `t` the seconds until more are available (for a refused
//! policy, until the same request would pass, so `Retry-After` is never earlier than `t`).
//! `pier-burst` is the vendor parameter of GCRA policies: units spendable at once.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use pier_ratelimit::{Algorithm, Decision, Policy};

use crate::problem::ApiError;

pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// How Pier's own API is limited; `None` policies are off.
#[derive(Debug, Clone, Default)]
pub struct ApiProtection {
    /// Per API key (per authenticated principal), on every `/v1` resource route.
    pub per_key: Option<Policy>,
    /// Per client address, on public routes and on requests whose credentials are refused.
    pub per_ip: Option<Policy>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// Adds the two fields for `decided` (policies with their decisions) to `headers`, after any
/// already there: a response can carry the decision API's policies and the API's own.
pub fn insert_fields(headers: &mut HeaderMap, decided: &[(&Policy, &Decision)]) {
    let policies: Vec<String> = decided.iter().map(|(p, _)| policy_item(p)).collect();
    let limits: Vec<String> = decided
        .iter()
        .map(|(p, d)| {
            let wait = if d.allowed {
                d.reset_after
            } else {
                d.retry_after
            };
            format!("\"{}\";r={};t={}", p.name(), d.remaining, ceil_secs(wait))
        })
        .collect();
    // Names are letters, digits, `.`, `_` and `-` (see `check_name`), valid in a header.
    if let Ok(value) = HeaderValue::from_str(&policies.join(", ")) {
        headers.append(RATELIMIT_POLICY.clone(), value);
    }
    if let Ok(value) = HeaderValue::from_str(&limits.join(", ")) {
        headers.append(RATELIMIT.clone(), value);
    }
}

fn policy_item(policy: &Policy) -> String {
    let spec = policy.spec();
    let mut item = format!(
        "\"{}\";q={};w={}",
        policy.name(),
        spec.limit(),
        spec.period().as_secs()
    );
    if spec.algorithm() == Algorithm::Gcra {
        item.push_str(&format!(";pier-burst={}", spec.burst()));
    }
    item
}

/// Whole seconds, rounded up: waiting that long is always enough.
fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The `429` for a refused request: the quota-exceeded problem naming the refusing policies,
/// `Retry-After` for the longest of their waits (at least a second), and the fields.
pub fn refusal(decided: &[(&Policy, &Decision)]) -> Response {
    let refused: Vec<&(&Policy, &Decision)> = decided.iter().filter(|(_, d)| !d.allowed).collect();
    let wait = refused
        .iter()
        .map(|(_, d)| ceil_secs(d.retry_after))
        .max()
        .unwrap_or(1)
        .max(1);
    let names = refused.iter().map(|(p, _)| p.name().to_owned()).collect();
    let mut response = ApiError::quota_exceeded(names)
        .with_header(header::RETRY_AFTER, HeaderValue::from(wait))
        .into_response();
    insert_fields(response.headers_mut(), decided);
    response
}

/// The client's address: the socket's peer, or, when the peer is a trusted proxy, the nearest
/// address in `X-Forwarded-For` that is not one. IPv6 clients count by their /64, the block a
/// single subscriber usually holds.
pub fn client_ip(
    headers: &HeaderMap,
    peer: Option<&ConnectInfo<SocketAddr>>,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let peer = peer?.0.ip();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer;
    if is_trusted(&peer) {
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.iter().rev() {
            // A malformed entry ends the walk: what is left of it cannot be believed.
            let Ok(ip) = hop.parse::<IpAddr>() else { break };
            client = ip;
            if !is_trusted(&ip) {
                break;
            }
        }
    }
    Some(match client {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("ascii"));
        }
        h
    }

    fn peer(ip: &str) -> ConnectInfo<SocketAddr> {
        ConnectInfo(SocketAddr::new(ip.parse().expect("ip"), 4000))
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let ip = |h: &HeaderMap, p: &str| {
            client_ip(h, Some(&peer(p)), &trusted)
                .expect("ip")
                .to_string()
        };
        // An untrusted peer's header is ignored.
        assert_eq!(ip(&headers(&["1.1.1.1"]), "203.0.113.9"), "203.0.113.9");
        // Behind our proxies, the nearest untrusted hop: a client cannot pick its address by
        // prepending entries.
        assert_eq!(
            ip(&headers(&["6.6.6.6, 1.1.1.1, 10.0.0.2"]), "10.0.0.1"),
            "1.1.1.1"
        );
        assert_eq!(ip(&headers(&["6.6.6.6", "1.1.1.1"]), "10.0.0.1"), "1.1.1.1");
        assert_eq!(ip(&headers(&["garbage, 10.0.0.3"]), "10.0.0.1"), "10.0.0.3");
        assert_eq!(ip(&HeaderMap::new(), "10.0.0.1"), "10.0.0.1");
        // IPv6 clients count by /64.
        assert_eq!(ip(&HeaderMap::new(), "2001:db8::1:2:3:4"), "2001:db8::");
        assert_eq!(ip(&HeaderMap::new(), "::ffff:192.0.2.1"), "192.0.2.1");
    }
}
