//! The change feed of a workspace's flags, for a client that keeps its own copy of them
//! current (`GET /v1/flags/stream`: a server-side SDK that evaluates locally). A client starts
//! from a [`Snapshot`], or from the place it reached before, then gets every change in commit
//! order, each with the definition it left.
//!
//! A place is the `seq` of an audit row. Within a workspace, `seq` follows commit order (the
//! writes take the workspace's lock before their audit rows take a `seq`, see
//! [`FlagStore::begin_write`]), so "the changes after N" never misses one that commits later.
//! A client can resume from a place only while the trail still holds that change and it is
//! younger than the history kept ([`FlagStore::with_history`]): pruning deletes only changes
//! older than that, so everything after such a change is there. (It keeps each live flag's
//! newest change past it, which is why being held is not enough.) Any other place gets a new
//! snapshot instead.

use std::time::Duration;

use pier_core::WorkspaceId;
use pier_db::with_reader;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::audit::Action;
use crate::live::{Wakeup, WorkspaceFlags};
use crate::store::FlagStore;

/// The most changes one read hands out; a client further behind gets them in several.
const BATCH: i64 = 500;

/// How long a follower waits without a wake-up before it reads anyway: a backstop for a lost
/// notification, which the listener's reconnect wake-up already covers.
const POLL_EVERY: Duration = Duration::from_secs(30);

/// A workspace's flags as of a place in its feed.
#[derive(Debug)]
pub struct Snapshot {
    /// The last change the flags include (0: none was ever made).
    pub seq: i64,
    pub flags: WorkspaceFlags,
}

/// One change of the feed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedChange {
    /// The change's place in the feed.
    #[serde(skip)]
    pub seq: i64,
    pub key: String,
    pub action: Action,
    /// The flag's version after the change (the deleted version for a delete).
    pub version: i64,
    /// The definition the change left; absent for a delete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition: Option<Value>,
}

#[derive(sqlx::FromRow)]
struct FeedRow {
    seq: i64,
    flag_key: String,
    action: String,
    version: i64,
    definition: Option<String>,
}

impl TryFrom<FeedRow> for FeedChange {
    type Error = sqlx::Error;

    fn try_from(row: FeedRow) -> Result<Self, sqlx::Error> {
        let definition = row
            .definition
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| sqlx::Error::Decode(e.into()))?;
        Ok(Self {
            seq: row.seq,
            key: row.flag_key,
            action: Action::parse(&row.action)?,
            version: row.version,
            definition,
        })
    }
}

/// Hands out a workspace's changes as they commit.
#[derive(Debug)]
pub struct Follower {
    store: FlagStore,
    workspace: WorkspaceId,
    /// The place reached: the last change handed out, or the snapshot's.
    last: i64,
    wakeups: broadcast::Receiver<Wakeup>,
}

impl FlagStore {
    /// Starts following `workspace`'s flags after the change `resume`, or, when the feed can
    /// no longer tell what followed it (or `resume` is `None`), from a snapshot, returned with
    /// the follower.
    pub async fn follow(
        &self,
        workspace: &WorkspaceId,
        resume: Option<i64>,
    ) -> Result<(Follower, Option<Snapshot>), sqlx::Error> {
        // Listening before reading, so no change slips between the read and the first wait.
        let wakeups = self.live_flags().wakeups();
        let resumable = match resume {
            Some(seq) => self.can_resume(workspace, seq).await?,
            None => false,
        };
        let snapshot = match (resume, resumable) {
            (Some(seq), true) => {
                let follower = self.follower(workspace, seq, wakeups);
                return Ok((follower, None));
            }
            _ => self.snapshot(workspace).await?,
        };
        let follower = self.follower(workspace, snapshot.seq, wakeups);
        Ok((follower, Some(snapshot)))
    }

    fn follower(
        &self,
        workspace: &WorkspaceId,
        last: i64,
        wakeups: broadcast::Receiver<Wakeup>,
    ) -> Follower {
        Follower {
            store: self.clone(),
            workspace: workspace.clone(),
            last,
            wakeups,
        }
    }

    /// The place first, then the flags: a change committed in between is in the flags and
    /// again in the feed after the place, where applying it twice leaves the same state.
    async fn snapshot(&self, workspace: &WorkspaceId) -> Result<Snapshot, sqlx::Error> {
        let seq: i64 = with_reader!(&self.db, pool => {
            sqlx::query_scalar(
                "SELECT COALESCE(MAX(seq), 0) FROM flag_changes WHERE workspace_id = $1",
            )
            .bind(workspace.as_str())
            .fetch_one(pool)
            .await
        })?;
        let flags = self.load(workspace).await?;
        Ok(Snapshot { seq, flags })
    }

    /// Whether the trail still holds the change `seq` of `workspace`, younger than the history
    /// kept, and every change after it carries its definition (changes made before the feed
    /// existed do not).
    async fn can_resume(&self, workspace: &WorkspaceId, seq: i64) -> Result<bool, sqlx::Error> {
        let (made_at, blind): (Option<i64>, i64) = with_reader!(&self.db, pool => {
            sqlx::query_as(
                "SELECT \
                   (SELECT created_at FROM flag_changes WHERE workspace_id = $1 AND seq = $2), \
                   (SELECT COUNT(*) FROM flag_changes WHERE workspace_id = $1 AND seq > $2 \
                      AND definition IS NULL AND action <> 'deleted')",
            )
            .bind(workspace.as_str())
            .bind(seq)
            .fetch_one(pool)
            .await
        })?;
        let oldest = self.clock.now().saturating_sub(self.history).as_micros();
        Ok(made_at.is_some_and(|made_at| made_at >= oldest) && blind == 0)
    }
}

impl Follower {
    /// The place reached, to resume from.
    pub fn last(&self) -> i64 {
        self.last
    }

    /// The next changes after the place reached, in commit order, waiting until there is at
    /// least one.
    pub async fn changes(&mut self) -> Result<Vec<FeedChange>, sqlx::Error> {
        loop {
            let changes = self.read().await?;
            if let Some(last) = changes.last() {
                self.last = last.seq;
                return Ok(changes);
            }
            self.wait().await;
        }
    }

    async fn read(&self) -> Result<Vec<FeedChange>, sqlx::Error> {
        let sql = "SELECT seq, flag_key, action, version, definition FROM flag_changes \
                   WHERE workspace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
        let rows: Vec<FeedRow> = with_reader!(&self.store.db, pool => {
            sqlx::query_as(sql)
                .bind(self.workspace.as_str())
                .bind(self.last)
                .bind(BATCH)
                .fetch_all(pool)
                .await
        })?;
        rows.into_iter().map(FeedChange::try_from).collect()
    }

    /// Until this workspace's flags may have changed, or [`POLL_EVERY`] passed.
    async fn wait(&mut self) {
        let deadline = tokio::time::Instant::now() + POLL_EVERY;
        loop {
            match tokio::time::timeout_at(deadline, self.wakeups.recv()).await {
                Ok(Ok(wakeup)) if !wakeup.concerns(&self.workspace) => continue,
                // A wake-up for this workspace, wake-ups missed, or the poll is due.
                Ok(Ok(_) | Err(RecvError::Lagged(_))) | Err(_) => return,
                // The store, which holds the sender, is gone: nothing will wake this again.
                Ok(Err(RecvError::Closed)) => {
                    tokio::time::sleep_until(deadline).await;
                    return;
                }
            }
        }
    }
}
