//! Users and memberships against real databases, on both backends.

use std::sync::Arc;

use pier_auth::{
    CreatedUser, Email, Role, UserError, UserStore, Workspace, WorkspaceName, WorkspaceStore,
};
use pier_core::{Clock, Label, ManualClock, WorkspaceId};
use pier_db::with_reader;
use pier_testkit::{Backend, TestDb, on_both_backends};

on_both_backends!(
    operators_create_users_with_a_one_time_password,
    an_email_is_one_account_whatever_its_case,
    members_are_seen_only_in_their_workspaces,
);

struct Fixture {
    test_db: TestDb,
    users: UserStore,
    first: Workspace,
    second: Workspace,
}

async fn fixture(backend: Backend) -> Fixture {
    let test_db = TestDb::new(&backend, &[pier_db::MIGRATIONS, pier_auth::MIGRATIONS]).await;
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::starting_now());
    let workspaces = WorkspaceStore::new(test_db.db.clone(), clock.clone());
    let mut made = Vec::new();
    for name in ["acme", "globex"] {
        let (workspace, _, _) = workspaces
            .create_with_owner_key(WorkspaceName::parse(name).expect("name"))
            .await
            .expect("workspace");
        made.push(workspace);
    }
    let second = made.pop().expect("second");
    let first = made.pop().expect("first");
    Fixture {
        users: UserStore::new(test_db.db.clone(), clock),
        test_db,
        first,
        second,
    }
}

impl Fixture {
    /// Creates a user named after their address.
    async fn create(
        &self,
        address: &str,
        workspace: &WorkspaceId,
        role: Role,
    ) -> Result<CreatedUser, UserError> {
        let name = Label::parse(address.split('@').next().unwrap_or_default()).expect("name");
        self.users
            .create(&email(address), &name, workspace, role)
            .await
    }
}

fn email(text: &str) -> Email {
    Email::parse(text).expect("email")
}

async fn operators_create_users_with_a_one_time_password(backend: Backend) {
    let f = fixture(backend).await;
    let created = f
        .create("ann@example.com", &f.first.id, Role::Owner)
        .await
        .expect("created");
    assert!(created.user.must_change_password);
    assert_eq!(created.user.email, "ann@example.com");
    assert_eq!(created.membership.role, Role::Owner);
    assert_eq!(created.membership.workspace_id, f.first.id);

    let stored: Vec<(String, String)> = with_reader!(&f.test_db.db, pool => {
        sqlx::query_as("SELECT id, password_hash FROM users").fetch_all(pool).await
    })
    .expect("rows");
    let [(id, hash)] = stored.as_slice() else {
        panic!("one user row: {stored:?}");
    };
    assert_eq!(id, created.user.id.as_str());
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(!hash.contains(&created.one_time_password));
    assert!(pier_core::password::verify(
        &created.one_time_password,
        hash
    ));
    assert!(!pier_core::password::verify("something else", hash));
}

async fn an_email_is_one_account_whatever_its_case(backend: Backend) {
    let f = fixture(backend).await;
    let ann = f
        .create("Ann@Example.com", &f.first.id, Role::Member)
        .await
        .expect("created");
    let again = f
        .create("ann@example.COM", &f.second.id, Role::Member)
        .await;
    assert!(
        matches!(again, Err(UserError::EmailTaken(ref e)) if e == "ann@example.com"),
        "{again:?}"
    );
    let found = f
        .users
        .by_email(&email(" ANN@example.com"))
        .await
        .expect("read")
        .expect("found");
    assert_eq!(found, ann.user);
    assert!(
        f.users
            .members(&f.second.id)
            .await
            .expect("read")
            .is_empty(),
        "the refused create left nothing behind"
    );
}

async fn members_are_seen_only_in_their_workspaces(backend: Backend) {
    let f = fixture(backend).await;
    let ann = f
        .create("ann@example.com", &f.first.id, Role::Owner)
        .await
        .expect("ann");
    let bob = f
        .create("bob@example.com", &f.second.id, Role::Admin)
        .await
        .expect("bob");

    let first: Vec<_> = f.users.members(&f.first.id).await.expect("read");
    assert_eq!(first.len(), 1);
    assert_eq!((&first[0].user, first[0].role), (&ann.user, Role::Owner));

    f.users
        .add_member(&f.second.id, &ann.user.id, Role::Viewer)
        .await
        .expect("ann joins the second workspace");
    let second: Vec<_> = f
        .users
        .members(&f.second.id)
        .await
        .expect("read")
        .into_iter()
        .map(|m| (m.user.id, m.role))
        .collect();
    assert_eq!(
        second,
        [
            (ann.user.id.clone(), Role::Viewer),
            (bob.user.id.clone(), Role::Admin)
        ]
    );
    let anns: Vec<_> = f
        .users
        .memberships(&ann.user.id)
        .await
        .expect("read")
        .into_iter()
        .map(|m| (m.workspace_id, m.role))
        .collect();
    assert_eq!(anns.len(), 2);
    assert!(anns.contains(&(f.first.id.clone(), Role::Owner)));
    assert!(anns.contains(&(f.second.id.clone(), Role::Viewer)));

    let twice = f
        .users
        .add_member(&f.second.id, &ann.user.id, Role::Owner)
        .await;
    assert!(
        matches!(twice, Err(UserError::AlreadyMember { .. })),
        "{twice:?}"
    );
    let nowhere = WorkspaceId::parse("ws_01m8hpqca6yrpxjm9wy9jmw19v").expect("id");
    let missing = f
        .users
        .add_member(&nowhere, &bob.user.id, Role::Viewer)
        .await;
    assert!(
        matches!(missing, Err(UserError::NoWorkspace(_))),
        "{missing:?}"
    );
    let orphan = f.create("cy@example.com", &nowhere, Role::Owner).await;
    assert!(
        matches!(orphan, Err(UserError::NoWorkspace(_))),
        "{orphan:?}"
    );
    assert!(
        f.users
            .by_email(&email("cy@example.com"))
            .await
            .expect("read")
            .is_none(),
        "no user without a workspace"
    );
}
