//! Statements assembled at run time from optional parts (a list's filters), kept with their
//! values so the same text can be run or, by the tests that check every list's plan, explained.

use sqlx::FromRow;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use crate::{Backend, Db};

/// Binds `binds` to `query` in order (the same on every backend's query type).
macro_rules! bound {
    ($query:expr, $binds:expr) => {{
        let mut query = $query;
        for bind in $binds {
            query = match bind {
                Bind::Text(text) => query.bind(text.as_str()),
                Bind::Int(n) => query.bind(*n),
            };
        }
        query
    }};
}

/// A value bound to a [`Statement`].
#[derive(Debug, Clone)]
pub enum Bind {
    Text(String),
    Int(i64),
}

/// SQL text with `$n` placeholders and the values bound to them, in order.
#[derive(Debug, Clone, Default)]
pub struct Statement {
    sql: String,
    binds: Vec<Bind>,
}

impl Statement {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value and returns its placeholder (`$1`, `$2`, …) to write into the text.
    pub fn bind(&mut self, value: Bind) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }

    pub fn text(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// One keyset page of a tenant's table: `select` (`SELECT … FROM table`) of the rows of
    /// `workspace` equal to every `filters` value, after `after` (the `order` values of the
    /// previous page's last row), in `order`, descending or not, `limit` of them. An index
    /// `(workspace_id, filter columns…, order columns…)` serves it without a sort, at any depth.
    pub fn keyset_page(
        select: &str,
        workspace: &str,
        filters: Vec<(&str, Bind)>,
        (order, descending): (&[&str], bool),
        after: Option<Vec<Bind>>,
        limit: u32,
    ) -> Self {
        let mut statement = Self::new();
        let mut sql = format!(
            "{select} WHERE workspace_id = {}",
            statement.bind(Bind::Text(workspace.to_owned()))
        );
        for (column, value) in filters {
            sql += &format!(" AND {column} = {}", statement.bind(value));
        }
        let (direction, past) = if descending {
            (" DESC", "<")
        } else {
            ("", ">")
        };
        if let Some(after) = after {
            let values: Vec<String> = after.into_iter().map(|v| statement.bind(v)).collect();
            sql += &match (order, values.as_slice()) {
                ([column], [value]) => format!(" AND {column} {past} {value}"),
                _ => format!(" AND ({}) {past} ({})", order.join(", "), values.join(", ")),
            };
        }
        let ordered: Vec<String> = order.iter().map(|c| format!("{c}{direction}")).collect();
        let limit = statement.bind(Bind::Int(i64::from(limit)));
        sql += &format!(" ORDER BY {} LIMIT {limit}", ordered.join(", "));
        statement.sql = sql;
        statement
    }

    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// Runs the statement on the readers and returns every row.
    pub async fn fetch_all<T>(&self, db: &Db) -> Result<Vec<T>, sqlx::Error>
    where
        T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        crate::with_reader!(db, pool => {
            bound!(sqlx::query_as(&self.sql), &self.binds).fetch_all(pool).await
        })
    }

    /// Runs the statement on the readers and decodes every row (`R`) into its model (`T`).
    pub async fn fetch_decoded<R, T>(&self, db: &Db) -> Result<Vec<T>, sqlx::Error>
    where
        R: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin,
        T: TryFrom<R, Error = sqlx::Error>,
    {
        let rows: Vec<R> = self.fetch_all(db).await?;
        rows.into_iter().map(T::try_from).collect()
    }

    /// The plan the database chooses for the statement with its values, one line per node:
    /// `EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN` on PostgreSQL. `PostgreSQL` is asked with
    /// sequential scans priced out, so a small test table still shows whether an index can
    /// serve the filter and the order.
    pub async fn plan(&self, db: &Db) -> Result<Vec<String>, sqlx::Error> {
        match db.backend() {
            Backend::Sqlite => {
                let rows: Vec<(i64, i64, i64, String)> =
                    self.explained("EXPLAIN QUERY PLAN ").fetch_all(db).await?;
                Ok(rows.into_iter().map(|row| row.3).collect())
            }
            Backend::Postgres => {
                let mut tx = db.begin().await?;
                let explained = self.explained("EXPLAIN ");
                let rows: Vec<(String,)> = crate::with_tx!(&mut tx, conn => {
                    sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *conn).await?;
                    bound!(sqlx::query_as(&explained.sql), &explained.binds)
                        .fetch_all(&mut *conn)
                        .await?
                });
                tx.rollback().await?;
                Ok(rows.into_iter().map(|row| row.0).collect())
            }
        }
    }

    fn explained(&self, prefix: &str) -> Self {
        Self {
            sql: format!("{prefix}{}", self.sql),
            binds: self.binds.clone(),
        }
    }
}
