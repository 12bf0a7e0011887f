//! The links store, the redirect lookup and click recording against real databases, on both
//! backends.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pier_cache::Settings;
use pier_core::{Clock, HashGate, ManualClock, Patch, Timestamp, WorkspaceId};
use pier_links::stats::{self, Interval, StatsQuery};
use pier_links::{
    Availability, ClickBuffer, ClickSettings, LinkError, LinkFields, LinkFilter, LinkPatch,
    LinkStore, RedirectStatus, Redirects, Slug, Visit, Visitor,
};
use pier_testkit::{Backend, TestDb, on_both_backends};

on_both_backends!(
    generated_slugs_stay_unique_when_32_creates_collide,
    chosen_slugs_are_unique_case_sensitive_and_freed_by_delete,
    lists_filter_by_tag_text_and_time_and_page_by_keyset,
    updates_are_conditional_and_reach_the_redirect_lookup,
    max_clicks_hold_exactly_under_200_concurrent_clicks,
    clicks_are_flushed_into_hourly_counts_and_totals,
    flushes_of_two_nodes_sharing_links_never_deadlock,
    another_workspace_sees_nothing,
);

struct Fixture {
    _db: TestDb,
    db: pier_db::Db,
    clock: ManualClock,
    store: LinkStore,
    workspace: WorkspaceId,
}

async fn fixture(backend: Backend) -> Fixture {
    let test_db = TestDb::new(&backend, &[pier_db::MIGRATIONS, pier_links::MIGRATIONS]).await;
    let clock = ManualClock::starting_now();
    let clock_arc: Arc<dyn Clock> = Arc::new(clock.clone());
    let redirects = node(&test_db.db, &clock_arc);
    Fixture {
        db: test_db.db.clone(),
        store: LinkStore::new(test_db.db.clone(), clock_arc, redirects),
        workspace: WorkspaceId::new(clock.now()),
        clock,
        _db: test_db,
    }
}

/// A node's redirect lookup and click buffer on `db`.
fn node(db: &pier_db::Db, clock: &Arc<dyn Clock>) -> Redirects {
    let cache = Settings {
        capacity: 1000,
        ttl: Duration::from_secs(300),
        negative_ttl: Duration::from_secs(5),
        jitter: 0.0,
    };
    let clicks = ClickBuffer::new(ClickSettings::default());
    Redirects::new(db.clone(), clock.clone(), cache, clicks)
}

/// A visit by `visitor`, whose identity is `who`.
fn visit(visitor: Visitor, who: u64, referrer: Option<&str>) -> Visit<'_> {
    Visit {
        visitor,
        identity: who.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        referrer,
        country: None,
    }
}

async fn fields(slug: Option<&str>, url: &str) -> LinkFields {
    new_link(slug, url, LinkPatch::default()).await
}

/// A new link's checked fields: `url`, `slug`, and `more` of the rest.
async fn new_link(slug: Option<&str>, url: &str, more: LinkPatch) -> LinkFields {
    let change = LinkPatch {
        url: Patch::Set(url.to_owned()),
        slug: Patch::given(slug.map(str::to_owned)),
        ..more
    };
    let checked = LinkFields::for_new(change, Timestamp::from_micros(0)).expect("valid fields");
    checked
        .hashed(&HashGate::for_this_machine())
        .await
        .expect("hashed")
}

async fn generated_slugs_stay_unique_when_32_creates_collide(backend: Backend) {
    let f = fixture(backend).await;
    // Each slug is drawn twice, so half the draws collide with another create's.
    let drawn = Arc::new(AtomicUsize::new(0));
    let source = {
        let drawn = drawn.clone();
        move || {
            let n = drawn.fetch_add(1, Ordering::SeqCst) / 2;
            Slug::parse(&format!("gen{n}")).expect("slug")
        }
    };
    let store = f.store.clone().with_slug_source(source);
    let creates = (0..32).map(|i| {
        let (store, ws) = (store.clone(), f.workspace.clone());
        tokio::spawn(async move {
            let url = format!("https://example.com/{i}");
            store
                .create(&ws, "key_test", fields(None, &url).await)
                .await
        })
    });
    let mut slugs = HashSet::new();
    for create in creates.collect::<Vec<_>>() {
        let link = create.await.expect("task").expect("every create succeeds");
        assert!(slugs.insert(link.slug), "slugs are unique");
    }
    assert_eq!(slugs.len(), 32);
    assert!(
        drawn.load(Ordering::SeqCst) > 32,
        "some draws collided and were redrawn"
    );
}

async fn chosen_slugs_are_unique_case_sensitive_and_freed_by_delete(backend: Backend) {
    let f = fixture(backend).await;
    let ws = &f.workspace;
    let first = f
        .store
        .create(
            ws,
            "key_a",
            fields(Some("promo"), "https://a.example/").await,
        )
        .await
        .expect("create");
    let taken = f
        .store
        .create(
            ws,
            "key_a",
            fields(Some("promo"), "https://b.example/").await,
        )
        .await;
    assert!(matches!(taken, Err(LinkError::SlugTaken(s)) if s == "promo"));
    // Another workspace cannot take it either: slugs are unique across the service.
    let other = WorkspaceId::new(f.clock.now());
    let taken = f
        .store
        .create(
            &other,
            "key_b",
            fields(Some("promo"), "https://b.example/").await,
        )
        .await;
    assert!(matches!(taken, Err(LinkError::SlugTaken(_))));
    f.store
        .create(
            ws,
            "key_a",
            fields(Some("Promo"), "https://c.example/").await,
        )
        .await
        .expect("case-sensitive");

    assert!(f.store.delete(&first).await.expect("delete"));
    assert!(
        f.store
            .redirects()
            .resolve("promo")
            .await
            .expect("db")
            .is_none()
    );
    let again = f
        .store
        .create(
            &other,
            "key_b",
            fields(Some("promo"), "https://d.example/").await,
        )
        .await
        .expect("the slug is free again");
    let dest = f.store.redirects().resolve("promo").await.expect("db");
    assert_eq!(dest.expect("found").link_id, again.id);
}

async fn lists_filter_by_tag_text_and_time_and_page_by_keyset(backend: Backend) {
    let f = fixture(backend).await;
    let ws = &f.workspace;
    let start = f.clock.now();
    for i in 0..30 {
        let more = LinkPatch {
            tags: Patch::given((i % 3 == 0).then(|| vec!["sale".to_owned()])),
            title: Patch::given((i == 7).then(|| "Winter 50%_OFF".to_owned())),
            ..LinkPatch::default()
        };
        let new = new_link(None, &format!("https://shop.example/item/{i}"), more).await;
        f.store.create(ws, "key", new).await.expect("create");
        // Pairs share a timestamp: the keyset must order them by id.
        if i % 2 == 1 {
            f.clock.advance(Duration::from_secs(1));
        }
    }
    let all = |filter: LinkFilter| {
        let store = f.store.clone();
        let ws = ws.clone();
        async move {
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let page = store
                    .list(&ws, &filter, after.clone(), 4)
                    .await
                    .expect("list");
                let Some(last) = page.last() else { break };
                after = Some((last.created_at.as_micros(), last.id.as_str().to_owned()));
                seen.extend(page);
            }
            seen
        }
    };
    let everything = all(LinkFilter::default()).await;
    assert_eq!(everything.len(), 30);
    assert!(
        everything
            .windows(2)
            .all(|w| (w[0].created_at, &w[0].id) > (w[1].created_at, &w[1].id))
    );
    let sale = all(LinkFilter {
        tag: Some("sale".into()),
        ..LinkFilter::default()
    })
    .await;
    assert_eq!(sale.len(), 10);
    assert!(sale.iter().all(|l| l.tags == ["sale"]));
    let found = all(LinkFilter {
        q: Some("50%_off".into()),
        ..LinkFilter::default()
    })
    .await;
    assert_eq!(
        found.len(),
        1,
        "LIKE's own characters match literally, without case"
    );
    let item = all(LinkFilter {
        q: Some("ITEM/2".into()),
        ..LinkFilter::default()
    })
    .await;
    assert_eq!(item.len(), 11, "item/2 and item/20..29");
    let window = LinkFilter {
        tag: Some("sale".into()),
        created_after: Some(start.saturating_add(Duration::from_secs(2))),
        created_before: Some(start.saturating_add(Duration::from_secs(10))),
        ..LinkFilter::default()
    };
    // Created at seconds 3..=9 (items 6..19), tagged: items 6, 9, 12, 15, 18.
    assert_eq!(all(window).await.len(), 5);
}

async fn updates_are_conditional_and_reach_the_redirect_lookup(backend: Backend) {
    let f = fixture(backend).await;
    let redirects = f.store.redirects().clone();
    // A slug looked up before it exists is remembered as unknown; creating it must forget that.
    assert!(redirects.resolve("spring").await.expect("db").is_none());
    let link = f
        .store
        .create(
            &f.workspace,
            "key",
            fields(Some("spring"), "https://old.example/").await,
        )
        .await
        .expect("create");
    let dest = redirects
        .resolve("spring")
        .await
        .expect("db")
        .expect("found");
    assert_eq!(dest.url, "https://old.example/");

    let gate = HashGate::for_this_machine();
    let moved = LinkPatch {
        url: Patch::Set("https://new.example/".to_owned()),
        redirect_status: Patch::Set(308),
        ..LinkPatch::default()
    };
    let change = link.fields().expect("fields").patch(moved, f.clock.now());
    let change = change.expect("valid").hashed(&gate).await.expect("hashed");
    let updated = f
        .store
        .update(&link, change.clone())
        .await
        .expect("update")
        .expect("current");
    assert_eq!(updated.version, link.version + 1);
    let dest = redirects
        .resolve("spring")
        .await
        .expect("db")
        .expect("found");
    assert_eq!(dest.url, "https://new.example/");
    assert_eq!(dest.status, RedirectStatus::PermanentRedirect);
    assert!(
        f.store
            .update(&link, change.clone())
            .await
            .expect("update")
            .is_none(),
        "a stale version changes nothing"
    );

    let renaming = LinkPatch {
        slug: Patch::Set("summer".to_owned()),
        password: Patch::Set("pw".to_owned()),
        expires_at: Patch::Set(f.clock.now().saturating_add(Duration::from_secs(60))),
        ..LinkPatch::default()
    };
    let change = change.patch(renaming, f.clock.now()).expect("valid");
    let change = change.hashed(&gate).await.expect("hashed");
    let renamed = f
        .store
        .update(&updated, change)
        .await
        .expect("update")
        .expect("current");
    assert!(renamed.has_password);
    assert!(
        redirects.resolve("spring").await.expect("db").is_none(),
        "old slug is free"
    );
    let dest = redirects
        .resolve("summer")
        .await
        .expect("db")
        .expect("found");
    assert!(dest.needs_password());
    assert_eq!(dest.password_matches(&gate, "pw").await, Ok(true));
    assert_eq!(dest.password_matches(&gate, "no").await, Ok(false));
    assert_eq!(dest.availability(f.clock.now()), Availability::Open);
    f.clock.advance(Duration::from_secs(60));
    assert_eq!(dest.availability(f.clock.now()), Availability::Expired);
}

async fn max_clicks_hold_exactly_under_200_concurrent_clicks(backend: Backend) {
    let f = fixture(backend).await;
    let capped = LinkPatch {
        max_clicks: Patch::Set(50),
        ..LinkPatch::default()
    };
    let new = new_link(Some("once"), "https://limited.example/", capped).await;
    f.store
        .create(&f.workspace, "key", new)
        .await
        .expect("create");
    let redirects = f.store.redirects().clone();
    let clicks = (0..200u64).map(|i| {
        let redirects = redirects.clone();
        tokio::spawn(async move {
            let dest = redirects.resolve("once").await.expect("db").expect("found");
            // Every fourth visitor is a bot, which passes without spending a click.
            let visitor = if i % 4 == 0 {
                Visitor::Bot
            } else {
                Visitor::Browser
            };
            (
                visitor,
                redirects
                    .admit(&dest, &visit(visitor, i, None))
                    .await
                    .expect("admit"),
            )
        })
    });
    let mut humans_admitted = 0;
    for click in clicks.collect::<Vec<_>>() {
        let (visitor, admitted) = click.await.expect("task");
        if visitor == Visitor::Browser && admitted {
            humans_admitted += 1;
        }
        if visitor == Visitor::Bot {
            assert!(
                admitted,
                "bots never spend clicks, so they are not refused by the count"
            );
        }
    }
    assert_eq!(humans_admitted, 50);
    let dest = redirects.resolve("once").await.expect("db").expect("found");
    assert_eq!(dest.availability(f.clock.now()), Availability::Exhausted);
    redirects.flush_clicks().await.expect("flush");
    let link = f
        .store
        .get_by_slug(&f.workspace, "once")
        .await
        .expect("db")
        .expect("found");
    assert_eq!(
        link.clicks, 50,
        "clicks counted when admitted are not added again"
    );
}

async fn clicks_are_flushed_into_hourly_counts_and_totals(backend: Backend) {
    let f = fixture(backend).await;
    let link = f
        .store
        .create(
            &f.workspace,
            "key",
            fields(Some("news"), "https://news.example/").await,
        )
        .await
        .expect("create");
    let redirects = f.store.redirects();
    let dest = redirects.resolve("news").await.expect("db").expect("found");
    let from = f.clock.now();
    let visits = [
        visit(Visitor::Browser, 1, Some("news.example")),
        visit(Visitor::Unknown, 2, Some("news.example")),
        visit(Visitor::Bot, 3, Some("crawler.example")),
        visit(Visitor::Browser, 1, Some("mail.example")),
    ];
    for v in &visits {
        assert!(redirects.admit(&dest, v).await.expect("admit"));
    }
    f.clock.advance(Duration::from_secs(3600));
    let later = visit(Visitor::Browser, 4, None);
    assert!(redirects.admit(&dest, &later).await.expect("admit"));
    assert_eq!(redirects.clicks().pending_clicks(), 5);
    assert_eq!(redirects.flush_clicks().await.expect("flush"), 5);
    assert_eq!(redirects.clicks().pending_clicks(), 0);
    assert_eq!(redirects.flush_clicks().await.expect("flush"), 0);

    let link = f
        .store
        .get(&f.workspace, &link.id)
        .await
        .expect("db")
        .expect("found");
    assert_eq!(link.clicks, 4, "the bot is not in the total");
    let hours: Vec<(i64, i64)> = pier_db::with_reader!(&f.db, pool => {
        sqlx::query_as(
            "SELECT humans, bots FROM link_clicks_hourly WHERE link_id = $1 ORDER BY hour",
        )
        .bind(link.id.as_str())
        .fetch_all(pool)
        .await
    })
    .expect("read");
    assert_eq!(hours, vec![(3, 1), (1, 0)]);

    let query = StatsQuery {
        from,
        to: f.clock.now().saturating_add(Duration::from_secs(1)),
        interval: Interval::Hour,
    };
    let shown = stats::read(&f.db, (&f.workspace, &link.id), &query)
        .await
        .expect("stats");
    assert_eq!((shown.clicks, shown.bots), (4, 1));
    assert_eq!(shown.unique_visitors, 3, "visitor 1 came twice");
    assert_eq!(shown.series.len(), 2);
    assert_eq!((shown.series[0].clicks, shown.series[1].clicks), (3, 1));
    let top = [
        ("news.example".to_owned(), 2),
        ("mail.example".to_owned(), 1),
    ];
    assert_eq!(shown.top_referrers, top, "humans only, most first");
    assert_eq!(shown.recent.len(), 5);
    assert_eq!(shown.recent[0].visitor, Visitor::Browser, "newest first");
    assert_eq!(shown.recent[2].referrer.as_deref(), Some("crawler.example"));
    // A second flush of the same day adds to the stored sketch and counts.
    assert!(
        redirects
            .admit(&dest, &visit(Visitor::Browser, 5, Some("news.example")))
            .await
            .expect("admit")
    );
    redirects.flush_clicks().await.expect("flush");
    let shown = stats::read(&f.db, (&f.workspace, &link.id), &query)
        .await
        .expect("stats");
    assert_eq!(shown.unique_visitors, 4);
    assert_eq!(shown.top_referrers[0], ("news.example".to_owned(), 3));

    // Deleting a link takes its statistics, and clicks buffered before are discarded, not
    // written as orphans.
    let last = visit(Visitor::Browser, 6, Some("x.example"));
    assert!(redirects.admit(&dest, &last).await.expect("admit"));
    let link = f
        .store
        .get(&f.workspace, &link.id)
        .await
        .expect("db")
        .expect("found");
    assert!(f.store.delete(&link).await.expect("delete"));
    redirects.flush_clicks().await.expect("flush");
    for table in [
        "link_clicks_hourly",
        "link_visitors_daily",
        "link_referrers_daily",
        "link_clicks_recent",
    ] {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let left: i64 = pier_db::with_reader!(&f.db, pool => {
            sqlx::query_scalar(&sql).fetch_one(pool).await
        })
        .expect("read");
        assert_eq!(left, 0, "{table}");
    }
}

/// Two nodes buffer clicks on the same links and flush at the same moment, again and again:
/// their flushes lock the links' rows in one order (link id), so neither is ever chosen as a
/// deadlock victim, and every click is counted.
async fn flushes_of_two_nodes_sharing_links_never_deadlock(backend: Backend) {
    const LINKS: usize = 40;
    const ROUNDS: i64 = 10;
    let f = fixture(backend).await;
    let clock: Arc<dyn Clock> = Arc::new(f.clock.clone());
    let nodes = [f.store.redirects().clone(), node(&f.db, &clock)];
    let mut slugs = Vec::new();
    for n in 0..LINKS {
        let slug = format!("shared{n}");
        let url = format!("https://example.com/{n}");
        f.store
            .create(&f.workspace, "key", fields(Some(&slug), &url).await)
            .await
            .expect("create");
        slugs.push(slug);
    }
    for round in 0..ROUNDS {
        for (who, node) in (0u64..).zip(&nodes) {
            for slug in &slugs {
                let dest = node.resolve(slug).await.expect("db").expect("found");
                let v = visit(Visitor::Browser, who, Some("a.example"));
                assert!(node.admit(&dest, &v).await.expect("admit"));
            }
        }
        let (a, b) = tokio::join!(nodes[0].flush_clicks(), nodes[1].flush_clicks());
        assert_eq!(
            (a.expect("node A flushed"), b.expect("node B flushed")),
            (LINKS, LINKS),
            "round {round}"
        );
    }
    let totals: Vec<i64> = pier_db::with_reader!(&f.db, pool => {
        sqlx::query_scalar("SELECT clicks FROM links ORDER BY id")
            .fetch_all(pool)
            .await
    })
    .expect("read");
    assert_eq!(totals, vec![2 * ROUNDS; LINKS]);
}

async fn another_workspace_sees_nothing(backend: Backend) {
    let f = fixture(backend).await;
    let link = f
        .store
        .create(
            &f.workspace,
            "key",
            fields(Some("mine"), "https://mine.example/").await,
        )
        .await
        .expect("create");
    let other = WorkspaceId::new(f.clock.now());
    assert!(f.store.get(&other, &link.id).await.expect("db").is_none());
    assert!(
        f.store
            .get_by_slug(&other, "mine")
            .await
            .expect("db")
            .is_none()
    );
    let listed = f
        .store
        .list(&other, &LinkFilter::default(), None, 10)
        .await
        .expect("list");
    assert!(listed.is_empty());
}
