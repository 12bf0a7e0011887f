//! The one typed configuration: defaults, then the file (`--config`, `PIER_CONFIG`, or
//! `./pier.toml` when present), then `PIER_*` environment variables, then flags. Each setting is
//! declared once, below, with its type, default and documentation; its file key, flag and
//! environment variable are derived from its name and section (`[jobs] claim_budget_bytes` is
//! `--jobs-claim-budget-bytes` and `PIER_JOBS_CLAIM_BUDGET_BYTES`). Everything is validated at
//! start; a bad setting stops the process with one line naming it and where it can be given.

mod reference;
mod value;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use pier_auth::KeySecret;
use pier_core::{MasterKey, Secret, SecretUrl};
use pier_db::DatabaseUrl;
use pier_ratelimit::PolicySpec;

pub use value::{
    BaseUrl, LogFilter, LogFormat, OriginList, ProxyList, Role, SettingValue, ZeroOrMore,
};

/// One setting, as the command line, the environment and the file name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The file section, `""` for the top level.
    pub section: &'static str,
    pub name: &'static str,
    pub doc: &'static str,
}

/// Settings whose environment variable is not derived from their name (kept for
/// compatibility).
const ENV_NAMES: &[(&str, &str)] = &[("log_level", "PIER_LOG")];
/// Settings given only by the environment or the file: a flag would put them in `ps` output.
const NO_FLAG: &[&str] = &["bootstrap_api_key", "secret_key"];
/// Settings whose values `--help` must not print (they come from the environment).
const SECRET: &[&str] = &[
    "database_url",
    "redis_url",
    "bootstrap_api_key",
    "secret_key",
];

impl Key {
    /// `jobs.claim_budget_bytes`, or `listen` at the top level.
    pub fn path(&self) -> String {
        if self.section.is_empty() {
            self.name.to_owned()
        } else {
            format!("{}.{}", self.section, self.name)
        }
    }

    /// The flag without its dashes: `jobs-claim-budget-bytes`.
    pub fn flag(&self) -> String {
        self.path().replace(['.', '_'], "-")
    }

    pub fn env(&self) -> String {
        ENV_NAMES
            .iter()
            .find(|(path, _)| *path == self.path())
            .map_or_else(
                || format!("PIER_{}", self.path().replace('.', "_").to_uppercase()),
                |(_, env)| (*env).to_owned(),
            )
    }

    pub fn has_flag(&self) -> bool {
        !NO_FLAG.contains(&self.path().as_str())
    }

    pub fn is_secret(&self) -> bool {
        SECRET.contains(&self.path().as_str())
    }

    /// How the setting can be given, for error messages: `listen (--listen / PIER_LISTEN)`.
    fn described(&self) -> String {
        if self.has_flag() {
            format!("{} (--{} / {})", self.path(), self.flag(), self.env())
        } else {
            format!("{} ({})", self.path(), self.env())
        }
    }
}

/// Declares a section of settings: its struct, defaults, keys, and reading and showing values.
macro_rules! settings {
    ($(#[$meta:meta])* $name:ident in $section:literal {
        $($(#[doc = $doc:literal])+ $field:ident: $ty:ty = $default:expr,)*
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name {
            $($(#[doc = $doc])+ pub $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }

        impl $name {
            pub const KEYS: &'static [Key] = &[$(Key {
                section: $section,
                name: stringify!($field),
                doc: concat!($($doc),+),
            },)*];

            /// Sets `name` from `text`; `None` when no such setting exists in this section.
            fn set(&mut self, name: &str, text: &str) -> Option<Result<(), String>> {
                match name {
                    $(stringify!($field) => Some(
                        <$ty as SettingValue>::parse(text).map(|v| self.$field = v),
                    ),)*
                    _ => None,
                }
            }

            /// Every setting with its value, for `pier config`.
            fn shown(&self) -> toml::Table {
                let mut table = toml::Table::new();
                $(if let Some(value) = SettingValue::show(&self.$field) {
                    table.insert(stringify!($field).to_owned(), value);
                })*
                table
            }
        }
    };
}

settings! {
    /// The service itself: where it listens, what it stores in, how it logs.
    ServerSettings in "" {
        /// What this node runs: all (the API and background work), api, or worker (webhook
        /// deliveries, job upkeep and maintenance, with only the admin listener).
        role: Role = Role::All,
        /// Where the API listens.
        listen: SocketAddr = SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
        /// Where `/metrics`, `/healthz` and `/readyz` listen for operators; keep it private.
        admin_listen: SocketAddr = SocketAddr::from((Ipv4Addr::LOCALHOST, 9464)),
        /// Where the embedded database lives when no database_url is given.
        data_dir: PathBuf = PathBuf::from("./pier-data"),
        /// sqlite://PATH or postgres://… (default: sqlite://<data_dir>/pier.db).
        database_url: Option<DatabaseUrl> = None,
        /// redis://… for a cluster's shared state.
        redis_url: Option<SecretUrl> = None,
        /// The first owner key to create instead of a random one (see `pier keys generate`).
        bootstrap_api_key: Option<Secret<KeySecret>> = None,
        /// The key secrets are sealed under at rest, 64 hex digits (see `pier generate-secret-key`);
        /// required with PostgreSQL, else kept in <data_dir>/secret.key.
        secret_key: Option<Secret<MasterKey>> = None,
        /// auto, json or pretty: JSON unless stderr is a terminal.
        log_format: LogFormat = LogFormat::Auto,
        /// A log filter, e.g. info or pier=debug,sqlx=warn.
        log_level: LogFilter = LogFilter("info".to_owned()),
        /// The largest request body accepted, in bytes.
        body_limit_bytes: u64 = 1024 * 1024,
        /// Browser origins allowed to call the API from another origin (CORS), exact and
        /// comma-separated, e.g. https://app.example; none by default. Preflights are answered
        /// before authentication; credentials (cookies) are never allowed across origins, so
        /// such an app sends a bearer token.
        cors_allowed_origins: OriginList = OriginList::default(),
        /// How long shutdown waits for in-flight requests, in seconds.
        shutdown_timeout_secs: u64 = 30,
        /// How long a stopping node keeps serving with /readyz answering 503, so load
        /// balancers take it out of rotation before it stops accepting, in seconds (0: none).
        shutdown_drain_secs: ZeroOrMore = ZeroOrMore(5),
        /// How long a client may take to send a request's headers, in seconds; idle keep-alive
        /// connections close after it too.
        header_read_timeout_secs: u64 = 10,
        /// How long a request may run, in seconds (long-poll claims get their wait on top).
        request_timeout_secs: u64 = 30,
        /// Connections served at once; more wait to be accepted.
        max_connections: u64 = 1024,
        /// The size of the database connection pool.
        db_max_connections: u64 = 16,
        /// Let webhook endpoints use loopback, private and other internal addresses. Off by
        /// default (the SSRF guard refuses them); for development and tests only.
        allow_private_webhook_targets: bool = false,
    }
}

settings! {
    /// The job queue: retention, leases and long-poll limits.
    JobsSettings in "jobs" {
        /// How long completed jobs are kept, in seconds.
        completed_retention_secs: u64 = 24 * 3600,
        /// How long cancelled jobs are kept, in seconds.
        cancelled_retention_secs: u64 = 7 * 24 * 3600,
        /// How long discarded (dead-lettered) jobs are kept, in seconds.
        discarded_retention_secs: u64 = 7 * 24 * 3600,
        /// The lease of a job that sets none, in seconds.
        default_lease_secs: u64 = 30,
        /// The most payload bytes one claim hands out (at least one job always).
        claim_budget_bytes: u64 = 4 * 1024 * 1024,
        /// Long-poll claims waiting at once, per workspace (more get 429).
        max_waiting_claims_per_workspace: u64 = 100,
        /// Long-poll claims waiting at once on this node (more get 503).
        max_waiting_claims: u64 = 1000,
        /// The most steps one workflow may have (a larger one is refused with 422).
        max_workflow_steps: u64 = 500,
    }
}

settings! {
    /// Authentication.
    AuthSettings in "auth" {
        /// How long a key, once authenticated, is remembered, in seconds: revocation through
        /// the API takes effect at once on every node, an offline `pier keys revoke` on SQLite
        /// within this.
        key_cache_ttl_secs: u64 = 5,
        /// A sign-in session unused for this long ends, in seconds.
        session_idle_secs: u64 = 3600,
        /// A sign-in session ends this long after sign-in however much it is used, in seconds.
        session_absolute_secs: u64 = 12 * 3600,
        /// Whether the session cookie is `__Host-pier_session` with `Secure` (true) or
        /// `pier_session` without it, for plain HTTP in development (false). Default: true
        /// unless the API listens on a loopback address. Never taken from a request's `Host`,
        /// which a proxy or a client may set to anything.
        cookie_secure: Option<bool> = None,
        /// Sign-in attempts (and wrong current passwords at a password change) allowed per
        /// account from all the addresses it has not signed in from in 90 days together,
        /// `ALGORITHM LIMIT/PERIOD [burst=N] [FAILURE_MODE]`. Addresses the owner signs in
        /// from never spend it, so strangers cannot lock the owner out there.
        failed_logins_per_account: PolicySpec = policy("gcra 30/3600s burst=10 local"),
        /// Sign-in attempts allowed per account and client address; beyond it, that address
        /// gets 429 for that account until the quota refills. The right password gives it back.
        failed_logins_per_account_address: PolicySpec = policy("gcra 10/900s burst=10 local"),
        /// Sign-in attempts allowed per client address (IPv6 addresses by /64).
        failed_logins_per_ip: PolicySpec = policy("gcra 100/900s burst=30 local"),
        /// The URL clients reach Pier at: the issuer (`iss`) of its access tokens, whose
        /// audience is this plus `/v1` (default: http://<listen>).
        issuer: Option<BaseUrl> = None,
        /// How long an OAuth access token lives, in seconds.
        access_token_ttl_secs: u64 = 900,
        /// How long a user's consent to an OAuth client lasts: its refresh tokens stop working
        /// this long after it was given, however often they rotate, in seconds.
        refresh_token_ttl_secs: u64 = 30 * 24 * 3600,
        /// A new token-signing key is made when the newest is this old, in seconds.
        signing_key_rotation_secs: u64 = 30 * 24 * 3600,
        /// How long an invitation link (`pier users create --invite`) works, in seconds.
        invitation_ttl_secs: u64 = 7 * 24 * 3600,
    }
}

/// A policy given as text, for defaults.
fn policy(text: &str) -> PolicySpec {
    text.parse()
        .unwrap_or_else(|e| unreachable!("default policy `{text}`: {e}"))
}

settings! {
    /// Rate limits: the protection of Pier's own API, and the limiter's stores. With
    /// `redis_url` set, limits are shared by every node through Redis.
    RateLimitSettings in "rate_limits" {
        /// Limit Pier's own API: per API key, and per client address on public routes and
        /// refused credentials.
        enabled: bool = true,
        /// The policy per API key, `ALGORITHM LIMIT/PERIOD [burst=N] [FAILURE_MODE]`.
        per_api_key: PolicySpec = policy("gcra 60000/60s burst=2000 local"),
        /// The policy per client address (IPv6 addresses by /64).
        per_client_ip: PolicySpec = policy("gcra 1200/60s burst=200 local"),
        /// Proxies (addresses or CIDR blocks, comma-separated) whose X-Forwarded-For is
        /// believed; empty: the client is the socket's peer.
        trusted_proxies: ProxyList = ProxyList::default(),
        /// How long a decision waits for Redis before the policy's failure_mode decides, in
        /// milliseconds.
        redis_timeout_ms: u64 = 50,
        /// Redis is a Redis Cluster (through a cluster-aware proxy): send every decision on its
        /// own, touching one slot, instead of coalescing concurrent decisions into one call.
        redis_cluster: bool = false,
        /// The most keys the in-process store holds (about 150 bytes each); when full, the key
        /// nearest to a full quota is forgotten first.
        local_max_keys: u64 = 1_000_000,
    }
}

settings! {
    /// Short links: their addresses, the redirect cache, click recording, guesses and misses,
    /// and the quarantine of freed slugs.
    LinkSettings in "links" {
        /// What short URLs start with, e.g. https://s.example (default: http://<listen>).
        base_url: Option<BaseUrl> = None,
        /// Slugs the redirect cache holds at most.
        cache_capacity: u64 = 100_000,
        /// How long a link stays cached, in seconds; changes reach every node's cache at once,
        /// so this only bounds what a missed notification leaves.
        cache_ttl_secs: u64 = 300,
        /// How long a slug that matches no link is remembered as unknown, in seconds.
        unknown_ttl_secs: u64 = 5,
        /// How often buffered clicks are written, in milliseconds.
        click_flush_ms: u64 = 1000,
        /// Links whose clicks one write carries at most; a buffer holding this many is written
        /// without waiting for the interval.
        click_batch_links: u64 = 10_000,
        /// Links the click buffer holds at most; clicks of further links are dropped (and
        /// counted in pier_links_clicks_dropped_total).
        click_buffer_links: u64 = 100_000,
        /// The limit of guesses at a link's password, per link and client address.
        password_guesses: PolicySpec = policy("gcra 10/300s burst=5 local"),
        /// The limit of guesses at a link's password, per link from every address together.
        password_guesses_per_link: PolicySpec = policy("gcra 60/300s burst=30 local"),
        /// The limit of redirects to slugs that match no link, per client address (IPv6
        /// addresses by /64). Beyond it, slugs not in the node's cache answer 429 without a
        /// database read; known slugs the cache holds always redirect. Shared through Redis
        /// when redis_url is set, else counted per node.
        redirect_misses: PolicySpec = policy("gcra 60/60s burst=60 local"),
        /// How long the slug of a deleted or renamed link stays reserved to its workspace, in
        /// seconds, so a printed short link cannot be taken over by another workspace (0: not
        /// at all).
        slug_quarantine_secs: ZeroOrMore = ZeroOrMore(30 * 24 * 3600),
        /// A MaxMind-format database (GeoLite2/GeoIP2 Country or City) to count clicks by
        /// visitor country; none by default.
        geoip_database: Option<PathBuf> = None,
    }
}

settings! {
    /// Feature flags: the largest flagd document an import takes, and each node's cache of
    /// the flags it evaluates.
    FlagSettings in "flags" {
        /// The largest flagd document `PUT /v1/flags/document` takes, in bytes of compact JSON
        /// (422 beyond; bodies over 64 MiB are 413 whatever this says).
        max_document_bytes: u64 = 1024 * 1024,
        /// Workspaces whose flags a node holds in memory at most.
        cache_capacity: u64 = 10_000,
        /// How long a workspace's flags stay cached, in seconds; changes reach every node's
        /// cache at once, so this only bounds what a missed notification leaves.
        cache_ttl_secs: u64 = 300,
        /// Change streams (`GET /v1/flags/stream`) a node keeps open at most (503 beyond).
        max_streams: u64 = 10_000,
        /// Change streams a node keeps open at most for one workspace, so that one tenant
        /// cannot take them all.
        max_streams_per_workspace: u64 = 100,
        /// Seconds a change stream lasts; its client then reconnects with `Last-Event-ID` and
        /// authenticates again, so a revoked key stops receiving changes within this time.
        stream_max_secs: u64 = 300,
        /// Bytes of bulk OFREP answers a node keeps, by flags and context, for clients that
        /// poll again (an unchanged poll then costs a lookup); 0 keeps none.
        answer_cache_bytes: u64 = 32 * 1024 * 1024,
    }
}

settings! {
    /// Webhook delivery: timeouts, the retry schedule and when endpoints are disabled.
    WebhookSettings in "webhooks" {
        /// Seconds to wait for a receiver's connection.
        connect_timeout_secs: u64 = 5,
        /// Seconds a whole delivery request may take, response included.
        timeout_secs: u64 = 15,
        /// The delay before each attempt, the first usually 0: one attempt per entry, each
        /// delay spread by 10% either way.
        retry_schedule: pier_webhooks::RetrySchedule = pier_webhooks::RetrySchedule::standard(),
        /// The longest `Retry-After` (on 429 and 503) honoured, in seconds.
        max_retry_after_secs: u64 = 3600,
        /// An endpoint whose attempts all fail for this many seconds is disabled.
        disable_after_secs: u64 = 5 * 24 * 3600,
        /// Seconds a rotated-out signing secret keeps signing.
        secret_overlap_secs: u64 = 24 * 3600,
        /// The largest event payload accepted, as JSON text (413 beyond).
        max_payload_bytes: u64 = 256 * 1024,
        /// Deliveries this node sends at once. Each holds its event's payload while in flight.
        concurrency: u64 = 400,
        /// Seconds events, their deliveries and attempts are kept once every delivery ended;
        /// flag audit entries and ended flag schedules are kept as long.
        retention_secs: u64 = 30 * 24 * 3600,
    }
}

/// The section of named policies: `[rate_limit_policies]` with `name = "gcra 100/60s"` lines,
/// offered to every workspace by the decision API. File only (names are free, so they have no
/// flags or variables).
const POLICIES_SECTION: &str = "rate_limit_policies";

/// The validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub server: ServerSettings,
    pub jobs: JobsSettings,
    pub auth: AuthSettings,
    pub rate_limits: RateLimitSettings,
    pub links: LinkSettings,
    pub webhooks: WebhookSettings,
    pub flags: FlagSettings,
    /// `[rate_limit_policies]`, by name.
    pub rate_limit_policies: Vec<(String, PolicySpec)>,
}

/// A configuration error: one line that names the setting and how it can be given.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// Where settings come from beyond the defaults: the file, then `values` in order (the command
/// line lists the environment's before its flags', so flags win).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    /// `(setting path, text)`, e.g. `("listen", "127.0.0.1:0")`.
    pub values: Vec<(String, String)>,
}

impl Sources {
    #[must_use]
    pub fn set(mut self, path: &str, text: impl Into<String>) -> Self {
        self.values.push((path.to_owned(), text.into()));
        self
    }
}

impl Config {
    /// Every setting of every section.
    pub fn keys() -> impl Iterator<Item = &'static Key> {
        ServerSettings::KEYS
            .iter()
            .chain(JobsSettings::KEYS)
            .chain(AuthSettings::KEYS)
            .chain(RateLimitSettings::KEYS)
            .chain(LinkSettings::KEYS)
            .chain(WebhookSettings::KEYS)
            .chain(FlagSettings::KEYS)
    }

    /// Layers the sources over the defaults and validates the result.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        let (file, settings) = read_file(sources.file.as_deref())?;
        for (path, text) in settings {
            config
                .set(&path, &text)
                .map_err(|e| ConfigError(format!("config file {file}: {}", e.0)))?;
        }
        for (path, text) in &sources.values {
            config.set(path, text)?;
        }
        Ok(config)
    }

    fn set(&mut self, path: &str, text: &str) -> Result<(), ConfigError> {
        let (section, name) = path.split_once('.').unwrap_or(("", path));
        let applied = match section {
            "" => self.server.set(name, text),
            "jobs" => self.jobs.set(name, text),
            "auth" => self.auth.set(name, text),
            "rate_limits" => self.rate_limits.set(name, text),
            "links" => self.links.set(name, text),
            "webhooks" => self.webhooks.set(name, text),
            "flags" => self.flags.set(name, text),
            POLICIES_SECTION => return self.set_policy(name, text),
            _ => None,
        };
        let key = Self::keys().find(|k| k.path() == path);
        match (applied, key) {
            (Some(Ok(())), _) => Ok(()),
            (Some(Err(problem)), Some(key)) => {
                Err(ConfigError(format!("{}: {problem}", key.described())))
            }
            _ => Err(ConfigError(format!("unknown setting `{path}`"))),
        }
    }

    fn set_policy(&mut self, name: &str, text: &str) -> Result<(), ConfigError> {
        let problem = |p: String| ConfigError(format!("{POLICIES_SECTION}.{name}: {p}"));
        pier_ratelimit::check_name(name).map_err(|e| problem(format!("the name {e}")))?;
        let spec: PolicySpec = text
            .parse()
            .map_err(|e: pier_ratelimit::SpecError| problem(e.to_string()))?;
        self.rate_limit_policies.retain(|(n, _)| n != name);
        self.rate_limit_policies.push((name.to_owned(), spec));
        self.rate_limit_policies.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(())
    }

    /// The database, by default a SQLite file in the data directory.
    pub fn database_url(&self) -> DatabaseUrl {
        self.server
            .database_url
            .clone()
            .unwrap_or_else(|| DatabaseUrl::sqlite_in(&self.server.data_dir))
    }

    /// The effective configuration as TOML, secrets redacted, every section included.
    pub fn to_toml(&self) -> String {
        let mut table = self.server.shown();
        table.insert(
            "database_url".to_owned(),
            self.database_url().redacted().into(),
        );
        table.insert("jobs".to_owned(), self.jobs.shown().into());
        table.insert("auth".to_owned(), self.auth.shown().into());
        table.insert("rate_limits".to_owned(), self.rate_limits.shown().into());
        table.insert("links".to_owned(), self.links.shown().into());
        table.insert("webhooks".to_owned(), self.webhooks.shown().into());
        table.insert("flags".to_owned(), self.flags.shown().into());
        let policies: toml::Table = self
            .rate_limit_policies
            .iter()
            .map(|(name, spec)| (name.clone(), spec.to_string().into()))
            .collect();
        table.insert(POLICIES_SECTION.to_owned(), policies.into());
        toml::to_string(&table).unwrap_or_default()
    }
}

/// The file's name and its settings as `(path, text)`; every value is read by the same parser
/// as a flag.
fn read_file(explicit: Option<&Path>) -> Result<(String, Vec<(String, String)>), ConfigError> {
    let default = Path::new("pier.toml");
    let path = match explicit {
        Some(path) => path,
        None if default.exists() => default,
        None => return Ok((String::new(), Vec::new())),
    };
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "config (--config / PIER_CONFIG): cannot read {shown}: {e}"
        ))
    })?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| ConfigError(format!("config file {shown}: {}", e.message())))?;
    let mut settings = Vec::new();
    for (name, value) in table {
        match value {
            toml::Value::Table(section) => {
                for (key, value) in section {
                    settings.push((format!("{name}.{key}"), text_of(&value, &shown)?));
                }
            }
            value => settings.push((name, text_of(&value, &shown)?)),
        }
    }
    Ok((shown.to_string(), settings))
}

fn text_of(value: &toml::Value, file: &std::path::Display<'_>) -> Result<String, ConfigError> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(ConfigError(format!(
            "config file {file}: `{other}` is not a value a setting takes"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_from_the_setting() {
        let key = JobsSettings::KEYS
            .iter()
            .find(|k| k.name == "claim_budget_bytes")
            .expect("key");
        assert_eq!(key.flag(), "jobs-claim-budget-bytes");
        assert_eq!(key.env(), "PIER_JOBS_CLAIM_BUDGET_BYTES");
        let log = Config::keys().find(|k| k.name == "log_level").expect("key");
        assert_eq!(log.env(), "PIER_LOG");
    }

    #[test]
    fn later_sources_win_and_errors_name_the_setting() {
        let config = Config::load(
            &Sources::default()
                .set("listen", "127.0.0.1:1")
                .set("listen", "127.0.0.1:2")
                .set("jobs.claim_budget_bytes", "10"),
        )
        .expect("valid");
        assert_eq!(config.server.listen.port(), 2);
        assert_eq!(config.jobs.claim_budget_bytes, 10);
        let err = Config::load(&Sources::default().set("jobs.default_lease_secs", "0"))
            .expect_err("zero");
        assert_eq!(
            err.to_string(),
            "invalid configuration: jobs.default_lease_secs (--jobs-default-lease-secs / \
             PIER_JOBS_DEFAULT_LEASE_SECS): must be greater than zero"
        );
        assert!(Config::load(&Sources::default().set("jobs.nope", "1")).is_err());
        // A value the node could not use (more connection slots than a semaphore holds) is
        // refused at load rather than crashing the API server after start.
        let err = Config::load(&Sources::default().set("max_connections", "4611686018427387904"))
            .expect_err("too many");
        assert!(
            err.to_string().ends_with("must be at most 1000000000000"),
            "{err}"
        );
        let err =
            Config::load(&Sources::default().set("shutdown_drain_secs", "18446744073709551615"))
                .expect_err("too long");
        assert!(
            err.to_string().ends_with("must be at most 1000000000000"),
            "{err}"
        );
    }

    #[test]
    fn rate_limit_policies_are_read_checked_and_shown() {
        let config = Config::load(
            &Sources::default()
                .set("rate_limits.per_api_key", "fixed_window 10/1m fail_closed")
                .set("rate_limits.trusted_proxies", "10.0.0.0/8, 192.0.2.7")
                .set("rate_limit_policies.login", "gcra 5/60s"),
        )
        .expect("valid");
        assert_eq!(
            config.rate_limits.per_api_key.to_string(),
            "fixed_window 10/60s fail_closed"
        );
        assert_eq!(config.rate_limits.trusted_proxies.0.len(), 2);
        assert_eq!(config.rate_limit_policies[0].0, "login");
        let shown = config.to_toml();
        assert!(shown.contains("login = \"gcra 5/60s local\""), "{shown}");
        let err = |path: &str, text: &str| {
            Config::load(&Sources::default().set(path, text))
                .expect_err(text)
                .to_string()
        };
        assert!(err("rate_limits.per_client_ip", "gcra 0/1s").contains("limit must be"));
        assert!(err("rate_limits.trusted_proxies", "10.0.0.0/33").contains("CIDR"));
        assert!(err("rate_limit_policies.bad name", "gcra 1/1s").contains("the name must be"));
        assert!(err("rate_limit_policies.ok", "gcra").contains("ALGORITHM LIMIT/PERIOD"));
    }

    #[test]
    fn cors_origins_are_exact_origins() {
        let config = Config::load(&Sources::default().set(
            "cors_allowed_origins",
            "https://app.example, http://localhost:5173/",
        ))
        .expect("valid");
        assert_eq!(
            config.server.cors_allowed_origins.0,
            ["https://app.example", "http://localhost:5173"]
        );
        assert!(Config::default().server.cors_allowed_origins.0.is_empty());
        for bad in [
            "*",
            "null",
            "https://*.example",
            "https://app.example/path",
            "https://app.example?x=1",
            "ftp://app.example",
            "https://user@app.example",
        ] {
            let err = Config::load(&Sources::default().set("cors_allowed_origins", bad));
            assert!(err.is_err(), "{bad} must be refused");
        }
    }
}
