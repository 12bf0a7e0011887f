//! Guessing passwords: a stolen session is no oracle for the password, strangers cannot lock
//! the owner out of the addresses they sign in from, and a flood of sign-ins is bounded in
//! memory by the node's hashing gate.

use pier_auth::Role;
use reqwest::{Method, Response};
use serde_json::json;

use crate::sessions::{PASSWORD, login, sign_in, user};
use crate::support::process::server;
use crate::support::{Backend, Options, TestApp, on_both_backends};

on_both_backends!(
    a_stolen_session_cannot_guess_the_password_unthrottled,
    strangers_cannot_lock_the_owner_out_where_they_sign_in,
    a_flood_of_sign_ins_stays_within_bounded_memory,
    a_links_password_is_guessed_from_everywhere_within_one_bound,
);

async fn a_stolen_session_cannot_guess_the_password_unthrottled(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    user(&app, "ann@example.com", &app.workspace(), Role::Member).await;
    let thief = sign_in(&app, "ann@example.com", PASSWORD).await;
    let mut statuses = Vec::new();
    for n in 0..30 {
        let response = thief
            .change(&app, Method::POST, "/v1/auth/password")
            .json(&json!({"current_password": format!("guess {n}"),
                "new_password": "the thief's own password"}))
            .send()
            .await
            .expect("sent");
        statuses.push(response.status().as_u16());
    }
    let first_refusal = statuses.iter().position(|s| *s == 429);
    assert!(
        first_refusal.is_some_and(|at| at < 29),
        "refused before the 30th: {statuses:?}"
    );
    assert!(
        statuses[..first_refusal.unwrap_or(0)]
            .iter()
            .all(|s| *s == 401)
    );
}

/// A sign-in as if through the trusted proxy on 127.0.0.1, from `address`.
async fn login_from(app: &TestApp, address: &str, password: &str) -> Response {
    app.client
        .post(app.url("/v1/auth/login"))
        .header("x-forwarded-for", address)
        .json(&json!({"email": "olga@example.com", "password": password}))
        .send()
        .await
        .expect("sent")
}

/// An app that believes `X-Forwarded-For` from 127.0.0.1, as behind a proxy there.
async fn behind_a_proxy(backend: Backend) -> TestApp {
    let options = Options {
        settings: vec![("rate_limits.trusted_proxies", "127.0.0.1".to_owned())],
        ..Options::default()
    };
    TestApp::spawn_with(backend, options).await
}

async fn strangers_cannot_lock_the_owner_out_where_they_sign_in(backend: Backend) {
    let app = behind_a_proxy(backend).await;
    user(&app, "olga@example.com", &app.workspace(), Role::Owner).await;
    let (home, stranger) = ("198.51.100.7", "203.0.113.66");
    assert_eq!(login_from(&app, home, PASSWORD).await.status(), 200);

    let mut refused = 0;
    for _ in 0..50 {
        match login_from(&app, stranger, "a guess")
            .await
            .status()
            .as_u16()
        {
            401 => {}
            429 => refused += 1,
            other => panic!("a guess got {other}"),
        }
    }
    assert!(
        refused >= 40,
        "the stranger is bounded: {refused} of 50 refused"
    );
    assert_eq!(
        login_from(&app, stranger, PASSWORD).await.status(),
        429,
        "even the right password, from there"
    );
    assert_eq!(
        login_from(&app, home, PASSWORD).await.status(),
        200,
        "the owner, where they signed in before"
    );
    // Unfamiliar addresses share the account's quota the stranger used up.
    assert_eq!(login_from(&app, "192.0.2.1", PASSWORD).await.status(), 429);
    assert_eq!(
        login(&app, "olga@example.com", PASSWORD).await.status(),
        200
    );
}

/// The peak resident memory of process `pid`, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// 200 sign-ins at once with unknown emails from distinct addresses (each would otherwise hold
/// 19 MiB of Argon2id memory): every answer is a refusal of the guess (401, 429) or of the
/// moment (503), and the real process's peak memory stays small.
async fn a_flood_of_sign_ins_stays_within_bounded_memory(backend: Backend) {
    let mut node = server(&backend, &[]).await;
    node.env.push((
        "PIER_RATE_LIMITS_TRUSTED_PROXIES".to_owned(),
        "127.0.0.1".to_owned(),
    ));
    let child = node.start().await;
    let pid = child.id().expect("pid");
    let client = reqwest::Client::new();
    let attempts = (0..200u32).map(|n| {
        let (client, base) = (&client, &node.base);
        async move {
            client
                .post(format!("{base}/v1/auth/login"))
                .header("x-forwarded-for", format!("198.18.{}.{}", n / 256, n % 256))
                .json(&json!({"email": format!("nobody{n}@example.com"), "password": "a guess"}))
                .send()
                .await
                .expect("sent")
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    assert!(
        statuses.iter().all(|s| [401, 429, 503].contains(s)),
        "{statuses:?}"
    );
    let peak = peak_rss_kib(pid);
    assert!(peak < 300 * 1024, "peak RSS {peak} KiB");
}

/// One guess from each of many addresses: the per-address limit never bites, the per-link one
/// (30 at once by default) does.
async fn a_links_password_is_guessed_from_everywhere_within_one_bound(backend: Backend) {
    let app = behind_a_proxy(backend).await;
    let created = app
        .post_json(
            "/v1/links",
            &json!({"url": "https://secret.example/", "slug": "vault", "password": "open sesame"}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let mut statuses = Vec::new();
    for n in 0..40u32 {
        let response = app
            .client
            .post(app.url("/vault"))
            .header("x-forwarded-for", format!("198.18.0.{n}"))
            .form(&[("password", "a guess")])
            .send()
            .await
            .expect("sent");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses[..30], [401; 30], "{statuses:?}");
    assert_eq!(statuses[30..], [429; 10], "{statuses:?}");
}
