//! Creating many links at once, for imports: one transaction and a handful of statements
//! whatever the number of rows, plus one `link.created` event per created link through the
//! outbox, as a single create publishes. The rows travel as one JSON list, so ten thousand links
//! are one `INSERT … ON CONFLICT (slug) DO NOTHING`; generated slugs that turn out to be taken
//! are drawn again in another round, chosen ones are reported as taken.

use std::collections::{HashMap, HashSet};

use pier_core::{Timestamp, WorkspaceId};
use pier_db::{JsonList, Tx, with_tx};
use serde::Serialize;

use crate::fields::LinkFields;
use crate::link::{Link, LinkId, PasswordChange};
use crate::store::{LinkRow, LinkStore, RETURNED, SLUG_ATTEMPTS, tags_json};

/// Why [`LinkStore::create_many`] did not create a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotCreated {
    /// The row's chosen slug belongs to another link, or to an earlier row of the same call.
    SlugTaken(String),
    /// The call was atomic and another row was refused.
    RolledBack,
}

/// One row in the shape the insert reads.
#[derive(Serialize)]
struct InsertRow<'a> {
    id: &'a str,
    slug: &'a str,
    url: &'a str,
    title: Option<&'a str>,
    tags: String,
    redirect_status: u16,
    expires_at: Option<i64>,
    max_clicks: Option<i64>,
    password_hash: Option<&'a str>,
}

/// A row still to insert: its id (kept across rounds) and the slug it tries.
struct Pending {
    index: usize,
    id: LinkId,
    slug: String,
}

impl LinkStore {
    /// Creates `rows` in one transaction, answering for each row, in order, its link or why it
    /// was not created.
    ///
    /// A chosen slug goes to the first row that names it; later rows, and rows whose slug
    /// another link holds, are [`NotCreated::SlugTaken`]. Generated slugs avoid every slug the
    /// call holds and are drawn again when the database refuses them. Non-atomic, every other
    /// row is created; atomic, one refused row rolls back all (the rest are
    /// [`NotCreated::RolledBack`]).
    pub async fn create_many(
        &self,
        workspace: &WorkspaceId,
        created_by: &str,
        rows: Vec<LinkFields>,
        atomic: bool,
    ) -> Result<Vec<Result<Link, NotCreated>>, sqlx::Error> {
        let now = self.now();
        let mut outcomes: Vec<Result<Link, NotCreated>> =
            rows.iter().map(|_| Err(NotCreated::RolledBack)).collect();
        // Chosen slugs are claimed first, so no generated slug takes one a later row chose.
        let mut held = HashSet::new();
        let mut pending = Vec::with_capacity(rows.len());
        for (index, fields) in rows.iter().enumerate() {
            let slug = fields.slug.as_ref().map(|s| s.as_str().to_owned());
            match slug {
                Some(slug) if !held.insert(slug.clone()) => {
                    outcomes[index] = Err(NotCreated::SlugTaken(slug));
                }
                slug => pending.push(Pending {
                    index,
                    id: LinkId::new(now),
                    slug: slug.unwrap_or_default(),
                }),
            }
        }
        let mut draws = vec![0; rows.len()];
        let mut tx = self.db().begin().await?;
        while !pending.is_empty() {
            let mut trying = Vec::with_capacity(pending.len());
            for mut row in pending {
                if rows[row.index].slug.is_none() {
                    match self.draw_unheld(&mut held, &mut draws[row.index]) {
                        Ok(slug) => row.slug = slug,
                        Err(slug) => {
                            outcomes[row.index] = Err(NotCreated::SlugTaken(slug));
                            continue;
                        }
                    }
                }
                trying.push(row);
            }
            let mut inserted = self
                .insert_rows(&mut tx, workspace, created_by, now, &rows, &trying)
                .await?;
            let mut again = Vec::new();
            for row in trying {
                if let Some(link) = inserted.remove(row.id.as_str()) {
                    outcomes[row.index] = Ok(link);
                } else if rows[row.index].slug.is_none() && draws[row.index] < SLUG_ATTEMPTS {
                    tracing::debug!("generated slug was taken; drawing another");
                    again.push(row);
                } else {
                    outcomes[row.index] = Err(NotCreated::SlugTaken(row.slug));
                }
            }
            pending = again;
            let refused = outcomes
                .iter()
                .any(|o| matches!(o, Err(NotCreated::SlugTaken(_))));
            if atomic && refused {
                tx.rollback().await?;
                for outcome in &mut outcomes {
                    if outcome.is_ok() {
                        *outcome = Err(NotCreated::RolledBack);
                    }
                }
                return Ok(outcomes);
            }
        }
        let links: Vec<(&Link, &LinkFields)> = outcomes
            .iter()
            .zip(&rows)
            .filter_map(|(outcome, fields)| Some((outcome.as_ref().ok()?, fields)))
            .collect();
        write_tags(&mut tx, workspace, now, &links).await?;
        // Each imported link is announced as a single create would be, in the same transaction.
        for (link, _) in &links {
            self.announce(&mut tx, workspace, "link.created", link.event_payload())
                .await?;
        }
        // A node may remember these slugs as unknown.
        let slugs = links.iter().map(|(link, _)| link.slug.clone());
        self.redirects().forget_on_commit(&mut tx, slugs).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    /// A generated slug no row of this call holds, within the row's remaining draws; else
    /// `Err` with the last one drawn.
    fn draw_unheld(&self, held: &mut HashSet<String>, draws: &mut usize) -> Result<String, String> {
        loop {
            *draws += 1;
            let slug = self.draw_slug().as_str().to_owned();
            if held.insert(slug.clone()) {
                return Ok(slug);
            }
            if *draws >= SLUG_ATTEMPTS {
                return Err(slug);
            }
        }
    }

    /// Inserts `pending` in one statement; answers the created links by id (a row whose slug
    /// was taken, by a link or another workspace's quarantine, is simply missing).
    async fn insert_rows(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        created_by: &str,
        now: Timestamp,
        rows: &[LinkFields],
        pending: &[Pending],
    ) -> Result<HashMap<String, Link>, sqlx::Error> {
        let list: Vec<InsertRow> = pending
            .iter()
            .map(|row| {
                let fields = &rows[row.index];
                InsertRow {
                    id: row.id.as_str(),
                    slug: &row.slug,
                    url: fields.target.as_str(),
                    title: fields.title.as_ref().map(|t| t.as_str()),
                    tags: tags_json(&fields.tags),
                    redirect_status: fields.redirect_status.code(),
                    expires_at: fields.expires_at.map(Timestamp::as_micros),
                    max_clicks: fields.max_clicks,
                    password_hash: match &fields.password {
                        PasswordChange::Set(hash) => Some(hash),
                        PasswordChange::Keep | PasswordChange::Remove => None,
                    },
                }
            })
            .collect();
        let list = JsonList::new(&list)?;
        // `WHERE true` keeps SQLite from reading `ON CONFLICT` as part of the SELECT's join.
        let sql = format!(
            "INSERT INTO links (id, workspace_id, slug, url, title, tags, redirect_status, \
             expires_at, max_clicks, password_hash, created_by, version, clicks, created_at, \
             updated_at) \
             SELECT value ->> 'id', $1, value ->> 'slug', value ->> 'url', value ->> 'title', \
             value ->> 'tags', CAST(value ->> 'redirect_status' AS INTEGER), \
             CAST(value ->> 'expires_at' AS BIGINT), CAST(value ->> 'max_clicks' AS BIGINT), \
             value ->> 'password_hash', $2, 1, 0, $3, $3 FROM {} WHERE true \
             ON CONFLICT (slug) DO NOTHING RETURNING {RETURNED}",
            tx.backend().json_rows("$4")
        );
        let inserted: Vec<LinkRow> = with_tx!(tx, conn => {
            sqlx::query_as(&sql)
                .bind(workspace.as_str())
                .bind(created_by)
                .bind(now.as_micros())
                .bind(list.as_str())
                .fetch_all(conn)
                .await
        })?;
        let mut links: HashMap<String, Link> = inserted
            .into_iter()
            .map(|row| Link::try_from(row).map(|link| (link.id.as_str().to_owned(), link)))
            .collect::<Result<_, _>>()?;
        // Slugs another workspace holds in quarantine are taken too: their rows go again.
        let slugs: Vec<&str> = links.values().map(|link| link.slug.as_str()).collect();
        let held = self.held_by_others(tx, workspace, &slugs).await?;
        if !held.is_empty() {
            links.retain(|_, link| !held.contains(&link.slug));
            let held: Vec<&str> = held.iter().map(String::as_str).collect();
            let list = crate::quarantine::slug_list(&held)?;
            let sql = format!(
                "DELETE FROM links WHERE workspace_id = $1 AND slug IN (SELECT value ->> 0 FROM {})",
                tx.backend().json_rows("$2")
            );
            with_tx!(tx, conn => {
                sqlx::query(&sql)
                    .bind(workspace.as_str())
                    .bind(list.as_str())
                    .execute(conn)
                    .await
                    .map(drop)
            })?;
        }
        Ok(links)
    }
}

/// The tag index rows of new links.
async fn write_tags(
    tx: &mut Tx,
    workspace: &WorkspaceId,
    now: Timestamp,
    links: &[(&Link, &LinkFields)],
) -> Result<(), sqlx::Error> {
    let rows: Vec<[&str; 2]> = links
        .iter()
        .flat_map(|(link, fields)| fields.tags.iter().map(|t| [t.as_str(), link.id.as_str()]))
        .collect();
    crate::store::insert_tags(tx, workspace, now, &rows).await
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use pier_core::{Clock, ManualClock};
    use pier_testkit::{Backend, TestDb, on_both_backends};

    use super::*;
    use crate::{ClickBuffer, ClickSettings, LinkFilter, RedirectStatus, Redirects, Slug, Tag};

    on_both_backends!(
        slugs_are_redrawn_or_reported_and_tags_indexed,
        a_generated_slug_never_takes_a_chosen_one,
        an_atomic_call_with_a_taken_slug_stores_nothing,
    );

    /// A store over a fresh database whose generated slugs are `gen0`, `gen0`, `gen1`, `gen1`,
    /// …: every other draw repeats the one before.
    async fn store(backend: Backend) -> (TestDb, LinkStore, WorkspaceId) {
        let drawn = AtomicUsize::new(0);
        store_drawing(backend, move || {
            let n = drawn.fetch_add(1, Ordering::SeqCst) / 2;
            Slug::parse(&format!("gen{n}")).expect("slug")
        })
        .await
    }

    async fn store_drawing(
        backend: Backend,
        slugs: impl Fn() -> Slug + Send + Sync + 'static,
    ) -> (TestDb, LinkStore, WorkspaceId) {
        let (test_db, store, workspace, _) = clocked_store(backend).await;
        (test_db, store.with_slug_source(slugs), workspace)
    }

    /// A store over a fresh database, a workspace id and the store's clock.
    pub(crate) async fn clocked_store(
        backend: Backend,
    ) -> (TestDb, LinkStore, WorkspaceId, ManualClock) {
        let test_db = TestDb::new(&backend, &[pier_db::MIGRATIONS, crate::MIGRATIONS]).await;
        let manual = ManualClock::starting_now();
        let clock: Arc<dyn Clock> = Arc::new(manual.clone());
        let cache = pier_cache::Settings {
            capacity: 100,
            ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(300),
            jitter: 0.0,
        };
        let clicks = ClickBuffer::new(ClickSettings::default());
        let redirects = Redirects::new(test_db.db.clone(), clock.clone(), cache, clicks);
        let store = LinkStore::new(test_db.db.clone(), clock.clone(), redirects);
        (test_db, store, WorkspaceId::new(clock.now()), manual)
    }

    pub(crate) fn row(slug: Option<&str>, tags: &[&str]) -> LinkFields {
        LinkFields {
            slug: slug.map(|s| Slug::parse(s).expect("slug")),
            target: crate::Target::parse("https://example.com/").expect("url"),
            title: None,
            tags: tags.iter().map(|t| Tag::parse(t).expect("tag")).collect(),
            redirect_status: RedirectStatus::default(),
            expires_at: None,
            max_clicks: None,
            password: PasswordChange::Keep,
        }
    }

    fn slug_of(outcome: &Result<Link, NotCreated>) -> Option<&str> {
        outcome.as_ref().ok().map(|link| link.slug.as_str())
    }

    /// Whether `slug` redirects, as the (cached) redirect lookup answers.
    async fn redirects(store: &LinkStore, slug: &str) -> bool {
        store.redirects().resolve(slug).await.expect("db").is_some()
    }

    async fn slugs_are_redrawn_or_reported_and_tags_indexed(backend: Backend) {
        let (_db, store, ws) = store(backend).await;
        // `gen0` (the first draw) and `taken` belong to earlier links.
        store
            .create(&ws, "key", row(None, &[]))
            .await
            .expect("gen0");
        store
            .create(&ws, "key", row(Some("taken"), &[]))
            .await
            .expect("taken");
        // Remembered as unknown: the import must make the cache forget it.
        assert!(!redirects(&store, "mine").await);
        let rows = vec![
            row(None, &["a"]),
            row(Some("taken"), &[]),
            row(None, &["a", "b"]),
            row(Some("mine"), &["b"]),
            row(Some("mine"), &[]),
            row(Some("gen2"), &[]),
        ];
        let outcomes = store
            .create_many(&ws, "key", rows, false)
            .await
            .expect("db");
        let slugs: Vec<Option<&str>> = outcomes.iter().map(slug_of).collect();
        // The first row draws gen0, which the database refuses; its redraws skip gen1 (the
        // third row's) and gen2 (a later row's choice) and land on gen3.
        assert_eq!(
            slugs,
            [
                Some("gen3"),
                None,
                Some("gen1"),
                Some("mine"),
                None,
                Some("gen2")
            ]
        );
        assert_eq!(outcomes[1], Err(NotCreated::SlugTaken("taken".into())));
        assert_eq!(outcomes[4], Err(NotCreated::SlugTaken("mine".into())));
        assert!(redirects(&store, "mine").await);
        let tagged = |tag: &str| LinkFilter {
            tag: Some(tag.to_owned()),
            ..LinkFilter::default()
        };
        let mut slugs_tagged = Vec::new();
        for tag in ["a", "b"] {
            let links = store.list(&ws, &tagged(tag), None, 10).await.expect("list");
            let mut slugs: Vec<String> = links.into_iter().map(|link| link.slug).collect();
            slugs.sort();
            slugs_tagged.push(slugs);
        }
        assert_eq!(slugs_tagged, [["gen1", "gen3"], ["gen1", "mine"]]);
    }

    async fn a_generated_slug_never_takes_a_chosen_one(backend: Backend) {
        let (_db, store, ws) = store_drawing(backend, || Slug::parse("same").expect("slug")).await;
        let rows = vec![row(None, &[]), row(Some("same"), &[])];
        let outcomes = store
            .create_many(&ws, "key", rows, false)
            .await
            .expect("db");
        assert_eq!(outcomes[0], Err(NotCreated::SlugTaken("same".into())));
        assert_eq!(slug_of(&outcomes[1]), Some("same"));
    }

    async fn an_atomic_call_with_a_taken_slug_stores_nothing(backend: Backend) {
        let (_db, store, ws) = store(backend).await;
        store
            .create(&ws, "key", row(Some("taken"), &[]))
            .await
            .expect("taken");
        let rows = vec![
            row(None, &["a"]),
            row(Some("taken"), &[]),
            row(Some("x"), &[]),
        ];
        let outcomes = store.create_many(&ws, "key", rows, true).await.expect("db");
        let rolled_back = Err(NotCreated::RolledBack);
        assert_eq!(outcomes[0], rolled_back);
        assert_eq!(outcomes[1], Err(NotCreated::SlugTaken("taken".into())));
        assert_eq!(outcomes[2], rolled_back);
        let all = store
            .list(&ws, &LinkFilter::default(), None, 10)
            .await
            .expect("list");
        assert_eq!(all.len(), 1, "only the earlier link");
        let fine = vec![row(None, &["a"]), row(Some("x"), &[])];
        let outcomes = store.create_many(&ws, "key", fine, true).await.expect("db");
        assert!(outcomes.iter().all(|o| slug_of(o).is_some()));
    }
}
