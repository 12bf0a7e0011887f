//! Signing in with a password: the session cookie, CSRF, fixation, sign-out replay, the first
//! password change, failed-login limits and another workspace's view.

use std::sync::Arc;

use pier_auth::{Email, Role, UserStore, WorkspaceName, WorkspaceStore};
use pier_core::{Clock, Label, WorkspaceId};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};

use crate::support::{Backend, Options, TestApp, on_both_backends, problem};

on_both_backends!(
    signing_in_sets_a_hardened_cookie_that_authenticates,
    changes_need_the_csrf_token_and_a_same_site_origin,
    a_one_time_password_must_be_changed_first,
    signing_out_ends_the_session_and_sign_in_replaces_any_old_id,
    unknown_emails_and_wrong_passwords_look_alike_and_are_limited,
    concurrent_guesses_cannot_slip_past_the_limit,
    a_session_sees_only_its_own_workspace,
    an_invitation_link_sets_a_password_once,
);

pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// A signed-in browser: the cookie pair to send and the session's CSRF token.
pub(crate) struct Browser {
    pub cookie: String,
    pub csrf: String,
    pub session: Value,
}

impl Browser {
    pub fn on(&self, app: &TestApp, method: Method, path: &str) -> RequestBuilder {
        app.client
            .request(method, app.url(path))
            .header("cookie", &self.cookie)
    }

    /// A request that changes something, as the dashboard sends it.
    pub fn change(&self, app: &TestApp, method: Method, path: &str) -> RequestBuilder {
        self.on(app, method, path)
            .header("x-csrf-token", &self.csrf)
    }
}

/// The `name=value` part of a response's `Set-Cookie`.
fn cookie_pair(response: &Response) -> String {
    let set = response.headers()["set-cookie"].to_str().expect("ascii");
    set.split(';').next().expect("a pair").to_owned()
}

/// Makes `email` a user of `workspace` with `PASSWORD` chosen already.
pub(crate) async fn user(app: &TestApp, email: &str, workspace: &WorkspaceId, role: Role) {
    let clock: Arc<dyn Clock> = Arc::new(app.clock.clone());
    let created = UserStore::new(app.db.clone(), clock)
        .create(
            &Email::parse(email).expect("email"),
            &Label::parse("Someone").expect("name"),
            workspace,
            role,
        )
        .await
        .expect("user");
    let browser = sign_in(app, email, &created.one_time_password).await;
    let response = browser
        .change(app, Method::POST, "/v1/auth/password")
        .json(&json!({"current_password": created.one_time_password, "new_password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200, "the first password change");
}

pub(crate) async fn sign_in(app: &TestApp, email: &str, password: &str) -> Browser {
    let response = login(app, email, password).await;
    assert_eq!(response.status(), 200, "signed in");
    let cookie = cookie_pair(&response);
    let session: Value = response.json().await.expect("json");
    Browser {
        cookie,
        csrf: session["csrf_token"].as_str().expect("token").to_owned(),
        session,
    }
}

pub(crate) async fn login(app: &TestApp, email: &str, password: &str) -> Response {
    app.client
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("sent")
}

async fn signing_in_sets_a_hardened_cookie_that_authenticates(backend: Backend) {
    // Set up for HTTPS, the cookie is a `__Host-` cookie with every flag, whatever `Host` a
    // proxy passes on.
    let options = Options {
        settings: vec![("auth.cookie_secure", "true".to_owned())],
        ..Options::default()
    };
    let secure = TestApp::spawn_with(backend.clone(), options).await;
    user(&secure, "ann@example.com", &secure.workspace(), Role::Admin).await;
    let response = secure
        .client
        .post(secure.url("/v1/auth/login"))
        .header("host", "127.0.0.1")
        .json(&json!({"email": "Ann@Example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let set = response.headers()["set-cookie"].to_str().expect("ascii");
    assert!(set.starts_with("__Host-pier_session="), "{set}");
    for flag in ["; Secure", "; HttpOnly", "; SameSite=Lax", "; Path=/"] {
        assert!(set.contains(flag), "{set} lacks {flag}");
    }
    assert!(!set.contains("Domain"), "{set}");
    let secure_pair = cookie_pair(&response);
    let body: Value = response.json().await.expect("json");
    assert!(
        !body
            .to_string()
            .contains(&secure_pair[secure_pair.find('=').expect("=") + 1..]),
        "the id is only in the cookie"
    );
    // That cookie works there; the plain name is not read there.
    let session_with = |cookie: String| {
        secure
            .client
            .get(secure.url("/v1/auth/session"))
            .header("cookie", cookie)
            .send()
    };
    let seen = session_with(secure_pair.clone()).await.expect("sent");
    assert_eq!(seen.status(), 200);
    let plain = secure_pair.replacen("__Host-pier_session", "pier_session", 1);
    assert_eq!(session_with(plain).await.expect("sent").status(), 401);

    // Listening on loopback (this test server) by default, the cookie drops `Secure` and the
    // prefix, whatever `Host` says.
    let app = TestApp::spawn(backend).await;
    user(&app, "ann@example.com", &app.workspace(), Role::Admin).await;
    let named = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("host", "pier.example")
        .json(&json!({"email": "ann@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert!(cookie_pair(&named).starts_with("pier_session="));
    let browser = sign_in(&app, "ann@example.com", PASSWORD).await;
    assert!(browser.cookie.starts_with("pier_session="));
    assert_eq!(browser.session["user"]["email"], "ann@example.com");
    assert_eq!(browser.session["role"], "admin");
    assert_eq!(browser.session["must_change_password"], false);
    let workspace: Value = browser
        .on(&app, Method::GET, "/v1/workspace")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(workspace["id"], app.workspace_id.as_str());

    // A bearer request is untouched by cookies and needs no CSRF token.
    let response = app
        .request(Method::POST, "/v1/links")
        .json(&json!({"url": "https://example.com/bearer"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
    let response = app
        .request(Method::GET, "/v1/auth/session")
        .send()
        .await
        .expect("sent");
    problem(response, 400, "not_a_session").await;
}

/// The CSRF token a request sends, then its further headers.
type Forgery<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)]);

async fn changes_need_the_csrf_token_and_a_same_site_origin(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    user(&app, "ann@example.com", &app.workspace(), Role::Member).await;
    let browser = sign_in(&app, "ann@example.com", PASSWORD).await;
    let link = json!({"url": "https://example.com/a"});

    let forged: [Forgery; 4] = [
        (None, &[]),
        (Some("not-the-token"), &[]),
        (Some(&browser.csrf), &[("sec-fetch-site", "cross-site")]),
        (Some(&browser.csrf), &[("origin", "https://evil.example")]),
    ];
    for (token, headers) in forged {
        let mut request = browser.on(&app, Method::POST, "/v1/links").json(&link);
        if let Some(token) = token {
            request = request.header("x-csrf-token", token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let refused = request.send().await.expect("sent");
        problem(refused, 403, "forbidden").await;
    }

    let host = app.base.trim_start_matches("http://").to_owned();
    let same = browser
        .change(&app, Method::POST, "/v1/links")
        .header("origin", format!("http://{host}"))
        .header("sec-fetch-site", "same-origin")
        .json(&link)
        .send()
        .await
        .expect("sent");
    assert_eq!(same.status(), 201);
    let created: Value = same.json().await.expect("json");
    assert!(
        created["created_by"]
            .as_str()
            .is_some_and(|by| by.starts_with("usr_")),
        "{created}"
    );
    // Reading needs no token.
    let listed = browser
        .on(&app, Method::GET, "/v1/links")
        .send()
        .await
        .expect("sent");
    assert_eq!(listed.status(), 200);
}

async fn a_one_time_password_must_be_changed_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let clock: Arc<dyn Clock> = Arc::new(app.clock.clone());
    let created = UserStore::new(app.db.clone(), clock)
        .create(
            &Email::parse("new@example.com").expect("email"),
            &Label::parse("New").expect("name"),
            &app.workspace(),
            Role::Owner,
        )
        .await
        .expect("user");
    let browser = sign_in(&app, "new@example.com", &created.one_time_password).await;
    assert_eq!(browser.session["must_change_password"], true);
    let blocked = browser
        .on(&app, Method::GET, "/v1/links")
        .send()
        .await
        .expect("sent");
    let body = problem(blocked, 403, "forbidden").await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("password")
    );

    let other = sign_in(&app, "new@example.com", &created.one_time_password).await;
    let weak = browser
        .change(&app, Method::POST, "/v1/auth/password")
        .json(&json!({"current_password": created.one_time_password, "new_password": "short"}))
        .send()
        .await
        .expect("sent");
    problem(weak, 422, "validation_failed").await;
    let changed = browser
        .change(&app, Method::POST, "/v1/auth/password")
        .json(&json!({"current_password": created.one_time_password, "new_password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(changed.status(), 200);
    let renewed_cookie = cookie_pair(&changed);
    assert_ne!(renewed_cookie, browser.cookie, "a new id");
    let renewed: Value = changed.json().await.expect("json");
    assert_eq!(renewed["must_change_password"], false);

    for old in [&browser, &other] {
        let replay = old
            .on(&app, Method::GET, "/v1/auth/session")
            .send()
            .await
            .expect("sent");
        problem(replay, 401, "unauthorized").await;
    }
    let now_free = app
        .client
        .get(app.url("/v1/links"))
        .header("cookie", &renewed_cookie)
        .send()
        .await
        .expect("sent");
    assert_eq!(now_free.status(), 200);
}

async fn signing_out_ends_the_session_and_sign_in_replaces_any_old_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    user(&app, "ann@example.com", &app.workspace(), Role::Member).await;
    let first = sign_in(&app, "ann@example.com", PASSWORD).await;

    // Signing in again from the same browser (its old cookie sent along) replaces the id.
    let again = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("cookie", &first.cookie)
        .json(&json!({"email": "ann@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status(), 200);
    let second = cookie_pair(&again);
    assert_ne!(second, first.cookie);
    let replay = first
        .on(&app, Method::GET, "/v1/auth/session")
        .send()
        .await
        .expect("sent");
    problem(replay, 401, "unauthorized").await;

    let second_csrf = again.json::<Value>().await.expect("json")["csrf_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let logout = || {
        app.client
            .post(app.url("/v1/auth/logout"))
            .header("cookie", &second)
            .header("x-csrf-token", &second_csrf)
            .header("idempotency-key", "logout-1")
    };
    let out = logout().send().await.expect("sent");
    assert_eq!(out.status(), 204);
    let cleared = out.headers()["set-cookie"].to_str().expect("ascii");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // A session's routes keep no replays: the same key again is a new request, refused.
    let again = logout().send().await.expect("sent");
    problem(again, 401, "unauthorized").await;
    let replay = app
        .client
        .get(app.url("/v1/workspace"))
        .header("cookie", &second)
        .send()
        .await
        .expect("sent");
    problem(replay, 401, "unauthorized").await;
}

async fn unknown_emails_and_wrong_passwords_look_alike_and_are_limited(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    user(&app, "ann@example.com", &app.workspace(), Role::Member).await;
    let wrong = problem(
        login(&app, "ann@example.com", "not the password").await,
        401,
        "wrong_credentials",
    )
    .await;
    let unknown = problem(
        login(&app, "nobody@example.com", "not the password").await,
        401,
        "wrong_credentials",
    )
    .await;
    assert_eq!(wrong["detail"], unknown["detail"]);
    assert_eq!(wrong["title"], unknown["title"]);
    let cross_site = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("sec-fetch-site", "cross-site")
        .json(&json!({"email": "ann@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    problem(cross_site, 403, "forbidden").await;

    // Ten failures for one account (the default burst): the next attempt is refused before
    // any password is checked, even the right one.
    for _ in 0..9 {
        login(&app, "ann@example.com", "still wrong").await;
    }
    let limited = login(&app, "ann@example.com", PASSWORD).await;
    assert!(limited.headers().contains_key("retry-after"));
    problem(limited, 429, "quota_exceeded").await;
    // Another account from the same address is not locked out by it.
    user(&app, "bob@example.com", &app.workspace(), Role::Member).await;
}

async fn a_session_sees_only_its_own_workspace(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let clock: Arc<dyn Clock> = Arc::new(app.clock.clone());
    let (other, _, _) = WorkspaceStore::new(app.db.clone(), clock)
        .create_with_owner_key(WorkspaceName::parse("globex").expect("name"))
        .await
        .expect("workspace");
    let ours: Value = app
        .post_json("/v1/links", &json!({"url": "https://example.com/ours"}))
        .await
        .json()
        .await
        .expect("json");
    user(&app, "bob@example.com", &other.id, Role::Owner).await;
    let bob = sign_in(&app, "bob@example.com", PASSWORD).await;
    assert_eq!(bob.session["workspace_id"], other.id.as_str());
    let peek = bob
        .on(
            &app,
            Method::GET,
            &format!("/v1/links/{}", ours["id"].as_str().expect("id")),
        )
        .send()
        .await
        .expect("sent");
    problem(peek, 404, "not_found").await;
    let listed: Value = bob
        .on(&app, Method::GET, "/v1/links")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["data"], json!([]));
    // Asking for a workspace Bob is not a member of.
    let response = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": "bob@example.com", "password": PASSWORD,
                      "workspace_id": app.workspace_id}))
        .send()
        .await
        .expect("sent");
    problem(response, 403, "forbidden").await;
}

/// Twenty guesses at once: the limit is spent before each password is checked, so no more than
/// the account's burst (10) are checked, however they interleave.
async fn concurrent_guesses_cannot_slip_past_the_limit(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    user(&app, "ann@example.com", &app.workspace(), Role::Member).await;
    let guesses = (0..20).map(|n| {
        let app = &app;
        async move {
            login(app, "ann@example.com", &format!("guess {n}"))
                .await
                .status()
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|s| s.as_u16() == 401).count();
    let refused = statuses.iter().filter(|s| s.as_u16() == 429).count();
    assert_eq!((checked, refused), (10, 10), "{statuses:?}");
}

/// Invites `email` to the app's workspace and returns the link's token.
async fn invite(app: &TestApp, email: &str) -> String {
    let clock: Arc<dyn Clock> = Arc::new(app.clock.clone());
    let (_, invitation) = UserStore::new(app.db.clone(), clock)
        .invite(
            &Email::parse(email).expect("email"),
            &Label::parse("Bo <b>").expect("name"),
            &app.workspace(),
            Role::Member,
            std::time::Duration::from_secs(7 * 24 * 3600),
        )
        .await
        .expect("invited");
    invitation.token.expose().to_owned()
}

async fn accept(app: &TestApp, body: Value) -> Response {
    app.client
        .post(app.url("/v1/auth/invitation"))
        .json(&body)
        .send()
        .await
        .expect("sent")
}

async fn an_invitation_link_sets_a_password_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = invite(&app, "bo@example.com").await;

    // The link opens a form; the page posts it with the token.
    let page = app
        .client
        .get(app.url("/v1/auth/invitation"))
        .query(&[("token", &token)])
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.expect("html");
    assert!(
        html.contains(&token) && html.contains("type=\"password\""),
        "{html}"
    );
    let bad_link = app
        .client
        .get(app.url("/v1/auth/invitation?token=pier_iv_nope"))
        .send()
        .await
        .expect("sent");
    assert_eq!(bad_link.status(), 400);

    // A too-short password is refused and leaves the link usable; so does a cross-site post.
    let weak = accept(&app, json!({"token": token, "password": "short"})).await;
    problem(weak, 422, "validation_failed").await;
    let cross = app
        .client
        .post(app.url("/v1/auth/invitation"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("token", token.as_str()), ("password", PASSWORD)])
        .send()
        .await
        .expect("sent");
    assert_eq!(cross.status(), 403);

    let accepted = app
        .client
        .post(app.url("/v1/auth/invitation"))
        .form(&[("token", token.as_str()), ("password", PASSWORD)])
        .send()
        .await
        .expect("sent");
    assert_eq!(accepted.status(), 200);
    let cookie = cookie_pair(&accepted);
    let html = accepted.text().await.expect("html");
    assert!(html.contains("Bo &lt;b&gt;"), "the name, escaped: {html}");
    let session = app
        .client
        .get(app.url("/v1/auth/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("sent");
    assert_eq!(session.status(), 200, "the form signed them in");

    // Once only; and the chosen password is theirs.
    let again = accept(
        &app,
        json!({"token": token, "password": "another good password"}),
    )
    .await;
    problem(again, 410, "invitation_invalid").await;
    let bo = sign_in(&app, "bo@example.com", PASSWORD).await;
    assert_eq!(bo.session["must_change_password"], false);

    // Through the JSON API, and not after it expires.
    let json_token = invite(&app, "cy@example.com").await;
    let response = accept(&app, json!({"token": json_token, "password": PASSWORD})).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("set-cookie"));
    let late = invite(&app, "di@example.com").await;
    app.clock
        .advance(std::time::Duration::from_secs(7 * 24 * 3600 + 1));
    let expired = accept(&app, json!({"token": late, "password": PASSWORD})).await;
    problem(expired, 410, "invitation_invalid").await;
}
