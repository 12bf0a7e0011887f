//! The real `pier` binary: bad configuration, first start, and offline administration.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

const PIER: &str = env!("CARGO_BIN_EXE_pier");

/// `pier` with a clean environment (no stray `PIER_*`) inside `dir`.
fn pier(dir: &Path) -> Command {
    let mut cmd = Command::new(PIER);
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("pier runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

#[test]
fn bad_configuration_exits_with_one_clear_line() {
    let dir = tempfile::tempdir().expect("dir");
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 6] = [
        (
            &["--listen", "nowhere", "config"],
            &[],
            "listen (--listen / PIER_LISTEN)",
        ),
        (
            &["config"],
            &[("PIER_ADMIN_LISTEN", "1.2.3.4")],
            "admin_listen",
        ),
        (
            &["config"],
            &[("PIER_DATABASE_URL", "mysql://x/y")],
            "database_url",
        ),
        (
            &["config"],
            &[("PIER_BODY_LIMIT_BYTES", "lots")],
            "body_limit_bytes",
        ),
        (
            &["config"],
            &[("PIER_BOOTSTRAP_API_KEY", "pier_guess")],
            "pier keys generate",
        ),
        (
            &["--config", "missing.toml", "config"],
            &[],
            "cannot read missing.toml",
        ),
    ];
    for (args, env, expected) in cases {
        let out = run(pier(dir.path()).args(args).envs(env.iter().copied()));
        assert!(!out.status.success(), "{args:?} {env:?} must fail");
        let message = stderr(&out);
        assert_eq!(message.lines().count(), 1, "one line: {message}");
        assert!(
            message.starts_with("pier: invalid configuration") && message.contains(expected),
            "{message}"
        );
    }

    std::fs::write(
        dir.path().join("pier.toml"),
        "listen = \"127.0.0.1:1\"\nlisten_port = 3\n",
    )
    .expect("write");
    let out = run(pier(dir.path()).arg("config"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("listen_port"), "{}", stderr(&out));
}

#[test]
fn config_layers_file_env_and_flags_and_redacts_secrets() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("pier.toml"),
        "listen = \"127.0.0.1:7000\"\nadmin_listen = \"127.0.0.1:7001\"\nlog_level = \"debug\"\n",
    )
    .expect("write");
    let key = run(pier(dir.path()).args(["keys", "generate"]));
    let key = String::from_utf8_lossy(&key.stdout).trim().to_owned();
    let out = run(pier(dir.path())
        .args(["--admin-listen", "127.0.0.1:7003", "config"])
        .env("PIER_ADMIN_LISTEN", "127.0.0.1:7002")
        .env("PIER_LOG", "warn")
        .env(
            "PIER_DATABASE_URL",
            "postgres://app:hunter2@db.internal/pier",
        )
        .env("PIER_BOOTSTRAP_API_KEY", &key));
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("listen = \"127.0.0.1:7000\""),
        "file: {shown}"
    );
    assert!(
        shown.contains("admin_listen = \"127.0.0.1:7003\""),
        "flag beats env: {shown}"
    );
    assert!(
        shown.contains("log_level = \"warn\""),
        "env beats file: {shown}"
    );
    assert!(
        !shown.contains("hunter2") && !shown.contains(&key),
        "secrets redacted: {shown}"
    );
}

#[test]
fn every_section_is_configurable_and_printed() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("pier.toml"),
        "[jobs]\nclaim_budget_bytes = 1000\ndefault_lease_secs = 60\n",
    )
    .expect("write");
    let out = run(pier(dir.path())
        .args(["--jobs-default-lease-secs", "90", "config"])
        .env("PIER_JOBS_MAX_WAITING_CLAIMS", "7"));
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    for line in [
        "[jobs]",
        "claim_budget_bytes = 1000",
        "default_lease_secs = 90",
        "max_waiting_claims = 7",
        "completed_retention_secs = 86400",
    ] {
        assert!(shown.contains(line), "{line} in {shown}");
    }
    std::fs::write(dir.path().join("pier.toml"), "[jobs]\nclaim_budget = 1\n").expect("write");
    let out = run(pier(dir.path()).arg("config"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("pier.toml: unknown setting `jobs.claim_budget`"),
        "{}",
        stderr(&out)
    );
}

/// Every form of credential the drivers accept stays out of `pier config`, the start-up log and
/// connection errors.
#[test]
fn credentials_never_print() {
    let dir = tempfile::tempdir().expect("dir");
    let urls = [
        // A server that refuses the role answers at once (a closed port is retried for 10 s).
        (
            "PIER_DATABASE_URL",
            "postgres://nobody@127.0.0.1:5432/pier?password=hunter2",
        ),
        (
            "PIER_DATABASE_URL",
            "postgresql://nobody:hunter2@127.0.0.1:5432/pier",
        ),
        ("PIER_REDIS_URL", "redis://:hunter2@127.0.0.1:1"),
        ("PIER_REDIS_URL", "rediss://user:hunter2@127.0.0.1:1"),
    ];
    for (variable, url) in urls {
        for command in ["config", "serve"] {
            let out = run(pier(dir.path())
                .arg(command)
                .env(variable, url)
                .env("PIER_LISTEN", "127.0.0.1:0")
                .env("PIER_ADMIN_LISTEN", "127.0.0.1:0"));
            let printed = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                !printed.contains("hunter2"),
                "{command:?} with {url}: {printed}"
            );
        }
    }
}

#[test]
fn offline_workspace_and_key_administration() {
    let dir = tempfile::tempdir().expect("dir");
    let out = run(pier(dir.path()).args(["workspaces", "create", "acme"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        key.starts_with("pier_") && !key.contains('\n'),
        "key alone on stdout: {key}"
    );

    let out = run(pier(dir.path()).args([
        "keys",
        "create",
        "--name",
        "ci",
        "--role",
        "viewer",
        "--scopes",
        "jobs:read",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = run(pier(dir.path()).args(["keys", "list"]));
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let ci_id = listed
        .lines()
        .find(|l| l.ends_with("\tci"))
        .and_then(|l| l.split('\t').next())
        .expect("ci key listed")
        .to_owned();
    assert!(listed.contains("jobs:read"));

    let out = run(pier(dir.path()).args(["keys", "revoke", &ci_id]));
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = run(pier(dir.path()).args(["keys", "list"]));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("revoked"));

    let bad = run(pier(dir.path()).args(["keys", "create", "--name", "x", "--role", "god"]));
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--role"), "{}", stderr(&bad));

    run(pier(dir.path()).args(["workspaces", "create", "second"]));
    let ambiguous = run(pier(dir.path()).args(["keys", "list"]));
    assert!(!ambiguous.status.success());
    assert!(
        stderr(&ambiguous).contains("--workspace"),
        "{}",
        stderr(&ambiguous)
    );
}

#[test]
fn offline_user_administration() {
    let dir = tempfile::tempdir().expect("dir");
    let out = run(pier(dir.path()).args(["workspaces", "create", "acme"]));
    assert!(out.status.success(), "{}", stderr(&out));

    let out = run(pier(dir.path()).args([
        "users",
        "create",
        "--email",
        "Ann@Example.com",
        "--role",
        "owner",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let password = stdout
        .strip_prefix("password: ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .expect("one line, `password: …`");
    assert!(
        password.len() >= 20 && password.chars().all(|c| c.is_ascii_alphanumeric()),
        "{stdout}"
    );
    assert!(stderr(&out).contains("usr_"), "{}", stderr(&out));

    let listed = run(pier(dir.path()).args(["users", "list"]));
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    let fields: Vec<&str> = listed.trim_end().split('\t').collect();
    assert_eq!(
        fields[1..],
        ["ann@example.com", "owner", "Ann"][..],
        "{listed}"
    );

    let out = run(pier(dir.path()).args(["workspaces", "create", "second"]));
    let second = stderr(&out)
        .split_whitespace()
        .find(|w| w.starts_with("ws_"))
        .expect("the new workspace's id")
        .to_owned();
    let out = run(pier(dir.path()).args([
        "users",
        "create",
        "--email",
        "ann@example.com",
        "--workspace",
        &second,
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        out.stdout.is_empty(),
        "an existing user gets no new password"
    );
    assert!(stderr(&out).contains("exists already"), "{}", stderr(&out));
    let listed = run(pier(dir.path()).args(["users", "list", "--workspace", &second]));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("ann@example.com\tmember"));

    let out = run(pier(dir.path()).args([
        "users",
        "create",
        "--email",
        "bo@example.com",
        "--workspace",
        &second,
        "--invite",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let token = stdout
        .strip_prefix("invitation: http://127.0.0.1:8080/v1/auth/invitation?token=pier_iv_")
        .and_then(|rest| rest.strip_suffix('\n'))
        .expect("one line, `invitation: <link>`");
    assert_eq!(token.len(), 43, "{stdout}");
    assert!(
        !stdout.contains("password"),
        "no one-time password with an invitation"
    );

    for (args, flag) in [
        (
            ["--email", "not an email", "--workspace", second.as_str()],
            "--email",
        ),
        (["--email", "cy@example.com", "--role", "god"], "--role"),
    ] {
        let out = run(pier(dir.path()).args(["users", "create"]).args(args));
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        let message = stderr(&out);
        assert!(
            message.contains(flag) && message.lines().count() == 1,
            "{message}"
        );
    }
}

/// Starts `pier serve` on a free port and returns the child and its stdout lines so far.
async fn serve_once(dir: &Path) -> String {
    let mut child = tokio::process::Command::new(PIER)
        .current_dir(dir)
        .env_clear()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn pier serve");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = stderr.next_line().await.expect("read") {
            if line.contains("pier is ready") {
                return true;
            }
        }
        false
    });
    assert!(
        ready.await.expect("ready within 30 s"),
        "pier serve became ready"
    );
    // SIGTERM, then collect what it printed.
    let pid = child.id().expect("pid").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("exits within 30 s")
        .expect("output");
    assert!(out.status.success(), "SIGTERM exits 0");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn first_start_prints_the_key_once() {
    let dir = tempfile::tempdir().expect("dir");
    let first = serve_once(dir.path()).await;
    let keys: Vec<&str> = first.lines().filter(|l| l.starts_with("pier_")).collect();
    assert_eq!(keys.len(), 1, "{first}");
    assert!(pier_auth::KeySecret::parse(keys[0]).is_ok());
    assert!(dir.path().join("pier-data/pier.db").exists());

    let second = serve_once(dir.path()).await;
    assert!(
        !second.contains("pier_"),
        "later starts print nothing secret: {second}"
    );
}

/// `pier webhooks verify` checks a delivery the way a receiver does: the body on stdin, the
/// headers as flags, the secret preferably from the environment.
#[test]
fn webhooks_verify_accepts_a_signed_body_and_nothing_else() {
    use std::io::Write;

    use pier_webhook_verify::{SigningSecret, sign, unix_now};

    let dir = tempfile::tempdir().expect("dir");
    let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
    let body = br#"{"type":"invoice.paid","timestamp":"2026-11-30T12:00:00Z","data":{}}"#;
    let now = unix_now();
    let verify = |timestamp: i64, signature: &str, body: &[u8]| {
        let mut child = pier(dir.path())
            .env("PIER_WEBHOOK_SECRET", secret.to_whsec())
            .args(["webhooks", "verify", "--id", "msg_1"])
            .args([
                "--timestamp",
                &timestamp.to_string(),
                "--signature",
                signature,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pier runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body)
            .expect("body written");
        child.wait_with_output().expect("pier ends")
    };

    let signature = sign(&secret, "msg_1", now, body);
    let valid = verify(now, &signature, body);
    assert!(valid.status.success(), "{}", stderr(&valid));
    assert_eq!(String::from_utf8_lossy(&valid.stdout).trim(), "valid");

    let altered = verify(now, &signature, b"{}");
    assert_eq!(altered.status.code(), Some(1));
    assert!(
        stderr(&altered).contains("no `v1` signature"),
        "{}",
        stderr(&altered)
    );
    assert_eq!(stderr(&altered).lines().count(), 1);

    let old = now - 600;
    let replayed = verify(old, &sign(&secret, "msg_1", old, body), body);
    assert_eq!(replayed.status.code(), Some(1));
    assert!(
        stderr(&replayed).contains("too far in the past"),
        "{}",
        stderr(&replayed)
    );
}

/// `pier backup` writes a copy that Pier can open, with what was stored, and never overwrites.
#[tokio::test]
async fn backup_copies_the_sqlite_database() {
    let dir = tempfile::tempdir().expect("dir");
    let out = run(pier(dir.path()).args(["workspaces", "create", "ops-team"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let copy = dir.path().join("copy.db");
    let copy_arg = copy.display().to_string();
    let out = run(pier(dir.path()).args(["backup", "--to", &copy_arg]));
    assert!(out.status.success(), "{}", stderr(&out));

    let copy_url = format!("sqlite://{copy_arg}");
    let listed = run(pier(dir.path()).args(["workspaces", "list", "--database-url", &copy_url]));
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("ops-team"));

    let again = run(pier(dir.path()).args(["backup", "--to", &copy_arg]));
    assert!(!again.status.success());
    assert_eq!(stderr(&again).lines().count(), 1, "{}", stderr(&again));
    assert!(stderr(&again).contains("exists already"));

    let postgres = run(pier(dir.path()).args([
        "backup",
        "--to",
        "elsewhere.db",
        "--database-url",
        "postgres://nobody@127.0.0.1:1/none",
    ]));
    assert!(!postgres.status.success());
    assert!(
        stderr(&postgres).contains("pg_dump"),
        "{}",
        stderr(&postgres)
    );
}

/// A second `pier serve` on the SQLite file another one serves stops at start with one line
/// saying so; the first keeps serving.
#[tokio::test]
async fn a_second_server_on_one_sqlite_file_is_refused() {
    use crate::support::{Backend, process};
    let first = process::server(&Backend::Sqlite, &[]).await;
    let _running = first.start().await;
    let second = first.another_node(&[]);
    let out = tokio::process::Command::new(PIER)
        .current_dir(second.dir.path())
        .env_clear()
        .env("PIER_SECRET_KEY", &second.secret_key)
        .args(&second.args)
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("exits within 30 s")
        .expect("pier runs");
    assert!(!out.status.success(), "refused");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("pier: another pier is already serving "),
        "{err}"
    );
    let ready = reqwest::get(format!("{}/readyz", first.admin))
        .await
        .expect("the first still answers");
    assert_eq!(ready.status(), 200);
}
