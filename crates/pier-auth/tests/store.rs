//! Workspaces, API keys and the first-start bootstrap against real databases, on both backends.

use std::sync::Arc;
use std::time::Duration;

use pier_auth::{
    ApiKeyFilter, ApiKeyStore, Authenticator, KeyRequest, KeySecret, NewApiKey, Role, Workspace,
    WorkspaceName, WorkspaceStore,
};
use pier_core::{Clock, ManualClock};
use pier_testkit::{Backend, TestDb, on_both_backends};

on_both_backends!(
    cached_keys_follow_revocation,
    key_uses_are_written_in_batches_at_most_once_a_minute,
    keys_authenticate_until_revoked_or_expired,
    pages_cover_keys_sharing_a_timestamp,
    bootstrap_happens_once_however_many_nodes_start,
);

async fn setup(backend: Backend) -> (TestDb, ManualClock) {
    let db = TestDb::new(&backend, &[pier_db::MIGRATIONS, pier_auth::MIGRATIONS]).await;
    (db, ManualClock::starting_now())
}

/// A fresh database holding one workspace, and the clock as itself and as a `dyn Clock`.
async fn with_workspace(backend: Backend) -> (TestDb, ManualClock, Arc<dyn Clock>, Workspace) {
    let (test_db, clock) = setup(backend).await;
    let clock_arc: Arc<dyn Clock> = Arc::new(clock.clone());
    let (workspace, _, _) = WorkspaceStore::new(test_db.db.clone(), clock_arc.clone())
        .create_with_owner_key(WorkspaceName::parse("acme").expect("name"))
        .await
        .expect("workspace");
    (test_db, clock, clock_arc, workspace)
}

fn new_key(name: &str, expires_in: Option<Duration>, clock: &ManualClock) -> NewApiKey {
    let request = KeyRequest {
        name: name.to_owned(),
        role: Some("member".to_owned()),
        scopes: None,
        expires_at: expires_in.map(|d| clock.now().saturating_add(d)),
    };
    NewApiKey::new(request, clock.now()).expect("a valid key")
}

async fn keys_authenticate_until_revoked_or_expired(backend: Backend) {
    let (test_db, clock) = setup(backend).await;
    let clock_arc: Arc<dyn Clock> = Arc::new(clock.clone());
    let workspaces = WorkspaceStore::new(test_db.db.clone(), clock_arc.clone());
    let (workspace, owner, owner_secret) = workspaces
        .create_with_owner_key(WorkspaceName::parse("acme").expect("name"))
        .await
        .expect("workspace");
    let keys = ApiKeyStore::new(test_db.db.clone(), clock_arc.clone());
    let auth = Authenticator::new(keys.clone(), clock_arc);
    let header = |secret: &KeySecret| format!("Bearer {}", secret.expose());

    let principal = auth
        .authenticate(Some(&header(&owner_secret)))
        .await
        .expect("owner");
    assert_eq!(principal.workspace_id(), &workspace.id);
    assert_eq!(principal.role(), Role::Owner);
    assert!(
        auth.authenticate(Some(&header(&KeySecret::generate())))
            .await
            .is_err(),
        "an unknown key"
    );

    let (short, short_secret) = keys
        .create(
            &workspace.id,
            new_key("short", Some(Duration::from_secs(60)), &clock),
        )
        .await
        .expect("key");
    auth.authenticate(Some(&header(&short_secret)))
        .await
        .expect("fresh key");
    clock.advance(Duration::from_secs(61));
    assert!(
        auth.authenticate(Some(&header(&short_secret)))
            .await
            .is_err(),
        "expired"
    );

    let seen = keys
        .get(&workspace.id, &owner.id)
        .await
        .expect("get")
        .expect("key");
    assert!(keys.revoke(&seen).await.expect("revoke").is_some());
    assert!(
        auth.authenticate(Some(&header(&owner_secret)))
            .await
            .is_err(),
        "revoked"
    );
    assert!(
        keys.revoke(&seen).await.expect("revoke").is_none(),
        "revoked once"
    );
    assert!(short.expires_at.is_some());
}

async fn pages_cover_keys_sharing_a_timestamp(backend: Backend) {
    let (test_db, clock, clock_arc, workspace) = with_workspace(backend).await;
    let keys = ApiKeyStore::new(test_db.db.clone(), clock_arc);
    for i in 0..7 {
        keys.create(&workspace.id, new_key(&format!("k{i}"), None, &clock))
            .await
            .expect("key");
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = keys
            .list(&workspace.id, &ApiKeyFilter::default(), after.clone(), 3)
            .await
            .expect("page");
        if page.is_empty() {
            break;
        }
        after = page
            .last()
            .map(|k| (k.created_at.as_micros(), k.id.to_string()));
        seen.extend(page.into_iter().map(|k| k.id));
    }
    assert_eq!(
        seen.len(),
        8,
        "7 keys and the owner's, none twice: {seen:?}"
    );
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 8);
}

async fn bootstrap_happens_once_however_many_nodes_start(backend: Backend) {
    let (test_db, clock) = setup(backend).await;
    let clock_arc: Arc<dyn Clock> = Arc::new(clock);
    let starts = (0..4).map(|_| {
        let (db, clock) = (test_db.db.clone(), clock_arc.clone());
        tokio::spawn(async move { pier_auth::bootstrap(&db, clock, None).await })
    });
    let mut created = Vec::new();
    for start in starts.collect::<Vec<_>>() {
        created.push(start.await.expect("task"));
    }
    assert_eq!(
        created
            .iter()
            .filter(|b| b.as_ref().is_ok_and(Option::is_some))
            .count(),
        1,
        "exactly one start bootstraps"
    );
    let all = WorkspaceStore::new(test_db.db.clone(), clock_arc)
        .list_all()
        .await
        .expect("list");
    assert_eq!(all.len(), 1);
}

/// Authentication remembers keys: a revocation through the store takes effect on the next
/// request; one written behind the store's back (another process) within the cache TTL.
async fn cached_keys_follow_revocation(backend: Backend) {
    let (test_db, clock, clock_arc, workspace) = with_workspace(backend).await;
    let ttl = Duration::from_secs(5);
    let keys = ApiKeyStore::with_cache_ttl(test_db.db.clone(), clock_arc.clone(), ttl);
    let auth = Authenticator::new(keys.clone(), clock_arc);
    let header = |secret: &KeySecret| format!("Bearer {}", secret.expose());

    let (key, secret) = keys
        .create(&workspace.id, new_key("revoked here", None, &clock))
        .await
        .expect("key");
    auth.authenticate(Some(&header(&secret)))
        .await
        .expect("valid");
    assert_eq!(keys.cached_keys().await, 1);
    let seen = keys
        .get(&workspace.id, &key.id)
        .await
        .expect("get")
        .expect("key");
    keys.revoke(&seen).await.expect("revoke").expect("revoked");
    assert!(
        auth.authenticate(Some(&header(&secret))).await.is_err(),
        "at once"
    );

    let (other, other_secret) = keys
        .create(&workspace.id, new_key("revoked elsewhere", None, &clock))
        .await
        .expect("key");
    auth.authenticate(Some(&header(&other_secret)))
        .await
        .expect("valid");
    let mut tx = test_db.db.begin().await.expect("begin");
    pier_db::with_tx!(&mut tx, conn => sqlx::query("UPDATE api_keys SET revoked_at = 1 WHERE id = $1")
        .bind(other.id.as_str())
        .execute(conn)
        .await
        .map(drop))
    .expect("revoke behind the store's back");
    tx.commit().await.expect("commit");
    assert!(
        auth.authenticate(Some(&header(&other_secret)))
            .await
            .is_ok(),
        "still remembered"
    );
    clock.advance(ttl + Duration::from_millis(1));
    assert!(
        auth.authenticate(Some(&header(&other_secret)))
            .await
            .is_err(),
        "refused once the cache forgets"
    );
}

/// Authentication writes nothing: uses are noted in memory and written together by
/// `write_uses`, each key's at most once a minute.
async fn key_uses_are_written_in_batches_at_most_once_a_minute(backend: Backend) {
    let (test_db, clock, clock_arc, workspace) = with_workspace(backend).await;
    let keys = ApiKeyStore::new(test_db.db.clone(), clock_arc.clone());
    let auth = Authenticator::new(keys.clone(), clock_arc);
    let mut created = Vec::new();
    for name in ["one", "two"] {
        created.push(
            keys.create(&workspace.id, new_key(name, None, &clock))
                .await
                .expect("key"),
        );
    }
    let last_used = |i: usize| {
        let (keys, workspace, id) = (keys.clone(), workspace.id.clone(), created[i].0.id.clone());
        async move {
            keys.get(&workspace, &id)
                .await
                .expect("get")
                .expect("key")
                .last_used_at
        }
    };
    let use_all = || async {
        for (_, secret) in &created {
            let header = format!("Bearer {}", secret.expose());
            auth.authenticate(Some(&header)).await.expect("valid");
        }
    };

    use_all().await;
    assert_eq!((last_used(0).await, last_used(1).await), (None, None));
    keys.write_uses().await.expect("write");
    let first = clock.now();
    assert_eq!(last_used(0).await, Some(first));
    assert_eq!(last_used(1).await, Some(first));

    clock.advance(Duration::from_secs(30));
    use_all().await;
    keys.write_uses().await.expect("write");
    assert_eq!(
        last_used(0).await,
        Some(first),
        "within the minute: not written"
    );

    clock.advance(Duration::from_secs(31));
    use_all().await;
    keys.write_uses().await.expect("write");
    assert_eq!(
        last_used(1).await,
        Some(clock.now()),
        "a minute on: written"
    );
}
