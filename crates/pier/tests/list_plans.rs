//! Every list query, with each filter it documents, walks an index that serves its filter and
//! its order: read from the plan the database chooses for the exact statement the store runs
//! (a plan is deterministic where a timing is not; bench/run-lists.sh measures the timings).
//! Rows are seeded in the caller's workspace and a neighbour's, and the tables analysed, so
//! the planner sees both tenants.

use pier_auth::{ApiKeyFilter, GrantFilter, ResourceType, Role};
use pier_core::WorkspaceId;
use pier_db::{Backend as Engine, Db, Statement};
use pier_jobs::{JobFilter, JobKind, JobState, QueueName};
use pier_links::LinkFilter;
use pier_webhooks::{EndpointId, EventId};

use pier_testkit::{Backend, TestDb, on_both_backends};

on_both_backends!(every_list_walks_an_index_for_its_filter_and_order);

const NEIGHBOUR: &str = "ws_neighbour";

/// Rows a seeded table holds in each workspace: `PIER_PLAN_ROWS`, or 20,000 (enough that every
/// filter selects more than a page). With `-- --nocapture` the test prints every plan, which is
/// how bench/RESULTS.md records them at 1,000,000.
fn rows() -> u32 {
    std::env::var("PIER_PLAN_ROWS")
        .ok()
        .and_then(|rows| rows.parse().ok())
        .unwrap_or(20_000)
}

async fn every_list_walks_an_index_for_its_filter_and_order(backend: Backend) {
    let test = TestDb::new(&backend, pier::app::SCHEMA).await;
    let db = &test.db;
    let ws = WorkspaceId::new(pier_core::Timestamp::from_micros(0));
    seed(db, &ws).await;
    let engine = db.backend();
    let jobs = |queue: Option<&str>, state: Option<JobState>, kind: Option<&str>| JobFilter {
        queue: queue.map(|q| QueueName::parse(q).expect("queue")),
        state,
        kind: kind.map(|k| JobKind::parse(k).expect("kind")),
    };
    let job_list = |filter: JobFilter, cursor: Option<&str>| {
        pier_jobs::list_statement(engine, &ws, &filter, cursor.map(str::to_owned), 21)
    };
    let grants = |subject: Option<&str>, kind: Option<ResourceType>, id: Option<&str>| {
        let filter = GrantFilter {
            subject: subject.map(str::to_owned),
            resource_type: kind,
            resource_id: id.map(str::to_owned),
        };
        pier_auth::grants_statement(&ws, &filter, Some((i64::MAX, "z".into())), 21)
    };
    let links = |tag: Option<&str>| {
        let filter = LinkFilter {
            tag: tag.map(str::to_owned),
            ..LinkFilter::default()
        };
        pier_links::links_statement(&ws, &filter, Some((i64::MAX, "z".into())), 21)
    };
    let (event, endpoint) = (
        EventId::from_trusted("evt_1".into()),
        EndpointId::from_trusted("ep_1".into()),
    );
    let cursor = Some("z".to_owned());
    let flag = pier_flags::FlagKey::parse("f1").expect("a flag key");
    // (list and filter, the statement, columns its index condition must include)
    let lists: Vec<(&str, Statement, &[&str])> = vec![
        ("jobs", job_list(jobs(None, None, None), None), &[]),
        (
            "jobs, deep",
            job_list(jobs(None, None, None), Some("job_5")),
            &["id"],
        ),
        (
            "jobs?queue",
            job_list(jobs(Some("q1"), None, None), None),
            &["queue", "state"],
        ),
        (
            "jobs?state",
            job_list(jobs(None, Some(JobState::Completed), None), None),
            &["state"],
        ),
        (
            "jobs?kind",
            job_list(jobs(None, None, Some("k1")), None),
            &["kind", "state"],
        ),
        (
            "jobs?queue&state",
            job_list(jobs(Some("q1"), Some(JobState::Available), None), None),
            &["queue", "state"],
        ),
        (
            "jobs?queue&kind",
            job_list(jobs(Some("q1"), None, Some("k1")), Some("job_5")),
            &["queue", "kind", "state", "id"],
        ),
        (
            "jobs?state&kind",
            job_list(jobs(None, Some(JobState::Discarded), Some("k1")), None),
            &["kind", "state"],
        ),
        (
            "jobs?queue&state&kind",
            job_list(
                jobs(Some("q1"), Some(JobState::Completed), Some("k1")),
                Some("job_5"),
            ),
            &["queue", "kind", "state", "id"],
        ),
        (
            "events",
            pier_webhooks::events_statement(&ws, None, cursor.clone(), 21),
            &["id"],
        ),
        (
            "events?type",
            pier_webhooks::events_statement(&ws, Some("order.paid"), cursor.clone(), 21),
            &["type", "id"],
        ),
        (
            "deliveries of an event",
            pier_webhooks::deliveries_of_statement(&ws, &event, Some("a".into()), 21),
            &["event_id", "id"],
        ),
        (
            "attempts of an endpoint",
            pier_webhooks::attempts_statement(&ws, &endpoint, cursor.clone(), 21),
            &["endpoint_id", "id"],
        ),
        (
            "event types",
            pier_webhooks::event_types_statement(&ws, Some("a".into()), 21),
            &["name"],
        ),
        (
            "webhook endpoints",
            pier_webhooks::endpoints_statement(&ws, Some("a".into()), 21),
            &["id"],
        ),
        (
            "api keys",
            pier_auth::api_keys_statement(&ws, &ApiKeyFilter::default(), None, 21),
            &[],
        ),
        (
            "api keys?role",
            pier_auth::api_keys_statement(
                &ws,
                &ApiKeyFilter {
                    role: Some(Role::Member),
                },
                Some((i64::MAX, "z".into())),
                21,
            ),
            &["role", "created_at"],
        ),
        (
            "oauth clients",
            pier_auth::clients_statement(&ws, Some((i64::MAX, "z".into())), 21),
            &["created_at"],
        ),
        ("grants", grants(None, None, None), &["created_at"]),
        (
            "grants?subject",
            grants(Some("key_1"), None, None),
            &["subject"],
        ),
        (
            "grants?resource_type",
            grants(None, Some(ResourceType::Link), None),
            &["resource_type"],
        ),
        (
            "grants?resource_id",
            grants(None, None, Some("lnk_1")),
            &["resource_id"],
        ),
        (
            "grants?resource_type&resource_id",
            grants(None, Some(ResourceType::Queue), Some("q1")),
            &["resource_id"],
        ),
        (
            "rate-limit policies",
            pier_ratelimit::policies_statement(&ws, Some("a"), 21),
            &["name"],
        ),
        ("links", links(None), &["created_at"]),
        ("links?tag", links(Some("t1")), &["tag", "created_at"]),
        (
            "flags",
            pier_flags::flags_statement(&ws, Some("a".into()), 21),
            &["key"],
        ),
        (
            "flag changes",
            pier_flags::audit::changes_statement(&ws, &flag, Some(i64::MAX), 21),
            &["flag_key", "seq"],
        ),
        (
            "flag schedules",
            pier_flags::schedule::schedules_statement(&ws, &flag, Some("sched_~".into()), 21),
            &["flag_key", "id"],
        ),
    ];
    for (list, statement, columns) in lists {
        let plan = statement.plan(db).await.expect("the statement explains");
        let shown = format!("{list}: {}\n{}", statement.sql(), plan.join("\n"));
        println!("{shown}\n");
        if let Some(line) = sorts_or_scans(engine, &plan) {
            panic!("{list} reads more than its index gives it ({line}):\n{shown}");
        }
        let conditions = index_conditions(engine, &plan);
        for column in columns {
            assert!(
                conditions.iter().any(|c| c.contains(column)),
                "{list}: no index walk is bounded by {column}:\n{shown}"
            );
        }
    }
}

/// The first plan line that sorts rows or scans a table or a whole index.
fn sorts_or_scans(engine: Engine, plan: &[String]) -> Option<&String> {
    plan.iter().find(|line| {
        let node = line.trim_start().trim_start_matches("->").trim_start();
        match engine {
            Engine::Sqlite => node.starts_with("SCAN ") || node.contains("TEMP B-TREE"),
            Engine::Postgres => {
                node.starts_with("Seq Scan")
                    || (node.contains("Sort") && !node.starts_with("Sort Key"))
                    || node.starts_with("Bitmap")
            }
        }
    })
}

/// The conditions that bound each index walk of the plan.
fn index_conditions(engine: Engine, plan: &[String]) -> Vec<&str> {
    plan.iter()
        .filter_map(|line| match engine {
            Engine::Sqlite => line.contains("SEARCH").then_some(line.as_str()),
            Engine::Postgres => line.trim_start().strip_prefix("Index Cond:"),
        })
        .collect()
}

/// [`rows`] rows a table in the caller's workspace and as many in a neighbour's, then fresh
/// statistics. Statements are written once for both engines (a recursive count, `||` on text).
async fn seed(db: &Db, ws: &WorkspaceId) {
    let tenants = format!("(SELECT '{ws}' AS ws UNION ALL SELECT '{NEIGHBOUR}' AS ws) AS w");
    let each = format!(
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {}) \
         SELECT",
        rows()
    );
    let states = "CASE n % 7 WHEN 0 THEN 'available' WHEN 1 THEN 'scheduled' \
                  WHEN 2 THEN 'running' WHEN 3 THEN 'retryable' WHEN 4 THEN 'completed' \
                  WHEN 5 THEN 'discarded' ELSE 'cancelled' END";
    let statements = [
        format!(
            "INSERT INTO workspaces (id, name, created_at) \
             VALUES ('{ws}', 'caller', 0), ('{NEIGHBOUR}', 'neighbour', 0)"
        ),
        format!(
            "INSERT INTO jobs (workspace_id, id, queue, kind, payload, state, priority, run_at, \
             max_attempts, lease_ms, created_at) {each} w.ws, \
             'job_' || (100000 + n) || w.ws, \
             CASE n % 6 WHEN 5 THEN 'pier.webhooks' ELSE 'q' || (n % 6) END, \
             'k' || (n % 3), '{{}}', {states}, 0, n, 20, 30000, n FROM s, {tenants}"
        ),
        format!(
            "INSERT INTO webhook_events (workspace_id, id, type, payload, created_at) \
             {each} w.ws, 'evt_' || (100000 + n), 'type.' || (n % 5), '{{}}', n FROM s, {tenants}"
        ),
        format!(
            "INSERT INTO webhook_deliveries (workspace_id, id, event_id, endpoint_id, state, \
             created_at, updated_at) {each} w.ws, 'dlv_' || (100000 + n), 'evt_' || (n % 100), \
             'ep_' || (n % 5), 'succeeded', n, n FROM s, {tenants}"
        ),
        format!(
            "INSERT INTO webhook_attempts (workspace_id, id, delivery_id, event_id, endpoint_id, \
             attempted_at, duration_ms, succeeded) {each} w.ws, 'att_' || (100000 + n), \
             'dlv_' || n, 'evt_' || n, 'ep_' || (n % 5), n, 1, n % 2 = 0 FROM s, {tenants}"
        ),
        format!(
            "INSERT INTO api_keys (id, workspace_id, name, prefix, secret_hash, role, created_at) \
             {each} 'key_' || n || w.ws, w.ws, 'k', 'p', 'h' || n || w.ws, \
             CASE n % 3 WHEN 0 THEN 'admin' WHEN 1 THEN 'member' ELSE 'viewer' END, n \
             FROM s, {tenants}"
        ),
        format!(
            "INSERT INTO resource_grants (id, workspace_id, subject, resource_type, resource_id, \
             relation, created_by, created_at) {each} 'grt_' || n || w.ws, w.ws, \
             'key_' || (n % 50), CASE n % 3 WHEN 0 THEN 'link' WHEN 1 THEN 'queue' \
             ELSE 'webhook_endpoint' END, 'lnk_' || n, 'viewer', 'test', n FROM s, {tenants}"
        ),
        format!(
            "INSERT INTO links (id, workspace_id, slug, url, tags, redirect_status, created_by, \
             version, created_at, updated_at) {each} 'lnk_' || n || w.ws, w.ws, \
             's' || n || w.ws, 'https://example.com/' || n, '[]', 302, 'test', 1, n, n \
             FROM s, {tenants}"
        ),
        format!(
            "INSERT INTO link_tags (workspace_id, tag, created_at, link_id) \
             {each} w.ws, 't' || (n % 5), n, 'lnk_' || n || w.ws FROM s, {tenants}"
        ),
        format!(
            "INSERT INTO flags (workspace_id, key, definition, version, created_by, created_at, \
             updated_at) {each} w.ws, 'f' || n, '{{}}', 1, 'test', n, n FROM s, {tenants}"
        ),
        format!(
            "INSERT INTO flag_changes (id, workspace_id, flag_key, action, actor, diff, \
             version, created_at) {each} 'chg_' || (100000 + n) || w.ws, w.ws, 'f' || (n % 5), \
             'updated', 'test', '{{}}', 1, n FROM s, {tenants}"
        ),
        format!(
            "INSERT INTO flag_schedules (workspace_id, id, flag_key, apply_at, patch, status, \
             created_by, created_at) {each} w.ws, 'sched_' || (100000 + n) || w.ws, \
             'f' || (n % 5), n, '{{}}', 'pending', 'test', n FROM s, {tenants}"
        ),
        "ANALYZE".to_owned(),
    ];
    for sql in statements {
        pier_db::with_writer!(db, pool => sqlx::query(&sql).execute(pool).await.map(drop))
            .unwrap_or_else(|e| panic!("seeding failed: {e}\n{sql}"));
    }
}
