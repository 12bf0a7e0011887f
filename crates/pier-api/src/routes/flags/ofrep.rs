//! OFREP, the OpenFeature Remote Evaluation Protocol (service/openapi.yaml of
//! open-feature/protocol, v0.3.0): `POST /ofrep/v1/evaluate/flags/{key}` and the bulk
//! `POST /ofrep/v1/evaluate/flags`, answered from this node's memory. Bodies and errors are
//! OFREP's own (`errorCode`, `errorDetails`), not problems, so any OpenFeature SDK's OFREP
//! provider reads them. The bulk answer carries an `ETag`; `If-None-Match` with it is `304`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pier_flags::{Context, Flag, FlagKey, Resolution};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{Object, ObjectBuilder};

use super::FlagsState;
use super::answers::{self, Answer};
use crate::AppState;
use crate::extract::{ApiJson, Authed, ETag, perm};
use crate::middleware::OwnBody;
use crate::problem::{ApiError, ApiResult};

/// The body of an evaluation: the context flags are evaluated for.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"context": {"targetingKey": "user-123", "email": "ana@example.com"}}))]
pub struct EvaluationRequest {
    /// The evaluation context: `targetingKey` (a string) and any attributes; targeting reads
    /// it with `var`, `fractional` buckets by `targetingKey`.
    #[schema(schema_with = context)]
    context: Option<Value>,
}

fn context() -> Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .build()
}

fn any_value() -> Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::AnyValue)
        .description(Some(
            "The flag's value: a boolean, string, number or object",
        ))
        .build()
}

/// A flag evaluated. Without `value`, the caller's own default applies (the flag is disabled,
/// or has no default variant and no rule chose one).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"key": "new-checkout", "value": true, "reason": "TARGETING_MATCH",
    "variant": "on", "metadata": {}}))]
pub struct EvaluationSuccess {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = any_value)]
    value: Option<Value>,
    /// `STATIC`, `TARGETING_MATCH`, `DEFAULT` or `DISABLED`.
    reason: pier_flags::Reason,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    /// The flag's metadata.
    metadata: Map<String, Value>,
}

/// A flag that could not be evaluated, or (`FLAG_NOT_FOUND`) does not exist.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"key": "new-checkout", "errorCode": "PARSE_ERROR",
    "errorDetails": "the flag's targeting cannot be applied to this context"}))]
pub struct EvaluationFailure {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// `FLAG_NOT_FOUND`, `PARSE_ERROR`, `TARGETING_KEY_MISSING`, `INVALID_CONTEXT` or `GENERAL`.
    error_code: pier_flags::ErrorCode,
    error_details: String,
    metadata: Map<String, Value>,
}

/// One flag of a bulk evaluation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum BulkItem {
    Success(EvaluationSuccess),
    Failure(EvaluationFailure),
}

/// Every flag of the workspace, evaluated for one context.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"flags": [
    {"key": "new-checkout", "value": true, "reason": "TARGETING_MATCH", "variant": "on", "metadata": {}},
    {"key": "kill-switch", "reason": "DISABLED", "metadata": {}}]}))]
pub struct BulkEvaluation {
    flags: Vec<BulkItem>,
}

fn details(code: pier_flags::ErrorCode) -> &'static str {
    use pier_flags::ErrorCode::*;
    match code {
        FlagNotFound => "no flag has this key",
        ParseError => "the flag's targeting cannot be applied to this context",
        TypeMismatch => "the flag's value is not of the type asked for",
        TargetingKeyMissing => "the flag's targeting needs a targetingKey",
        InvalidContext => "the context must be a JSON object with a string targetingKey, if any",
        General => "the flag's targeting chose no variant of the flag, or took too long",
    }
}

fn item(key: &str, resolution: Resolution) -> BulkItem {
    match resolution.error {
        Some(code) => BulkItem::Failure(EvaluationFailure {
            key: Some(key.to_owned()),
            error_code: code,
            error_details: details(code).to_owned(),
            metadata: resolution.metadata,
        }),
        None => BulkItem::Success(EvaluationSuccess {
            key: key.to_owned(),
            value: resolution.value,
            reason: resolution.reason,
            variant: resolution.variant,
            metadata: resolution.metadata,
        }),
    }
}

/// The request's context attributes, if valid: an object whose `targetingKey`, if any, is a
/// string (else the caller answers [`invalid_context`]).
fn attributes(body: EvaluationRequest) -> Option<Map<String, Value>> {
    let attributes = match body.context {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(attributes)) => attributes,
        Some(_) => return None,
    };
    let valid = attributes.get("targetingKey").is_none_or(Value::is_string);
    valid.then_some(attributes)
}

fn invalid_context() -> Response {
    let code = pier_flags::ErrorCode::InvalidContext;
    let failure = EvaluationFailure {
        key: None,
        error_code: code,
        error_details: details(code).to_owned(),
        metadata: Map::new(),
    };
    failed(StatusCode::BAD_REQUEST, failure)
}

/// An OFREP error answer: its own JSON, which the edge must not replace with a problem.
fn failed(status: StatusCode, failure: EvaluationFailure) -> Response {
    let mut response = (status, Json(failure)).into_response();
    response.extensions_mut().insert(OwnBody);
    response
}

/// Evaluate one flag for a context.
#[utoipa::path(
    post,
    path = "/ofrep/v1/evaluate/flags/{key}",
    operation_id = "ofrepEvaluateFlag",
    tag = "flags",
    security(("bearer" = [])),
    params(("key" = inline(FlagKey), Path, description = "The flag's key")),
    request_body = EvaluationRequest,
    responses(
        (status = 200, body = EvaluationSuccess),
        (status = 400, description = "The flag could not be evaluated (`PARSE_ERROR`, `GENERAL`), or the context is invalid (`INVALID_CONTEXT`); a body that is not JSON is a problem", content(
            (EvaluationFailure = "application/json"),
            (crate::Problem = "application/problem+json")
        )),
        (status = 404, description = "`FLAG_NOT_FOUND`: the workspace has no flag with this key", body = EvaluationFailure)
    )
)]
pub async fn evaluate(
    State(state): State<AppState>,
    State(flags): State<FlagsState>,
    auth: Authed<perm::FlagsEvaluate>,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<EvaluationRequest>,
) -> ApiResult<Response> {
    let Some(attributes) = attributes(body) else {
        return Ok(invalid_context());
    };
    let mut context = Context::new(attributes, state.clock().now().as_unix_seconds());
    let live = flags.store().live(auth.principal.workspace_id()).await?;
    let resolution = live
        .get(&key)
        .map_or_else(Resolution::not_found, |flag: &Flag| {
            flag.evaluate(&mut context)
        });
    let status = match resolution.error {
        None => StatusCode::OK,
        Some(pier_flags::ErrorCode::FlagNotFound) => StatusCode::NOT_FOUND,
        Some(_) => StatusCode::BAD_REQUEST,
    };
    Ok(match item(&key, resolution) {
        BulkItem::Success(success) => (status, Json(success)).into_response(),
        BulkItem::Failure(failure) => failed(status, failure),
    })
}

/// Evaluate every flag of the workspace for a context. Send the answer's `ETag` back in
/// `If-None-Match` to get `304` while nothing changed.
#[utoipa::path(
    post,
    path = "/ofrep/v1/evaluate/flags",
    operation_id = "ofrepEvaluateFlags",
    tag = "flags",
    security(("bearer" = [])),
    params(("If-None-Match" = Option<String>, Header, description = "The ETag of an earlier answer for the same context")),
    request_body = EvaluationRequest,
    responses(
        (status = 200, body = BulkEvaluation, headers(("ETag" = String))),
        (status = 304, description = "Nothing changed since the answer whose ETag was sent"),
        (status = 400, description = "`INVALID_CONTEXT`: the context is not an object, or its targetingKey not a string; a body that is not JSON is a problem", content(
            (EvaluationFailure = "application/json"),
            (crate::Problem = "application/problem+json")
        ))
    )
)]
pub async fn evaluate_all(
    State(state): State<AppState>,
    State(flags): State<FlagsState>,
    auth: Authed<perm::FlagsEvaluate>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<EvaluationRequest>,
) -> ApiResult<Response> {
    let Some(attributes) = attributes(body) else {
        return Ok(invalid_context());
    };
    let workspace = auth.principal.workspace_id();
    let live = flags.store().live(workspace).await?;
    let now = state.clock().now().as_unix_seconds();
    let key = answers::key(workspace, &live, &attributes, now);
    let answer = flags
        .answers()
        .get_or_compute(key, || {
            let mut context = Context::new(attributes, now);
            let evaluated = BulkEvaluation {
                flags: live
                    .flags
                    .iter()
                    .map(|(key, flag)| item(key, flag.evaluate(&mut context)))
                    .collect(),
            };
            // The tag covers the answer itself, so it moves with a flag's change and with the
            // context.
            let body = serde_json::to_vec(&evaluated)?;
            let etag = ETag::of_bytes(&body).header_value();
            Ok(Answer {
                body: body.into(),
                etag,
            })
        })
        .await
        .map_err(ApiError::internal)?;
    if none_match(&headers, &answer.etag) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, answer.etag.clone())],
        )
            .into_response());
    }
    let json = HeaderValue::from_static("application/json");
    let headers = [
        (header::ETAG, answer.etag.clone()),
        (header::CONTENT_TYPE, json),
    ];
    Ok((headers, answer.body.clone()).into_response())
}

/// Whether `If-None-Match` lists `tag` (weakly: `W/` is ignored) or is `*`.
fn none_match(headers: &HeaderMap, tag: &HeaderValue) -> bool {
    let Ok(tag) = tag.to_str() else { return false };
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|listed| listed.trim().trim_start_matches("W/"))
        .any(|listed| listed == "*" || listed == tag)
}
