//! The audit trail of a flag: one row per change, with who made it and what changed as a JSON
//! Merge Patch (RFC 7396) from the definition before to the one after.

use pier_core::{Timestamp, WorkspaceId};
use pier_db::{Bind, Db, Statement, Tx, with_tx};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::FlagKey;

pier_core::define_id!(
    /// A change of a flag.
    ChangeId,
    "chg"
);

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = FlagChangeAction)]
pub enum Action {
    Created,
    Updated,
    Deleted,
}

impl Action {
    pub(crate) fn parse(stored: &str) -> Result<Self, sqlx::Error> {
        match stored {
            "created" => Ok(Self::Created),
            "updated" => Ok(Self::Updated),
            "deleted" => Ok(Self::Deleted),
            other => Err(sqlx::Error::Decode(format!("flag change {other}").into())),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
        }
    }

    /// The webhook event type announcing it.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Created => "flag.created",
            Self::Updated => "flag.updated",
            Self::Deleted => "flag.deleted",
        }
    }
}

/// One entry of a flag's audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub id: ChangeId,
    /// The change's place in the trail (later changes are higher); lists page by it.
    pub seq: i64,
    pub flag_key: String,
    pub action: Action,
    /// The API key or user that made the change.
    pub actor: String,
    /// The merge patch from the definition before to the one after.
    pub diff: Value,
    /// The flag's version after the change (the deleted version for a delete).
    pub version: i64,
    pub created_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct ChangeRow {
    seq: i64,
    id: String,
    flag_key: String,
    action: String,
    actor: String,
    diff: String,
    version: i64,
    created_at: i64,
}

impl TryFrom<ChangeRow> for Change {
    type Error = sqlx::Error;

    fn try_from(row: ChangeRow) -> Result<Self, sqlx::Error> {
        let action = Action::parse(&row.action)?;
        Ok(Self {
            id: ChangeId::from_trusted(row.id),
            seq: row.seq,
            flag_key: row.flag_key,
            action,
            actor: row.actor,
            diff: serde_json::from_str(&row.diff).map_err(|e| sqlx::Error::Decode(e.into()))?,
            version: row.version,
            created_at: Timestamp::from_micros(row.created_at),
        })
    }
}

/// Applies a merge patch (RFC 7396), the inverse of [`diff`]: objects merge member by member,
/// `null` removes, anything else replaces.
pub fn apply(target: &mut Value, patch: Value) {
    let Value::Object(members) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(current) = target {
        for (name, value) in members {
            if value.is_null() {
                current.remove(&name);
            } else {
                apply(current.entry(name).or_insert(Value::Null), value);
            }
        }
    }
}

/// The merge patch that turns `before` into `after`: changed members with their new value,
/// removed ones as null, objects compared member by member.
pub fn diff(before: &Value, after: &Value) -> Value {
    match (before, after) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = Map::new();
            for (name, value) in new {
                match old.get(name) {
                    Some(previous) if previous == value => {}
                    Some(previous) if previous.is_object() && value.is_object() => {
                        patch.insert(name.clone(), diff(previous, value));
                    }
                    _ => {
                        patch.insert(name.clone(), value.clone());
                    }
                }
            }
            for name in old.keys().filter(|name| !new.contains_key(*name)) {
                patch.insert(name.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => after.clone(),
    }
}

/// One change about to be recorded.
pub(crate) struct Record<'a> {
    pub workspace: &'a WorkspaceId,
    pub key: &'a FlagKey,
    pub action: Action,
    pub actor: &'a str,
    pub diff: Value,
    /// The definition the change left (`None` for a delete), for the change feed.
    pub definition: Option<&'a Value>,
    pub version: i64,
    pub at: Timestamp,
}

pub(crate) async fn record(tx: &mut Tx, change: Record<'_>) -> Result<(), sqlx::Error> {
    with_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO flag_changes (id, workspace_id, flag_key, action, actor, diff, version, \
             created_at, definition) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(ChangeId::new(change.at).as_str())
        .bind(change.workspace.as_str())
        .bind(change.key.as_str())
        .bind(change.action.as_str())
        .bind(change.actor)
        .bind(change.diff.to_string())
        .bind(change.version)
        .bind(change.at.as_micros())
        .bind(change.definition.map(Value::to_string))
        .execute(conn)
        .await
        .map(drop)
    })
}

/// A flag's changes, newest first, after the change `after` (the `seq` of the last of the
/// previous page).
pub(crate) async fn list(
    db: &Db,
    workspace: &WorkspaceId,
    key: &FlagKey,
    after: Option<i64>,
    limit: u32,
) -> Result<Vec<Change>, sqlx::Error> {
    changes_statement(workspace, key, after, limit)
        .fetch_decoded::<ChangeRow, Change>(db)
        .await
}

/// The statement [`list`] runs, along `(workspace_id, flag_key, seq)` (an index on SQLite, the
/// primary key on PostgreSQL).
pub fn changes_statement(
    workspace: &WorkspaceId,
    key: &FlagKey,
    after: Option<i64>,
    limit: u32,
) -> Statement {
    Statement::keyset_page(
        "SELECT seq, id, flag_key, action, actor, diff, version, created_at FROM flag_changes",
        workspace.as_str(),
        vec![("flag_key", Bind::Text(key.as_str().to_owned()))],
        (&["seq"], true),
        after.map(|seq| vec![Bind::Int(seq)]),
        limit,
    )
}

#[cfg(test)]
mod tests {
    use super::{apply, diff};
    use serde_json::json;

    #[test]
    fn a_diff_is_the_merge_patch_between() {
        let before = json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "targeting": {"if": [1]}});
        let after = json!({"state": "DISABLED", "variants": {"on": true, "off": false, "x": true}});
        assert_eq!(
            diff(&before, &after),
            json!({"state": "DISABLED", "variants": {"x": true}, "targeting": null})
        );
        assert_eq!(diff(&json!(null), &json!({"a": 1})), json!({"a": 1}));
        let mut patched = before.clone();
        apply(&mut patched, diff(&before, &after));
        assert_eq!(patched, after, "applying the diff turns before into after");
    }
}
