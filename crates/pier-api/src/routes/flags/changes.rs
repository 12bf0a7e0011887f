//! `/v1/flags/{key}/changes`: a flag's audit trail, newest first; it outlives the flag.

use axum::extract::{Path, State};
use pier_core::Timestamp;
use pier_flags::FlagKey;
use pier_flags::audit::{Action, Change};
use serde::Serialize;
use serde_json::Value;

use super::{FlagsState, key_of};
use crate::AppState;
use crate::extract::{Authed, perm};
use crate::pagination::{CursorScope, Page, PageParams, Pagination};
use crate::problem::ApiResult;

/// One change of a flag.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "chg_01m8hq5v2c8r3t9w6y4z7x1b0n", "flag_key": "new-checkout",
    "action": "updated", "actor": "key_01m8hpqca6yrpxjm9wy9jmw19v",
    "diff": {"state": "DISABLED"}, "version": 4, "created_at": "2026-12-08T10:00:00.000000Z"}))]
pub struct ChangeView {
    id: String,
    #[serde(skip)]
    seq: i64,
    flag_key: String,
    action: Action,
    /// The API key or user that made the change.
    actor: String,
    /// What changed: a JSON Merge Patch from the definition before to the one after (the whole
    /// definition on create, null on delete).
    diff: Value,
    /// The flag's version after the change (the deleted version, for a delete).
    version: i64,
    created_at: Timestamp,
}

impl From<Change> for ChangeView {
    fn from(change: Change) -> Self {
        Self {
            id: change.id.to_string(),
            seq: change.seq,
            flag_key: change.flag_key,
            action: change.action,
            actor: change.actor,
            diff: change.diff,
            version: change.version,
            created_at: change.created_at,
        }
    }
}

/// List a flag's changes, newest first.
#[utoipa::path(
    get,
    path = "/v1/flags/{key}/changes",
    operation_id = "listFlagChanges",
    tag = "flags",
    security(("bearer" = [])),
    params(("key" = inline(FlagKey), Path, description = "The flag's key"), PageParams),
    responses((status = 200, body = Page<ChangeView>))
)]
pub async fn list(
    State(state): State<AppState>,
    State(flags): State<FlagsState>,
    auth: Authed<perm::FlagsRead>,
    Path(key): Path<String>,
    page: Pagination,
) -> ApiResult<Page<ChangeView>> {
    let key = key_of(&key)?;
    let workspace = auth.principal.workspace_id();
    let scope = CursorScope::new("flag_changes", workspace).filter("key", Some(key.as_str()));
    let after = page.position::<i64>(state.cursors(), &scope)?;
    let changes = flags
        .store()
        .changes(workspace, &key, after, page.fetch_limit())
        .await?;
    let views = changes.into_iter().map(ChangeView::from).collect();
    Ok(page.page(state.cursors(), &scope, views, |c: &ChangeView| c.seq))
}
