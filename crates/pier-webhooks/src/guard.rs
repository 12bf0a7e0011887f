//! The SSRF guard: webhook requests go only to public addresses, so a workspace cannot use
//! Pier to reach the metadata service, the database or anything else on the server's network.
//!
//! A URL is checked twice: [`Guard::check_url`] (and [`Guard::check_resolved`]) when an
//! endpoint is created or updated, to refuse early with a useful message, and again at every
//! send, because DNS answers change. At send time the name is resolved **once**, by the
//! resolver inside [`Guard::client`], and the connection goes to exactly the addresses it
//! checked: there is no second lookup a rebinding DNS server could answer differently.
//! Redirects are never followed (a public endpoint could otherwise redirect to an internal
//! one) and no proxy is used (it would connect on our behalf to whatever the URL names).
//!
//! `allow_private` (`--allow-private-webhook-targets`, off by default) skips the address
//! checks, for development and tests against local receivers; scheme and credential checks
//! stay.

use std::error::Error as _;
use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// How long one lookup may take before the guard gives up on it.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// IPv4 ranges that are not publicly routable (RFC 6890 and the IANA special-purpose registry),
/// each with the name a refusal reports. The first match names the range.
const V4_RANGES: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\""),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "carrier-grade NAT"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignment"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay anycast"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(255, 255, 255, 255), 32, "broadcast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved"),
];

/// IPv6 ranges that are not publicly routable, checked before the embedded-IPv4 forms below.
/// Two whole blocks are refused rather than judged by what they carry:
/// - `2001::/23`, the IETF protocol assignments: it holds Teredo (`2001::/32`, whose client
///   address is obfuscated and which tunnels through a relay we do not control), benchmarking
///   and ORCHID, and no webhook receiver lives there;
/// - `64:ff9b:1::/48`, local-use NAT64 (RFC 8215): its translator is a local one and the IPv4
///   position depends on the operator's prefix length, so it cannot be judged.
const V6_RANGES: &[(Ipv6Addr, u8, &str)] = &[
    (Ipv6Addr::UNSPECIFIED, 128, "unspecified"),
    (Ipv6Addr::LOCALHOST, 128, "loopback"),
    (v6(0x64, 0xff9b, 1), 48, "local-use NAT64"),
    (v6(0x100, 0, 0), 64, "discard-only"),
    (v6(0x2001, 0xdb8, 0), 32, "documentation"),
    (v6(0x2001, 0, 0), 32, "Teredo"),
    (v6(0x2001, 0, 0), 23, "IETF protocol assignment"),
    (v6(0x3fff, 0, 0), 20, "documentation"),
    (v6(0xfc00, 0, 0), 7, "unique local"),
    (v6(0xfe80, 0, 0), 10, "link-local"),
    (v6(0xfec0, 0, 0), 10, "site-local"),
    (v6(0xff00, 0, 0), 8, "multicast"),
];

/// IPv6 forms that carry an IPv4 address in the 32 bits after their prefix, judged by that
/// address: the packets end up there.
const V6_EMBEDDING: &[(Ipv6Addr, u8, &str)] = &[
    (Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(), 96, "IPv4-mapped"),
    (Ipv6Addr::UNSPECIFIED, 96, "IPv4-compatible"),
    (v6(0x64, 0xff9b, 0), 96, "NAT64"),
    (v6(0x2002, 0, 0), 16, "6to4"),
];

/// Global unicast, the only IPv6 block IANA allocates to networks; the rest is reserved.
const V6_GLOBAL_UNICAST: (Ipv6Addr, u8) = (v6(0x2000, 0, 0), 3);

/// A network address from its first three segments, to keep the tables above readable.
const fn v6(a: u16, b: u16, c: u16) -> Ipv6Addr {
    Ipv6Addr::new(a, b, c, 0, 0, 0, 0, 0)
}

/// Whether `ip` is an address a webhook may be sent to.
pub fn is_public(ip: IpAddr) -> bool {
    non_public_range(ip).is_none()
}

/// The name of the non-public range `ip` is in, or `None` for a public address.
fn non_public_range(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4).map(str::to_owned),
        IpAddr::V6(v6) => v6_range(v6),
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(ip);
    V4_RANGES.iter().find_map(|&(net, prefix, name)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        (bits & mask == u32::from(net) & mask).then_some(name)
    })
}

fn v6_range(ip: Ipv6Addr) -> Option<String> {
    let bits = u128::from(ip);
    let mask = |prefix: u8| u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    let within = |net: Ipv6Addr, prefix: u8| bits & mask(prefix) == u128::from(net) & mask(prefix);
    let plain = V6_RANGES
        .iter()
        .find(|&&(net, prefix, _)| within(net, prefix));
    if let Some(&(_, _, name)) = plain {
        return Some(name.to_owned());
    }
    let embedding = V6_EMBEDDING
        .iter()
        .find(|&&(net, prefix, _)| within(net, prefix));
    if let Some(&(_, prefix, form)) = embedding {
        // Truncation is the point: the 32 bits after the prefix are the IPv4 address.
        let v4 = Ipv4Addr::from((bits >> (96 - u32::from(prefix))) as u32);
        return v4_range(v4).map(|name| format!("{name}, as {form} IPv6"));
    }
    let (net, prefix) = V6_GLOBAL_UNICAST;
    (!within(net, prefix)).then(|| "reserved".to_owned())
}

/// Why a webhook URL is refused or could not be checked; `code` is the stable reason the API
/// reports. Messages name the host the user gave; an address is shown only when the user wrote
/// it, never one a name resolved to (that could map the server's internal network).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("is not a valid URL: {0}")]
    Invalid(url::ParseError),
    #[error("must use http or https, not `{0}:`")]
    Scheme(String),
    #[error("must not contain a user name or password (receivers verify the signature instead)")]
    Credentials,
    #[error("must name a host")]
    NoHost,
    #[error(
        "`{0}` is not a host name: labels of letters, digits and `-`, the last starting with a letter"
    )]
    HostName(String),
    /// The host is, or resolves to, an address outside the public internet.
    #[error(
        "`{host}` {} a non-public address ({range}); webhooks can only reach public addresses",
        is_or_resolves_to(.resolved)
    )]
    NonPublic {
        host: String,
        /// For logs only: the message leaves it out when it came from DNS.
        addr: IpAddr,
        range: String,
        /// Whether `addr` came from resolving `host` rather than being written in the URL.
        resolved: bool,
    },
    #[error("could not resolve `{host}`: {reason}")]
    Dns { host: String, reason: String },
    #[error("`{0}` resolves to no addresses")]
    NoAddresses(String),
}

fn is_or_resolves_to(resolved: &bool) -> &'static str {
    if *resolved { "resolves to" } else { "is" }
}

impl GuardError {
    /// The stable reason code for API validation errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) | Self::NoHost | Self::HostName(_) => "invalid",
            Self::Scheme(_) => "scheme_not_allowed",
            Self::Credentials => "credentials_not_allowed",
            Self::NonPublic { .. } => "address_not_allowed",
            Self::Dns { .. } | Self::NoAddresses(_) => "unresolvable",
        }
    }

    /// Whether the URL is unacceptable as it stands, as opposed to a name that does not
    /// resolve (yet): that may be temporary and every send checks again.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::Dns { .. } | Self::NoAddresses(_))
    }
}

/// Name resolution, injectable so tests can make a name resolve to an internal address.
pub trait Lookup: Send + Sync + Debug {
    /// Every address `host` resolves to, with `port` set.
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;
}

/// The operating system's resolver.
#[derive(Debug)]
struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// Checks webhook URLs and builds the client that sends to them. Clones share the resolver.
#[derive(Debug, Clone)]
pub struct Guard {
    allow_private: bool,
    lookup: Arc<dyn Lookup>,
}

impl Guard {
    /// A guard on the system resolver; `allow_private` lets non-public addresses through.
    pub fn new(allow_private: bool) -> Self {
        Self::with_lookup(allow_private, Arc::new(SystemLookup))
    }

    /// A guard on another resolver: tests make names resolve to internal addresses with it.
    pub fn with_lookup(allow_private: bool, lookup: Arc<dyn Lookup>) -> Self {
        Self {
            allow_private,
            lookup,
        }
    }

    /// Parses and checks a URL without resolving it, for endpoint create and update: an http
    /// or https URL without credentials whose host, if an IP address, is public. WHATWG
    /// parsing turns every spelling of an IPv4 address (`127.1`, `0x7f000001`, `0177.0.0.1`)
    /// into the address itself, so none slips through as a "name". A name passes here and is
    /// judged by [`Guard::check_resolved`] and at every send.
    pub fn check_url(&self, raw: &str) -> Result<Url, GuardError> {
        let url = Url::parse(raw).map_err(GuardError::Invalid)?;
        self.check_parsed(&url)?;
        Ok(url)
    }

    /// Resolves the URL's host once and refuses it if any address is non-public (one bad
    /// address is enough: a client may pick any of them). An IP address is not looked up.
    pub async fn check_resolved(&self, url: &Url) -> Result<Vec<SocketAddr>, GuardError> {
        self.check_parsed(url)?;
        let port = url.port_or_known_default().unwrap_or(0);
        match url.host() {
            Some(Host::Ipv4(ip)) => Ok(vec![SocketAddr::new(ip.into(), port)]),
            Some(Host::Ipv6(ip)) => Ok(vec![SocketAddr::new(ip.into(), port)]),
            Some(Host::Domain(name)) => self.resolve(name, port).await,
            None => Err(GuardError::NoHost),
        }
    }

    /// The one client deliveries go through: no redirects, no proxy, and a resolver that
    /// applies this guard, so reqwest connects to exactly the addresses that were checked.
    /// An IP-address host never reaches a resolver, so send with [`Guard::send`], which checks
    /// it first.
    pub fn client(
        &self,
        connect_timeout: Duration,
        timeout: Duration,
        user_agent: &str,
    ) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .user_agent(user_agent)
            .dns_resolver(Arc::new(GuardedResolver(self.clone())))
            .build()
    }

    /// Sends `request` on a client from [`Guard::client`], checking its URL first (scheme,
    /// credentials, an IP-address host); a name is checked by the client's resolver.
    pub async fn send(
        &self,
        client: &reqwest::Client,
        request: reqwest::Request,
    ) -> Result<reqwest::Response, SendError> {
        self.check_parsed(request.url())?;
        Ok(client.execute(request).await?)
    }

    /// Everything that can be judged without DNS.
    fn check_parsed(&self, url: &Url) -> Result<(), GuardError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(GuardError::Scheme(url.scheme().to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(GuardError::Credentials);
        }
        let ip = match url.host() {
            None => return Err(GuardError::NoHost),
            Some(Host::Domain(name)) if pier_core::schema::is_host_name(name) => return Ok(()),
            Some(Host::Domain(name)) => return Err(GuardError::HostName(name.to_owned())),
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        };
        let host = url.host_str().unwrap_or_default();
        self.judge(host, ip, false)
    }

    /// Looks `host` up (bounded by [`LOOKUP_TIMEOUT`]) and judges every address.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, GuardError> {
        let dns = |reason: String| GuardError::Dns {
            host: host.to_owned(),
            reason,
        };
        let addrs = tokio::time::timeout(LOOKUP_TIMEOUT, self.lookup.lookup(host, port))
            .await
            .map_err(|_| dns("the lookup timed out".to_owned()))?
            .map_err(|err| dns(err.to_string()))?;
        if addrs.is_empty() {
            return Err(GuardError::NoAddresses(host.to_owned()));
        }
        for addr in &addrs {
            self.judge(host, addr.ip(), true)?;
        }
        Ok(addrs)
    }

    fn judge(&self, host: &str, addr: IpAddr, resolved: bool) -> Result<(), GuardError> {
        if self.allow_private {
            return Ok(());
        }
        match non_public_range(addr) {
            None => Ok(()),
            Some(range) => {
                tracing::info!(host, %addr, range = %range, "refused a non-public webhook target");
                Err(GuardError::NonPublic {
                    host: host.to_owned(),
                    addr,
                    range,
                    resolved,
                })
            }
        }
    }
}

/// reqwest's resolver for the guarded client: the guard's lookup and check, in one step.
#[derive(Debug)]
struct GuardedResolver(Guard);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port, or the scheme's, in its place.
            let addrs = guard.resolve(&host, 0).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Why a guarded send produced no response. The message is what a delivery attempt records;
/// it leaves out the URL, which may carry a secret token.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Nothing was sent: the guard refused the URL or its addresses, or the name did not
    /// resolve.
    #[error("not sent: {0}")]
    Guard(#[from] GuardError),
    #[error("timed out: {}", causes(.0))]
    Timeout(reqwest::Error),
    #[error("could not connect: {}", causes(.0))]
    Connect(reqwest::Error),
    /// Anything else: a request that could not be built, or a failure after connecting.
    #[error("{}", causes(.0))]
    Request(reqwest::Error),
}

impl From<reqwest::Error> for SendError {
    /// Finds the guard's refusal inside a failed connect, where reqwest wraps the resolver's
    /// error, so that a refusal is reported as one.
    fn from(err: reqwest::Error) -> Self {
        let mut source: Option<&(dyn std::error::Error + 'static)> = err.source();
        while let Some(cause) = source {
            if let Some(refusal) = cause.downcast_ref::<GuardError>() {
                return Self::Guard(refusal.clone());
            }
            source = cause.source();
        }
        let err = err.without_url();
        if err.is_timeout() {
            Self::Timeout(err)
        } else if err.is_connect() {
            Self::Connect(err)
        } else {
            Self::Request(err)
        }
    }
}

/// The error and its causes on one line; reqwest's own message alone says little.
fn causes(err: &reqwest::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Names mapped to addresses; `nx.test` fails; anything else goes to the system resolver.
    #[derive(Debug, Default)]
    struct FakeLookup {
        names: HashMap<&'static str, Vec<IpAddr>>,
        calls: AtomicUsize,
    }

    impl Lookup for FakeLookup {
        fn lookup<'a>(
            &'a self,
            host: &'a str,
            port: u16,
        ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if host == "nx.test" {
                    return Err(io::Error::new(io::ErrorKind::NotFound, "no such host"));
                }
                match self.names.get(host) {
                    Some(ips) => Ok(ips.iter().map(|&ip| SocketAddr::new(ip, port)).collect()),
                    None => SystemLookup.lookup(host, port).await,
                }
            })
        }
    }

    fn fake(names: &[(&'static str, &[&str])]) -> Arc<FakeLookup> {
        let names = names
            .iter()
            .map(|&(name, ips)| {
                let ips = ips
                    .iter()
                    .map(|ip| ip.parse().expect("test address"))
                    .collect();
                (name, ips)
            })
            .collect();
        Arc::new(FakeLookup {
            names,
            calls: AtomicUsize::new(0),
        })
    }

    fn guard(allow_private: bool) -> Guard {
        Guard::with_lookup(
            allow_private,
            fake(&[
                ("example.com", &["93.184.215.14"]),
                ("db.internal.test", &["10.0.0.5"]),
                ("mixed.test", &["93.184.215.14", "192.168.0.10"]),
                ("mapped.test", &["2606:4700::1", "::ffff:10.0.0.1"]),
                ("empty.test", &[]),
            ]),
        )
    }

    /// Spellings of 127.0.0.1 besides the dotted one, which a WHATWG parser reads as it.
    const LOOPBACK_SPELLINGS: &[&str] = &[
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0x7f.0.0.1/",
        "http://0177.0.0.1/",
        "http://017700000001/",
        "http://127.0.0.%31/",
    ];

    /// Refused by `check_url` or, for names, by `check_resolved` (besides
    /// [`LOOPBACK_SPELLINGS`]).
    const HOSTILE: &[&str] = &[
        "http://127.0.0.1/",
        "http://\u{ff11}\u{ff12}\u{ff17}.0.0.1/",
        "http:/127.0.0.1/",
        "http:\\\\127.0.0.1\\",
        "http://0/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[0:0:0:0:0:ffff:169.254.169.254]/",
        "http://[::127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://172.31.255.255/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://[fec0::1]/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
        "http://198.18.0.1/",
        "http://192.0.2.1/",
        "http://198.51.100.7/",
        "http://203.0.113.9/",
        "http://192.0.0.8/",
        "http://192.88.99.1/",
        "http://240.0.0.1/",
        "http://255.255.255.255/",
        "http://[2001:db8::1]/",
        "http://[3fff::1]/",
        "http://[100::1]/",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[64:ff9b:1::808:808]/",
        "http://[2002:7f00:1::]/",
        "http://[2002:a9fe:a9fe::1]/",
        "http://user:pass@example.com/",
        "http://example.com@127.0.0.1/",
        "http://127.0.0.1:8080@example.com/",
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
        "javascript:alert(1)",
        "http://localhost/",
        "http://db.internal.test/hook",
        "https://mixed.test/hook",
        "https://mapped.test/hook",
        "not a url",
    ];

    #[tokio::test]
    async fn hostile_urls_are_refused() {
        let guard = guard(false);
        for raw in LOOPBACK_SPELLINGS.iter().chain(HOSTILE) {
            let err = match guard.check_url(raw) {
                Err(err) => err,
                Ok(url) => guard.check_resolved(&url).await.expect_err(raw),
            };
            assert!(err.is_refusal(), "{raw}: {err}");
        }
        assert!(HOSTILE.len() >= 30);
    }

    #[test]
    fn whatwg_parsing_turns_every_ipv4_spelling_into_the_address() {
        for raw in LOOPBACK_SPELLINGS {
            let url = Url::parse(raw).expect(raw);
            assert_eq!(url.host(), Some(Host::Ipv4(Ipv4Addr::LOCALHOST)), "{raw}");
        }
        // The host is after the last `@`; what comes before is a user name.
        let url = Url::parse("http://example.com@127.0.0.1/").expect("parses");
        assert_eq!(url.host_str(), Some("127.0.0.1"));
        assert_eq!(url.username(), "example.com");
        assert_eq!(
            guard(false).check_url("http://example.com@127.0.0.1/"),
            Err(GuardError::Credentials)
        );
    }

    #[tokio::test]
    async fn public_targets_pass() {
        let lookup = fake(&[("example.com", &["93.184.215.14"])]);
        let guard = Guard::with_lookup(false, lookup.clone());
        let url = guard
            .check_url("https://example.com/hook")
            .expect("a name passes");
        let addrs = guard.check_resolved(&url).await.expect("public");
        assert_eq!(addrs, ["93.184.215.14:443".parse().expect("addr")]);
        for (raw, addr) in [
            ("http://8.8.8.8/", "8.8.8.8:80"),
            ("http://[2606:4700::1]/", "[2606:4700::1]:80"),
            ("https://[::ffff:8.8.8.8]:8443/", "[::ffff:8.8.8.8]:8443"),
        ] {
            let url = guard.check_url(raw).expect(raw);
            let addrs = guard.check_resolved(&url).await.expect(raw);
            assert_eq!(addrs, [addr.parse().expect("addr")]);
        }
        assert_eq!(
            lookup.calls.load(Ordering::SeqCst),
            1,
            "IP literals are not looked up"
        );
    }

    #[test]
    fn the_range_table() {
        for ip in [
            "1.1.1.1",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.1",
            "169.253.255.255",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.255",
            "192.0.3.0",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2001:4860:4860::8888",
            "2001:200::1",
            "2606:4700::1",
            "3ffe::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            let ip: IpAddr = ip.parse().expect("test address");
            assert!(is_public(ip), "{ip} is public");
        }
        for (ip, range) in [
            ("0.1.2.3", "\"this network\""),
            ("127.255.255.254", "loopback"),
            ("172.16.0.0", "private"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("198.19.255.255", "benchmarking"),
            ("239.255.255.250", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("255.255.255.254", "reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fd12:3456::1", "unique local"),
            ("febf::1", "link-local"),
            ("2001:1ff::1", "IETF protocol assignment"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
            ("2001:db8:ffff::1", "documentation"),
            ("3fff:fff::1", "documentation"),
            ("64:ff9b:1:ffff::1", "local-use NAT64"),
            ("::ffff:169.254.169.254", "link-local, as IPv4-mapped IPv6"),
            ("::10.0.0.1", "private, as IPv4-compatible IPv6"),
            ("64:ff9b::a00:1", "private, as NAT64 IPv6"),
            ("2002:c0a8:101::", "private, as 6to4 IPv6"),
            ("4000::1", "reserved"),
            ("1::1", "reserved"),
        ] {
            let ip: IpAddr = ip.parse().expect("test address");
            assert_eq!(non_public_range(ip).as_deref(), Some(range), "{ip}");
            assert!(!is_public(ip), "{ip}");
        }
    }

    #[tokio::test]
    async fn messages_name_the_host_and_hide_resolved_addresses() {
        let guard = guard(false);
        let literal = guard
            .check_url("http://10.0.0.1:8080/")
            .expect_err("private");
        assert_eq!(
            literal.to_string(),
            "`10.0.0.1` is a non-public address (private); webhooks can only reach public \
             addresses"
        );
        let url = guard
            .check_url("http://db.internal.test/")
            .expect("a name passes");
        let resolved = guard.check_resolved(&url).await.expect_err("private");
        assert_eq!(
            resolved.to_string(),
            "`db.internal.test` resolves to a non-public address (private); webhooks can only \
             reach public addresses"
        );
        let private = IpAddr::from([10, 0, 0, 5]);
        assert!(matches!(resolved, GuardError::NonPublic { addr, .. } if addr == private));
        let mapped = guard
            .check_url("http://[::ffff:127.0.0.1]/")
            .expect_err("loopback");
        assert!(
            mapped.to_string().starts_with(
                "`[::ffff:7f00:1]` is a non-public address (loopback, as IPv4-mapped IPv6)"
            ),
            "{mapped}"
        );
        assert_eq!(
            guard
                .check_url("ftp://example.com/")
                .expect_err("ftp")
                .to_string(),
            "must use http or https, not `ftp:`"
        );
    }

    #[tokio::test]
    async fn codes_and_refusals() {
        let guard = guard(false);
        let code = |raw: &str| guard.check_url(raw).expect_err(raw).code();
        assert_eq!(code("nope"), "invalid");
        assert_eq!(code("hTTp://146.106.142.253*"), "invalid");
        assert_eq!(code("https://a_b.example.com/"), "invalid");
        assert_eq!(code("ftp://example.com/"), "scheme_not_allowed");
        assert_eq!(code("https://u@example.com/"), "credentials_not_allowed");
        assert_eq!(code("http://127.0.0.1/"), "address_not_allowed");
        for name in ["nx.test", "empty.test"] {
            let url = guard
                .check_url(&format!("https://{name}/"))
                .expect("a name passes");
            let err = guard.check_resolved(&url).await.expect_err(name);
            assert_eq!(err.code(), "unresolvable", "{err}");
            assert!(
                !err.is_refusal(),
                "a name that does not resolve may later: {err}"
            );
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[tokio::test]
    async fn allow_private_lets_internal_addresses_through_but_not_bad_urls() {
        let guard = guard(true);
        for raw in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]/",
            "http://db.internal.test/",
        ] {
            let url = guard.check_url(raw).expect(raw);
            guard.check_resolved(&url).await.expect(raw);
        }
        for raw in [
            "ftp://127.0.0.1/",
            "file:///etc/passwd",
            "http://user:pass@127.0.0.1/",
        ] {
            assert!(guard.check_url(raw).is_err(), "{raw}");
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// Answers one request on `listener` with `response`, after reading its head.
    fn serve_once(listener: TcpListener, response: String) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            let mut buf = [0; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            socket.write_all(response.as_bytes()).await.expect("write");
        })
    }

    async fn listener() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        (listener, port)
    }

    /// Whether anything connects to `listener` within a short wait.
    async fn connected(listener: &TcpListener) -> bool {
        tokio::time::timeout(Duration::from_millis(300), listener.accept())
            .await
            .is_ok()
    }

    async fn get(guard: &Guard, url: &str) -> Result<reqwest::Response, SendError> {
        let client = guard.client(TIMEOUT, TIMEOUT, "pier-test").expect("client");
        let request = client.get(url).build().expect("request");
        guard.send(&client, request).await
    }

    #[tokio::test]
    async fn redirects_are_returned_not_followed() {
        let (first, port) = listener().await;
        let (second, other) = listener().await;
        let location = format!("http://127.0.0.1:{other}/");
        let server = serve_once(
            first,
            format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"),
        );
        let response = get(&Guard::new(true), &format!("http://127.0.0.1:{port}/hook"))
            .await
            .expect("the 302 itself");
        assert_eq!(response.status(), 302);
        assert_eq!(response.headers()["location"], location.as_str());
        server.await.expect("served");
        assert!(!connected(&second).await, "the redirect was followed");
    }

    #[tokio::test]
    async fn the_client_resolves_through_the_guard() {
        let (live, port) = listener().await;
        let lookup = fake(&[("hook.test", &["127.0.0.1"])]);
        let url = format!("http://hook.test:{port}/hook");

        let refusing = Guard::with_lookup(false, lookup.clone());
        refusing
            .check_url(&url)
            .expect("a name passes the synchronous check");
        let err = get(&refusing, &url).await.expect_err("refused");
        assert!(
            matches!(
                &err,
                SendError::Guard(GuardError::NonPublic { resolved: true, .. })
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("not sent: `hook.test` resolves to"),
            "{err}"
        );
        assert!(
            !connected(&live).await,
            "the guard let a connection through"
        );

        // Allowed, the client connects to the looked-up address: the name exists nowhere else.
        let server = serve_once(live, "HTTP/1.1 204 No Content\r\n\r\n".to_owned());
        let response = get(&Guard::with_lookup(true, lookup), &url)
            .await
            .expect("sent");
        assert_eq!(response.status(), 204);
        server.await.expect("served");
    }

    #[tokio::test]
    async fn send_checks_ip_literals_itself() {
        let (live, port) = listener().await;
        let err = get(&Guard::new(false), &format!("http://127.0.0.1:{port}/"))
            .await
            .expect_err("refused");
        assert!(
            matches!(err, SendError::Guard(GuardError::NonPublic { .. })),
            "{err:?}"
        );
        assert!(
            !connected(&live).await,
            "the guard let a connection through"
        );
    }

    #[tokio::test]
    async fn send_errors_say_what_failed_without_the_url() {
        let (closed, port) = listener().await;
        drop(closed);
        let url = format!("http://127.0.0.1:{port}/hook?token=secret");
        let err = get(&Guard::new(true), &url)
            .await
            .expect_err("refused connection");
        assert!(matches!(err, SendError::Connect(_)), "{err:?}");
        assert!(err.to_string().starts_with("could not connect: "), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");

        let (silent, port) = listener().await;
        let guard = Guard::new(true);
        let client = guard
            .client(TIMEOUT, Duration::from_millis(200), "pier-test")
            .expect("client");
        let request = client
            .get(format!("http://127.0.0.1:{port}/hook?token=secret"))
            .build()
            .expect("request");
        let err = guard.send(&client, request).await.expect_err("timed out");
        assert!(matches!(err, SendError::Timeout(_)), "{err:?}");
        assert!(!err.to_string().contains("secret"), "{err}");
        drop(silent);
    }
}
