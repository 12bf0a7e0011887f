//! The real `pier` binary as a child process, for what only a process shows: crashes, signals,
//! roles and environment-driven settings such as tracing.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::Backend;

/// A server's command line and state: its database, keys and free ports.
pub struct Server {
    pub base: String,
    pub admin: String,
    pub key: String,
    pub secret_key: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// A server on a fresh database of `backend`, started with `extra` arguments.
pub async fn server(backend: &Backend, extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().expect("dir");
    let database_url = backend.fresh_database_url(dir.path()).await;
    let (port, admin) = (free_port(), free_port());
    let args = [
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
        "--database-url",
        &database_url,
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .map(str::to_owned)
    .collect();
    Server {
        base: format!("http://127.0.0.1:{port}"),
        admin: format!("http://127.0.0.1:{admin}"),
        key: pier_auth::KeySecret::generate().expose().to_owned(),
        secret_key: pier_core::MasterKey::generate().to_hex(),
        args,
        env: Vec::new(),
        dir,
    }
}

impl Server {
    /// Another node of the same database and keys, on ports of its own, with `extra` arguments.
    pub fn another_node(&self, extra: &[&str]) -> Self {
        let (port, admin) = (free_port(), free_port());
        let mut args: Vec<String> = self.args.clone();
        for (flag, port) in [("--listen", port), ("--admin-listen", admin)] {
            let at = args.iter().position(|a| a == flag).expect("flag") + 1;
            args[at] = format!("127.0.0.1:{port}");
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        Self {
            base: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin}"),
            key: self.key.clone(),
            secret_key: self.secret_key.clone(),
            args,
            env: self.env.clone(),
            dir: tempfile::tempdir().expect("dir"),
        }
    }

    /// Starts the server and waits until its admin listener reports it ready.
    pub async fn start(&self) -> Child {
        let child = Command::new(env!("CARGO_BIN_EXE_pier"))
            .current_dir(self.dir.path())
            .env_clear()
            .env("PIER_BOOTSTRAP_API_KEY", &self.key)
            .env("PIER_SECRET_KEY", &self.secret_key)
            .env("PIER_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn pier");
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if client
                .get(format!("{}/readyz", self.admin))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return child;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("pier did not become ready");
    }
}
