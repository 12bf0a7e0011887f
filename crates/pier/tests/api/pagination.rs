//! Cursor pagination: every row exactly once even when all share one timestamp, signed cursors,
//! and cursors bound to their list and filters.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Backend, TestApp, on_both_backends, problem};

on_both_backends!(
    pages_cover_rows_sharing_a_timestamp,
    cursors_are_tamper_evident
);

async fn pages_cover_rows_sharing_a_timestamp(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // The manual clock never moves here, so all 251 keys (with the owner's) share created_at.
    for i in 0..250 {
        let response = app
            .post_json(
                "/v1/api-keys",
                &json!({"name": format!("k{i}"), "role": "viewer"}),
            )
            .await;
        assert_eq!(response.status(), 201);
    }

    let mut seen = Vec::new();
    let mut next = Some("/v1/api-keys?limit=7".to_owned());
    let mut pages = 0;
    while let Some(path) = next.take() {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 200);
        let link = response
            .headers()
            .get("link")
            .map(|l| l.to_str().expect("ascii").to_owned());
        let page: Value = response.json().await.expect("json");
        let data = page["data"].as_array().expect("data");
        assert!(data.len() <= 7);
        seen.extend(data.iter().map(|k| {
            (
                k["created_at"].as_str().expect("ts").to_owned(),
                k["id"].as_str().expect("id").to_owned(),
            )
        }));
        pages += 1;
        if page["has_more"] == true {
            let cursor = page["next_cursor"].as_str().expect("cursor");
            let link = link.expect("Link header when there is more");
            assert!(
                link.ends_with("; rel=\"next\"") && link.contains(cursor),
                "{link}"
            );
            let target = link
                .trim_start_matches('<')
                .split('>')
                .next()
                .expect("target")
                .to_owned();
            next = Some(target);
        } else {
            assert!(page["next_cursor"].is_null());
            assert!(link.is_none());
        }
    }
    assert_eq!(pages, 36, "251 rows at 7 per page");
    assert_eq!(seen.len(), 251);
    let unique: HashSet<_> = seen.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(unique.len(), 251, "no row served twice");
    assert!(
        seen.iter().all(|(ts, _)| *ts == seen[0].0),
        "all rows share one timestamp"
    );
    assert!(
        seen.windows(2).all(|w| w[0].1 > w[1].1),
        "newest first, ties broken by id"
    );
}

async fn cursors_are_tamper_evident(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for _ in 0..3 {
        app.create_key("viewer", None).await;
    }
    let page: Value = app
        .get("/v1/api-keys?limit=1")
        .await
        .json()
        .await
        .expect("json");
    let cursor = page["next_cursor"].as_str().expect("cursor").to_owned();

    let mut tampered = cursor.clone().into_bytes();
    let last = tampered.len() - 5;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    problem(
        app.get(&format!("/v1/api-keys?cursor={tampered}")).await,
        400,
        "invalid_cursor",
    )
    .await;
    problem(
        app.get("/v1/api-keys?cursor=not-a-cursor").await,
        400,
        "invalid_cursor",
    )
    .await;

    // The same cursor with other filters.
    let other = app
        .get(&format!("/v1/api-keys?role=viewer&cursor={cursor}"))
        .await;
    problem(other, 400, "cursor_mismatch").await;

    // Another workspace cannot use it either.
    let store =
        pier_auth::WorkspaceStore::new(app.db.clone(), std::sync::Arc::new(app.clock.clone()));
    let (_, _, secret) = store
        .create_with_owner_key(pier_auth::WorkspaceName::parse("b").expect("name"))
        .await
        .expect("ws");
    let theirs = app
        .call_as(
            secret.expose(),
            Method::GET,
            &format!("/v1/api-keys?cursor={cursor}"),
        )
        .await;
    problem(theirs, 400, "cursor_mismatch").await;

    // The genuine cursor works and filters apply to the next page too.
    let second: Value = app
        .get(&format!("/v1/api-keys?limit=1&cursor={cursor}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(second["data"].as_array().expect("data").len(), 1);
    assert_ne!(second["data"][0]["id"], page["data"][0]["id"]);
}
