//! `/v1/flags/document`: a workspace's flags as one flagd document, to export, and to import
//! (the workspace's flags become the document's: created, updated and deleted by difference).

use axum::Json;
use axum::extract::State;
use pier_flags::{Document, Imported};
use serde_json::Value;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};

use super::FlagsState;
use crate::extract::{ApiJson, Authed, perm};
use crate::problem::{ApiError, ApiResult};

/// The most the import route reads; the configured `[flags] max_document_bytes` (1 MiB by
/// default) is checked within it and answers 422.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// A flagd document: `{"flags": {key: flag}, "$evaluators": {name: rule}}`.
pub struct FlagdDocument;

impl utoipa::PartialSchema for FlagdDocument {
    fn schema() -> RefOr<Schema> {
        let object = || ObjectBuilder::new().schema_type(Type::Object);
        let key = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pier_flags::FlagKey::PATTERN));
        object()
            .property("$schema", ObjectBuilder::new().schema_type(Type::String))
            .property(
                "flags",
                object()
                    .property_names(Some(key))
                    .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(
                        Schema::Object(super::crud::definition()),
                    ))))
                    .description(Some("Flags by key (`document` is reserved)")),
            )
            .property(
                "$evaluators",
                object().description(Some(
                    "Rules by name, used in targeting as `{\"$ref\": name}`",
                )),
            )
            .required("flags")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}

impl utoipa::ToSchema for FlagdDocument {}

/// Export the workspace's flags as a flagd document (shared `$evaluators` inlined where used).
#[utoipa::path(
    get,
    path = "/v1/flags/document",
    operation_id = "exportFlags",
    tag = "flags",
    security(("bearer" = [])),
    responses((status = 200, description = "A flagd document", body = FlagdDocument, example = json!({
        "$schema": "https://flagd.dev/schema/v0/flags.json",
        "flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false},
                                   "defaultVariant": "off",
                                   "targeting": {"fractional": [["on", 10], ["off", 90]]}}}})))
)]
pub async fn export(
    State(flags): State<FlagsState>,
    auth: Authed<perm::FlagsRead>,
) -> ApiResult<Json<Value>> {
    let live = flags.store().live(auth.principal.workspace_id()).await?;
    Ok(Json(Document::export(
        live.flags.values().map(AsRef::as_ref),
    )))
}

/// Import a flagd document: the workspace's flags become its flags, in one transaction, each
/// change audited and announced. A fault anywhere refuses the whole document (422, with the
/// path of each fault).
#[utoipa::path(
    put,
    path = "/v1/flags/document",
    operation_id = "importFlags",
    tag = "flags",
    security(("bearer" = [])),
    request_body(content = FlagdDocument, description = "A flagd document: `{\"flags\": {key: flag}, \"$evaluators\": {name: rule}}`", example = json!({
        "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@example.com"]}},
        "flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false},
                                   "defaultVariant": "off",
                                   "targeting": {"if": [{"$ref": "staff"}, "on", null]}}}})),
    responses((status = 200, body = Imported))
)]
pub async fn import(
    State(flags): State<FlagsState>,
    auth: Authed<perm::FlagsWrite>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Imported>> {
    let size = serde_json::to_vec(&body).map_or(usize::MAX, |text| text.len());
    Document::check_size(size, flags.max_document_bytes()).map_err(ApiError::validation)?;
    let document = Document::parse(&body).map_err(ApiError::validation)?;
    let principal = &auth.principal;
    let imported = flags
        .store()
        .import(principal.workspace_id(), principal.subject(), document)
        .await?;
    tracing::info!(
        created = imported.created.len(),
        updated = imported.updated.len(),
        deleted = imported.deleted.len(),
        "flags imported"
    );
    Ok(Json(imported))
}
