//! Short links over HTTP: the links API, the redirect path, password links, exact limits under
//! concurrency, cache invalidation (across nodes on PostgreSQL) and tenant isolation.

use std::sync::Arc;
use std::time::Duration;

use pier_auth::{WorkspaceName, WorkspaceStore};
use pier_core::Clock;
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::support::{Backend, Options, TestApp, on_both_backends, problem};

on_both_backends!(
    ipv6_literal_targets_are_taken_and_redirected_to,
    link_lifecycle,
    bad_links_are_refused_with_their_reason,
    redirect_statuses_and_head,
    password_links_ask_and_throttle_guesses,
    limits_hold_exactly_under_200_concurrent_clicks,
    clicks_are_counted_after_a_flush,
    lists_filter_and_page,
    another_workspaces_link_is_404,
    idempotent_creates_return_the_first_link,
    clicks_are_written_at_shutdown,
    a_failed_last_flush_is_retried_before_the_node_stops,
    clicks_are_counted_by_country,
    large_imports_take_no_idempotency_key,
);

async fn create(app: &TestApp, body: Value) -> Value {
    let response = app.post_json("/v1/links", &body).await;
    assert_eq!(response.status(), 201, "creating {body}");
    response.json().await.expect("json")
}

/// Follows `slug` once as a client that does not read HTML.
async fn follow(app: &TestApp, slug: &str) -> Response {
    app.client
        .get(app.url(&format!("/{slug}")))
        .send()
        .await
        .expect("request sent")
}

fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .map_or("", |v| v.to_str().expect("ascii"))
}

async fn link_lifecycle(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .post_json(
            "/v1/links",
            &json!({"url": "HTTPS://Example.COM:443/a/../spring?x=1", "title": " Spring ",
                    "tags": ["sale", "news", "sale"]}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let location = header(&response, "location").to_owned();
    let etag = header(&response, "etag").to_owned();
    let link: Value = response.json().await.expect("json");
    let slug = link["slug"].as_str().expect("slug").to_owned();
    assert_eq!(slug.len(), 7, "a generated slug");
    assert_eq!(
        location,
        format!("/v1/links/{}", link["id"].as_str().expect("id"))
    );
    assert_eq!(
        link["url"], "https://example.com/spring?x=1",
        "stored normalised"
    );
    assert_eq!(link["short_url"], format!("{}/{slug}", app.base));
    assert_eq!(link["title"], "Spring");
    assert_eq!(link["tags"], json!(["news", "sale"]));
    assert_eq!(link["redirect_status"], 302);
    assert_eq!(link["clicks"], 0);
    assert_eq!(link["has_password"], false);
    assert!(link.get("password").is_none() && link.get("version").is_none());
    assert_eq!(app.get_value(&location).await, link);
    assert_eq!(
        app.get_value(&format!("/v1/links/by-slug/{slug}")).await,
        link
    );

    let visit = follow(&app, &slug).await;
    assert_eq!(visit.status(), 302);
    assert_eq!(header(&visit, "location"), "https://example.com/spring?x=1");
    assert_eq!(header(&visit, "cache-control"), "private, max-age=0");

    // A merge patch changes what it names; the next redirect uses it at once.
    let patch = |body: Value, if_match: &str| {
        app.request(Method::PATCH, &location)
            .header("content-type", "application/merge-patch+json")
            .header("if-match", if_match.to_owned())
            .body(body.to_string())
            .send()
    };
    let response = patch(
        json!({"url": "https://example.com/summer", "title": null}),
        &etag,
    )
    .await
    .expect("sent");
    assert_eq!(response.status(), 200);
    let new_etag = header(&response, "etag").to_owned();
    assert_ne!(new_etag, etag);
    let changed: Value = response.json().await.expect("json");
    assert_eq!(changed["title"], Value::Null);
    assert_eq!(changed["tags"], json!(["news", "sale"]), "left as it was");
    let visit = follow(&app, &slug).await;
    assert_eq!(header(&visit, "location"), "https://example.com/summer");
    // A stale ETag changes nothing.
    let stale = patch(json!({"url": "https://example.com/x"}), &etag)
        .await
        .expect("sent");
    problem(stale, 412, "precondition_failed").await;

    // Renaming frees the old slug.
    let renamed = patch(json!({"slug": "summer"}), &new_etag)
        .await
        .expect("sent");
    assert_eq!(renamed.status(), 200);
    problem(follow(&app, &slug).await, 404, "not_found").await;
    assert_eq!(follow(&app, "summer").await.status(), 302);

    let delete = app.call(Method::DELETE, &location).await;
    assert_eq!(delete.status(), 204);
    problem(app.get(&location).await, 404, "not_found").await;
    problem(follow(&app, "summer").await, 404, "not_found").await;
    let page = app
        .client
        .get(app.url("/summer"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 404);
    assert!(header(&page, "content-type").starts_with("text/html"));
    assert!(page.text().await.expect("body").contains("Link not found"));
    // The slug is free again.
    create(
        &app,
        json!({"url": "https://example.com/", "slug": "summer"}),
    )
    .await;
}

async fn bad_links_are_refused_with_their_reason(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    create(
        &app,
        json!({"url": "https://example.com/", "slug": "taken"}),
    )
    .await;
    let cases = [
        (
            json!({"url": "javascript:alert(1)"}),
            "url",
            "scheme_not_allowed",
        ),
        (
            json!({"url": "data:text/html,hi"}),
            "url",
            "scheme_not_allowed",
        ),
        (
            json!({"url": "file:///etc/passwd"}),
            "url",
            "scheme_not_allowed",
        ),
        (
            json!({"url": "https://user:pw@example.com/"}),
            "url",
            "credentials_not_allowed",
        ),
        (json!({"url": "/relative"}), "url", "invalid"),
        (
            json!({"url": format!("https://e.com/{}", "a".repeat(8200))}),
            "url",
            "too_long",
        ),
        (json!({"title": "no url"}), "url", "required"),
        (
            json!({"url": "https://e.com/", "slug": "docs"}),
            "slug",
            "reserved",
        ),
        (
            json!({"url": "https://e.com/", "slug": "Healthz"}),
            "slug",
            "reserved",
        ),
        (
            json!({"url": "https://e.com/", "slug": "a/b"}),
            "slug",
            "invalid",
        ),
        (
            json!({"url": "https://e.com/", "slug": "x".repeat(65)}),
            "slug",
            "too_long",
        ),
        (
            json!({"url": "https://e.com/", "redirect_status": 200}),
            "redirect_status",
            "invalid",
        ),
        (
            json!({"url": "https://e.com/", "max_clicks": 0}),
            "max_clicks",
            "out_of_range",
        ),
        (
            json!({"url": "https://e.com/", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
            "in_past",
        ),
        (
            json!({"url": "https://e.com/", "tags": vec!["t"; 21]}),
            "tags",
            "too_many",
        ),
        (
            json!({"url": "https://e.com/", "tags": [""]}),
            "tags[0]",
            "invalid",
        ),
        (
            json!({"url": "https://e.com/", "password": ""}),
            "password",
            "invalid",
        ),
        (
            json!({"url": "https://e.com/", "clicks": 5}),
            "clicks",
            "invalid",
        ),
    ];
    for (body, field, code) in cases {
        let response = app.post_json("/v1/links", &body).await;
        let shown = problem(response, 422, "validation_failed").await;
        let errors = shown["errors"].as_array().expect("errors");
        assert!(
            errors
                .iter()
                .any(|e| e["field"] == field && e["code"] == code),
            "{body} → {shown}"
        );
    }
    let taken = app
        .post_json(
            "/v1/links",
            &json!({"url": "https://e.com/", "slug": "taken"}),
        )
        .await;
    problem(taken, 409, "slug_taken").await;

    let link = create(&app, json!({"url": "https://example.com/"})).await;
    let path = format!("/v1/links/{}", link["id"].as_str().expect("id"));
    for (body, field) in [
        (json!({"url": null}), "url"),
        (json!({"slug": null}), "slug"),
    ] {
        let response = app
            .request(Method::PATCH, &path)
            .json(&body)
            .send()
            .await
            .expect("sent");
        let shown = problem(response, 422, "validation_failed").await;
        assert_eq!(shown["errors"][0]["field"], field);
    }
    let response = app
        .request(Method::PATCH, &path)
        .json(&json!({"slug": "taken"}))
        .send()
        .await
        .expect("sent");
    problem(response, 409, "slug_taken").await;
    // Nothing above changed the link.
    let now: Value = app.get_value(&path).await;
    assert_eq!(now["slug"], link["slug"]);
    assert_eq!(now["updated_at"], link["updated_at"]);
}

async fn redirect_statuses_and_head(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (status, cache) in [
        (301, "public, max-age=86400"),
        (302, "private, max-age=0"),
        (307, "private, max-age=0"),
        (308, "public, max-age=86400"),
    ] {
        let slug = format!("s{status}");
        create(
            &app,
            json!({"url": "https://example.com/", "slug": slug, "redirect_status": status}),
        )
        .await;
        let visit = follow(&app, &slug).await;
        assert_eq!(visit.status().as_u16(), status);
        assert_eq!(header(&visit, "cache-control"), cache);
        assert!(header(&visit, "x-request-id").starts_with("req_"));
        let head = app
            .client
            .head(app.url(&format!("/{slug}")))
            .send()
            .await
            .expect("sent");
        assert_eq!(head.status().as_u16(), status);
        assert_eq!(header(&head, "location"), "https://example.com/");
    }
    // The client's request id is kept, as on every other route.
    let traced = app
        .client
        .get(app.url("/s302"))
        .header("x-request-id", "trace-me-1")
        .send()
        .await
        .expect("sent");
    assert_eq!(header(&traced, "x-request-id"), "trace-me-1");
    // A form posted to a link without a password (it was removed while the form was open)
    // goes on to the target.
    let form = app
        .client
        .post(app.url("/s302"))
        .form(&[("password", "x")])
        .send()
        .await;
    let form = form.expect("sent");
    assert_eq!(form.status(), 303);
    assert_eq!(header(&form, "location"), "https://example.com/");
    // Paths that cannot be slugs, and reserved ones, are simply unknown.
    for path in ["/no-such-link", "/v1", "/a.b", "/%00"] {
        let response = app.client.get(app.url(path)).send().await.expect("sent");
        assert_eq!(response.status(), 404, "{path}");
    }
}

async fn password_links_ask_and_throttle_guesses(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let link = create(
        &app,
        json!({"url": "https://secret.example/", "slug": "vault", "password": "open sesame"}),
    )
    .await;
    assert_eq!(link["has_password"], true);
    let form = follow(&app, "vault").await;
    assert_eq!(form.status(), 200);
    assert!(header(&form, "content-type").starts_with("text/html"));
    assert_eq!(header(&form, "cache-control"), "no-store");
    let html = form.text().await.expect("body");
    assert!(
        html.contains("<form method=\"post\" action=\"/vault\">"),
        "{html}"
    );
    assert!(!html.contains("secret.example"), "the target stays hidden");

    let guess = |password: &str| {
        app.client
            .post(app.url("/vault"))
            .form(&[("password", password)])
            .send()
    };
    let right = guess("open sesame").await.expect("sent");
    assert_eq!(right.status(), 303);
    assert_eq!(header(&right, "location"), "https://secret.example/");
    let wrong = guess("open says me").await.expect("sent");
    assert_eq!(wrong.status(), 401);
    assert!(wrong.text().await.expect("body").contains("Wrong password"));
    // Five guesses per client in a burst (the default policy), then 429 whatever the guess.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(guess("nope").await.expect("sent").status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    let refused = guess("open sesame").await.expect("sent");
    assert_eq!(refused.status(), 429);
    assert!(!header(&refused, "retry-after").is_empty());
}

async fn limits_hold_exactly_under_200_concurrent_clicks(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    create(
        &app,
        json!({"url": "https://limited.example/", "slug": "fifty", "max_clicks": 50}),
    )
    .await;
    let app = Arc::new(app);
    let visits = (0..200).map(|_| {
        let app = app.clone();
        tokio::spawn(async move { follow(&app, "fifty").await.status().as_u16() })
    });
    let mut statuses = Vec::new();
    for visit in visits.collect::<Vec<_>>() {
        statuses.push(visit.await.expect("task"));
    }
    assert_eq!(statuses.iter().filter(|s| **s == 302).count(), 50);
    assert_eq!(statuses.iter().filter(|s| **s == 410).count(), 150);
    problem(follow(&app, "fifty").await, 410, "link_gone").await;

    // Expiry: open until the moment, gone from it.
    let at = app.clock.now().saturating_add(Duration::from_secs(60));
    create(
        &app,
        json!({"url": "https://soon.example/", "slug": "soon", "expires_at": at.to_rfc3339()}),
    )
    .await;
    assert_eq!(follow(&app, "soon").await.status(), 302);
    app.clock.advance(Duration::from_secs(60));
    problem(follow(&app, "soon").await, 410, "link_gone").await;
}

/// The link as GET shows it once at least `clicks` are recorded (written about a second after
/// the visits).
async fn once_clicked(app: &TestApp, path: &str, clicks: i64) -> Value {
    for _ in 0..50 {
        let shown = app.get_value(path).await;
        if shown["clicks"].as_i64() >= Some(clicks) {
            return shown;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} did not reach {clicks} clicks within 5 s");
}

async fn clicks_are_counted_after_a_flush(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let link = create(
        &app,
        json!({"url": "https://example.com/", "slug": "count"}),
    )
    .await;
    let path = format!("/v1/links/{}", link["id"].as_str().expect("id"));
    let visits = [
        (
            "Mozilla/5.0 (X11) Firefox/120.0",
            Some("https://news.example/story"),
        ),
        ("curl/8.5.0", None),
        ("Googlebot/2.1", Some("https://crawler.example/")),
        (
            "Mozilla/5.0 (X11) Firefox/120.0",
            Some("https://news.example/other"),
        ),
    ];
    for (agent, referer) in visits {
        let mut request = app
            .client
            .get(app.url("/count"))
            .header("user-agent", agent);
        if let Some(referer) = referer {
            request = request.header("referer", referer);
        }
        assert_eq!(request.send().await.expect("sent").status(), 302);
    }
    let head = app
        .client
        .head(app.url("/count"))
        .send()
        .await
        .expect("sent");
    assert_eq!(head.status(), 302);
    let shown = once_clicked(&app, &path, 3).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(shown["clicks"], 3, "the bot and the HEAD are not counted");
    assert_eq!(app.get_value(&path).await["clicks"], 3);

    // The range ends at "now", excluded; the test clock has not moved since the visits.
    app.clock.advance(Duration::from_secs(1));
    let stats = app.get_value(&format!("{path}/stats?interval=hour")).await;
    assert_eq!(stats["interval"], "hour");
    assert_eq!(
        (&stats["totals"]["clicks"], &stats["totals"]["bots"]),
        (&json!(3), &json!(1))
    );
    // An estimate under a random per-database key: the two visitors share a sketch register
    // in one database of 1,024, and then it says 1.
    let unique = stats["totals"]["unique_visitors"]
        .as_u64()
        .expect("estimate");
    assert!((1..=2).contains(&unique), "{unique} unique visitors of 2");
    assert_eq!(
        stats["series"].as_array().expect("series").len(),
        7 * 24 + 1
    );
    assert_eq!(
        stats["top_referrers"],
        json!([{"host": "news.example", "clicks": 2}])
    );
    assert_eq!(stats["recent"].as_array().expect("recent").len(), 4);
    assert_eq!(stats["recent"][1]["visitor"], "bot");
    let daily = app.get_value(&format!("{path}/stats")).await;
    assert_eq!(daily["totals"]["clicks"], 3);
    for query in [
        "interval=week",
        "interval=hour&from=2020-01-01T00:00:00Z",
        "from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z",
    ] {
        let response = app.get(&format!("{path}/stats?{query}")).await;
        problem(response, 422, "validation_failed").await;
    }
    problem(app.get("/v1/links/link_nope/stats").await, 404, "not_found").await;
}

async fn clicks_are_written_at_shutdown(backend: Backend) {
    // The periodic flush is an hour away: only the one at shutdown can write these clicks.
    let options = Options {
        settings: vec![("links.click_flush_ms", "3600000".to_owned())],
        ..Options::default()
    };
    let mut app = TestApp::spawn_with(backend, options).await;
    create(&app, json!({"url": "https://example.com/", "slug": "last"})).await;
    for _ in 0..3 {
        assert_eq!(follow(&app, "last").await.status(), 302);
    }
    app.trigger_shutdown();
    app.join().await.expect("stops cleanly");
    let url: pier_db::DatabaseUrl = app.database_url.parse().expect("url");
    let db = url.connect(1).await.expect("the database opens again");
    let clicks: i64 = pier_db::with_reader!(&db, pool => {
        sqlx::query_scalar("SELECT clicks FROM links WHERE slug = 'last'")
            .fetch_one(pool)
            .await
    })
    .expect("read");
    assert_eq!(clicks, 3);
}

/// The flush at shutdown fails (a table is away, as during a database blip) and is tried again
/// until it succeeds, within the shutdown timeout: no click is lost.
async fn a_failed_last_flush_is_retried_before_the_node_stops(backend: Backend) {
    let options = Options {
        settings: vec![("links.click_flush_ms", "3600000".to_owned())],
        ..Options::default()
    };
    let mut app = TestApp::spawn_with(backend, options).await;
    create(
        &app,
        json!({"url": "https://example.com/", "slug": "retried"}),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(follow(&app, "retried").await.status(), 302);
    }
    let url: pier_db::DatabaseUrl = app.database_url.parse().expect("url");
    let db = url.connect(1).await.expect("a second connection");
    let rename = async |from: &str, to: &str| {
        let sql = format!("ALTER TABLE {from} RENAME TO {to}");
        pier_db::with_writer!(&db, pool => {
            sqlx::query(&sql).execute(pool).await.map(|r| r.rows_affected())
        })
        .expect("renamed");
    };
    rename("link_clicks_recent", "link_clicks_recent_away").await;
    app.trigger_shutdown();
    // Not a wait for a result: it gives the first attempt time to fail.
    tokio::time::sleep(Duration::from_millis(300)).await;
    rename("link_clicks_recent_away", "link_clicks_recent").await;
    app.join().await.expect("stops cleanly");
    let clicks: (i64, i64) = pier_db::with_reader!(&db, pool => {
        sqlx::query_as(
            "SELECT clicks, (SELECT count(*) FROM link_clicks_recent) FROM links \
             WHERE slug = 'retried'",
        )
        .fetch_one(pool)
        .await
    })
    .expect("read");
    assert_eq!(clicks, (3, 3));
}

async fn clicks_are_counted_by_country(backend: Backend) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("countries.mmdb");
    let networks = [([203, 0, 113, 0], 24, "NZ"), ([198, 51, 100, 0], 24, "DE")];
    std::fs::write(&path, pier_testkit::mmdb::country_database(&networks)).expect("write");
    // The test client is the proxy, so X-Forwarded-For names the visitor.
    let options = Options {
        settings: vec![
            ("links.geoip_database", path.display().to_string()),
            ("rate_limits.trusted_proxies", "127.0.0.1".to_owned()),
        ],
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let link = create(
        &app,
        json!({"url": "https://example.com/", "slug": "world"}),
    )
    .await;
    let path = format!("/v1/links/{}", link["id"].as_str().expect("id"));
    for visitor in ["203.0.113.7", "203.0.113.8", "198.51.100.1", "192.0.2.1"] {
        let visit = app
            .client
            .get(app.url("/world"))
            .header("x-forwarded-for", visitor)
            .send()
            .await
            .expect("sent");
        assert_eq!(visit.status(), 302);
    }
    once_clicked(&app, &path, 4).await;
    app.clock.advance(Duration::from_secs(1));
    let stats = app.get_value(&format!("{path}/stats")).await;
    assert_eq!(
        stats["top_countries"],
        json!([{"country": "NZ", "clicks": 2}, {"country": "DE", "clicks": 1}])
    );
    // An estimate under a random per-database key: two of the four visitors share a sketch
    // register in about 0.6% of databases, and then it says 3.
    let unique = stats["totals"]["unique_visitors"]
        .as_u64()
        .expect("estimate");
    assert!((3..=4).contains(&unique), "{unique} unique visitors of 4");
    assert_eq!(
        stats["recent"][0]["country"],
        Value::Null,
        "192.0.2.1 is in no network"
    );
    assert_eq!(stats["recent"][1]["country"], "DE");
}

async fn large_imports_take_no_idempotency_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // About 1.3 MB: over the 1 MiB body limit that idempotent requests keep to, under the
    // import's own 32 MiB.
    let mut csv = String::from("url,title\n");
    for i in 0..12_000 {
        csv += &format!("https://example.com/{i},{}\n", "t".repeat(90));
    }
    let import = |key: Option<&str>| {
        let mut request = app
            .request(Method::POST, "/v1/links/import")
            .header("content-type", "text/csv")
            .body(csv.clone());
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send()
    };
    let refused = import(Some("big-import")).await.expect("sent");
    let shown = problem(refused, 413, "payload_too_large").await;
    assert!(
        shown["detail"]
            .as_str()
            .expect("detail")
            .contains("Idempotency-Key")
    );
    let imported = import(None).await.expect("sent");
    assert_eq!(imported.status(), 200);
    let report: Value = imported.json().await.expect("json");
    assert_eq!(report["created"], 12_000);
}

async fn lists_filter_and_page(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for i in 0..7 {
        let tags = if i % 2 == 0 {
            json!(["even"])
        } else {
            json!([])
        };
        create(
            &app,
            json!({"url": format!("https://example.com/p{i}"), "title": format!("Page {i}"), "tags": tags}),
        )
        .await;
        app.clock.advance(Duration::from_secs(1));
    }
    let page = app.get_value("/v1/links?tag=even&limit=3").await;
    assert_eq!(page["data"].as_array().expect("data").len(), 3);
    assert_eq!(page["has_more"], true);
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let rest = app
        .get_value(&format!("/v1/links?tag=even&limit=3&cursor={cursor}"))
        .await;
    assert_eq!(rest["data"].as_array().expect("data").len(), 1);
    assert_eq!(rest["data"][0]["title"], "Page 0", "newest first");
    // A cursor is bound to its filters.
    let other = app.get(&format!("/v1/links?limit=3&cursor={cursor}")).await;
    problem(other, 400, "cursor_mismatch").await;
    let found = app.get_value("/v1/links?q=PAGE%203").await;
    assert_eq!(found["data"].as_array().expect("data").len(), 1);
    let bad = app.get(&format!("/v1/links?q={}", "x".repeat(201))).await;
    problem(bad, 422, "validation_failed").await;
}

async fn another_workspaces_link_is_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let store = WorkspaceStore::new(app.db.clone(), Arc::new(app.clock.clone()));
    let (_, _, other_secret) = store
        .create_with_owner_key(WorkspaceName::parse("other").expect("name"))
        .await
        .expect("workspace");
    let link = create(&app, json!({"url": "https://example.com/", "slug": "ours"})).await;
    let path = format!("/v1/links/{}", link["id"].as_str().expect("id"));
    let theirs = other_secret.expose();
    for (method, path) in [
        (Method::GET, path.as_str()),
        (Method::PATCH, path.as_str()),
        (Method::DELETE, path.as_str()),
        (Method::GET, "/v1/links/by-slug/ours"),
    ] {
        let response = app
            .request_as(theirs, method, path)
            .json(&json!({"title": "mine now"}))
            .send()
            .await
            .expect("sent");
        problem(response, 404, "not_found").await;
    }
    let listed: Value = app
        .request_as(theirs, Method::GET, "/v1/links")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["data"], json!([]));
    // A viewer reads links but cannot write them.
    let (_, viewer) = app.create_key("viewer", None).await;
    assert_eq!(
        app.call_as(&viewer, Method::GET, "/v1/links")
            .await
            .status(),
        200
    );
    let response = app
        .request_as(&viewer, Method::POST, "/v1/links")
        .json(&json!({"url": "https://example.com/"}))
        .send()
        .await
        .expect("sent");
    problem(response, 403, "forbidden").await;
}

async fn idempotent_creates_return_the_first_link(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let send = || {
        app.request(Method::POST, "/v1/links")
            .header("idempotency-key", "create-spring-link")
            .json(&json!({"url": "https://example.com/spring"}))
            .send()
    };
    let first: Value = send().await.expect("sent").json().await.expect("json");
    let again = send().await.expect("sent");
    assert_eq!(again.status(), 201);
    assert_eq!(header(&again, "idempotent-replayed"), "true");
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["id"], first["id"]);
    let listed = app.get_value("/v1/links").await;
    assert_eq!(listed["data"].as_array().expect("data").len(), 1);
}

/// A link changed through one node redirects to its new target on another at once: the
/// change reaches every node's redirect cache through PostgreSQL, and with Redis configured
/// through its pub/sub and fenced tier too.
async fn changes_reach_another_node(options: impl Fn() -> Options) {
    let a = TestApp::spawn_with(Backend::postgres(), options()).await;
    let b = a.another_node_with(options()).await;
    // Slugs are global in a shared Redis: this run's own.
    let slug = format!("m{}", pier_core::id::new_body(a.clock.now()));
    // Node B remembers the slug as unknown before it exists.
    problem(follow(&b, &slug).await, 404, "not_found").await;
    let link = create(&a, json!({"url": "https://one.example/", "slug": slug})).await;
    let path = format!("/v1/links/{}", link["id"].as_str().expect("id"));
    wait_for(&b, &slug, Some("https://one.example/")).await;
    retarget(&a, &path, "https://two.example/").await;
    let visit = follow(&a, &slug).await;
    assert_eq!(
        header(&visit, "location"),
        "https://two.example/",
        "at once on node A"
    );
    wait_for(&b, &slug, Some("https://two.example/")).await;
    assert_eq!(a.call(Method::DELETE, &path).await.status(), 204);
    wait_for(&b, &slug, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set PIER_TEST_DATABASE_URL"]
async fn changes_reach_another_node_on_postgres() {
    changes_reach_another_node(Options::default).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and Redis: set PIER_TEST_DATABASE_URL and PIER_TEST_REDIS_URL"]
async fn changes_reach_another_node_on_postgres_and_redis() {
    changes_reach_another_node(|| Options {
        redis_url: Some(pier_testkit::redis_url()),
        ..Options::default()
    })
    .await;
}

/// Node B's listener is cut off, as a failover or a proxy's idle reset would: whatever was
/// sent meanwhile is lost to it, so B forgets its cached links once it listens again. The first
/// change bypasses notifications altogether (as one sent during the gap would be lost), so only
/// the clearing on reconnect can show it; the second is made on node A after the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set PIER_TEST_DATABASE_URL"]
async fn a_node_whose_listener_was_cut_forgets_its_cache() {
    let a = TestApp::spawn(Backend::postgres()).await;
    let b = a.another_node().await;
    let slug = format!("c{}", pier_core::id::new_body(a.clock.now()));
    let link = create(&a, json!({"url": "https://one.example/", "slug": slug})).await;
    let path = format!("/v1/links/{}", link["id"].as_str().expect("id"));
    let database = sqlx::PgPool::connect(&a.database_url)
        .await
        .expect("database");
    // A listener's backend has run a statement once its LISTEN is in place.
    let listeners = async || -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = $1 AND query <> ''",
        )
        .bind(pier_db::LISTENER_APPLICATION_NAME)
        .fetch_one(&database)
        .await
        .expect("count")
    };
    // Both nodes listen before B's cache is put to the test.
    while listeners().await < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_for(&b, &slug, Some("https://one.example/")).await;
    sqlx::query("UPDATE links SET url = 'https://two.example/' WHERE slug = $1")
        .bind(&slug)
        .execute(&database)
        .await
        .expect("changed unannounced");
    assert_eq!(
        header(&follow(&b, &slug).await, "location"),
        "https://one.example/",
        "node B serves from its cache"
    );
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(pier_db::LISTENER_APPLICATION_NAME)
    .fetch_all(&database)
    .await
    .expect("listeners cut");
    assert_eq!(cut, [true, true]);
    wait_for(&b, &slug, Some("https://two.example/")).await;

    retarget(&a, &path, "https://three.example/").await;
    wait_for(&b, &slug, Some("https://three.example/")).await;
}

/// Points the link at `path` to `url` through `node`.
async fn retarget(node: &TestApp, path: &str, url: &str) {
    let response = node
        .request(Method::PATCH, path)
        .json(&json!({ "url": url }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
}

/// Waits (3 s at most, far below the cache TTL) for `node` to redirect `slug` to `want`, or to
/// answer 404 when `want` is `None`: the change travels through PostgreSQL or Redis, or its
/// listener reconnects.
async fn wait_for(node: &TestApp, slug: &str, want: Option<&str>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let visit = follow(node, slug).await;
        let seen = visit
            .headers()
            .get("location")
            .map(|v| v.to_str().expect("ascii"));
        if seen == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node still redirects to {seen:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Node A and node B share a SQLite file and a Redis, so a change made on A can reach B's
/// redirect cache only through Redis pub/sub; and a slug one node loaded is in the Redis tier
/// for the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: set PIER_TEST_REDIS_URL"]
async fn redis_carries_changes_between_nodes() {
    let with_redis = || Options {
        redis_url: Some(pier_testkit::redis_url()),
        ..Options::default()
    };
    let a = TestApp::spawn_with(Backend::Sqlite, with_redis()).await;
    let b = a.another_node_with(with_redis()).await;
    // Slugs are global in Redis: this run's own, so parallel runs do not meet.
    let slug = format!("r{}", pier_core::id::new_body(a.clock.now()));
    let link = create(&a, json!({"url": "https://one.example/", "slug": slug})).await;
    let path = format!("/v1/links/{}", link["id"].as_str().expect("id"));
    assert_eq!(
        header(&follow(&a, &slug).await, "location"),
        "https://one.example/"
    );
    let client = redis::Client::open(pier_testkit::redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut stored = async |slug: &str| -> Option<String> {
        redis::AsyncCommands::get(&mut conn, format!("pier:link:{slug}"))
            .await
            .expect("get")
    };
    // The create fenced its slug: for a while, loads read the database and fill nothing.
    assert_eq!(stored(&slug).await.as_deref(), Some("!"));
    // An unknown slug one node looked up is known as unknown to the others.
    let unknown = format!("u{slug}");
    problem(follow(&a, &unknown).await, 404, "not_found").await;
    assert_eq!(stored(&unknown).await.as_deref(), Some("-"));
    problem(follow(&b, &unknown).await, 404, "not_found").await;
    assert_eq!(
        header(&follow(&b, &slug).await, "location"),
        "https://one.example/"
    );

    retarget(&a, &path, "https://two.example/").await;
    wait_for(&b, &slug, Some("https://two.example/")).await;
    assert_eq!(a.call(Method::DELETE, &path).await.status(), 204);
    wait_for(&b, &slug, None).await;
}

async fn ipv6_literal_targets_are_taken_and_redirected_to(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let link = create(
        &app,
        json!({"url": "https://[2606:4700::1111]/x", "slug": "six"}),
    )
    .await;
    assert_eq!(link["url"], "https://[2606:4700::1111]/x");
    let visit = follow(&app, "six").await;
    assert_eq!(header(&visit, "location"), "https://[2606:4700::1111]/x");
}
