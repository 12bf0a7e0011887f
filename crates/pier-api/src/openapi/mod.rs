//! The OpenAPI 3.1 document. Paths and schemas come from the handlers' annotations; this module
//! adds what the API contract makes true of every operation (problem responses, the bearer
//! scheme, `Idempotency-Key` on `POST`), so no handler has to repeat it.

mod links;

use std::collections::BTreeMap;

use utoipa::openapi::path::{HttpMethod, Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Content, ContentBuilder, OpenApi, Ref, RefOr, Required, Schema};
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
        (name = "auth", description = "Signing in with a password: cookie sessions"),
        (name = "permissions", description = "Resource-level grants: one link, queue or webhook endpoint for a key or a user, beyond its role; and the check that decides"),
        (name = "oauth", description = "OAuth 2: clients, the authorization code (PKCE) and client credentials grants, token revocation and introspection, JWT access tokens and their keys"),
        (name = "jobs", description = "Enqueue and inspect durable jobs"),
        (name = "workflows", description = "Workflows: jobs that wait for the steps they depend on and receive their results, with compensations run in reverse when a step fails for good (sagas)"),
        (name = "workers", description = "The protocol for workers in any language: claim, heartbeat, complete, fail"),
        (name = "queues", description = "Queue statistics, pause and resume, concurrency limits"),
        (name = "rate-limits", description = "Named rate-limit policies and the decision API (GCRA, sliding and fixed windows)"),
        (name = "links", description = "Short links, their redirects, statistics, QR codes, imports and exports"),
        (name = "flags", description = "Feature flags in flagd's format: their management, audit trail and flagd documents, and their evaluation by OFREP (the OpenFeature Remote Evaluation Protocol)"),
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
                .description(Some(
                    "An API key, `pier_…`, or an access token from `POST /v1/oauth/token`",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            "__Host-pier_session",
            "A sign-in session (`POST /v1/auth/login`); requests that change anything also \
             send its `csrf_token` as `X-CSRF-Token`",
        ))),
    );
    let mut schemas = Vec::new();
    Problem::schemas(&mut schemas);
    components
        .schemas
        .insert(Problem::name().into_owned(), Problem::schema());
    components.schemas.extend(schemas);

    for (path, item) in spec.paths.paths.iter_mut() {
        let ops = [
            (HttpMethod::Get, item.get.as_mut()),
            (HttpMethod::Post, item.post.as_mut()),
            (HttpMethod::Patch, item.patch.as_mut()),
            (HttpMethod::Delete, item.delete.as_mut()),
            (HttpMethod::Put, item.put.as_mut()),
        ];
        for (method, op) in ops {
            if let Some(op) = op {
                add_contract(&method, op, path);
            }
        }
    }
    links::add(&mut spec);
    spec
}

/// What an operation is, as far as the shared responses care.
struct Shape {
    method: HttpMethod,
    secured: bool,
    has_path_params: bool,
    /// Whether `Idempotency-Key` applies to its `POST`.
    replayable: bool,
    has_body: bool,
    paginated: bool,
    conditional: bool,
    queried: bool,
}

/// A response every operation of some shape can give: its status, when it applies, and why,
/// with the problem `code`s it carries.
struct Shared {
    status: &'static str,
    applies: fn(&Shape) -> bool,
    description: &'static str,
}

const SHARED: &[Shared] = &[
    Shared {
        status: "400",
        applies: |s| s.has_body,
        description: "`malformed_json` or `unreadable_body`: the body cannot be read",
    },
    Shared {
        status: "400",
        applies: |s| s.paginated,
        description: "`invalid_cursor` or `cursor_mismatch`: the cursor is not one this list \
                      issued for these filters",
    },
    Shared {
        status: "400",
        applies: idempotent,
        description: "`invalid_idempotency_key`: the Idempotency-Key breaks its pattern",
    },
    Shared {
        status: "400",
        applies: |s| s.conditional,
        description: "`invalid_if_match`: If-Match is not ASCII",
    },
    Shared {
        status: "401",
        applies: |s| s.secured,
        description: "`unauthorized`: missing, malformed, unknown, revoked or expired \
                      credentials",
    },
    Shared {
        status: "403",
        applies: |s| s.secured,
        description: "`forbidden`: the credential lacks a required permission",
    },
    Shared {
        status: "404",
        applies: |s| s.has_path_params,
        description: "`not_found`: no such resource in the caller's workspace",
    },
    Shared {
        status: "409",
        applies: idempotent,
        description: "`idempotency_key_in_use`: a request with this Idempotency-Key is still \
                      being processed",
    },
    Shared {
        status: "412",
        applies: |s| s.conditional,
        description: "`precondition_failed`: If-Match did not match the current ETag",
    },
    Shared {
        status: "413",
        applies: |s| s.has_body || idempotent(s),
        description: "`payload_too_large`: the body is larger than the limit",
    },
    Shared {
        status: "415",
        applies: |s| s.has_body,
        description: "`unsupported_media_type`: the body is not in a media type the operation \
                      takes",
    },
    Shared {
        status: "422",
        applies: |s| s.has_body || s.queried || s.has_path_params,
        description: "`validation_failed`: invalid parameters or body, each named in `errors`",
    },
    Shared {
        status: "422",
        applies: idempotent,
        description: "`idempotency_key_reused`: the Idempotency-Key came with another request",
    },
    Shared {
        status: "429",
        applies: |_| true,
        description: "`quota_exceeded`: over the rate limit (per API key, or per client \
                      address on public routes); `Retry-After` says when to retry, and the \
                      problem's type is https://iana.org/assignments/http-problem-types#quota-exceeded",
    },
    Shared {
        status: "500",
        applies: |_| true,
        description: "`internal_error`: details are logged, not shown; quote the request id",
    },
    Shared {
        status: "503",
        applies: |s| s.secured,
        description: "`request_timeout`: the request ran longer than the server allows",
    },
];

/// Every authenticated `POST` goes through the idempotency layer.
fn idempotent(shape: &Shape) -> bool {
    matches!(shape.method, HttpMethod::Post) && shape.secured && shape.replayable
}

/// A parameter whose schema a function builds (`#[param(schema_with = …)]`) loses its doc
/// comment in utoipa's derive, so such a function describes the parameter in the schema and the
/// description moves up here, where readers and generated clients look for it.
fn describe_from_schema(param: &mut Parameter) {
    if param.description.is_some() {
        return;
    }
    if let Some(RefOr::T(Schema::Object(schema))) = param.schema.as_mut() {
        param.description = schema.description.take();
    }
}

fn add_contract(method: &HttpMethod, op: &mut Operation, path: &str) {
    let params = op.parameters.get_or_insert_with(Vec::new);
    params.iter_mut().for_each(describe_from_schema);
    let shape = Shape {
        method: method.clone(),
        secured: op.security.iter().flatten().any(|requirement| {
            // `{}` is the requirement of a public operation.
            serde_json::to_value(requirement)
                .is_ok_and(|v| v.as_object().is_some_and(|o| !o.is_empty()))
        }),
        has_path_params: path.contains('{'),
        // A session's own routes keep no replays: one would hand a device's new session
        // cookie to another (see `routes::router`).
        replayable: !path.starts_with("/v1/auth/"),
        has_body: op.request_body.is_some(),
        paginated: params.iter().any(|p| p.name == "cursor"),
        conditional: params.iter().any(|p| p.name == "If-Match"),
        queried: params
            .iter()
            .any(|p| matches!(p.parameter_in, ParameterIn::Query)),
    };
    if idempotent(&shape) {
        params.push(idempotency_key());
    }
    if params.is_empty() {
        op.parameters = None;
    }
    // Public operations say so: no security requirement at all. Whatever takes an API key
    // takes a sign-in session too.
    if !shape.secured {
        op.security = Some(Vec::new());
    } else if let Some(requirements) = op.security.as_mut()
        && requirements
            .iter()
            .any(|r| serde_json::to_value(r).is_ok_and(|v| v.get("bearer").is_some()))
    {
        requirements.push(SecurityRequirement::new("session", Vec::<String>::new()));
    }
    // A status several shared responses give says each of their reasons.
    let mut shared: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for response in SHARED.iter().filter(|s| (s.applies)(&shape)) {
        shared
            .entry(response.status)
            .or_default()
            .push(response.description);
    }
    for (status, reasons) in shared {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(reasons.join("; "))
                    .into()
            });
    }
    for (status, response) in &mut op.responses.responses {
        if let RefOr::T(response) = response {
            problems_as_problems(status, response);
            if response.description.is_empty() {
                response.description = reason(status).to_owned();
            }
        }
    }
}

/// The reason phrase of a status written as digits, for responses a handler left undescribed.
fn reason(status: &str) -> &'static str {
    status
        .parse()
        .ok()
        .and_then(|code| axum::http::StatusCode::from_u16(code).ok())
        .and_then(|code| code.canonical_reason())
        .unwrap_or("Success")
}

/// An error response's body is a problem, served as `application/problem+json`: a handler's
/// `body = Problem` (which says JSON) or a shared response (which says nothing) becomes that.
fn problems_as_problems(status: &str, response: &mut Response) {
    let is_problem = |content: &Content| match &content.schema {
        Some(RefOr::Ref(r)) => r.ref_location.ends_with("/Problem"),
        _ => false,
    };
    let declared_json = response
        .content
        .get("application/json")
        .is_some_and(is_problem);
    if declared_json {
        response.content.shift_remove("application/json");
    }
    let is_error = status.starts_with('4') || status.starts_with('5');
    if declared_json || response.content.is_empty() && is_error {
        response.content.insert(
            PROBLEM_JSON.to_owned(),
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        );
    }
}

/// The `Idempotency-Key` header, with the rule `middleware::idempotency` checks.
fn idempotency_key() -> Parameter {
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "A retry with the same key and request replays the first response (kept 24 h)",
        ))
        .schema(Some(
            pier_core::schema::string(1, crate::middleware::IDEMPOTENCY_KEY_MAX)
                .pattern(Some(crate::middleware::IDEMPOTENCY_KEY_PATTERN)),
        ))
        .build()
}
