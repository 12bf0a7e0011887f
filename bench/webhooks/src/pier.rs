//! One `pier serve` on a fresh database: started, awaited until ready, and stopped again. The
//! process is killed when the handle drops, and its PostgreSQL database dropped, so a failed
//! measurement leaves nothing behind.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::{Args, Backend};

/// What Pier prints on its first start; every other line of its output is worth a look.
const BOOTSTRAP_NOTICE: &str = "with the owner key from PIER_BOOTSTRAP_API_KEY";
/// How long Pier may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Pier. Fields drop in order: the process goes before its database.
#[derive(Debug)]
pub struct Pier {
    child: Child,
    base: String,
    key: String,
    log: PathBuf,
    /// What `pier` commands beside the server need to reach its database.
    env: Vec<(&'static str, String)>,
    _database: Option<Database>,
    _dir: TempDir,
}

impl Pier {
    pub async fn start(args: &Args, backend: Backend) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let bin = &args.pier_bin;
        let key = output(bin, &["keys", "generate"]).await?;
        let secret = output(bin, &["generate-secret-key"]).await?;
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(Database::create(&args.postgres_admin_url)?),
        };
        let database_url = match &database {
            Some(database) => database.url(),
            None => format!("sqlite://{}", dir.path().join("pier.db").display()),
        };
        let env = vec![
            ("PIER_DATA_DIR", dir.path().display().to_string()),
            ("PIER_DATABASE_URL", database_url.clone()),
            ("PIER_SECRET_KEY", secret.clone()),
        ];
        let (port, admin_port) = free_ports()?;
        let log = dir.path().join("pier.log");
        let out = std::fs::File::create(&log)?;
        let mut command = Command::new(bin);
        // Only the settings below: none of this shell's PIER_* variables.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PIER_") {
                command.env_remove(name);
            }
        }
        command
            .arg("serve")
            // From its own directory, so that no ./pier.toml is picked up.
            .current_dir(dir.path())
            .env("PIER_LISTEN", format!("127.0.0.1:{port}"))
            .env("PIER_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("PIER_BOOTSTRAP_API_KEY", &key)
            // The receiver listens on 127.0.0.1, which the SSRF guard refuses by default.
            .env("PIER_ALLOW_PRIVATE_WEBHOOK_TARGETS", "true")
            // One key publishing thousands of events per second is the point, not abuse.
            .env("PIER_RATE_LIMITS_ENABLED", "false")
            .env("PIER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        if let Some(concurrency) = args.webhooks_concurrency {
            command.env("PIER_WEBHOOKS_CONCURRENCY", concurrency.to_string());
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut pier = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            key,
            log,
            env,
            _database: database,
            _dir: dir,
        };
        pier.wait_ready(backend).await?;
        Ok(pier)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The owner key of the workspace Pier created at start.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Creates another workspace (`pier workspaces create`); returns its owner key.
    pub async fn create_workspace(&self, bin: &Path, name: &str) -> anyhow::Result<String> {
        let out = Command::new(bin)
            .args(["workspaces", "create", name])
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .await
            .context("running pier workspaces create")?;
        if !out.status.success() {
            bail!(
                "pier workspaces create: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    async fn wait_ready(&mut self, backend: Backend) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let url = format!("{}/readyz", self.base);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "pier on {backend} exited during start-up ({status}):\n{}",
                    self.log_lines().join("\n")
                );
            }
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("pier on {backend} was not ready within {START_TIMEOUT:?}")
    }

    /// Kills Pier (nothing it holds is worth a graceful stop) and shows what it logged; returns
    /// the number of lines it logged.
    pub async fn stop(mut self) -> anyhow::Result<usize> {
        self.child.kill().await?;
        let lines = self.log_lines();
        if !lines.is_empty() {
            eprintln!("pier logged {} line(s); the first ones:", lines.len());
            for line in lines.iter().take(5) {
                eprintln!("  {line}");
            }
        }
        Ok(lines.len())
    }

    /// Pier's output, less the start-up notice.
    fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| !line.contains(BOOTSTRAP_NOTICE))
            .map(str::to_owned)
            .collect()
    }
}

/// Runs `pier <args>` and returns what it printed, trimmed.
async fn output(bin: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {} {}", bin.display(), args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} {}: {}",
            bin.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Two ports nothing listens on now, for the API and the admin listener (another process could
/// take one before Pier does; unlikely within milliseconds).
fn free_ports() -> anyhow::Result<(u16, u16)> {
    let api = TcpListener::bind("127.0.0.1:0")?;
    let admin = TcpListener::bind("127.0.0.1:0")?;
    Ok((api.local_addr()?.port(), admin.local_addr()?.port()))
}

/// A PostgreSQL database of one measurement, dropped with the handle.
#[derive(Debug)]
struct Database {
    admin_url: String,
    name: String,
}

impl Database {
    fn create(admin_url: &str) -> anyhow::Result<Self> {
        static CREATED: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "bench_wh_{}_{}",
            std::process::id(),
            CREATED.fetch_add(1, Ordering::Relaxed)
        );
        psql(admin_url, &format!("CREATE DATABASE {name}"))?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
        })
    }

    /// The admin URL with this database's name in place of its own.
    fn url(&self) -> String {
        let server = self
            .admin_url
            .rsplit_once('/')
            .map_or(self.admin_url.as_str(), |(server, _)| server);
        format!("{server}/{}", self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(err) = psql(&self.admin_url, &sql) {
            eprintln!("could not drop the database {}: {err:#}", self.name);
        }
    }
}

/// Runs one statement with psql. Blocking, but only between measurements (and in `Drop`).
fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .env("PGOPTIONS", "-c client_min_messages=warning")
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!(
            "psql: {sql}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
