//! The dialect seam: the few SQL fragments that differ between SQLite and PostgreSQL.

use serde::Serialize;

/// Which engine a [`Db`](crate::Db) runs on, and the SQL fragments that differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend's `db.system` name in OpenTelemetry's conventions.
    pub fn otel_name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgresql",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }

    /// Appended to a `SELECT` that must lock the rows it reads until the transaction ends.
    /// SQLite needs nothing: its single writer already excludes every other writer.
    pub fn for_update(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => "FOR UPDATE",
        }
    }

    /// Like [`for_update`](Self::for_update), but skipping rows another transaction holds, so
    /// concurrent claimers each take different rows instead of queueing on the same ones.
    pub fn for_update_skip_locked(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => "FOR UPDATE SKIP LOCKED",
        }
    }

    /// A row source over the JSON array bound at `param` (e.g. `$3`), one row per element with
    /// the element in column `value`: read fields with `value ->> 'name'` or `value ->> 0`, and
    /// `CAST(… AS BIGINT)` where a number is needed. Binding one [`JsonList`] instead of one
    /// parameter per row keeps a single statement for any batch size.
    ///
    /// Run statements that find table rows by the list unprepared (`.persistent(false)`):
    /// PostgreSQL cannot see into the list when it plans a prepared statement generically, so a
    /// plan cached while a table was small (say, a sequential scan joined by hash) would stay as
    /// the table grows. Planned each time, they follow the table's real size; the planning costs
    /// little next to a batch. Plain inserts from a list have no such choice and stay prepared.
    pub fn json_rows(self, param: &str) -> String {
        match self {
            Self::Sqlite => format!("json_each({param})"),
            // jsonb: parsed once, then `->>` looks fields up instead of re-reading the text.
            Self::Postgres => format!("jsonb_array_elements({param}::jsonb)"),
        }
    }
}

/// A list of rows bound as one JSON text parameter; see [`Backend::json_rows`].
#[derive(Debug, Clone)]
pub struct JsonList(String);

impl JsonList {
    pub fn new<T: Serialize>(rows: &[T]) -> Result<Self, sqlx::Error> {
        serde_json::to_string(rows)
            .map(Self)
            .map_err(|e| sqlx::Error::Encode(e.into()))
    }

    /// The text to bind.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Keys of tenant-owned rows, `(workspace_id, id)`, bound as one JSON list; see
/// [`Backend::owned_keys_in`].
#[derive(Debug, Clone)]
pub struct OwnedKeys(JsonList);

impl OwnedKeys {
    pub fn new<'a>(
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, sqlx::Error> {
        let keys: Vec<[&str; 2]> = keys.into_iter().map(|(ws, id)| [ws, id]).collect();
        JsonList::new(&keys).map(Self)
    }

    /// The text to bind.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// `id IN ($first, …)` for `count` ids bound one parameter each, the first at `$first`; with
/// `workspace_id = $n` beside it, the one index lookup per id that a short list of a hot path
/// needs. Unlike a JSON list, whose length PostgreSQL can only guess (100 rows), and unlike a
/// list of `(workspace_id, id)` pairs, which it plans as a filter of ORs, this is planned as
/// the primary-key lookups it is however small or large the table (measured on a young table:
/// 1–1.7 ms and 20–40 ms a statement against 0.1 ms). Run such statements unprepared
/// (`.persistent(false)`), since each length is a statement of its own. `count` must be at
/// least 1.
pub fn ids_in(first: usize, count: usize) -> String {
    let params: Vec<String> = (first..first + count).map(|i| format!("${i}")).collect();
    format!("id IN ({})", params.join(", "))
}

impl Backend {
    /// `(workspace_id, id) IN (…)` over the [`OwnedKeys`] bound at `param`: the one way a
    /// statement names many rows of a tenant-owned table (see also [`ids_in`]).
    pub fn owned_keys_in(self, param: &str) -> String {
        format!(
            "(workspace_id, id) IN (SELECT value ->> 0, value ->> 1 FROM {})",
            self.json_rows(param)
        )
    }

    /// Rows of several `arms` (each a `SELECT` that an index returns in `order`), merged in
    /// that order, the first `limit` (a placeholder) of them. Both engines merge the arms'
    /// index walks instead of sorting their rows: SQLite merges a compound `SELECT` whose arms
    /// are in order, while PostgreSQL merges (`Merge Append`) only arms with their own
    /// `ORDER BY … LIMIT` inside a subquery. `order` names result columns.
    pub fn merged(self, arms: &[String], order: &str, limit: &str) -> String {
        match (self, arms) {
            (_, [one]) => format!("{one} ORDER BY {order} LIMIT {limit}"),
            (Self::Sqlite, _) => {
                format!(
                    "{} ORDER BY {order} LIMIT {limit}",
                    arms.join(" UNION ALL ")
                )
            }
            (Self::Postgres, _) => {
                let arms: Vec<String> = arms
                    .iter()
                    .map(|arm| format!("({arm} ORDER BY {order} LIMIT {limit})"))
                    .collect();
                format!(
                    "SELECT * FROM ({}) AS merged ORDER BY {order} LIMIT {limit}",
                    arms.join(" UNION ALL ")
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_ids_number_their_parameters_from_the_first() {
        assert_eq!(ids_in(3, 2), "id IN ($3, $4)");
    }
}
