//! The OpenAPI document as a contract: every operation named, summarised, secured as it really
//! is, its path ids described by pattern, its errors documented as problems, its references
//! resolved. The schema fuzzer (`.ci/schemathesis/run`) checks the server against it; this
//! checks the document itself.

use std::collections::HashSet;

use serde_json::Value;

use crate::support::{Backend, TestApp};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document() -> Value {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.public_json("/v1/openapi.json").await
}

fn operations(spec: &Value) -> Vec<(String, &Value)> {
    let mut found = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                found.push((format!("{} {path}", method.to_uppercase()), op));
            }
        }
    }
    found
}

/// Follows a `$ref` into `components`.
fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .expect("a component reference");
            &spec["components"]["schemas"][name]
        }
        None => schema,
    }
}

#[tokio::test]
async fn every_operation_is_named_summarised_and_secured() {
    let spec = document().await;
    let ops = operations(&spec);
    assert!(ops.len() >= 40, "{} operations", ops.len());
    let mut ids = HashSet::new();
    for (name, op) in &ops {
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(
            id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && id.chars().all(|c| c.is_ascii_alphanumeric()),
            "{name}: operationId `{id}` is lowerCamelCase"
        );
        assert!(
            ids.insert(id.to_owned()),
            "{name}: operationId `{id}` is unique"
        );
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{name} has a summary"
        );
        let security = op["security"].as_array().expect("security is explicit");
        let public = security.is_empty();
        let expected_public = [
            "/healthz",
            "/readyz",
            "/{slug}",
            "/v1/auth/login",
            "/v1/auth/invitation",
            "/v1/oauth/token",
            "/v1/oauth/revoke",
            "/v1/oauth/introspect",
            "/v1/oauth/authorize",
            "/.well-known/jwks.json",
            "/.well-known/oauth-authorization-server",
        ]
        .iter()
        .any(|path| name.ends_with(&format!(" {path}")));
        assert_eq!(public, expected_public, "{name}: security {security:?}");
        if !public {
            // An API key, or a sign-in session; the session's own routes take only a session.
            let schemes: Vec<&str> = security
                .iter()
                .filter_map(|r| r.as_object()?.keys().next().map(String::as_str))
                .collect();
            let expected = if name.contains(" /v1/auth/") {
                vec!["session"]
            } else {
                vec!["bearer", "session"]
            };
            assert_eq!(schemes, expected, "{name}");
            for status in ["401", "403"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{name} documents {status}"
                );
            }
        }
    }
}

#[tokio::test]
async fn path_ids_declare_their_pattern_and_errors_are_problems() {
    let spec = document().await;
    for (name, op) in operations(&spec) {
        for param in op["parameters"].as_array().into_iter().flatten() {
            if param["in"] == "path" {
                let pattern = param["schema"]["pattern"].as_str().unwrap_or_default();
                assert!(
                    pattern.starts_with('^'),
                    "{name}: {} has a pattern",
                    param["name"]
                );
                if param["name"] == "id" {
                    assert!(
                        pattern.contains("_[0-7]"),
                        "{name}: {pattern} names its prefix"
                    );
                }
            }
        }
        for (status, response) in op["responses"].as_object().expect("responses") {
            assert!(
                response["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{name} {status} is described"
            );
            // The redirect's pages for browsers (a wrong password's form) are HTML alone.
            let html_only = response["content"]
                .as_object()
                .is_some_and(|c| c.len() == 1 && c.contains_key("text/html"));
            // The OAuth endpoints' own errors are RFC 6749 error objects, as OAuth clients
            // expect; what the shared layers answer (413, 429, 500…) stays a problem.
            let oauth_error = response["content"]["application/json"]["schema"]["$ref"]
                == "#/components/schemas/OAuthError";
            // OFREP's evaluation failures are its own objects, as OpenFeature providers expect.
            let ofrep_error = response["content"]["application/json"]["schema"]["$ref"]
                == "#/components/schemas/EvaluationFailure";
            if oauth_error {
                assert!(name.contains(" /v1/oauth/"), "{name} {status}");
                assert!(matches!(status.as_str(), "400" | "401"), "{name} {status}");
            } else if ofrep_error {
                assert!(name.contains(" /ofrep/v1/"), "{name} {status}");
                assert!(matches!(status.as_str(), "400" | "404"), "{name} {status}");
            } else if (status.starts_with('4') || status.starts_with('5')) && !html_only {
                let problem = &response["content"]["application/problem+json"]["schema"];
                assert_eq!(
                    problem["$ref"], "#/components/schemas/Problem",
                    "{name} {status} is a problem"
                );
                assert!(
                    response["content"].get("application/json").is_none(),
                    "{name} {status} is not plain JSON"
                );
                let description = response["description"].as_str().unwrap_or_default();
                assert!(description.contains('`'), "{name} {status} names its codes");
            }
        }
    }
    // Lists say what a bad cursor gets, and every authenticated POST its Idempotency-Key rule.
    let list = &spec["paths"]["/v1/jobs"]["get"];
    assert!(
        list["responses"]["400"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("invalid_cursor"))
    );
    let key = list["parameters"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "limit"))
        .expect("limit");
    assert_eq!(
        (&key["schema"]["minimum"], &key["schema"]["maximum"]),
        (&1.into(), &100.into())
    );
    let create = &spec["paths"]["/v1/jobs"]["post"];
    let header = create["parameters"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "Idempotency-Key"))
        .expect("Idempotency-Key");
    assert_eq!(header["schema"]["maxLength"], 255);
    assert!(header["schema"]["pattern"].is_string());
}

#[tokio::test]
async fn references_resolve_and_bodies_have_examples() {
    let spec = document().await;
    let text = spec.to_string();
    let schemas = spec["components"]["schemas"].as_object().expect("schemas");
    for (at, _) in text.match_indices("\"#/components/schemas/") {
        let name: String = text[at + 22..].chars().take_while(|c| *c != '"').collect();
        assert!(
            schemas.contains_key(&name),
            "#/components/schemas/{name} exists"
        );
    }
    for (name, op) in operations(&spec) {
        let Some(content) = op["requestBody"]["content"].as_object() else {
            continue;
        };
        for (media, body) in content {
            let schema = resolve(&spec, &body["schema"]);
            let items = resolve(&spec, &schema["items"]);
            let has_example = body.get("example").is_some()
                || schema.get("example").is_some()
                || items.get("example").is_some();
            assert!(has_example, "{name} ({media}) has a request example");
        }
        for (status, response) in op["responses"].as_object().expect("responses") {
            let Some(schema) = response["content"]["application/json"].get("schema") else {
                continue;
            };
            // A page's example is its rows'.
            let schema = resolve(&spec, schema);
            let rows = resolve(&spec, &schema["properties"]["data"]["items"]);
            let has_example = schema.get("example").is_some() || rows.get("example").is_some();
            assert!(has_example, "{name} {status} has a response example");
        }
    }
}

/// The committed copy of the document, keys sorted: a refactoring must leave it identical.
const FROZEN: &str = "tests/api/openapi.json";

/// The document as served, with every object's keys sorted so that only ordering differences
/// vanish; arrays keep their order, which can be meaningful.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|key| (key.clone(), canonical(&map[key])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// Paths, operation ids, schemas and status codes stay as committed. A deliberate change to the
/// API refreshes the copy: `PIER_REFRESH_OPENAPI=1 cargo test -p pier --test api
/// openapi_matches_the_committed_copy`, then review and commit the diff of `tests/api/openapi.json`.
#[tokio::test]
async fn openapi_matches_the_committed_copy() {
    let served = serde_json::to_string_pretty(&canonical(&document().await)).expect("JSON") + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(FROZEN);
    if std::env::var_os("PIER_REFRESH_OPENAPI").is_some() {
        std::fs::write(&path, &served).expect("the committed copy is writable");
    }
    let committed = std::fs::read_to_string(&path).expect("the committed copy exists");
    if served != committed {
        let line = served
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| served.lines().count().min(committed.lines().count()))
            + 1;
        panic!(
            "/v1/openapi.json differs from crates/pier/{FROZEN} from line {line}:\n  served:    {}\n  committed: {}\n\
             If the API change is deliberate, refresh the copy with PIER_REFRESH_OPENAPI=1 cargo test -p pier \
             --test api openapi_matches_the_committed_copy, and review its diff.",
            served.lines().nth(line - 1).unwrap_or("<end>"),
            committed.lines().nth(line - 1).unwrap_or("<end>"),
        );
    }
}
