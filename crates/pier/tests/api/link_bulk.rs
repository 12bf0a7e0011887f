//! Importing and exporting links in bulk: round trips of NDJSON and CSV between two Piers,
//! atomic and per-row imports, what an import refuses, and streamed, filtered exports.

use std::collections::BTreeMap;
use std::time::Duration;

use pier_core::Clock;
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::support::{Backend, TestApp, on_both_backends, problem};

on_both_backends!(
    ten_thousand_links_round_trip_through_ndjson,
    csv_round_trips_keep_quotes_commas_and_tags,
    atomic_imports_store_every_row_or_none,
    other_imports_create_the_valid_rows_and_report_the_rest,
    imports_refuse_what_they_cannot_read,
    exports_stream_the_filtered_links,
    csv_exports_cannot_smuggle_formulas_into_spreadsheets,
);

async fn import(app: &TestApp, query: &str, content_type: &str, body: String) -> Response {
    app.request(Method::POST, &format!("/v1/links/import{query}"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request sent")
}

/// Imports `body`, expecting every row to be created.
async fn import_all(app: &TestApp, content_type: &str, body: String, rows: usize) {
    let response = import(app, "", content_type, body).await;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.expect("json");
    assert_eq!(report["failed"], 0, "{}", report["rows"]);
    assert_eq!(report["created"], rows);
}

async fn export(app: &TestApp, query: &str) -> (String, String, String) {
    let response = app.get(&format!("/v1/links/export{query}")).await;
    assert_eq!(response.status(), 200);
    // Streamed as it is read: the length is not known up front.
    assert!(response.headers().get("content-length").is_none());
    let header = |name: &str| response.headers()[name].to_str().expect("ascii").to_owned();
    let (content_type, disposition) = (header("content-type"), header("content-disposition"));
    let body = response.text().await.expect("body");
    (content_type, disposition, body)
}

/// `(field, code)` of each error in a list of field errors (none when it is missing).
fn field_errors(errors: &Value) -> Vec<(String, String)> {
    let text = |e: &Value, key: &str| e[key].as_str().expect("text").to_owned();
    errors.as_array().map_or(Vec::new(), |errors| {
        errors
            .iter()
            .map(|e| (text(e, "field"), text(e, "code")))
            .collect()
    })
}

fn pair(field: &str, code: &str) -> (String, String) {
    (field.to_owned(), code.to_owned())
}

fn ndjson(rows: impl IntoIterator<Item = Value>) -> String {
    rows.into_iter().map(|row| format!("{row}\n")).collect()
}

/// Every link of `app`, by slug, with the fields an import sets.
async fn links_by_slug(app: &TestApp) -> BTreeMap<String, Value> {
    let (_, _, body) = export(app, "").await;
    body.lines()
        .map(|line| {
            let link: Value = serde_json::from_str(line).expect("a JSON line");
            let fields = [
                "url",
                "title",
                "tags",
                "redirect_status",
                "expires_at",
                "max_clicks",
            ]
            .map(|field| (field.to_owned(), link[field].clone()));
            let slug = link["slug"].as_str().expect("slug").to_owned();
            (slug, Value::Object(fields.into_iter().collect()))
        })
        .collect()
}

/// A varied link: chosen and generated slugs, titles with quotes and commas, zero to two tags,
/// every redirect status, some limits and expiries.
fn varied_link(app: &TestApp, i: usize) -> Value {
    let tags = &["sale", "new", "eu"][..i % 3];
    let status = [301, 302, 307, 308][i % 4];
    let mut link = json!({
        "url": format!("https://shop.example/item/{i}?ref=bulk"),
        "title": format!("Item {i}, \"special\""),
        "tags": tags,
        "redirect_status": status,
    });
    if i % 10 == 0 {
        link["slug"] = json!(format!("item-{i}"));
    }
    if i % 7 == 0 {
        link["max_clicks"] = json!(i + 1);
    }
    if i % 5 == 0 {
        let at = app
            .clock
            .now()
            .saturating_add(Duration::from_secs(86_400 * 30));
        link["expires_at"] = json!(at.to_rfc3339());
    }
    link
}

async fn ten_thousand_links_round_trip_through_ndjson(backend: Backend) {
    let source = TestApp::spawn(backend.clone()).await;
    let rows = (0..10_000).map(|i| varied_link(&source, i));
    import_all(&source, "application/x-ndjson", ndjson(rows), 10_000).await;

    let (content_type, disposition, exported) = export(&source, "?format=ndjson").await;
    assert_eq!(content_type, "application/x-ndjson");
    assert_eq!(disposition, "attachment; filename=\"links.ndjson\"");
    assert_eq!(exported.lines().count(), 10_000);
    let first: Value =
        serde_json::from_str(exported.lines().next().expect("a line")).expect("json");
    assert!(first["id"].is_string() && first["short_url"].is_string() && first["clicks"] == 0);

    // The export, as it is, re-imports into another Pier (its read-only fields skipped).
    let copy = TestApp::spawn(backend).await;
    import_all(&copy, "application/x-ndjson", exported, 10_000).await;
    let original = links_by_slug(&source).await;
    assert_eq!(original.len(), 10_000);
    assert_eq!(original["item-20"]["tags"], json!(["new", "sale"]));
    assert_eq!(links_by_slug(&copy).await, original);
}

async fn csv_round_trips_keep_quotes_commas_and_tags(backend: Backend) {
    let source = TestApp::spawn(backend.clone()).await;
    let mut csv = "url,slug,title,tags,redirect_status,expires_at,max_clicks\n".to_owned();
    for i in 0..1_200 {
        let link = varied_link(&source, i);
        let text = |field: &str| match &link[field] {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let tags: Vec<&str> = link["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .map(|t| t.as_str().expect("tag"))
            .collect();
        let title = text("title").replace('"', "\"\"");
        csv += &format!(
            "{},{},\"{title}\",\"{}\",{},{},{}\n",
            text("url"),
            text("slug"),
            tags.join(","),
            text("redirect_status"),
            text("expires_at"),
            text("max_clicks"),
        );
    }
    import_all(&source, "text/csv", csv, 1_200).await;
    let original = links_by_slug(&source).await;
    assert_eq!(original["item-20"]["title"], "Item 20, \"special\"");
    assert_eq!(original["item-20"]["tags"], json!(["new", "sale"]));

    // 1,200 links are three pages of the export, each streamed as it is read.
    let (content_type, disposition, exported) = export(&source, "?format=csv").await;
    assert_eq!(content_type, "text/csv; charset=utf-8");
    assert_eq!(disposition, "attachment; filename=\"links.csv\"");
    let mut lines = exported.lines();
    assert_eq!(
        lines.next(),
        Some(
            "url,slug,title,tags,redirect_status,expires_at,max_clicks,has_password,clicks,id,\
             short_url,created_by,created_at,updated_at"
        )
    );
    assert_eq!(lines.count(), 1_200);
    let copy = TestApp::spawn(backend).await;
    import_all(&copy, "text/csv; charset=utf-8", exported, 1_200).await;
    assert_eq!(links_by_slug(&copy).await, original);
}

async fn atomic_imports_store_every_row_or_none(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rows = [
        json!({"url": "https://example.com/1", "slug": "first"}),
        json!({"url": "javascript:alert(1)", "tags": ["a,b"]}),
        json!({"url": "https://example.com/3"}),
    ];
    let response = import(&app, "?atomic=true", "application/x-ndjson", ndjson(rows)).await;
    let shown = problem(response, 422, "validation_failed").await;
    assert_eq!(
        field_errors(&shown["errors"]),
        [
            pair("rows[2].url", "scheme_not_allowed"),
            pair("rows[2].tags[0]", "invalid")
        ]
    );
    assert_eq!(app.get_value("/v1/links").await["data"], json!([]));

    // A slug taken by an existing link, or twice in the import, refuses the import too.
    let response = app
        .post_json(
            "/v1/links",
            &json!({"url": "https://example.com/", "slug": "taken"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let csv = "url,slug\nhttps://example.com/a,taken\nhttps://example.com/b,\n\
               https://example.com/c,twice\nhttps://example.com/d,twice\n";
    let response = import(&app, "?atomic=true", "text/csv", csv.to_owned()).await;
    let shown = problem(response, 422, "validation_failed").await;
    assert_eq!(
        field_errors(&shown["errors"]),
        [pair("rows[1].slug", "taken"), pair("rows[4].slug", "taken")]
    );
    assert_eq!(
        app.get_value("/v1/links").await["data"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let csv = "url,slug\nhttps://example.com/a,\nhttps://example.com/b,bee\n";
    let response = import(&app, "?atomic=true", "text/csv", csv.to_owned()).await;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.expect("json");
    assert_eq!([&report["created"], &report["failed"]], [2, 0]);
    assert_eq!(report["rows"][1]["link"]["slug"], "bee");
}

async fn other_imports_create_the_valid_rows_and_report_the_rest(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .post_json(
            "/v1/links",
            &json!({"url": "https://example.com/", "slug": "taken"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let csv = "\u{feff}url, slug ,tags,redirect_status,max_clicks,clicks\n\
               https://example.com/1,one,\"a, b\",,,7\n\
               https://example.com/2,,,abc,0,\n\
               https://example.com/3,taken,,,,\n\
               https://example.com/4,one,,,,\n\
               https://example.com/5,five,x,308,3\n\
               ,six,,,,\n\
               https://example.com/7,seven,,301,,\n\
               https://example.com/8,eight,,,0,\n";
    let response = import(&app, "", "text/csv", csv.to_owned()).await;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.expect("json");
    assert_eq!([&report["created"], &report["failed"]], [2, 6]);
    let rows = report["rows"].as_array().expect("rows");
    let outcome = |row: &Value| -> (u64, String, Vec<(String, String)>) {
        let status = row["status"].as_str().expect("status").to_owned();
        (
            row["row"].as_u64().expect("row"),
            status,
            field_errors(&row["errors"]),
        )
    };
    let seen: Vec<_> = rows.iter().map(outcome).collect();
    assert_eq!(
        seen,
        [
            (1, "created".into(), vec![]),
            // A cell not of its field's type is reported alone, as in JSON.
            (2, "failed".into(), vec![pair("redirect_status", "invalid")]),
            (3, "failed".into(), vec![pair("slug", "taken")]),
            (4, "failed".into(), vec![pair("slug", "taken")]),
            (5, "failed".into(), vec![pair("row", "invalid")]),
            (6, "failed".into(), vec![pair("url", "required")]),
            (7, "created".into(), vec![]),
            (8, "failed".into(), vec![pair("max_clicks", "out_of_range")]),
        ]
    );
    assert_eq!(rows[0]["link"]["tags"], json!(["a", "b"]));
    assert_eq!(
        rows[0]["link"]["clicks"], 0,
        "read-only columns are skipped"
    );
    let listed = app.get_value("/v1/links").await["data"].clone();
    let slugs: Vec<&str> = listed
        .as_array()
        .expect("data")
        .iter()
        .map(|l| l["slug"].as_str().expect("slug"))
        .collect();
    assert_eq!(slugs.len(), 3);
    assert!(slugs.contains(&"one") && slugs.contains(&"seven"));

    // NDJSON rows are numbered by line, blank lines skipped.
    let body = "{\"url\": \"https://example.com/n1\"}\n\n{\"url\": \n{\"title\": \"no url\"}\n\
                {\"url\": \"https://example.com/n5\", \"colour\": \"red\", \"id\": \"link_x\"}\n\
                {\"url\": \"https://example.com/n6\", \"tags\": [\"x\"]}\r\n";
    let response = import(&app, "", "application/x-ndjson", body.to_owned()).await;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.expect("json");
    let seen: Vec<_> = report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(outcome)
        .collect();
    assert_eq!(
        seen,
        [
            (1, "created".into(), vec![]),
            (3, "failed".into(), vec![pair("row", "malformed_json")]),
            (4, "failed".into(), vec![pair("url", "required")]),
            (5, "failed".into(), vec![pair("colour", "invalid")]),
            (6, "created".into(), vec![]),
        ]
    );
}

async fn imports_refuse_what_they_cannot_read(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rows = ndjson([json!({"url": "https://example.com/"})]);
    for content_type in ["application/json", "text/plain", "multipart/form-data"] {
        let response = import(&app, "", content_type, rows.clone()).await;
        problem(response, 415, "unsupported_media_type").await;
    }
    let response = app
        .request(Method::POST, "/v1/links/import")
        .body(rows.clone())
        .send()
        .await
        .expect("sent");
    problem(response, 415, "unsupported_media_type").await;

    let refused = |csv: &'static str| import(&app, "", "text/csv", csv.to_owned());
    let shown = problem(
        refused("url,colour\nhttps://e.com/,red\n").await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(shown["errors"][0]["field"], "colour");
    assert_eq!(shown["errors"][0]["code"], "unknown_column");
    let shown = problem(refused("slug,title\nx,y\n").await, 422, "validation_failed").await;
    assert_eq!(shown["errors"][0]["field"], "url");
    let shown = problem(refused("url\n").await, 422, "validation_failed").await;
    assert_eq!(shown["errors"][0]["field"], "rows");
    let response = import(
        &app,
        "?atomic=maybe",
        "text/csv",
        "url\nhttps://e.com/\n".into(),
    )
    .await;
    problem(response, 422, "validation_failed").await;

    // Too many rows, or passwords, are refused before any row is checked.
    let many = format!("url\n{}", "https://e.com/\n".repeat(100_001));
    let shown = problem(
        import(&app, "", "text/csv", many).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(shown["errors"][0]["field"], "rows");
    let locked = (0..101).map(|i| json!({"url": "https://e.com/", "password": format!("pw{i}")}));
    let response = import(&app, "", "application/x-ndjson", ndjson(locked)).await;
    let shown = problem(response, 422, "validation_failed").await;
    assert_eq!(shown["errors"][0]["field"], "password");
    assert_eq!(shown["errors"][0]["code"], "too_many");

    // Past 32 MiB (well past the API's usual 1 MiB), the body is too large.
    let huge = format!("url\n{}", "x".repeat(32 * 1024 * 1024));
    problem(
        import(&app, "", "text/csv", huge).await,
        413,
        "payload_too_large",
    )
    .await;
    let large = format!(
        "url\n{}",
        "https://example.com/a/path/long/enough/to/pass/1/MiB\n".repeat(20_000)
    );
    assert!(large.len() > 1024 * 1024);
    import_all(&app, "text/csv", large, 20_000).await;

    // A viewer cannot import.
    let (_, viewer) = app.create_key("viewer", None).await;
    let response = app
        .request_as(&viewer, Method::POST, "/v1/links/import")
        .header("content-type", "text/csv")
        .body("url\nhttps://e.com/\n")
        .send()
        .await
        .expect("sent");
    problem(response, 403, "forbidden").await;
}

async fn exports_stream_the_filtered_links(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, _, empty) = export(&app, "").await;
    assert_eq!(empty, "");
    let (_, _, header_only) = export(&app, "?format=csv").await;
    assert_eq!(header_only.lines().count(), 1);

    let rows = (0..1_100).map(|i| {
        let tags: &[&str] = if i % 4 == 0 { &["sale"] } else { &[] };
        let (url, title) = (format!("https://example.com/{i}"), format!("Page {i}"));
        json!({"url": url, "title": title, "tags": tags})
    });
    import_all(&app, "application/x-ndjson", ndjson(rows), 1_100).await;
    let (_, _, all) = export(&app, "").await;
    assert_eq!(all.lines().count(), 1_100);
    let (_, _, sale) = export(&app, "?tag=sale").await;
    assert_eq!(sale.lines().count(), 275);
    assert!(
        sale.lines()
            .all(|line| line.contains("\"tags\":[\"sale\"]"))
    );
    let (_, _, found) = export(&app, "?format=csv&q=page%2010").await;
    // Page 10, Page 100 to 109, Page 1000 to 1099.
    assert_eq!(found.lines().count(), 1 + 1 + 10 + 100);
    let after = app
        .clock
        .now()
        .saturating_add(Duration::from_secs(1))
        .to_rfc3339();
    let (_, _, none) = export(&app, &format!("?created_after={after}")).await;
    assert_eq!(none, "");

    for query in ["?format=xml", "?q=", "?tag=a,b"] {
        let response = app.get(&format!("/v1/links/export{query}")).await;
        problem(response, 422, "validation_failed").await;
    }
    let (_, viewer) = app.create_key("viewer", None).await;
    let response = app
        .call_as(&viewer, Method::GET, "/v1/links/export?tag=sale")
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body").lines().count(), 275);
}

/// OWASP's CSV injection: a cell a spreadsheet would run as a formula is written with a
/// leading `'`, and an import takes it off again.
async fn csv_exports_cannot_smuggle_formulas_into_spreadsheets(backend: Backend) {
    let source = TestApp::spawn(backend.clone()).await;
    let titles = [
        "=HYPERLINK(\"https://evil.example\")",
        "+1",
        "-2",
        "@SUM(A1)",
        "plain",
    ];
    for (n, title) in titles.iter().enumerate() {
        let response = source
            .post_json(
                "/v1/links",
                &json!({"url": "https://e.com/", "slug": format!("f{n}"), "title": title}),
            )
            .await;
        assert_eq!(response.status(), 201, "{title}");
    }
    let (_, _, exported) = export(&source, "?format=csv").await;
    for formula in ["'=HYPERLINK", "'+1", "'-2", "'@SUM"] {
        assert!(exported.contains(formula), "{formula} in {exported}");
    }
    assert!(
        !exported.contains(",=") && !exported.contains(",\"="),
        "{exported}"
    );

    let copy = TestApp::spawn(backend).await;
    import_all(&copy, "text/csv", exported, titles.len()).await;
    let copied = links_by_slug(&copy).await;
    for (n, title) in titles.iter().enumerate() {
        assert_eq!(copied[&format!("f{n}")]["title"], *title);
    }
}
