//! The limit on redirects to slugs that match no link, per client address (IPv6 by /64; ASVS
//! 5.0 V2.4.1). A known slug costs nothing once cached, but every unknown one a scanner makes up
//! is a lookup in the database, so misses spend a quota (`links.redirect_misses`), and an
//! address that has spent it gets `429` for any slug this node does not hold in its cache,
//! without a lookup, until the quota refills. Slugs in the cache (every slug visited on this
//! node within `links.cache_ttl_secs`) redirect whatever the address has spent: the hit path
//! does no more work than before.
//!
//! The quota lives in the rate limiter: shared through Redis when configured, else per node,
//! in the in-process store whose size `rate_limits.local_max_keys` bounds.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pier_ratelimit::Decision;

use crate::AppState;
use crate::problem::ApiError;
use crate::rate_limit::{RATELIMIT, RATELIMIT_POLICY, client_ip, refusal};

/// One request's account of misses.
pub(super) struct Misses<'a> {
    state: &'a AppState,
    client: String,
}

impl<'a> Misses<'a> {
    pub(super) fn of(
        state: &'a AppState,
        headers: &HeaderMap,
        peer: Option<&ConnectInfo<SocketAddr>>,
    ) -> Self {
        let trusted = &state.http().protection.trusted_proxies;
        let client = client_ip(headers, peer, trusted).map(|ip| ip.to_string());
        Self {
            state,
            client: client.unwrap_or_default(),
        }
    }

    /// The `429` to answer instead of looking a slug up, when the address has no miss left.
    pub(super) async fn exhausted(&self, headers: &HeaderMap) -> Option<Response> {
        self.decide(headers, false).await
    }

    /// Counts a miss; the `429` to answer if it was one too many.
    pub(super) async fn spend(&self, headers: &HeaderMap) -> Option<Response> {
        self.decide(headers, true).await
    }

    async fn decide(&self, headers: &HeaderMap, spend: bool) -> Option<Response> {
        let policy = std::slice::from_ref(self.state.links().redirect_misses());
        let limiter = self.state.limiter();
        match limiter.check_all(policy, &self.client, 1, spend).await {
            Ok(verdict) if verdict.allowed => None,
            Ok(verdict) => Some(self.refused(headers, &verdict.decisions[0])),
            Err(err) => Some(ApiError::internal(err).into_response()),
        }
    }

    /// The quota-exceeded problem, or for a browser a page carrying the same fields.
    fn refused(&self, headers: &HeaderMap, decision: &Decision) -> Response {
        let problem = refusal(&[(self.state.links().redirect_misses(), decision)]);
        if !super::redirect::wants_html(headers) {
            return problem;
        }
        let mut page = super::redirect::page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many unknown links",
            "<p>Too many addresses that lead nowhere came from your network. \
             Try again in a little while.</p>",
        );
        for name in [&header::RETRY_AFTER, &RATELIMIT_POLICY, &RATELIMIT] {
            if let Some(value) = problem.headers().get(name) {
                page.headers_mut().insert(name.clone(), value.clone());
            }
        }
        page
    }
}
