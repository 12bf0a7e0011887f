//! What a delegated credential may do: an OAuth client never acts above the role it was
//! registered with, whoever consents, and a password change ends what the old password
//! granted.

use pier_auth::{Permission, Role};
use reqwest::Method;
use serde_json::{Value, json};

use crate::oauth::{
    REDIRECT, VERIFIER, consent, exchange, oauth_error, refresh, register_as, signed_in_member,
    status_as,
};
use crate::sessions::{Browser, PASSWORD};
use crate::support::{Backend, TestApp, on_both_backends};

on_both_backends!(
    an_owners_consent_does_not_lift_an_admins_client_to_owner,
    a_password_change_ends_refresh_tokens_and_grants,
    a_leaked_code_alone_cannot_end_a_grant,
    authorization_errors_name_the_issuer,
    a_token_never_replays_its_users_stored_answers,
    an_admin_cannot_delete_an_owners_client,
);

fn every_scope() -> Vec<&'static str> {
    Permission::ALL.iter().map(|p| p.as_str()).collect()
}

/// A public authorization-code client with every scope, registered with `key`.
pub(crate) async fn client_of(app: &TestApp, key: &str) -> String {
    let client = register_as(
        app,
        key,
        json!({"name": "Reporting <app>", "client_type": "public", "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"], "scopes": every_scope()}),
    )
    .await;
    client["client_id"].as_str().expect("id").to_owned()
}

/// The tokens an authorization code is exchanged for.
pub(crate) async fn tokens(app: &TestApp, client_id: &str, code: &str) -> Value {
    let response = exchange(app, client_id, code, VERIFIER).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

async fn create_key_status(app: &TestApp, token: &str, role: &str) -> u16 {
    app.request_as(token, Method::POST, "/v1/api-keys")
        .json(&json!({"name": "minted", "role": role}))
        .send()
        .await
        .expect("sent")
        .status()
        .as_u16()
}

async fn an_owners_consent_does_not_lift_an_admins_client_to_owner(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin_key) = app.create_key("admin", None).await;
    let client_id = client_of(&app, &admin_key).await;
    let owner = signed_in_member(&app, "olga@example.com", Role::Owner).await;
    let code = consent(&app, &owner, &client_id, &every_scope().join(" ")).await;
    let tokens = tokens(&app, &client_id, &code).await;
    let access = tokens["access_token"].as_str().expect("access");

    assert_eq!(create_key_status(&app, access, "owner").await, 403);
    assert_eq!(
        create_key_status(&app, access, "admin").await,
        201,
        "the admin's rank is what it keeps"
    );

    // A client acting for itself has its registrant's rank too.
    let service = register_as(
        &app,
        &admin_key,
        json!({"name": "svc", "grant_types": ["client_credentials"], "scopes": every_scope()}),
    )
    .await;
    let response = app
        .client
        .post(app.url("/v1/oauth/token"))
        .basic_auth(
            service["client_id"].as_str().expect("id"),
            service["client_secret"].as_str(),
        )
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let access = body["access_token"].as_str().expect("access");
    assert_eq!(create_key_status(&app, access, "owner").await, 403);
}

/// The owner's client, a member signed in who consented to it for `links:read`, the code of
/// that consent and the tokens it was exchanged for.
async fn member_with_tokens(app: &TestApp) -> (String, Browser, String, Value) {
    let client_id = client_of(app, &app.owner_key).await;
    let ann = signed_in_member(app, "ann@example.com", Role::Member).await;
    let code = consent(app, &ann, &client_id, "links:read").await;
    let tokens = tokens(app, &client_id, &code).await;
    (client_id, ann, code, tokens)
}

async fn a_password_change_ends_refresh_tokens_and_grants(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (client_id, ann, _, before) = member_with_tokens(&app).await;
    let access = before["access_token"].as_str().expect("access");
    let refresh_token = before["refresh_token"].as_str().expect("refresh");
    let unspent = consent(&app, &ann, &client_id, "links:read").await;
    assert_eq!(status_as(&app, access, Method::GET, "/v1/links").await, 200);

    let changed = ann
        .change(&app, Method::POST, "/v1/auth/password")
        .json(&json!({"current_password": PASSWORD, "new_password": "another long password"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(changed.status(), 200);

    oauth_error(
        refresh(&app, &client_id, refresh_token).await,
        400,
        "invalid_grant",
    )
    .await;
    assert_eq!(status_as(&app, access, Method::GET, "/v1/links").await, 401);
    oauth_error(
        exchange(&app, &client_id, &unspent, VERIFIER).await,
        400,
        "invalid_grant",
    )
    .await;
}

async fn a_leaked_code_alone_cannot_end_a_grant(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (client_id, _, code, issued) = member_with_tokens(&app).await;
    let access = issued["access_token"].as_str().expect("access");

    // Whoever saw the code in a log or a referrer lacks the verifier.
    let leaked = exchange(&app, &client_id, &code, &"x".repeat(43)).await;
    oauth_error(leaked, 400, "invalid_grant").await;
    assert_eq!(status_as(&app, access, Method::GET, "/v1/links").await, 200);

    // The whole exchange again is reuse: the grant ends.
    let replayed = exchange(&app, &client_id, &code, VERIFIER).await;
    oauth_error(replayed, 400, "invalid_grant").await;
    assert_eq!(status_as(&app, access, Method::GET, "/v1/links").await, 401);
}

async fn authorization_errors_name_the_issuer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client_id = client_of(&app, &app.owner_key).await;
    let ann = signed_in_member(&app, "ann@example.com", Role::Member).await;
    let without_pkce = ann
        .on(&app, Method::GET, "/v1/oauth/authorize")
        .query(&[
            ("response_type", "code"),
            ("client_id", client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("state", "s1"),
        ])
        .send()
        .await
        .expect("sent");
    assert_eq!(without_pkce.status(), 303);
    let location = reqwest::Url::parse(without_pkce.headers()["location"].to_str().expect("ascii"))
        .expect("a URL");
    let param = |name: &str| {
        location
            .query_pairs()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(param("error").as_deref(), Some("invalid_request"));
    assert_eq!(param("state").as_deref(), Some("s1"));
    assert_eq!(param("iss").as_deref(), Some(app.base.as_str()), "RFC 9207");
}

/// A user's session makes a key with an `Idempotency-Key`; a client acting for the same user
/// sends the same request with the same key and must not be handed the stored secret.
async fn a_token_never_replays_its_users_stored_answers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client_id = client_of(&app, &app.owner_key).await;
    let ann = signed_in_member(&app, "ann@example.com", Role::Admin).await;
    let body = json!({"name": "ci", "role": "member", "scopes": ["workspace:read"]});
    // The session's create, sent twice with one idempotency key.
    let create = || async {
        ann.change(&app, Method::POST, "/v1/api-keys")
            .header("idempotency-key", "k-1")
            .json(&body)
            .send()
            .await
            .expect("sent")
    };
    let made = create().await;
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.expect("json");
    let again = create().await;
    assert_eq!(
        again.headers()["idempotent-replayed"],
        "true",
        "the session replays"
    );

    let code = consent(&app, &ann, &client_id, "api_keys:write workspace:read").await;
    let tokens = tokens(&app, &client_id, &code).await;
    let access = tokens["access_token"].as_str().expect("access");
    let by_client = app
        .request_as(access, Method::POST, "/v1/api-keys")
        .header("idempotency-key", "k-1")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(by_client.status(), 201);
    assert!(by_client.headers().get("idempotent-replayed").is_none());
    let fresh: Value = by_client.json().await.expect("json");
    assert_ne!(
        fresh["key"], made["key"],
        "the session's secret stays the session's"
    );
}

async fn an_admin_cannot_delete_an_owners_client(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin_key) = app.create_key("admin", None).await;
    let owners = client_of(&app, &app.owner_key).await;
    let admins = client_of(&app, &admin_key).await;
    assert_eq!(delete_client(&app, &admin_key, &owners).await, 403);
    assert_eq!(delete_client(&app, &admin_key, &admins).await, 204);
    assert_eq!(delete_client(&app, &app.owner_key, &owners).await, 204);
}

async fn delete_client(app: &TestApp, key: &str, id: &str) -> u16 {
    let path = format!("/v1/oauth/clients/{id}");
    app.call_as(key, Method::DELETE, &path)
        .await
        .status()
        .as_u16()
}
