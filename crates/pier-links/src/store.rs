//! Links on the configured database: create (with collision-safe generated slugs), read, list
//! by keyset with filters, conditional update and delete. Every write that changes what a slug
//! answers tells every node's redirect cache (see [`crate::redirect`]). A slug a link gives up is
//! reserved to its workspace for a while ([`crate::quarantine`]).

use std::sync::Arc;
use std::time::Duration;

use pier_core::{Clock, Timestamp, WorkspaceId};
use pier_db::{Bind, Db, JsonList, Outbox, Statement, Tx, with_tx};

use crate::fields::LinkFields;
use crate::link::{Link, LinkId, PasswordChange, RedirectStatus};
use crate::redirect::Redirects;
use crate::{Slug, Tag};

/// How many generated slugs a create tries before giving up; with 56^7 slugs a second try is
/// already rare.
pub(crate) const SLUG_ATTEMPTS: usize = 8;

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the slug `{0}` is taken")]
    SlugTaken(String),
    /// Too many password hashes on this node at once.
    #[error(transparent)]
    Busy(#[from] pier_core::Busy),
    #[error("hashing a password: {0}")]
    Hash(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Filters for listing links; all that are set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkFilter {
    /// Links carrying this tag.
    pub tag: Option<String>,
    /// Links whose slug, URL or title contains this text, without regard to ASCII case.
    pub q: Option<String>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
}

/// A position in the list: the `(created_at, id)` of the last link of the previous page.
pub type ListPosition = (i64, String);

type SlugSource = Arc<dyn Fn() -> Slug + Send + Sync>;

/// Links, and the redirect cache their writes keep current. Clones share both.
#[derive(Clone)]
pub struct LinkStore {
    db: Db,
    clock: Arc<dyn Clock>,
    redirects: Redirects,
    slugs: SlugSource,
    /// Where link changes are announced (`link.created`, `link.updated`, `link.deleted`).
    outbox: Option<Arc<dyn Outbox>>,
    /// How long a slug a link gave up stays its workspace's; zero: not at all.
    quarantine: Duration,
}

impl std::fmt::Debug for LinkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkStore").finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct LinkRow {
    id: String,
    workspace_id: String,
    slug: String,
    url: String,
    title: Option<String>,
    tags: String,
    redirect_status: i32,
    expires_at: Option<i64>,
    max_clicks: Option<i64>,
    has_password: bool,
    created_by: String,
    version: i64,
    clicks: i64,
    created_at: i64,
    updated_at: i64,
}

/// The columns of [`LinkRow`], of the table aliased `l` in reads.
const COLUMNS: &str = "l.id, l.workspace_id, l.slug, l.url, l.title, l.tags, l.redirect_status, \
                       l.expires_at, l.max_clicks, l.password_hash IS NOT NULL AS has_password, \
                       l.created_by, l.version, l.clicks, l.created_at, l.updated_at";
/// The same, for `RETURNING` (which SQLite lets name only the bare table's columns).
pub(crate) const RETURNED: &str = "id, workspace_id, slug, url, title, tags, redirect_status, \
                                   expires_at, max_clicks, password_hash IS NOT NULL AS \
                                   has_password, created_by, version, clicks, created_at, \
                                   updated_at";

impl TryFrom<LinkRow> for Link {
    type Error = sqlx::Error;
    fn try_from(row: LinkRow) -> Result<Self, sqlx::Error> {
        let decode = |e: String| sqlx::Error::Decode(e.into());
        let status = u16::try_from(row.redirect_status)
            .ok()
            .and_then(RedirectStatus::from_code)
            .ok_or_else(|| decode(format!("redirect status {}", row.redirect_status)))?;
        Ok(Self {
            id: LinkId::from_trusted(row.id),
            workspace_id: WorkspaceId::from_trusted(row.workspace_id),
            slug: row.slug,
            url: row.url,
            title: row.title,
            tags: serde_json::from_str(&row.tags).map_err(|e| decode(e.to_string()))?,
            redirect_status: status,
            expires_at: row.expires_at.map(Timestamp::from_micros),
            max_clicks: row.max_clicks,
            has_password: row.has_password,
            created_by: row.created_by,
            version: row.version,
            clicks: row.clicks,
            created_at: Timestamp::from_micros(row.created_at),
            updated_at: Timestamp::from_micros(row.updated_at),
        })
    }
}

pub(crate) fn tags_json(tags: &[Tag]) -> String {
    serde_json::Value::from(tags.iter().map(Tag::as_str).collect::<Vec<_>>()).to_string()
}

/// Binds a link's owner-set fields as `$1` to `$7`: slug, url, title, tags, redirect_status,
/// expires_at, max_clicks (the order both writes name them in).
macro_rules! bind_fields {
    ($query:expr, $slug:expr, $fields:expr) => {
        $query
            .bind($slug.as_str())
            .bind($fields.target.as_str())
            .bind($fields.title.as_ref().map(|t| t.as_str()))
            .bind(tags_json(&$fields.tags))
            .bind(i32::from($fields.redirect_status.code()))
            .bind($fields.expires_at.map(Timestamp::as_micros))
            .bind($fields.max_clicks)
    };
}

impl LinkStore {
    pub fn new(db: Db, clock: Arc<dyn Clock>, redirects: Redirects) -> Self {
        Self {
            db,
            clock,
            redirects,
            slugs: Arc::new(Slug::generate),
            outbox: None,
            quarantine: Duration::ZERO,
        }
    }

    /// Keeps the slugs of deleted and renamed links reserved to their workspace for
    /// `quarantine` (zero: not at all; the default).
    #[must_use]
    pub fn with_slug_quarantine(mut self, quarantine: Duration) -> Self {
        self.quarantine = quarantine;
        self
    }

    pub(crate) fn quarantine(&self) -> Duration {
        self.quarantine
    }

    /// Announces every create, update and delete through `outbox`, in the transaction of the
    /// change.
    #[must_use]
    pub fn with_outbox(mut self, outbox: Arc<dyn Outbox>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Publishes `event_type` for the change `tx` makes, if an outbox is set.
    pub(crate) async fn announce(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        event_type: &'static str,
        payload: serde_json::Value,
    ) -> Result<(), sqlx::Error> {
        match &self.outbox {
            Some(outbox) => {
                outbox
                    .publish(tx, workspace.as_str(), event_type, payload)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Draws generated slugs from `source` instead of at random (tests force collisions).
    #[must_use]
    pub fn with_slug_source(mut self, source: impl Fn() -> Slug + Send + Sync + 'static) -> Self {
        self.slugs = Arc::new(source);
        self
    }

    /// The redirect lookup these writes keep current.
    pub fn redirects(&self) -> &Redirects {
        &self.redirects
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// A generated slug, from the configured source.
    pub(crate) fn draw_slug(&self) -> Slug {
        (self.slugs)()
    }

    /// Creates a link. A chosen slug that is taken is [`LinkError::SlugTaken`]; a generated one
    /// that is taken (another create drew it first) is drawn again.
    pub async fn create(
        &self,
        workspace: &WorkspaceId,
        created_by: &str,
        fields: LinkFields,
    ) -> Result<Link, LinkError> {
        let chosen = fields.slug.is_some();
        let mut attempts = 0;
        loop {
            let slug = fields.slug.clone().unwrap_or_else(|| (self.slugs)());
            attempts += 1;
            match self.insert(workspace, created_by, &fields, &slug).await {
                Err(LinkError::SlugTaken(_)) if !chosen && attempts < SLUG_ATTEMPTS => {
                    tracing::debug!(attempts, "generated slug was taken; drawing another");
                }
                result => return result,
            }
        }
    }

    async fn insert(
        &self,
        workspace: &WorkspaceId,
        created_by: &str,
        fields: &LinkFields,
        slug: &Slug,
    ) -> Result<Link, LinkError> {
        let now = self.clock.now();
        let id = LinkId::new(now);
        let password = match &fields.password {
            PasswordChange::Set(hash) => Some(hash.as_str()),
            PasswordChange::Keep | PasswordChange::Remove => None,
        };
        let sql = format!(
            "INSERT INTO links (slug, url, title, tags, redirect_status, expires_at, max_clicks, \
             id, workspace_id, password_hash, created_by, version, clicks, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, 0, $12, $12) \
             RETURNING {RETURNED}"
        );
        let mut tx = self.db.begin().await?;
        let row: LinkRow = with_tx!(&mut tx, conn => {
            bind_fields!(sqlx::query_as(&sql), slug, fields)
                .bind(id.as_str())
                .bind(workspace.as_str())
                .bind(password)
                .bind(created_by)
                .bind(now.as_micros())
                .fetch_one(conn)
                .await
        })
        .map_err(|e| slug_conflict(e, slug))?;
        self.check_not_held(&mut tx, workspace, slug).await?;
        let link = Link::try_from(row)?;
        self.write_tags(&mut tx, &link, &fields.tags).await?;
        self.announce(&mut tx, workspace, "link.created", link.event_payload())
            .await?;
        // A node may remember this slug as unknown.
        self.redirects
            .forget_on_commit(&mut tx, [link.slug.clone()])
            .await?;
        tx.commit().await?;
        Ok(link)
    }

    async fn write_tags(&self, tx: &mut Tx, link: &Link, tags: &[Tag]) -> Result<(), sqlx::Error> {
        with_tx!(tx, conn => {
            sqlx::query("DELETE FROM link_tags WHERE workspace_id = $1 AND link_id = $2")
                .bind(link.workspace_id.as_str())
                .bind(link.id.as_str())
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        let rows: Vec<[&str; 2]> = tags
            .iter()
            .map(|t| [t.as_str(), link.id.as_str()])
            .collect();
        insert_tags(tx, &link.workspace_id, link.created_at, &rows).await
    }

    pub async fn get(
        &self,
        workspace: &WorkspaceId,
        id: &LinkId,
    ) -> Result<Option<Link>, sqlx::Error> {
        let row: Option<LinkRow> = self
            .db
            .find_owned("links l", COLUMNS, workspace.as_str(), "id", id.as_str())
            .await?;
        row.map(Link::try_from).transpose()
    }

    pub async fn get_by_slug(
        &self,
        workspace: &WorkspaceId,
        slug: &str,
    ) -> Result<Option<Link>, sqlx::Error> {
        let row: Option<LinkRow> = self
            .db
            .find_owned("links l", COLUMNS, workspace.as_str(), "slug", slug)
            .await?;
        row.map(Link::try_from).transpose()
    }

    /// Newest first, by keyset over `(created_at, id)`: page 1,000 costs what page 1 does.
    /// With a tag, the walk is over that tag's index rows instead of the workspace's links.
    pub async fn list(
        &self,
        workspace: &WorkspaceId,
        filter: &LinkFilter,
        after: Option<ListPosition>,
        limit: u32,
    ) -> Result<Vec<Link>, sqlx::Error> {
        links_statement(workspace, filter, after, limit)
            .fetch_decoded::<LinkRow, Link>(&self.db)
            .await
    }

    /// Refuses `slug`, which `tx` just took for `workspace`, as taken when another workspace
    /// holds it in quarantine (rolling `tx` back).
    async fn check_not_held(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        slug: &Slug,
    ) -> Result<(), LinkError> {
        if self
            .held_by_others(tx, workspace, &[slug.as_str()])
            .await?
            .is_empty()
        {
            Ok(())
        } else {
            Err(LinkError::SlugTaken(slug.as_str().to_owned()))
        }
    }

    /// Replaces `seen`'s fields with `fields` unless the link changed since it was read (its
    /// version moved), in which case `Ok(None)`. A new slug frees the old one, reserved to the
    /// workspace for the quarantine.
    pub async fn update(&self, seen: &Link, fields: LinkFields) -> Result<Option<Link>, LinkError> {
        let slug = fields.slug.clone().unwrap_or_else(|| (self.slugs)());
        let (keep_password, password) = match &fields.password {
            PasswordChange::Keep => (true, None),
            PasswordChange::Remove => (false, None),
            PasswordChange::Set(hash) => (false, Some(hash.as_str())),
        };
        let sql = format!(
            "UPDATE links SET slug = $1, url = $2, title = $3, tags = $4, \
             redirect_status = $5, expires_at = $6, max_clicks = $7, \
             password_hash = CASE WHEN $8 THEN password_hash ELSE $9 END, \
             version = version + 1, updated_at = $10 \
             WHERE workspace_id = $11 AND id = $12 AND version = $13 RETURNING {RETURNED}"
        );
        let mut tx = self.db.begin().await?;
        let row: Option<LinkRow> = with_tx!(&mut tx, conn => {
            bind_fields!(sqlx::query_as(&sql), slug, fields)
                .bind(keep_password)
                .bind(password)
                .bind(self.clock.now().as_micros())
                .bind(seen.workspace_id.as_str())
                .bind(seen.id.as_str())
                .bind(seen.version)
                .fetch_optional(conn)
                .await
        })
        .map_err(|e| slug_conflict(e, &slug))?;
        let Some(row) = row else { return Ok(None) };
        let link = Link::try_from(row)?;
        if link.slug != seen.slug {
            self.check_not_held(&mut tx, &link.workspace_id, &slug)
                .await?;
            self.hold_slugs(&mut tx, &link.workspace_id, &[seen.slug.as_str()])
                .await?;
        }
        self.write_tags(&mut tx, &link, &fields.tags).await?;
        let payload = link.event_payload();
        self.announce(&mut tx, &link.workspace_id, "link.updated", payload)
            .await?;
        let slugs = [seen.slug.clone(), link.slug.clone()];
        self.redirects.forget_on_commit(&mut tx, slugs).await?;
        tx.commit().await?;
        Ok(Some(link))
    }

    /// Deletes `seen` unless its version moved (`Ok(false)`); the link's tags and click
    /// statistics go with it. Its slug is free at once for its workspace; for others, once the
    /// quarantine ends (reserved in this transaction, so no create can take it in between).
    pub async fn delete(&self, seen: &Link) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let deleted = tx
            .delete_owned(
                "links",
                seen.workspace_id.as_str(),
                seen.id.as_str(),
                Some(seen.version),
            )
            .await?;
        if !deleted {
            return Ok(false);
        }
        for table in [
            "link_tags",
            "link_clicks_hourly",
            "link_visitors_daily",
            "link_referrers_daily",
            "link_countries_daily",
            "link_clicks_recent",
        ] {
            let sql = format!("DELETE FROM {table} WHERE workspace_id = $1 AND link_id = $2");
            with_tx!(&mut tx, conn => {
                sqlx::query(&sql)
                    .bind(seen.workspace_id.as_str())
                    .bind(seen.id.as_str())
                    .execute(conn)
                    .await
                    .map(|r| r.rows_affected())
            })?;
        }
        self.hold_slugs(&mut tx, &seen.workspace_id, &[seen.slug.as_str()])
            .await?;
        let payload = serde_json::json!({ "id": seen.id, "slug": seen.slug });
        self.announce(&mut tx, &seen.workspace_id, "link.deleted", payload)
            .await?;
        self.redirects
            .forget_on_commit(&mut tx, [seen.slug.clone()])
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// The tag index rows `[tag, link_id]` of links of `workspace` created at `created_at`, in one
/// statement.
pub(crate) async fn insert_tags(
    tx: &mut Tx,
    workspace: &WorkspaceId,
    created_at: Timestamp,
    rows: &[[&str; 2]],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let list = JsonList::new(rows)?;
    let sql = format!(
        "INSERT INTO link_tags (workspace_id, tag, created_at, link_id) \
         SELECT $1, value ->> 0, $2, value ->> 1 FROM {}",
        tx.backend().json_rows("$3")
    );
    with_tx!(tx, conn => {
        sqlx::query(&sql)
            .bind(workspace.as_str())
            .bind(created_at.as_micros())
            .bind(list.as_str())
            .execute(conn)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(())
}

fn slug_conflict(err: sqlx::Error, slug: &Slug) -> LinkError {
    if pier_db::is_unique_violation(&err) {
        LinkError::SlugTaken(slug.as_str().to_owned())
    } else {
        LinkError::Db(err)
    }
}

/// `%text%` for `LIKE`, lowercased, with `LIKE`'s own characters escaped so they match
/// themselves.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The statement [`LinkStore::list`] runs: along `links_by_workspace`, or the tag's rows of
/// `link_tags` (its primary key). `q` is checked on the rows of that walk, so a rare match
/// reads many rows (see the `q` parameter's description).
pub fn links_statement(
    workspace: &WorkspaceId,
    filter: &LinkFilter,
    after: Option<ListPosition>,
    limit: u32,
) -> Statement {
    let mut statement = Statement::new();
    let ws = statement.bind(Bind::Text(workspace.as_str().to_owned()));
    // The walk's table: the tag index when filtering by tag, else the links themselves.
    let (from, at, id) = match &filter.tag {
        Some(tag) => (
            format!(
                "link_tags t JOIN links l ON l.id = t.link_id \
                 WHERE t.workspace_id = {ws} AND t.tag = {}",
                statement.bind(Bind::Text(tag.clone()))
            ),
            "t.created_at",
            "t.link_id",
        ),
        None => (
            format!("links l WHERE l.workspace_id = {ws}"),
            "l.created_at",
            "l.id",
        ),
    };
    let mut sql = format!("SELECT {COLUMNS} FROM {from}");
    if let Some(q) = &filter.q {
        let p = statement.bind(Bind::Text(like_pattern(q)));
        sql += &format!(
            " AND (LOWER(l.slug) LIKE {p} ESCAPE '\\' OR LOWER(l.url) LIKE {p} ESCAPE '\\' \
             OR LOWER(COALESCE(l.title, '')) LIKE {p} ESCAPE '\\')"
        );
    }
    if let Some(t) = filter.created_after {
        sql += &format!(" AND {at} > {}", statement.bind(Bind::Int(t.as_micros())));
    }
    if let Some(t) = filter.created_before {
        sql += &format!(" AND {at} < {}", statement.bind(Bind::Int(t.as_micros())));
    }
    if let Some((after_at, after_id)) = after {
        let (a, i) = (
            statement.bind(Bind::Int(after_at)),
            statement.bind(Bind::Text(after_id)),
        );
        sql += &format!(" AND ({at}, {id}) < ({a}, {i})");
    }
    let l = statement.bind(Bind::Int(i64::from(limit)));
    sql += &format!(" ORDER BY {at} DESC, {id} DESC LIMIT {l}");
    statement.text(&sql);
    statement
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_match_their_text_literally() {
        assert_eq!(like_pattern("Sale"), "%sale%");
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
