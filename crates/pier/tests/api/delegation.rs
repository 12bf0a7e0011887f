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
use crate::sessions::PASSWORD;
use crate::support::{Backend, TestApp, on_both_backends};

on_both_backends!(
    an_owners_consent_does_not_lift_an_admins_client_to_owner,
    a_password_change_ends_refresh_tokens_and_grants,
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

async fn a_password_change_ends_refresh_tokens_and_grants(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client_id = client_of(&app, &app.owner_key).await;
    let ann = signed_in_member(&app, "ann@example.com", Role::Member).await;
    let code = consent(&app, &ann, &client_id, "links:read").await;
    let before = tokens(&app, &client_id, &code).await;
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

