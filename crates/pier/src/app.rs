//! Building and running the service. `main` calls [`launch`]; tests call [`Application::build`]
//! with their own clock and port 0, then [`Application::run`] with their own shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pier_api::{
    ApiProtection, AppState, AppStateParts, FailedLogins, FlagsParts, HttpSettings, IdentityParts,
    JobsParts, LinksParts, PasswordGuesses, RateLimitsParts, Redis,
};
use pier_auth::oauth::{GrantLifetimes, OAuthStore};
use pier_auth::{AccessTokens, Bootstrap, KeySchedule, SessionLimits, SessionStore, SigningKeys};
use pier_core::{Clock, CursorCodec, HashGate, SecretUrl, SystemClock};
use pier_db::{Db, Relay};
use pier_flags::{FlagSchedules, FlagStore};
use pier_idempotency::IdempotencyStore;
use pier_jobs::{
    ClaimTarget, JobStore, Notifier, PoolOptions, Retention, WaiterLimits, WorkerPool,
};
use pier_links::geo::Countries;
use pier_links::{ClickBuffer, ClickSettings, LinkStore, Redirects, SharedTier};
use pier_ratelimit::{Limiter, Policy, RedisStore};
use pier_webhooks::guard::Guard;
use pier_webhooks::{Deliverer, Dispatcher, WebhookStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{
    Config, FlagSettings, JobsSettings, LinkSettings, RateLimitSettings, WebhookSettings,
};

/// How long a scrape waits for the job counts before answering without fresh ones.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often expired idempotency records and old webhook events are deleted.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(600);
/// How long an authorization code may wait for its exchange (RFC 6749 §4.1.2: short).
const AUTHORIZATION_CODE_TTL: Duration = Duration::from_secs(60);
/// How many scheduled flag changes a node applies at once.
const FLAG_SCHEDULE_CONCURRENCY: usize = 4;
/// How often a node rereads the token signing keys, making a new one when rotation is due.
const SIGNING_KEYS_EVERY: Duration = Duration::from_secs(60);

/// A built service: database migrated, first start bootstrapped, listeners bound.
#[derive(Debug)]
pub struct Application {
    config: Config,
    db: Db,
    state: AppState,
    jobs: JobStore,
    /// None on a worker node, which serves no API.
    listener: Option<TcpListener>,
    admin_listener: TcpListener,
    bootstrap: Option<Bootstrap>,
    background_upkeep: bool,
}

/// Every crate's migrations; the runner orders them by version.
pub const SCHEMA: &[&[pier_db::Migration]] = &[
    pier_db::MIGRATIONS,
    pier_auth::MIGRATIONS,
    pier_jobs::MIGRATIONS,
    pier_idempotency::MIGRATIONS,
    pier_ratelimit::MIGRATIONS,
    pier_links::MIGRATIONS,
    pier_webhooks::MIGRATIONS,
    pier_flags::MIGRATIONS,
];

/// Opens the configured database and applies pending migrations.
pub async fn open_database(config: &Config) -> anyhow::Result<Db> {
    let url = config.database_url().redacted();
    let db = config
        .database_url()
        .connect(u32::try_from(config.server.db_max_connections).unwrap_or(u32::MAX))
        .await
        .with_context(|| format!("cannot open the database at {url}"))?;
    db.migrate(SCHEMA)
        .await
        .with_context(|| format!("cannot migrate the database at {url}"))?;
    Ok(db)
}

/// The command connection (it reconnects by itself) and the client, which opens the links'
/// pub/sub connection.
async fn connect_redis(url: &SecretUrl) -> anyhow::Result<(redis::Client, Redis)> {
    // The driver's errors never get the URL itself, only its redacted form.
    let shown = url.redacted();
    let client =
        redis::Client::open(url.expose()).with_context(|| format!("bad Redis URL {shown}"))?;
    let manager = tokio::time::timeout(Duration::from_secs(5), client.get_connection_manager())
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("cannot connect to Redis at {shown}"))?;
    Ok((client, Redis(manager)))
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

fn notifier(jobs: &JobsSettings) -> Notifier {
    let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    Notifier::new(WaiterLimits {
        per_workspace: size(jobs.max_waiting_claims_per_workspace),
        per_node: size(jobs.max_waiting_claims),
    })
}

fn retention(jobs: &JobsSettings) -> Retention {
    Retention {
        completed: Duration::from_secs(jobs.completed_retention_secs),
        cancelled: Duration::from_secs(jobs.cancelled_retention_secs),
        discarded: Duration::from_secs(jobs.discarded_retention_secs),
    }
}

/// The limiter: on Redis when one is configured (shared by every node), else in process.
fn limiter(settings: &RateLimitSettings, clock: Arc<dyn Clock>, redis: Option<&Redis>) -> Limiter {
    let max_keys = usize::try_from(settings.local_max_keys).unwrap_or(usize::MAX);
    let limiter = Limiter::local(clock, max_keys);
    let Some(redis) = redis else { return limiter };
    let store = if settings.redis_cluster {
        RedisStore::one_call_per_decision(redis.0.clone())
    } else {
        RedisStore::new(redis.0.clone())
    };
    limiter.with_redis(store, Duration::from_millis(settings.redis_timeout_ms))
}

fn protection(settings: &RateLimitSettings) -> ApiProtection {
    if !settings.enabled {
        return ApiProtection::default();
    }
    ApiProtection {
        per_key: Some(Policy::server("per-key", settings.per_api_key)),
        per_ip: Some(Policy::server("per-ip", settings.per_client_ip)),
        trusted_proxies: settings.trusted_proxies.0.clone(),
    }
}

/// Flags, their history kept as long as webhook events (`history`).
fn flags(settings: &FlagSettings, history: Duration, db: &Db, clock: Arc<dyn Clock>) -> FlagStore {
    let ttl = Duration::from_secs(settings.cache_ttl_secs);
    let cache = pier_cache::Settings {
        capacity: settings.cache_capacity,
        ttl,
        negative_ttl: ttl,
        jitter: 0.2,
    };
    FlagStore::new(db.clone(), clock, cache).with_history(history)
}

fn links(
    settings: &LinkSettings,
    db: &Db,
    clock: Arc<dyn Clock>,
    redis: Option<(&redis::Client, &Redis)>,
) -> LinkStore {
    let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let cache = pier_cache::Settings {
        capacity: settings.cache_capacity,
        ttl: Duration::from_secs(settings.cache_ttl_secs),
        negative_ttl: Duration::from_secs(settings.unknown_ttl_secs.min(settings.cache_ttl_secs)),
        jitter: 0.2,
    };
    let clicks = ClickBuffer::new(ClickSettings {
        max_links: size(settings.click_buffer_links),
        batch_links: size(settings.click_batch_links),
        flush_every: Duration::from_millis(settings.click_flush_ms),
    });
    let mut redirects = Redirects::new(db.clone(), clock.clone(), cache, clicks);
    if let Some((client, Redis(conn))) = redis {
        let tier = SharedTier::new(conn.clone(), client.clone(), cache.ttl, cache.negative_ttl);
        redirects = redirects.with_shared(tier);
    }
    LinkStore::new(db.clone(), clock, redirects)
        .with_slug_quarantine(Duration::from_secs(settings.slug_quarantine_secs.0))
}

fn webhook_settings(settings: &WebhookSettings) -> pier_webhooks::Settings {
    pier_webhooks::Settings {
        schedule: settings.retry_schedule.clone(),
        connect_timeout: Duration::from_secs(settings.connect_timeout_secs),
        timeout: Duration::from_secs(settings.timeout_secs),
        max_retry_after: Duration::from_secs(settings.max_retry_after_secs),
        disable_after: Duration::from_secs(settings.disable_after_secs),
        secret_overlap: Duration::from_secs(settings.secret_overlap_secs),
        max_payload_bytes: usize::try_from(settings.max_payload_bytes).unwrap_or(usize::MAX),
    }
}

/// The process-wide metrics recorder, installed once even when tests build many apps.
fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let buckets = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        keep_up(handle.clone());
        metrics::gauge!("pier_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        register_rare_counters();
        handle
    })
}

/// How often histogram samples are folded into their buckets.
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// The recorder keeps each histogram sample until upkeep folds it into the buckets, and only a
/// scrape of `/metrics` would do that otherwise: unscraped, a node would grow by about 20 bytes
/// a request. A thread rather than a task, because the recorder outlives any one runtime. Every
/// second, so one pass is a second's samples: short enough not to stall the requests it shares
/// a core with.
fn keep_up(handle: PrometheusHandle) {
    let started = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(METRICS_UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(err) = started {
        tracing::warn!(error = %err, "could not start the metrics upkeep; samples wait for a scrape");
    }
}

/// Counters of rare events, registered at zero: a series that first appears with its first
/// event hides that event from `increase()`, and so from the alerts.
fn register_rare_counters() {
    let queue = pier_webhooks::queue();
    for name in ["pier_jobs_discarded_total", "pier_jobs_rescued_total"] {
        metrics::counter!(name, "queue" => queue.as_str().to_owned()).absolute(0);
    }
    for reason in ["gone", "failing"] {
        metrics::counter!("pier_webhook_endpoints_disabled_total", "reason" => reason).absolute(0);
    }
    for error in ["failed", "timeout"] {
        metrics::counter!("pier_ratelimit_store_errors_total", "error" => error).absolute(0);
    }
    for mode in ["fail_open", "fail_closed", "local"] {
        metrics::counter!("pier_ratelimit_fallback_decisions_total", "mode" => mode).absolute(0);
    }
    for reason in ["queue_full", "export_failed"] {
        metrics::counter!("pier_trace_spans_dropped_total", "reason" => reason).absolute(0);
    }
    metrics::counter!("pier_trace_spans_exported_total").absolute(0);
    metrics::counter!("pier_auth_key_uses_dropped_total").absolute(0);
    metrics::counter!("pier_links_clicks_dropped_total").absolute(0);
}

impl Application {
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        // First: handles registered from here on (rate-limit policies') reach the recorder.
        metrics();
        let db = open_database(&config).await?;
        let chosen = config
            .server
            .bootstrap_api_key
            .as_ref()
            .map(|k| k.expose().clone());
        let bootstrap = pier_auth::bootstrap(&db, clock.clone(), chosen)
            .await
            .context("cannot create the first workspace")?;
        let cursor_key = pier_db::server_secret(&db, "cursor_signing_key")
            .await
            .context("cannot load the cursor signing key")?;
        let visitor_key = pier_db::server_secret(&db, "visitor_hash_key")
            .await
            .context("cannot load the visitor hash key")?;
        let (redis_client, redis) = match &config.server.redis_url {
            Some(url) => {
                let (client, redis) = connect_redis(url).await?;
                (Some(client), Some(redis))
            }
            None => (None, None),
        };
        let master_key = crate::secret_key::load(&config)?;
        let jobs = JobStore::new(db.clone(), clock.clone(), notifier(&config.jobs))
            .with_default_lease(Duration::from_secs(config.jobs.default_lease_secs));
        let limiter = Arc::new(limiter(&config.rate_limits, clock.clone(), redis.as_ref()));
        let listener = match config.server.role.serves_api() {
            true => Some(bind(config.server.listen, "the API").await?),
            false => None,
        };
        let admin_listener = bind(config.server.admin_listen, "metrics").await?;
        // Short URLs name the bound port when none is configured (`listen` may say port 0).
        let short_link_base = match (&config.links.base_url, &listener) {
            (Some(base), _) => base.0.clone(),
            (None, Some(listener)) => format!("http://{}", listener.local_addr()?),
            (None, None) => format!("http://{}", config.server.listen),
        };
        let issuer = match (&config.auth.issuer, &listener) {
            (Some(base), _) => base.0.clone(),
            (None, Some(listener)) => format!("http://{}", listener.local_addr()?),
            (None, None) => format!("http://{}", config.server.listen),
        };
        let access_ttl = Duration::from_secs(config.auth.access_token_ttl_secs);
        let signing_keys = SigningKeys::load(
            db.clone(),
            clock.clone(),
            master_key.derive("auth/token-signing-keys"),
            KeySchedule {
                rotate_after: Duration::from_secs(config.auth.signing_key_rotation_secs),
                verify_for: access_ttl + pier_auth::LEEWAY,
            },
        )
        .await
        .context("cannot load the token signing keys")?;
        let webhooks = WebhookStore::new(
            db.clone(),
            clock.clone(),
            jobs.clone(),
            master_key.derive("webhooks/signing-secrets"),
            webhook_settings(&config.webhooks),
            Guard::new(config.server.allow_private_webhook_targets),
        );
        // Capabilities announce their changes through the webhooks' outbox.
        let outbox: Arc<dyn pier_db::Outbox> = Arc::new(webhooks.clone());
        jobs.announce_discards(&outbox);
        let history = Duration::from_secs(config.webhooks.retention_secs);
        let flags = flags(&config.flags, history, &db, clock.clone()).with_outbox(outbox.clone());
        let links = links(
            &config.links,
            &db,
            clock.clone(),
            redis_client.as_ref().zip(redis.as_ref()),
        )
        .with_outbox(outbox);
        let countries = match &config.links.geoip_database {
            Some(path) => Some(Arc::new(Countries::open(path).map_err(|e| {
                anyhow::anyhow!("cannot read the GeoIP database at {}: {e}", path.display())
            })?)),
            None => None,
        };
        let hashing = HashGate::for_this_machine();
        let oauth = OAuthStore::new(
            db.clone(),
            clock.clone(),
            GrantLifetimes {
                code: AUTHORIZATION_CODE_TTL,
                access: access_ttl,
                refresh: Duration::from_secs(config.auth.refresh_token_ttl_secs),
            },
        );
        let state = AppState::new(AppStateParts {
            db: db.clone(),
            clock: clock.clone(),
            cursors: CursorCodec::new(cursor_key),
            redis,
            http: HttpSettings {
                body_limit: usize::try_from(config.server.body_limit_bytes).unwrap_or(usize::MAX),
                cors_allowed_origins: config
                    .server
                    .cors_allowed_origins
                    .0
                    .iter()
                    .filter_map(|origin| axum::http::HeaderValue::from_str(origin).ok())
                    .collect(),
                request_timeout: Duration::from_secs(config.server.request_timeout_secs),
                protection: protection(&config.rate_limits),
            },
            idempotency: IdempotencyStore::new(db.clone(), clock.clone(), &master_key),
            limiter,
            identity: IdentityParts {
                key_cache_ttl: Duration::from_secs(config.auth.key_cache_ttl_secs),
                sessions: SessionStore::new(
                    db.clone(),
                    clock.clone(),
                    SessionLimits {
                        idle: Duration::from_secs(config.auth.session_idle_secs),
                        absolute: Duration::from_secs(config.auth.session_absolute_secs),
                    },
                    oauth.clone(),
                    hashing.clone(),
                ),
                failed_logins: FailedLogins {
                    per_ip: Policy::server("login-ip", config.auth.failed_logins_per_ip),
                    per_account_address: Policy::server(
                        "login-account-address",
                        config.auth.failed_logins_per_account_address,
                    ),
                    per_account: Policy::server(
                        "login-account",
                        config.auth.failed_logins_per_account,
                    ),
                },
                hashing: hashing.clone(),
                cookie_secure: config
                    .auth
                    .cookie_secure
                    .unwrap_or(!config.server.listen.ip().is_loopback()),
                oauth,
                access_tokens: AccessTokens::new(signing_keys, clock.clone(), &issuer, access_ttl),
            },
            jobs: JobsParts {
                store: jobs.clone(),
                claim_budget_bytes: config.jobs.claim_budget_bytes,
                max_workflow_steps: usize::try_from(config.jobs.max_workflow_steps)
                    .unwrap_or(usize::MAX),
            },
            links: LinksParts {
                store: links,
                short_link_base,
                password_guesses: PasswordGuesses {
                    per_link_address: Policy::server(
                        "link-password",
                        config.links.password_guesses,
                    ),
                    per_link: Policy::server(
                        "link-password-any",
                        config.links.password_guesses_per_link,
                    ),
                },
                redirect_misses: Policy::server("redirect-misses", config.links.redirect_misses),
                visitor_key,
                countries,
                hashing,
            },
            rate_limits: RateLimitsParts {
                configured: config.rate_limit_policies.clone(),
            },
            webhooks,
            flags: FlagsParts {
                schedules: FlagSchedules::new(flags.clone(), jobs.clone()),
                store: flags,
                max_document_bytes: usize::try_from(config.flags.max_document_bytes)
                    .unwrap_or(usize::MAX),
                max_streams: usize::try_from(config.flags.max_streams).unwrap_or(usize::MAX),
                max_streams_per_workspace: usize::try_from(config.flags.max_streams_per_workspace)
                    .unwrap_or(usize::MAX),
                stream_max_age: Duration::from_secs(config.flags.stream_max_secs),
                answer_cache_bytes: config.flags.answer_cache_bytes,
            },
        });
        Ok(Self {
            config,
            db,
            state,
            jobs,
            listener,
            admin_listener,
            bootstrap,
            background_upkeep: true,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .unwrap_or(self.config.server.listen)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .unwrap_or(self.config.server.admin_listen)
    }

    /// Leaves lease rescue, promotion and pruning to other nodes (or, in tests, to the test).
    #[must_use]
    pub fn without_background_upkeep(mut self) -> Self {
        self.background_upkeep = false;
        self
    }

    /// What this start created, if it was the database's first.
    pub fn bootstrap(&self) -> Option<&Bootstrap> {
        self.bootstrap.as_ref()
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The job queue, for registering in-process workers.
    pub fn jobs(&self) -> &JobStore {
        &self.jobs
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
    /// (bounded by `shutdown_timeout`), stops background work and closes the database.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let role = self.config.server.role;
        let background = role.runs_background_work();
        let deliveries = background
            .then(|| self.deliveries(stop_rx.clone()))
            .transpose()?;
        let flag_schedules = background
            .then(|| self.flag_schedules(stop_rx.clone()))
            .transpose()?;
        let server = &self.config.server;
        let limits = crate::server::Limits {
            header_read_timeout: Duration::from_secs(server.header_read_timeout_secs),
            max_connections: usize::try_from(server.max_connections).unwrap_or(usize::MAX),
            grace: Duration::from_secs(server.shutdown_timeout_secs),
        };
        let signing_keys = self.listener.is_some().then(|| {
            tokio::spawn(signing_key_upkeep(
                self.state.identity().access_tokens().keys().clone(),
                stop_rx.clone(),
            ))
        });
        let mut api = self.listener.map(|listener| {
            tokio::spawn(crate::server::serve(
                listener,
                pier_api::router(self.state.clone()),
                Some(self.state.clone()),
                limits,
                stopped(stop_rx.clone()),
            ))
        });
        let admin = tokio::spawn(crate::server::serve(
            self.admin_listener,
            admin_router(&self.state, &self.jobs),
            None,
            limits,
            stopped(stop_rx.clone()),
        ));
        let maintenance = background.then(|| {
            tokio::spawn(maintenance(
                self.state.clone(),
                Duration::from_secs(self.config.webhooks.retention_secs),
                stop_rx.clone(),
            ))
        });
        let key_uses = {
            let keys = self.state.identity().api_keys().clone();
            let stop = stop_rx.clone();
            tokio::spawn(async move { keys.record_uses(stop).await })
        };
        let clicks = {
            let (redirects, db) = (
                self.state.links().store().redirects().clone(),
                self.db.clone(),
            );
            let stop = stop_rx.clone();
            tokio::spawn(async move { redirects.clicks().run(&db, stop).await })
        };
        let job_upkeep = (background && self.background_upkeep).then(|| {
            tokio::spawn(
                self.jobs
                    .clone()
                    .maintain(retention(&self.config.jobs), stop_rx),
            )
        });
        let relay = Relay::default();
        let relay = self.jobs.notifier().listen(relay);
        let relay = self.state.identity().api_keys().listen(relay);
        let relay = self.state.identity().oauth().listen(relay);
        let relay = self.state.webhooks().store().listen(relay);
        let relay = self.state.rate_limits().policies().listen(relay);
        let relay = self.state.flags().store().listen(relay);
        let relay = self
            .state
            .links()
            .store()
            .redirects()
            .listen(relay)
            .spawn(&self.db);
        let link_changes = self
            .state
            .links()
            .store()
            .redirects()
            .spawn_shared_listener();

        let api_stopped = async {
            match &mut api {
                Some(api) => api.await,
                None => std::future::pending().await,
            }
        };
        let stopped_early = tokio::select! {
            () = shutdown => None,
            result = api_stopped => Some(result),
        };
        // An API server that stopped on its own still winds down like a shutdown: background
        // work stops and what its requests noted is written, then its failure is returned.
        let mut failure = stopped_early.map(|result| {
            api = None;
            match result {
                Err(err) => anyhow::Error::new(err).context("the API server panicked"),
                Ok(()) => anyhow::anyhow!("the API server stopped unexpectedly"),
            }
        });
        if failure.is_none() {
            // Readiness fails first and the node keeps serving a while, so load balancers take
            // it out of rotation before connections are refused.
            self.state.start_draining();
            let drain = Duration::from_secs(self.config.server.shutdown_drain_secs.0);
            if api.is_some() && !drain.is_zero() {
                tracing::info!(drain_secs = drain.as_secs(), "shutting down: draining");
                tokio::time::sleep(drain).await;
            }
        }
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop_tx.send(true);
        if let Some(api) = api
            && let Err(err) = api.await
        {
            failure = Some(anyhow::Error::new(err).context("the API server panicked"));
        }
        let _ = admin.await;
        if let Some(maintenance) = maintenance {
            let _ = maintenance.await;
        }
        // Requests have finished: write the key uses and clicks they noted, retrying within
        // the shutdown timeout, so a database that blips during a restart loses neither.
        let _ = key_uses.await;
        let _ = clicks.await;
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(self.config.server.shutdown_timeout_secs);
        let keys = self.state.identity().api_keys();
        crate::last_writes::retry_until(deadline, "key uses", || keys.write_uses()).await;
        let redirects = self.state.links().store().redirects();
        crate::last_writes::retry_until(deadline, "clicks", || redirects.flush_clicks()).await;
        // In-flight deliveries get the pool's grace period, then their leases go back.
        if let Some(deliveries) = deliveries {
            let _ = deliveries.await;
        }
        if let Some(schedules) = flag_schedules {
            let _ = schedules.await;
        }
        if let Some(upkeep) = job_upkeep {
            let _ = upkeep.await;
        }
        if let Some(keys) = signing_keys {
            let _ = keys.await;
        }
        if let Some(relay) = relay {
            relay.abort();
        }
        if let Some(listener) = link_changes {
            listener.abort();
        }
        self.db.close().await;
        match failure {
            Some(failure) => Err(failure),
            None => {
                tracing::info!("stopped");
                Ok(())
            }
        }
    }
}

impl Application {
    /// The pool that sends webhook deliveries from Pier's internal queue, for every workspace.
    fn deliveries(&self, stop: watch::Receiver<bool>) -> anyhow::Result<JoinHandle<()>> {
        let target = ClaimTarget::internal(pier_webhooks::queue())
            .context("the webhook queue must be one of Pier's own")?;
        let deliverer = Deliverer::new(
            self.state.webhooks().store().clone(),
            self.state.limiter().clone(),
        )
        .context("cannot build the webhook HTTP client")?;
        let options = PoolOptions {
            concurrency: usize::try_from(self.config.webhooks.concurrency).unwrap_or(usize::MAX),
            ..PoolOptions::default()
        };
        let dispatcher = Dispatcher::new(self.state.webhooks().store().clone());
        Ok(WorkerPool::new(self.jobs.clone(), target, options)
            .register(deliverer)
            .register(dispatcher)
            .spawn(stop))
    }

    /// The pool that applies scheduled flag changes from Pier's internal queue, for every
    /// workspace.
    fn flag_schedules(&self, stop: watch::Receiver<bool>) -> anyhow::Result<JoinHandle<()>> {
        let target = ClaimTarget::internal(pier_flags::schedule::queue())
            .context("the flag schedule queue must be one of Pier's own")?;
        let options = PoolOptions {
            concurrency: FLAG_SCHEDULE_CONCURRENCY,
            ..PoolOptions::default()
        };
        Ok(WorkerPool::new(self.jobs.clone(), target, options)
            .register(self.state.flags().schedules().clone())
            .spawn(stop))
    }
}

/// The admin listener: the probes, and `/metrics`, whose gauges of stored state (job depths,
/// the connection pool), of Redis's reachability and of the process (`process_*`: memory, CPU,
/// file descriptors, as every Prometheus client exports them) are read at each scrape.
fn admin_router(state: &AppState, jobs: &JobStore) -> axum::Router {
    let (db, jobs, probed) = (state.db().clone(), jobs.clone(), state.clone());
    let process = Arc::new(metrics_process::Collector::default());
    process.describe();
    pier_api::probes(state.clone()).route(
        "/metrics",
        axum::routing::get(move || {
            let (db, jobs, probed) = (db.clone(), jobs.clone(), probed.clone());
            let process = process.clone();
            async move {
                db.sample_metrics();
                process.collect();
                pier_api::redis_up(&probed).await;
                match tokio::time::timeout(SAMPLE_TIMEOUT, jobs.sample_metrics()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => tracing::warn!(error = %err, "could not read the job counts"),
                    Err(_) => tracing::warn!("reading the job counts timed out"),
                }
                metrics().render()
            }
        }),
    )
}

/// Deletes expired idempotency records, ended sessions, expired OAuth grants, webhook and flag
/// history past the event retention and ended slug quarantines, every [`MAINTENANCE_EVERY`].
async fn maintenance(state: AppState, retention: Duration, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(MAINTENANCE_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let identity = state.identity();
        pruned(
            "expired idempotency keys",
            state.idempotency().prune().await,
        );
        pruned("ended sessions", identity.sessions().prune().await);
        pruned(
            "expired OAuth grants and codes",
            identity.oauth().prune().await,
        );
        pruned(
            "old webhook events",
            state.webhooks().store().prune(retention).await,
        );
        pruned(
            "old flag changes and schedules",
            state.flags().store().prune().await,
        );
        pruned(
            "ended slug quarantines",
            state.links().store().prune_quarantine().await,
        );
    }
}

/// Logs what one pruning step did.
fn pruned<E: std::fmt::Display>(what: &str, result: Result<u64, E>) {
    match result {
        Ok(0) => {}
        Ok(n) => tracing::debug!(deleted = n, "pruned {what}"),
        Err(err) => tracing::warn!(error = %err, "could not prune {what}"),
    }
}

/// Keeps a node's token signing keys current: it learns of keys other nodes made, makes a new
/// one when rotation is due, and drops those no live token can need.
async fn signing_key_upkeep(keys: SigningKeys, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(SIGNING_KEYS_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(err) = keys.rotate_if_due().await {
            tracing::warn!(error = %err, "could not refresh the token signing keys");
        }
    }
}

/// Builds and runs the service with the wall clock, announcing a first start's key on stdout;
/// on SQLite, only if no other process serves the same file.
pub async fn launch(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let chose_key = config.server.bootstrap_api_key.is_some();
    let _serving = crate::serve_lock::acquire(&config.database_url())?;
    let app = Application::build(config, Arc::new(SystemClock)).await?;
    if let Some(first) = app.bootstrap() {
        announce(first, chose_key);
    }
    tracing::info!(
        listen = %app.local_addr(),
        admin_listen = %app.admin_addr(),
        database = %app.config.database_url().redacted(),
        "pier is ready"
    );
    app.run(shutdown).await
}

fn announce(first: &Bootstrap, chose_key: bool) {
    let ws = &first.workspace;
    if chose_key {
        println!(
            "Created workspace {} ({}) with the owner key from PIER_BOOTSTRAP_API_KEY.",
            ws.id, ws.name
        );
        return;
    }
    println!();
    println!(
        "Created workspace {} ({}) and an owner API key.",
        ws.id, ws.name
    );
    println!("Store this key now; it is shown only once:");
    println!();
    println!("{}", first.secret.expose());
    println!();
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled, so a signal that arrives during start-up is not lost.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
