//! OAuth 2 over HTTP: clients, the client credentials and authorization code (PKCE, consent)
//! grants, refresh rotation, revocation and introspection, bearer JWTs on the API, the
//! redirect-URI rules, the attacks of RFC 8725 a remote caller can mount, and another
//! workspace's view of all of it.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use pier_auth::{Role, WorkspaceName, WorkspaceStore};
use pier_core::Clock;
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::sessions::{Browser, PASSWORD, sign_in, user};
use crate::support::{Backend, Options, TestApp, everything_stored, on_both_backends};

on_both_backends!(
    client_credentials_tokens_act_within_the_clients_scopes,
    the_token_endpoint_speaks_rfc_6749,
    authorization_code_with_pkce_consent_and_rotating_refresh_tokens,
    every_redirect_uri_variant_is_refused,
    consent_needs_a_session_its_csrf_token_and_pkce,
    revocation_and_introspection,
    forged_and_misused_tokens_are_refused,
    another_workspace_sees_none_of_it,
    discovery_documents_describe_the_server,
    no_oauth_secret_rests_in_the_clear,
);

pub(crate) const REDIRECT: &str = "https://app.example/cb";
pub(crate) const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// Registers a client as `key` and returns its registration (with any secret).
pub(crate) async fn register_as(app: &TestApp, key: &str, body: Value) -> Value {
    let response = app
        .request_as(key, Method::POST, "/v1/oauth/clients")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201, "registering {body}");
    response.json().await.expect("json")
}

async fn register(app: &TestApp, body: Value) -> Value {
    register_as(app, &app.owner_key, body).await
}

/// A confidential client for the client credentials grant, with `scopes`.
async fn service(app: &TestApp, scopes: &[&str]) -> (String, String) {
    let client = register(
        app,
        json!({"name": "billing", "grant_types": ["client_credentials"], "scopes": scopes}),
    )
    .await;
    let text = |name: &str| client[name].as_str().expect(name).to_owned();
    (text("client_id"), text("client_secret"))
}

/// A public app using the authorization code grant.
async fn app_client(app: &TestApp, scopes: &[&str]) -> String {
    let client = register(
        app,
        json!({"name": "Reporting <app>", "client_type": "public",
            "redirect_uris": [REDIRECT, "http://127.0.0.1:8123/cb"],
            "grant_types": ["authorization_code", "refresh_token"], "scopes": scopes}),
    )
    .await;
    assert!(
        client.get("client_secret").is_none(),
        "a public client has no secret"
    );
    client["client_id"].as_str().expect("id").to_owned()
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

/// POSTs a form to `path`, with an optional `Authorization` header.
async fn form(app: &TestApp, path: &str, auth: Option<&str>, pairs: &[(&str, &str)]) -> Response {
    let mut request = app.client.post(app.url(path)).form(pairs);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    request.send().await.expect("sent")
}

/// An RFC 6749 error: its status, `error` code, and `no-store`.
pub(crate) async fn oauth_error(response: Response, status: u16, error: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string());
    body
}

async fn client_credentials(app: &TestApp, id: &str, secret: &str) -> Value {
    let response = form(
        app,
        "/v1/oauth/token",
        Some(&basic(id, secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    response.json().await.expect("json")
}

fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
}

pub(crate) async fn status_as(app: &TestApp, token: &str, method: Method, path: &str) -> u16 {
    let mut request = app.request_as(token, method.clone(), path);
    if method == Method::POST {
        request = request.json(&json!({"url": "https://example.com/x"}));
    }
    request.send().await.expect("sent").status().as_u16()
}

async fn client_credentials_tokens_act_within_the_clients_scopes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (id, secret) = service(&app, &["links:read", "links:write"]).await;
    let issued = client_credentials(&app, &id, &secret).await;
    assert_eq!(issued["token_type"], "Bearer");
    assert_eq!(issued["expires_in"], 900);
    assert_eq!(issued["scope"], "links:read links:write");
    assert!(
        issued.get("refresh_token").is_none(),
        "no refresh token for a service"
    );
    let token = issued["access_token"].as_str().expect("token");
    let header = jwt_part(token, 0);
    assert_eq!(
        (header["typ"].as_str(), header["alg"].as_str()),
        (Some("at+jwt"), Some("EdDSA"))
    );
    let claims = jwt_part(token, 1);
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["client_id"], id.as_str());
    assert_eq!(claims["aud"], format!("{}/v1", app.base));
    assert_eq!(claims["iss"], app.base.as_str());
    for claim in ["exp", "iat", "nbf", "jti"] {
        assert!(claims.get(claim).is_some(), "{claim}");
    }

    // The token is a bearer credential like an API key, within its scopes.
    assert_eq!(status_as(&app, token, Method::GET, "/v1/links").await, 200);
    assert_eq!(status_as(&app, token, Method::POST, "/v1/links").await, 201);
    assert_eq!(
        status_as(&app, token, Method::GET, "/v1/api-keys").await,
        403
    );
    // Narrowed at the token endpoint: a read-only token cannot write.
    let response = form(
        &app,
        "/v1/oauth/token",
        None,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "links:read"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(
        response.status(),
        200,
        "client authentication by form fields"
    );
    let narrow: Value = response.json().await.expect("json");
    let narrow = narrow["access_token"].as_str().expect("token");
    assert_eq!(status_as(&app, narrow, Method::GET, "/v1/links").await, 200);
    assert_eq!(
        status_as(&app, narrow, Method::POST, "/v1/links").await,
        403
    );

    // A client cannot be registered with more than its registrar holds.
    let (_, member_key) = app.create_key("member", None).await;
    let (_, admin_key) = app
        .create_key("admin", Some(&["oauth_clients:write"]))
        .await;
    let response = app
        .request_as(&admin_key, Method::POST, "/v1/oauth/clients")
        .json(
            &json!({"name": "x", "grant_types": ["client_credentials"], "scopes": ["links:read"]}),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(
        response.status(),
        422,
        "scopes beyond the registering key's own"
    );
    assert_eq!(
        app.call_as(&member_key, Method::GET, "/v1/oauth/clients")
            .await
            .status(),
        403
    );

    // Deleting the client ends its tokens on the next request.
    let deleted = app
        .call(Method::DELETE, &format!("/v1/oauth/clients/{id}"))
        .await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(status_as(&app, token, Method::GET, "/v1/links").await, 401);
}

async fn the_token_endpoint_speaks_rfc_6749(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (id, secret) = service(&app, &["links:read"]).await;
    let path = "/v1/oauth/token";
    let grant = ("grant_type", "client_credentials");

    let wrong = form(&app, path, Some(&basic(&id, "pier_cs_wrong")), &[grant]).await;
    assert_eq!(wrong.headers()["www-authenticate"], "Basic realm=\"pier\"");
    oauth_error(wrong, 401, "invalid_client").await;
    let unknown = form(&app, path, Some(&basic("client_nope", &secret)), &[grant]).await;
    oauth_error(unknown, 401, "invalid_client").await;
    let nobody = form(&app, path, None, &[grant]).await;
    oauth_error(nobody, 401, "invalid_client").await;
    let both = form(
        &app,
        path,
        Some(&basic(&id, &secret)),
        &[grant, ("client_secret", &secret)],
    )
    .await;
    oauth_error(both, 400, "invalid_request").await;
    let twice = app
        .client
        .post(app.url(path))
        .header("authorization", basic(&id, &secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&grant_type=client_credentials")
        .send()
        .await
        .expect("sent");
    oauth_error(twice, 400, "invalid_request").await;
    let as_json = app
        .client
        .post(app.url(path))
        .header("authorization", basic(&id, &secret))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .expect("sent");
    oauth_error(as_json, 400, "invalid_request").await;
    for refused in [
        "password",
        "implicit",
        "token",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
    ] {
        let response = form(
            &app,
            path,
            Some(&basic(&id, &secret)),
            &[
                ("grant_type", refused),
                ("username", "a"),
                ("password", "b"),
            ],
        )
        .await;
        oauth_error(response, 400, "unsupported_grant_type").await;
    }
    let code_grant = form(
        &app,
        path,
        Some(&basic(&id, &secret)),
        &[("grant_type", "authorization_code"), ("code", "x")],
    )
    .await;
    oauth_error(code_grant, 400, "unauthorized_client").await;
    let wider = form(
        &app,
        path,
        Some(&basic(&id, &secret)),
        &[grant, ("scope", "links:read links:write")],
    )
    .await;
    oauth_error(wider, 400, "invalid_scope").await;
    let nonsense = form(
        &app,
        path,
        Some(&basic(&id, &secret)),
        &[grant, ("scope", "root")],
    )
    .await;
    oauth_error(nonsense, 400, "invalid_scope").await;
}

/// Walks a signed-in user through consent and returns the code from the redirect.
pub(crate) async fn consent(
    app: &TestApp,
    browser: &Browser,
    client_id: &str,
    scope: &str,
) -> String {
    let query = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", scope),
        ("state", "xyz 123"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    let page = browser
        .on(app, Method::GET, "/v1/oauth/authorize")
        .query(&query)
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.expect("html");
    assert!(
        html.contains("Reporting &lt;app&gt;"),
        "the client's name, escaped: {html}"
    );
    assert!(
        html.contains(&browser.csrf),
        "the form carries the anti-CSRF token"
    );
    let mut fields: Vec<(&str, &str)> = query.to_vec();
    fields.push(("csrf_token", &browser.csrf));
    fields.push(("decision", "approve"));
    let answer = browser
        .on(app, Method::POST, "/v1/oauth/authorize")
        .form(&fields)
        .send()
        .await
        .expect("sent");
    assert_eq!(answer.status(), 303);
    let location =
        reqwest::Url::parse(answer.headers()["location"].to_str().expect("ascii")).expect("a URL");
    assert_eq!(location.as_str().split('?').next(), Some(REDIRECT));
    let param = |name: &str| {
        location
            .query_pairs()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(
        param("state").as_deref(),
        Some("xyz 123"),
        "state is echoed"
    );
    assert_eq!(
        param("iss").as_deref(),
        Some(app.base.as_str()),
        "RFC 9207 iss"
    );
    param("code").expect("a code")
}

pub(crate) async fn exchange(
    app: &TestApp,
    client_id: &str,
    code: &str,
    verifier: &str,
) -> Response {
    form(
        app,
        "/v1/oauth/token",
        None,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await
}

pub(crate) async fn refresh(app: &TestApp, client_id: &str, token: &str) -> Response {
    form(
        app,
        "/v1/oauth/token",
        None,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", token),
        ],
    )
    .await
}

pub(crate) async fn signed_in_member(app: &TestApp, email: &str, role: Role) -> Browser {
    user(app, email, &app.workspace(), role).await;
    sign_in(app, email, PASSWORD).await
}

async fn authorization_code_with_pkce_consent_and_rotating_refresh_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client_id = app_client(&app, &["links:read", "links:write"]).await;
    let ann = signed_in_member(&app, "ann@example.com", Role::Viewer).await;

    // A viewer can only grant what a viewer holds: links:write is left out.
    let code = consent(&app, &ann, &client_id, "links:read links:write").await;
    let wrong = exchange(&app, &client_id, &code, &"a".repeat(43)).await;
    oauth_error(wrong, 400, "invalid_grant").await;
    let plain = exchange(&app, &client_id, &code, CHALLENGE).await;
    oauth_error(plain, 400, "invalid_grant").await;
    let response = exchange(&app, &client_id, &code, VERIFIER).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens: Value = response.json().await.expect("json");
    assert_eq!(tokens["scope"], "links:read");
    let access = tokens["access_token"].as_str().expect("access").to_owned();
    let first_refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_eq!(jwt_part(&access, 1)["sub"], ann.session["user"]["id"]);
    assert_eq!(
        status_as(&app, &access, Method::GET, "/v1/links").await,
        200
    );
    assert_eq!(
        status_as(&app, &access, Method::POST, "/v1/links").await,
        403
    );

    // Refresh tokens rotate; presenting a used one revokes the whole family.
    let response = refresh(&app, &client_id, &first_refresh).await;
    assert_eq!(response.status(), 200);
    let rotated: Value = response.json().await.expect("json");
    let second_refresh = rotated["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let second_access = rotated["access_token"].as_str().expect("access").to_owned();
    assert_ne!(first_refresh, second_refresh);
    assert_eq!(
        status_as(&app, &second_access, Method::GET, "/v1/links").await,
        200
    );
    let replayed = refresh(&app, &client_id, &first_refresh).await;
    oauth_error(replayed, 400, "invalid_grant").await;
    let successor = refresh(&app, &client_id, &second_refresh).await;
    oauth_error(successor, 400, "invalid_grant").await;
    assert_eq!(
        status_as(&app, &second_access, Method::GET, "/v1/links").await,
        401
    );
    assert_eq!(
        status_as(&app, &access, Method::GET, "/v1/links").await,
        401
    );

    // A code works once; presenting it again revokes what it was exchanged for.
    let code = consent(&app, &ann, &client_id, "links:read").await;
    let first: Value = exchange(&app, &client_id, &code, VERIFIER)
        .await
        .json()
        .await
        .expect("json");
    let access = first["access_token"].as_str().expect("access");
    assert_eq!(status_as(&app, access, Method::GET, "/v1/links").await, 200);
    let again = exchange(&app, &client_id, &code, VERIFIER).await;
    oauth_error(again, 400, "invalid_grant").await;
    assert_eq!(status_as(&app, access, Method::GET, "/v1/links").await, 401);
    let refreshed = refresh(
        &app,
        &client_id,
        first["refresh_token"].as_str().expect("r"),
    )
    .await;
    oauth_error(refreshed, 400, "invalid_grant").await;

    // A code expires within a minute.
    let code = consent(&app, &ann, &client_id, "links:read").await;
    app.clock.advance(Duration::from_secs(61));
    oauth_error(
        exchange(&app, &client_id, &code, VERIFIER).await,
        400,
        "invalid_grant",
    )
    .await;
}

async fn every_redirect_uri_variant_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client_id = app_client(&app, &["links:read"]).await;
    let ann = signed_in_member(&app, "ann@example.com", Role::Member).await;
    for variant in [
        "https://app.example/cb/",
        "https://APP.example/cb",
        "https://app.example/CB",
        "https://app.example/cb?extra=1",
        "https://app.example:8443/cb",
        "https://user@app.example/cb",
        "https://app.example/cb/%2e%2e/cb",
        "https://app.example/x/%2e%2e/cb",
        "https://app.example.evil.example/cb",
        "http://app.example/cb",
        "http://127.0.0.1:9999/cb",
        "",
    ] {
        let page = ann
            .on(&app, Method::GET, "/v1/oauth/authorize")
            .query(&[
                ("response_type", "code"),
                ("client_id", client_id.as_str()),
                ("redirect_uri", variant),
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await
            .expect("sent");
        assert_eq!(page.status(), 400, "{variant:?}");
        assert!(
            !page.headers().contains_key("location"),
            "never redirected: {variant:?}"
        );
    }
    // An unknown client is shown to the user too, never redirected.
    let page = ann
        .on(&app, Method::GET, "/v1/oauth/authorize")
        .query(&[
            ("client_id", "client_01m8pd91emf07nqws6p476403x"),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 400);
    assert!(!page.headers().contains_key("location"));
    // Registration refuses the dangerous forms outright.
    for bad in [
        "https://app.example/cb#x",
        "http://app.example/cb",
        "https://u:p@app.example/cb",
    ] {
        let response = app
            .post_json(
                "/v1/oauth/clients",
                &json!({"name": "x", "redirect_uris": [bad],
                    "grant_types": ["authorization_code"], "scopes": ["links:read"]}),
            )
            .await;
        assert_eq!(response.status(), 422, "{bad}");
    }
}

async fn consent_needs_a_session_its_csrf_token_and_pkce(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client_id = app_client(&app, &["links:read"]).await;
    let ann = signed_in_member(&app, "ann@example.com", Role::Member).await;
    let base = vec![
        ("response_type", "code"),
        ("client_id", client_id.as_str()),
        ("redirect_uri", REDIRECT),
        ("state", "s1"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    // Not signed in: a page, no code.
    let anonymous = app
        .client
        .get(app.url("/v1/oauth/authorize"))
        .query(&base)
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), 401);

    // PKCE is required, and only S256; these errors go back to the client with its state.
    let mut without_pkce = base.clone();
    without_pkce.retain(|(n, _)| !n.starts_with("code_challenge"));
    let mut plain = base.clone();
    plain.retain(|(n, _)| *n != "code_challenge_method");
    plain.push(("code_challenge_method", "plain"));
    let mut token_type = base.clone();
    token_type[0] = ("response_type", "token");
    for (query, error) in [
        (without_pkce, "invalid_request"),
        (plain, "invalid_request"),
        (token_type, "unsupported_response_type"),
    ] {
        let response = ann
            .on(&app, Method::GET, "/v1/oauth/authorize")
            .query(&query)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 303);
        let location = response.headers()["location"].to_str().expect("ascii");
        assert!(
            location.starts_with(&format!("{REDIRECT}?error={error}")),
            "{location}"
        );
        assert!(location.contains("state=s1"), "{location}");
    }

    // The decision needs the session's anti-CSRF token, from the same site.
    let mut approve = base.clone();
    approve.push(("decision", "approve"));
    let forged = ann
        .on(&app, Method::POST, "/v1/oauth/authorize")
        .form(&approve)
        .send()
        .await
        .expect("sent");
    assert_eq!(forged.status(), 403, "no csrf_token");
    let mut with_token = approve.clone();
    with_token.push(("csrf_token", &ann.csrf));
    let cross = ann
        .on(&app, Method::POST, "/v1/oauth/authorize")
        .header("sec-fetch-site", "cross-site")
        .form(&with_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(cross.status(), 403, "cross-site");
    let foreign = ann
        .on(&app, Method::POST, "/v1/oauth/authorize")
        .header("origin", "https://evil.example")
        .form(&with_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(foreign.status(), 403, "foreign origin");

    // Denying sends the client access_denied.
    let mut deny = base.clone();
    deny.push(("csrf_token", &ann.csrf));
    deny.push(("decision", "deny"));
    let denied = ann
        .on(&app, Method::POST, "/v1/oauth/authorize")
        .form(&deny)
        .send()
        .await
        .expect("sent");
    assert_eq!(denied.status(), 303);
    let location = denied.headers()["location"].to_str().expect("ascii");
    assert!(
        location.starts_with(&format!("{REDIRECT}?error=access_denied")),
        "{location}"
    );

    // Signing out ends what the page could do.
    let logout = ann
        .on(&app, Method::POST, "/v1/auth/logout")
        .header("x-csrf-token", &ann.csrf)
        .send()
        .await
        .expect("sent");
    assert_eq!(logout.status(), 204);
    let replay = ann
        .on(&app, Method::POST, "/v1/oauth/authorize")
        .form(&with_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(replay.status(), 401);
}

async fn revocation_and_introspection(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (id, secret) = service(&app, &["links:read"]).await;
    let (other_id, other_secret) = service(&app, &["links:read"]).await;
    let auth = basic(&id, &secret);
    let token = client_credentials(&app, &id, &secret).await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();

    let introspect = |token: String, auth: String| {
        let app = &app;
        async move {
            let response = form(
                app,
                "/v1/oauth/introspect",
                Some(&auth),
                &[("token", &token)],
            )
            .await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.expect("json")
        }
    };
    let answer = introspect(token.clone(), auth.clone()).await;
    assert_eq!(answer["active"], true);
    assert_eq!(answer["client_id"], id.as_str());
    assert_eq!(answer["scope"], "links:read");
    assert_eq!(answer["token_type"], "access_token");
    let nonsense = introspect("not a token".to_owned(), auth.clone()).await;
    assert_eq!(nonsense, json!({"active": false}));

    // Another client may not revoke it; its owner may, and it ends at once.
    let foreign = form(
        &app,
        "/v1/oauth/revoke",
        Some(&basic(&other_id, &other_secret)),
        &[("token", &token)],
    )
    .await;
    assert_eq!(foreign.status(), 200, "RFC 7009 answers the same");
    assert_eq!(status_as(&app, &token, Method::GET, "/v1/links").await, 200);
    let revoked = form(&app, "/v1/oauth/revoke", Some(&auth), &[("token", &token)]).await;
    assert_eq!(revoked.status(), 200);
    assert_eq!(status_as(&app, &token, Method::GET, "/v1/links").await, 401);
    assert_eq!(
        introspect(token.clone(), auth.clone()).await,
        json!({"active": false})
    );
    let unknown = form(
        &app,
        "/v1/oauth/revoke",
        Some(&auth),
        &[("token", "pier_rt_x")],
    )
    .await;
    assert_eq!(unknown.status(), 200);
    let unauthenticated = form(&app, "/v1/oauth/introspect", None, &[("token", &token)]).await;
    oauth_error(unauthenticated, 401, "invalid_client").await;

    // A refresh token introspects as one, and revoking it ends its access tokens too.
    let client_id = app_client(&app, &["links:read"]).await;
    let ann = signed_in_member(&app, "ann@example.com", Role::Member).await;
    let code = consent(&app, &ann, &client_id, "links:read").await;
    let tokens: Value = exchange(&app, &client_id, &code, VERIFIER)
        .await
        .json()
        .await
        .expect("json");
    let refresh_token = tokens["refresh_token"].as_str().expect("r").to_owned();
    let access = tokens["access_token"].as_str().expect("a").to_owned();
    let answer = introspect(refresh_token.clone(), auth.clone()).await;
    assert_eq!(answer["active"], true);
    assert_eq!(answer["token_type"], "refresh_token");
    assert_eq!(answer["sub"], ann.session["user"]["id"]);
    let public_revoke = form(
        &app,
        "/v1/oauth/revoke",
        None,
        &[("token", &refresh_token), ("client_id", &client_id)],
    )
    .await;
    assert_eq!(public_revoke.status(), 200);
    assert_eq!(
        status_as(&app, &access, Method::GET, "/v1/links").await,
        401
    );
    assert_eq!(
        introspect(refresh_token, auth).await,
        json!({"active": false})
    );
}

async fn forged_and_misused_tokens_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (id, secret) = service(&app, &["links:read"]).await;
    let token = client_credentials(&app, &id, &secret).await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let header = jwt_part(&token, 0);
    let claims = jwt_part(&token, 1);
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"));

    let mut none = header.clone();
    none["alg"] = json!("none");
    let alg_none = format!("{}.{}.", encode(&none), encode(&claims));
    let jwks = app.public_json("/.well-known/jwks.json").await;
    let x = jwks["keys"][0]["x"].as_str().expect("x").to_owned();
    let hs = jsonwebtoken::Header {
        typ: Some("at+jwt".to_owned()),
        kid: header["kid"].as_str().map(str::to_owned),
        ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
    };
    let hs256 = jsonwebtoken::encode(
        &hs,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&URL_SAFE_NO_PAD.decode(&x).expect("x")),
    )
    .expect("signed");

    // A `jku` pointing at a listener of ours: Pier must never connect to it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut jku = header.clone();
    jku["jku"] = json!(format!(
        "http://{}/jwks.json",
        listener.local_addr().expect("addr")
    ));
    let (signed, signature) = token.rsplit_once('.').expect("parts");
    let (_, body) = signed.split_once('.').expect("parts");
    let with_jku = format!("{}.{body}.{signature}", encode(&jku));
    let mut flipped = URL_SAFE_NO_PAD.decode(signature).expect("b64");
    flipped[0] ^= 0x80;
    let flipped = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(flipped));

    for (case, forged) in [
        ("alg none", alg_none),
        ("HS256 keyed with the public key", hs256),
        ("jku", with_jku),
        ("flipped signature", flipped),
        ("garbage", "a.b.c".to_owned()),
    ] {
        let response = app.call_as(&forged, Method::GET, "/v1/links").await;
        assert_eq!(response.status(), 401, "{case}");
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .expect("ascii")
                .contains("invalid_token"),
            "{case}"
        );
    }
    let connected = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(connected.is_err(), "Pier fetched the jku");

    // A refresh token is not an access token.
    let client_id = app_client(&app, &["links:read"]).await;
    let ann = signed_in_member(&app, "ann@example.com", Role::Member).await;
    let code = consent(&app, &ann, &client_id, "links:read").await;
    let tokens: Value = exchange(&app, &client_id, &code, VERIFIER)
        .await
        .json()
        .await
        .expect("json");
    let refresh_token = tokens["refresh_token"].as_str().expect("refresh");
    assert_eq!(
        status_as(&app, refresh_token, Method::GET, "/v1/links").await,
        401
    );

    // Expired: past its 15 minutes and the leeway.
    assert_eq!(status_as(&app, &token, Method::GET, "/v1/links").await, 200);
    app.clock.advance(Duration::from_secs(900 + 31));
    let expired = app.call_as(&token, Method::GET, "/v1/links").await;
    assert_eq!(expired.status(), 401);
    let body: Value = expired.json().await.expect("json");
    assert!(
        body["detail"].as_str().expect("detail").contains("expired"),
        "{body}"
    );
}

async fn another_workspace_sees_none_of_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let clock: Arc<dyn Clock> = Arc::new(app.clock.clone());
    let (other, _, other_key) = WorkspaceStore::new(app.db.clone(), clock)
        .create_with_owner_key(WorkspaceName::parse("globex").expect("name"))
        .await
        .expect("workspace");
    let other_key = other_key.expose().to_owned();
    let (id, secret) = service(&app, &["links:read"]).await;
    let theirs = register_as(
        &app,
        &other_key,
        json!({"name": "theirs", "grant_types": ["client_credentials"], "scopes": ["links:read"]}),
    )
    .await;
    let (their_id, their_secret) = (
        theirs["client_id"].as_str().expect("id"),
        theirs["client_secret"].as_str().expect("secret"),
    );

    // The clients API: another workspace's client is 404 and never listed.
    let path = format!("/v1/oauth/clients/{id}");
    for method in [Method::GET, Method::DELETE] {
        let response = app.call_as(&other_key, method.clone(), &path).await;
        assert_eq!(response.status(), 404, "{method}");
    }
    let listed: Value = app
        .request_as(&other_key, Method::GET, "/v1/oauth/clients")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let ids: Vec<&Value> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|c| &c["client_id"])
        .collect();
    assert_eq!(ids, [&json!(their_id)]);

    // Their token acts in their workspace only: our link is 404 to it.
    let link: Value = app
        .post_json("/v1/links", &json!({"url": "https://example.com/ours"}))
        .await
        .json()
        .await
        .expect("json");
    let their_token = client_credentials(&app, their_id, their_secret).await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let link_path = format!("/v1/links/{}", link["id"].as_str().expect("id"));
    assert_eq!(
        status_as(&app, &their_token, Method::GET, &link_path).await,
        404
    );

    // Introspection and revocation stay within a workspace.
    let our_token = client_credentials(&app, &id, &secret).await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let peek = form(
        &app,
        "/v1/oauth/introspect",
        Some(&basic(their_id, their_secret)),
        &[("token", &our_token)],
    )
    .await;
    assert_eq!(
        peek.json::<Value>().await.expect("json"),
        json!({"active": false})
    );
    let revoke = form(
        &app,
        "/v1/oauth/revoke",
        Some(&basic(their_id, their_secret)),
        &[("token", &our_token)],
    )
    .await;
    assert_eq!(revoke.status(), 200);
    assert_eq!(
        status_as(&app, &our_token, Method::GET, &link_path).await,
        200
    );

    // A user of their workspace cannot authorize our app, nor redeem our client's codes.
    let client_id = app_client(&app, &["links:read"]).await;
    user(&app, "bob@example.com", &other.id, Role::Owner).await;
    let bob = sign_in(&app, "bob@example.com", PASSWORD).await;
    let page = bob
        .on(&app, Method::GET, "/v1/oauth/authorize")
        .query(&[
            ("response_type", "code"),
            ("client_id", client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 403);
    let ann = signed_in_member(&app, "ann@example.com", Role::Member).await;
    let code = consent(&app, &ann, &client_id, "links:read").await;
    let stolen = form(
        &app,
        "/v1/oauth/token",
        Some(&basic(their_id, their_secret)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    oauth_error(stolen, 400, "unauthorized_client").await;
}

async fn discovery_documents_describe_the_server(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let metadata = app
        .public_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(metadata["issuer"], app.base.as_str());
    assert_eq!(
        metadata["token_endpoint"],
        format!("{}/v1/oauth/token", app.base)
    );
    assert_eq!(
        metadata["jwks_uri"],
        format!("{}/.well-known/jwks.json", app.base)
    );
    assert_eq!(
        metadata["code_challenge_methods_supported"],
        json!(["S256"])
    );
    assert_eq!(metadata["response_types_supported"], json!(["code"]));
    let grants = metadata["grant_types_supported"]
        .as_array()
        .expect("grants");
    assert!(!grants.contains(&json!("password")) && !grants.contains(&json!("implicit")));
    let jwks = app.public_json("/.well-known/jwks.json").await;
    let key = &jwks["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    assert!(key.get("d").is_none(), "no private part");
}

async fn no_oauth_secret_rests_in_the_clear(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (id, secret) = service(&app, &["links:read"]).await;
    let access = client_credentials(&app, &id, &secret).await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let client_id = app_client(&app, &["links:read"]).await;
    let ann = signed_in_member(&app, "ann@example.com", Role::Member).await;
    let code = consent(&app, &ann, &client_id, "links:read").await;
    let tokens: Value = exchange(&app, &client_id, &code, VERIFIER)
        .await
        .json()
        .await
        .expect("json");
    let refresh_token = tokens["refresh_token"].as_str().expect("refresh");
    let stored = everything_stored(&app).await;
    let text = String::from_utf8_lossy(&stored);
    for (what, value) in [
        ("client secret", secret.as_str()),
        ("authorization code", code.as_str()),
        ("refresh token", refresh_token),
        ("access token", access.as_str()),
    ] {
        let body = &value["pier_rt_".len()..];
        assert!(!text.contains(body), "the {what} rests in the clear");
    }
}

/// Each node remembers live grants; a grant ended through one node (its token revoked, its
/// client deleted) is refused by another at once, as the notification reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set PIER_TEST_DATABASE_URL"]
async fn ended_grants_reach_every_node() {
    // A cluster's nodes share one issuer: tokens name it, and every node checks they do.
    let cluster = || Options {
        settings: vec![("auth.issuer", "https://pier.example".to_owned())],
        ..Options::default()
    };
    let a = TestApp::spawn_with(Backend::postgres(), cluster()).await;
    let b = a.another_node_with(cluster()).await;
    let (id, secret) = service(&a, &["links:read"]).await;
    let token = |answer: Value| answer["access_token"].as_str().expect("token").to_owned();
    let refused_by_b = |token: String| {
        let b = &b;
        async move {
            // Allow the notification a moment, far below the cache's lifetime.
            for _ in 0..50 {
                if status_as(b, &token, Method::GET, "/v1/links").await == 401 {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        }
    };

    let revoked = token(client_credentials(&a, &id, &secret).await);
    let deleted = token(client_credentials(&a, &id, &secret).await);
    // Both nodes have checked both grants, so both remember them.
    for node in [&a, &b] {
        for token in [&revoked, &deleted] {
            assert_eq!(status_as(node, token, Method::GET, "/v1/links").await, 200);
        }
    }

    let response = form(
        &a,
        "/v1/oauth/revoke",
        Some(&basic(&id, &secret)),
        &[("token", &revoked)],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(status_as(&a, &revoked, Method::GET, "/v1/links").await, 401);
    assert!(
        refused_by_b(revoked).await,
        "node B still accepts a token revoked on node A"
    );
    assert_eq!(status_as(&b, &deleted, Method::GET, "/v1/links").await, 200);

    let response = a
        .call(Method::DELETE, &format!("/v1/oauth/clients/{id}"))
        .await;
    assert_eq!(response.status(), 204);
    assert_eq!(status_as(&a, &deleted, Method::GET, "/v1/links").await, 401);
    assert!(
        refused_by_b(deleted).await,
        "node B still accepts a token of a client deleted on node A"
    );
}
