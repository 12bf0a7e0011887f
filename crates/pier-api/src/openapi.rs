//! The OpenAPI 3.1 document. Paths and schemas come from the handlers' annotations; this module
//! adds what the API contract makes true of every operation (problem responses, the bearer
//! scheme, `Idempotency-Key` on `POST`), so no handler has to repeat it.

use utoipa::openapi::path::{HttpMethod, Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, Required};
use utoipa::{OpenApi as _, PartialSchema, ToSchema};

use crate::problem::{PROBLEM_JSON, Problem};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Pier",
        description = "Short links, durable jobs, reliable webhooks and rate limits in one service. \
                       Errors are RFC 9457 problems; lists are cursor-paginated.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "workspace", description = "The caller's workspace"),
        (name = "api-keys", description = "API keys and their permissions"),
        (name = "jobs", description = "Enqueue and inspect durable jobs"),
        (name = "workers", description = "The protocol for workers in any language: claim, heartbeat, complete, fail"),
        (name = "queues", description = "Queue statistics, pause and resume, concurrency limits"),
        (name = "rate-limits", description = "Named rate-limit policies and the decision API (GCRA, sliding and fixed windows)"),
        (name = "health", description = "Liveness and readiness probes"),
    )
)]
struct Base;

pub fn base() -> OpenApi {
    Base::openapi()
}

/// Adds the contract's shared parts to every operation.
pub fn finish(mut spec: OpenApi) -> OpenApi {
    let components = spec.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An API key, `pier_…`"))
                .build(),
        ),
    );
    let mut schemas = Vec::new();
    Problem::schemas(&mut schemas);
    components
        .schemas
        .insert(Problem::name().into_owned(), Problem::schema());
    components.schemas.extend(schemas);

    for (path, item) in spec.paths.paths.iter_mut() {
        let has_id = path.contains('{');
        let ops = [
            (HttpMethod::Get, item.get.as_mut()),
            (HttpMethod::Post, item.post.as_mut()),
            (HttpMethod::Patch, item.patch.as_mut()),
            (HttpMethod::Delete, item.delete.as_mut()),
            (HttpMethod::Put, item.put.as_mut()),
        ];
        for (method, op) in ops {
            if let Some(op) = op {
                add_contract(method, op, has_id);
            }
        }
    }
    spec
}

fn add_contract(method: HttpMethod, op: &mut Operation, has_id: bool) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut errors: Vec<(&str, &str)> = vec![
        ("500", "Internal error (details are logged, not shown)"),
        (
            "429",
            "Over the rate limit (per API key, or per client address on public routes): \
             `Retry-After` says when to retry; the problem's type is \
             https://iana.org/assignments/http-problem-types#quota-exceeded",
        ),
    ];
    if secured {
        errors.push((
            "401",
            "Missing, malformed, unknown, revoked or expired credentials",
        ));
        errors.push(("403", "The credential lacks a required permission"));
        errors.push(("422", "Invalid parameters or body, with field errors"));
    }
    if has_id {
        errors.push(("404", "No such resource in the caller's workspace"));
    }
    if op.request_body.is_some() {
        errors.push(("400", "Malformed JSON or bad Idempotency-Key"));
        errors.push(("413", "The body is larger than the limit"));
        errors.push(("415", "The body is not JSON"));
    }
    if matches!(method, HttpMethod::Post) && secured {
        errors.push(("409", "A request with this Idempotency-Key is in flight"));
        op.parameters.get_or_insert_with(Vec::new).push(
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "1–255 printable characters; a retry with the same key and request replays \
                     the first response (kept 24 h)",
                ))
                .schema(Some(String::schema()))
                .build(),
        );
    }
    if matches!(
        method,
        HttpMethod::Delete | HttpMethod::Patch | HttpMethod::Put
    ) {
        errors.push(("412", "If-Match did not match the current ETag"));
    }
    if matches!(method, HttpMethod::Get) && !secured {
        errors.retain(|(status, _)| matches!(*status, "500" | "429"));
    }
    for (status, description) in errors {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        PROBLEM_JSON,
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build()
                    .into()
            });
    }
}
