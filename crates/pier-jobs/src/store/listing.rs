//! Listing a tenant's jobs, newest first (ids are time-ordered), keyset-paginated on the id.
//!
//! Every filter combination walks an index whose leading columns are its filters and whose
//! last is the id (migration 21; tenants' jobs only since migration 24): `jobs_listed_by_state`, `…_by_queue`, `…_by_kind` and
//! `…_by_queue_kind`, the latter three with the state before the id. Without a state filter
//! those three are walked once per state and the walks merged in id order, so queue, kind and
//! their combinations share the state's index instead of needing one each, and no filter reads
//! more than a page of each state beyond its own rows. The unfiltered list walks the primary key.

use pier_core::WorkspaceId;
use pier_db::{Backend, Bind, Statement};

use super::{JOB_COLUMNS, JobFilter, JobRow, JobStore, to_jobs};
use crate::model::{Job, JobState, RESERVED_PREFIX};

impl JobStore {
    /// A page of the tenant's jobs after the one with id `before`. Pier's own jobs are not
    /// listed.
    pub async fn list(
        &self,
        workspace: &WorkspaceId,
        filter: &JobFilter,
        before: Option<String>,
        limit: u32,
    ) -> Result<Vec<Job>, sqlx::Error> {
        let statement = list_statement(self.db.backend(), workspace, filter, before, limit);
        let rows: Vec<JobRow> = statement.fetch_all(&self.db).await?;
        to_jobs(rows)
    }
}

/// The statement [`JobStore::list`] runs (public so tests can check its plan).
pub fn list_statement(
    backend: Backend,
    workspace: &WorkspaceId,
    filter: &JobFilter,
    before: Option<String>,
    limit: u32,
) -> Statement {
    let mut statement = Statement::new();
    let mut filters = format!(
        "workspace_id = {}",
        statement.bind(Bind::Text(workspace.as_str().to_owned()))
    );
    // Said even beside a queue filter (which never names a reserved queue): the listing
    // indexes hold only the rows of this predicate (migration 24), and a plan may use them only
    // where the statement repeats it word for word.
    filters += &format!(" AND queue NOT LIKE '{RESERVED_PREFIX}%'");
    if let Some(queue) = &filter.queue {
        let p = statement.bind(Bind::Text(queue.as_str().to_owned()));
        filters += &format!(" AND queue = {p}");
    }
    if let Some(kind) = &filter.kind {
        let p = statement.bind(Bind::Text(kind.as_str().to_owned()));
        filters += &format!(" AND kind = {p}");
    }
    if let Some(before) = before {
        filters += &format!(" AND id < {}", statement.bind(Bind::Text(before)));
    }
    let states: &[JobState] = match (filter.state, &filter.queue, &filter.kind) {
        (Some(state), _, _) => &[state],
        // The primary key serves the unfiltered list as it is.
        (None, None, None) => &[],
        (None, _, _) => &JobState::ALL,
    };
    let arms: Vec<String> = if states.is_empty() {
        vec![format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {filters}")]
    } else {
        states
            .iter()
            .map(|state| {
                // Inline: the state names are Pier's own fixed words.
                format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE {filters} AND state = '{}'",
                    state.as_str()
                )
            })
            .collect()
    };
    let limit = statement.bind(Bind::Int(i64::from(limit)));
    statement.text(&backend.merged(&arms, "id DESC", &limit));
    statement
}
