//! The test harness: a real Pier on port 0 over a fresh database, with a manual clock.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use pier::config::Sources;
use pier::{Application, Config};
use pier_core::ManualClock;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod collector;
pub mod process;
pub mod proxy;
pub mod receiver;

pub use pier_testkit::{Backend, on_both_backends};

/// A running Pier.
pub struct TestApp {
    pub base: String,
    pub admin_base: String,
    /// The owner key the first start created.
    pub owner_key: String,
    pub workspace_id: String,
    pub clock: ManualClock,
    pub client: reqwest::Client,
    pub db: pier_db::Db,
    pub jobs: pier_jobs::JobStore,
    /// The database's URL (a PostgreSQL database of its own, or a SQLite file in `data_dir`).
    pub database_url: String,
    secret_key: String,
    pub data_dir: std::path::PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

#[derive(Debug, Default)]
pub struct Options {
    pub body_limit_bytes: Option<usize>,
    pub redis_url: Option<String>,
    /// Run lease rescue, promotion and pruning in the background, as a real node does. Off by
    /// default, so a test that calls them itself is not raced by the app.
    pub background_upkeep: bool,
    /// Any other settings, e.g. `("jobs.claim_budget_bytes", "1024")`.
    pub settings: Vec<(&'static str, String)>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, Options::default()).await
    }

    pub async fn spawn_with(backend: Backend, options: Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let database_url = backend.fresh_database_url(dir.path()).await;
        let secret_key = pier_core::MasterKey::generate().to_hex();
        Self::start(dir, database_url, secret_key, None, options).await
    }

    /// A second node on this one's database (PostgreSQL), sharing its secret key.
    pub async fn another_node(&self) -> Self {
        self.another_node_with(Options::default()).await
    }

    /// Another node when the database can have one (PostgreSQL); SQLite serves one process.
    /// Callers use `other.as_ref().unwrap_or(&app)` as "the other node".
    pub async fn another_node_if_shared(&self) -> Option<Self> {
        match self.database_url.starts_with("postgres") {
            true => Some(self.another_node().await),
            false => None,
        }
    }

    /// [`another_node`](Self::another_node) with its own options.
    pub async fn another_node_with(&self, options: Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = (self.owner_key.clone(), self.workspace_id.clone());
        Self::start(
            dir,
            self.database_url.clone(),
            self.secret_key.clone(),
            Some(first),
            options,
        )
        .await
    }

    async fn start(
        dir: tempfile::TempDir,
        database_url: String,
        secret_key: String,
        bootstrapped: Option<(String, String)>,
        options: Options,
    ) -> Self {
        let mut sources = Sources::default()
            .set("listen", "127.0.0.1:0")
            .set("admin_listen", "127.0.0.1:0")
            .set("data_dir", dir.path().display().to_string())
            .set("database_url", database_url.clone())
            .set("shutdown_timeout_secs", "5")
            .set("shutdown_drain_secs", "0")
            .set("db_max_connections", "4");
        if database_url.starts_with("postgres") {
            sources = sources.set("secret_key", secret_key.clone());
        }
        if let Some(url) = options.redis_url {
            sources = sources.set("redis_url", url);
        }
        if let Some(limit) = options.body_limit_bytes {
            sources = sources.set("body_limit_bytes", limit.to_string());
        }
        for (setting, value) in options.settings {
            sources = sources.set(setting, value);
        }
        let config = Config::load(&sources).expect("valid test config");
        let clock = ManualClock::starting_now();
        let mut app = Application::build(config, Arc::new(clock.clone()))
            .await
            .expect("app builds");
        if !options.background_upkeep {
            app = app.without_background_upkeep();
        }
        let (owner_key, workspace_id) = bootstrapped.unwrap_or_else(|| {
            let first = app.bootstrap().expect("a fresh database is bootstrapped");
            (
                first.secret.expose().to_owned(),
                first.workspace.id.to_string(),
            )
        });
        let base = format!("http://{}", app.local_addr());
        let admin_base = format!("http://{}", app.admin_addr());
        let db = app.db().clone();
        let jobs = app.jobs().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        Self {
            base,
            admin_base,
            owner_key,
            workspace_id,
            clock,
            // Short links answer with redirects, which the tests read rather than follow.
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            db,
            jobs,
            database_url,
            secret_key,
            data_dir: dir.path().to_owned(),
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request authenticated with `key`.
    pub fn request_as(&self, key: &str, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(key)
    }

    /// A request authenticated with the owner key.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_as(&self.owner_key, method, path)
    }

    /// Sends a body-less request authenticated with `key`.
    pub async fn call_as(&self, key: &str, method: Method, path: &str) -> Response {
        self.request_as(key, method, path)
            .send()
            .await
            .expect("request sent")
    }

    /// Sends a body-less request authenticated with the owner key.
    pub async fn call(&self, method: Method, path: &str) -> Response {
        self.call_as(&self.owner_key, method, path).await
    }

    pub async fn get(&self, path: &str) -> Response {
        self.call(Method::GET, path).await
    }

    /// GETs an unauthenticated path and parses its JSON.
    pub async fn public_json(&self, path: &str) -> Value {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        response.json().await.expect("JSON body")
    }

    /// Sends a raw body with the given content type, as the owner.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: &str) -> Response {
        let request = self
            .request(Method::POST, path)
            .header("content-type", content_type);
        request
            .body(body.to_owned())
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Creates a key through the API and returns `(id, secret)`.
    pub async fn create_key(&self, role: &str, scopes: Option<&[&str]>) -> (String, String) {
        let mut body = json!({"name": format!("{role} key"), "role": role});
        if let Some(scopes) = scopes {
            body["scopes"] = json!(scopes);
        }
        let response = self.post_json("/v1/api-keys", &body).await;
        assert_eq!(response.status(), 201, "creating a {role} key");
        let created: Value = response.json().await.expect("json");
        (
            created["id"].as_str().expect("id").to_owned(),
            created["key"].as_str().expect("key").to_owned(),
        )
    }

    /// The caller's workspace id, typed.
    pub fn workspace(&self) -> pier_core::WorkspaceId {
        pier_core::WorkspaceId::parse(&self.workspace_id).expect("workspace id")
    }

    /// POSTs JSON and returns the status and parsed body.
    pub async fn post_value(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.post_json(path, body).await;
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GETs as the owner and parses the JSON body.
    pub async fn get_value(&self, path: &str) -> Value {
        self.get(path).await.json().await.expect("JSON body")
    }

    /// Signals shutdown and waits for the app to stop.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.trigger_shutdown();
        self.join().await
    }

    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn join(&mut self) -> anyhow::Result<()> {
        let task = self.task.take().expect("app still running");
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("app stops within 30 s")
            .expect("app task did not panic")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}

/// Reads a problem response, checking the parts every problem has.
pub async fn problem(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status of a `{code}` problem"
    );
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: Value = response.json().await.expect("problem is JSON");
    assert_eq!(body["status"], status);
    assert_eq!(body["code"], code, "problem: {body}");
    let type_uri = match code {
        "quota_exceeded" => pier_api::problem::QUOTA_EXCEEDED.to_owned(),
        _ => format!("urn:pier:problem:{code}"),
    };
    assert_eq!(body["type"], type_uri);
    assert_eq!(body["request_id"], request_id.as_str());
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}

/// Everything the database holds, as bytes: a data dump on PostgreSQL, the database file and its
/// write-ahead log on SQLite.
pub async fn everything_stored(app: &TestApp) -> Vec<u8> {
    if app.database_url.starts_with("postgres") {
        let dump = std::process::Command::new("pg_dump")
            .args(["--data-only", &app.database_url])
            .output()
            .expect("pg_dump runs");
        assert!(
            dump.status.success(),
            "{}",
            String::from_utf8_lossy(&dump.stderr)
        );
        return dump.stdout;
    }
    let mut bytes = Vec::new();
    for file in ["pier.db", "pier.db-wal"] {
        if let Ok(content) = std::fs::read(app.data_dir.join(file)) {
            bytes.extend(content);
        }
    }
    assert!(!bytes.is_empty(), "the SQLite files are readable");
    bytes
}
