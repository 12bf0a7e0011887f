//! Sign-in sessions against real databases, on both backends.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use pier_auth::oauth::{GrantLifetimes, OAuthStore};
use pier_auth::{
    CreatedUser, Email, Role, SessionError, SessionLimits, SessionSecret, SessionStore, UserStore,
    Workspace, WorkspaceName, WorkspaceStore,
};
use pier_core::{Clock, HashGate, Label, ManualClock};
use pier_db::{with_reader, with_tx};
use pier_testkit::{Backend, TestDb, on_both_backends};
use sha2::{Digest, Sha256};

on_both_backends!(
    signing_in_opens_a_session_stored_only_as_a_hash,
    unknown_emails_and_wrong_passwords_get_one_answer,
    sessions_end_when_idle_or_at_their_absolute_limit,
    a_password_change_ends_every_session_and_rotates_this_one,
    signing_out_ends_the_session_for_good,
    older_hashes_are_replaced_at_sign_in,
    no_session_opened_with_the_old_password_outlives_a_change,
    ended_sessions_are_pruned,
    unknown_emails_cost_what_wrong_passwords_cost,
    an_invitation_sets_one_password_however_many_race,
);

const LIMITS: SessionLimits = SessionLimits {
    idle: Duration::from_secs(3600),
    absolute: Duration::from_secs(12 * 3600),
};

struct Fixture {
    test_db: TestDb,
    clock: ManualClock,
    sessions: SessionStore,
    workspace: Workspace,
    ann: CreatedUser,
}

async fn fixture(backend: Backend) -> Fixture {
    let test_db = TestDb::new(&backend, &[pier_db::MIGRATIONS, pier_auth::MIGRATIONS]).await;
    let clock = ManualClock::starting_now();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let (workspace, _, _) = WorkspaceStore::new(test_db.db.clone(), shared.clone())
        .create_with_owner_key(WorkspaceName::parse("acme").expect("name"))
        .await
        .expect("workspace");
    let ann = UserStore::new(test_db.db.clone(), shared.clone())
        .create(
            &email("ann@example.com"),
            &Label::parse("Ann").expect("name"),
            &workspace.id,
            Role::Admin,
        )
        .await
        .expect("user");
    Fixture {
        sessions: SessionStore::new(
            test_db.db.clone(),
            shared.clone(),
            LIMITS,
            OAuthStore::new(
                test_db.db.clone(),
                shared,
                GrantLifetimes {
                    code: Duration::from_secs(60),
                    access: Duration::from_secs(900),
                    refresh: Duration::from_secs(3600),
                },
            ),
            HashGate::for_this_machine(),
        ),
        test_db,
        clock,
        workspace,
        ann,
    }
}

fn email(text: &str) -> Email {
    Email::parse(text).expect("email")
}

impl Fixture {
    async fn sign_in(&self, password: &str) -> Result<pier_auth::SignedIn, SessionError> {
        self.sessions
            .sign_in(&email("ann@example.com"), password, None, None)
            .await
    }

    async fn live(&self, secret: &SessionSecret) -> bool {
        self.sessions
            .authenticate(secret)
            .await
            .expect("read")
            .is_some()
    }

    async fn stored_hashes(&self) -> Vec<String> {
        with_reader!(&self.test_db.db, pool => {
            sqlx::query_scalar("SELECT id_hash FROM sessions").fetch_all(pool).await
        })
        .expect("rows")
    }

    async fn password_hash(&self) -> String {
        with_reader!(&self.test_db.db, pool => {
            sqlx::query_scalar("SELECT password_hash FROM users").fetch_one(pool).await
        })
        .expect("row")
    }
}

async fn signing_in_opens_a_session_stored_only_as_a_hash(backend: Backend) {
    let f = fixture(backend).await;
    let signed_in = f
        .sign_in(&f.ann.one_time_password)
        .await
        .expect("signed in");
    assert_eq!(signed_in.user.id, f.ann.user.id);
    assert_eq!(signed_in.session.workspace_id, f.workspace.id);
    assert_eq!(signed_in.session.role, Role::Admin);
    assert!(
        signed_in.session.must_change_password,
        "a one-time password"
    );
    assert_eq!(
        signed_in.session.expires_at,
        f.clock.now().saturating_add(LIMITS.absolute)
    );

    let secret = signed_in.secret.expose();
    let stored = f.stored_hashes().await;
    assert_eq!(stored, [hex::encode(Sha256::digest(secret.as_bytes()))]);
    assert_eq!(
        f.sessions
            .authenticate(&signed_in.secret)
            .await
            .expect("read"),
        Some(signed_in.session)
    );
    let stranger = SessionSecret::parse(&"A".repeat(43)).expect("shape of an id");
    assert!(!f.live(&stranger).await);
}

async fn unknown_emails_and_wrong_passwords_get_one_answer(backend: Backend) {
    let f = fixture(backend).await;
    let wrong = f.sign_in("not the password").await;
    let unknown = f
        .sessions
        .sign_in(&email("nobody@example.com"), "not the password", None, None)
        .await;
    for outcome in [&wrong, &unknown] {
        assert!(
            matches!(outcome, Err(SessionError::WrongCredentials)),
            "{outcome:?}"
        );
    }
    assert_eq!(
        wrong.err().map(|e| e.to_string()),
        unknown.err().map(|e| e.to_string())
    );
    let elsewhere = pier_core::WorkspaceId::parse("ws_01m8hpqca6yrpxjm9wy9jmw19v").expect("id");
    let outside = f
        .sessions
        .sign_in(
            &email("ann@example.com"),
            &f.ann.one_time_password,
            Some(&elsewhere),
            None,
        )
        .await;
    assert!(
        matches!(outside, Err(SessionError::NotAMember)),
        "{outside:?}"
    );
    assert!(f.stored_hashes().await.is_empty());
}

async fn sessions_end_when_idle_or_at_their_absolute_limit(backend: Backend) {
    let f = fixture(backend).await;
    let busy = f
        .sign_in(&f.ann.one_time_password)
        .await
        .expect("signed in");
    let idle = f
        .sign_in(&f.ann.one_time_password)
        .await
        .expect("signed in");
    // Used every 50 minutes, the busy session lasts until its absolute limit.
    for _ in 0..14 {
        f.clock.advance(Duration::from_secs(50 * 60));
        assert!(f.live(&busy.secret).await, "in use: alive");
    }
    assert!(!f.live(&idle.secret).await, "unused for an hour: ended");
    f.clock.advance(Duration::from_secs(20 * 60));
    assert!(!f.live(&busy.secret).await, "12 hours after sign-in: ended");
    assert!(
        f.stored_hashes().await.is_empty(),
        "ended sessions are deleted when presented"
    );
}

async fn a_password_change_ends_every_session_and_rotates_this_one(backend: Backend) {
    let f = fixture(backend).await;
    let laptop = f.sign_in(&f.ann.one_time_password).await.expect("laptop");
    let phone = f.sign_in(&f.ann.one_time_password).await.expect("phone");

    let weak = f
        .sessions
        .change_password(&laptop.session, &f.ann.one_time_password, "short")
        .await;
    assert!(
        matches!(weak, Err(SessionError::WeakPassword(_))),
        "{weak:?}"
    );
    let wrong = f
        .sessions
        .change_password(&laptop.session, "not it", "a much better passphrase")
        .await;
    assert!(
        matches!(wrong, Err(SessionError::WrongCredentials)),
        "{wrong:?}"
    );
    assert!(f.live(&laptop.secret).await && f.live(&phone.secret).await);

    let renewed = f
        .sessions
        .change_password(
            &laptop.session,
            &f.ann.one_time_password,
            "a much better passphrase",
        )
        .await
        .expect("changed");
    assert_ne!(renewed.secret, laptop.secret);
    assert!(!renewed.session.must_change_password);
    assert!(!f.live(&laptop.secret).await, "the old id is gone");
    assert!(!f.live(&phone.secret).await, "other devices are signed out");
    assert!(f.live(&renewed.secret).await);
    assert_eq!(f.stored_hashes().await.len(), 1);

    assert!(f.sign_in(&f.ann.one_time_password).await.is_err());
    let again = f
        .sign_in("a much better passphrase")
        .await
        .expect("new password");
    assert!(!again.session.must_change_password);
}

async fn signing_out_ends_the_session_for_good(backend: Backend) {
    let f = fixture(backend).await;
    let signed_in = f
        .sign_in(&f.ann.one_time_password)
        .await
        .expect("signed in");
    f.sessions.sign_out(&signed_in.secret).await.expect("out");
    assert!(!f.live(&signed_in.secret).await);
    f.sessions
        .sign_out(&signed_in.secret)
        .await
        .expect("twice is fine");
    assert!(f.stored_hashes().await.is_empty());
}

async fn older_hashes_are_replaced_at_sign_in(backend: Backend) {
    let f = fixture(backend).await;
    // A hash made with lower costs, as an older release might have stored.
    let weaker = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(8 * 1024, 1, 1, None).expect("params"),
    )
    .hash_password(
        b"pw-of-old",
        &SaltString::encode_b64(b"sixteen bytes!!!").expect("salt"),
    )
    .expect("hash")
    .to_string();
    let weaker = weaker.as_str();
    let mut tx = f.test_db.db.begin().await.expect("tx");
    with_tx!(&mut tx, conn => {
        sqlx::query("UPDATE users SET password_hash = $1").bind(weaker).execute(conn).await.map(drop)
    })
    .expect("update");
    tx.commit().await.expect("commit");

    f.sign_in("pw-of-old").await.expect("signed in");
    let stored = f.password_hash().await;
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    assert!(pier_core::password::verify("pw-of-old", &stored));
}

/// A sign-in spends tens of milliseconds checking the password it read; a password change may
/// commit meanwhile. Whatever the interleaving, a session opened with the old password must not
/// be alive once both are done.
async fn no_session_opened_with_the_old_password_outlives_a_change(backend: Backend) {
    let f = fixture(backend).await;
    let mut current = f.ann.one_time_password.clone();
    let mut holder = f.sign_in(&current).await.expect("signed in");
    for (round, delay_ms) in [0u64, 10, 25, 40, 60, 80, 100].into_iter().enumerate() {
        let next = format!("passphrase number {round}");
        let (changed, old) = tokio::join!(
            f.sessions.change_password(&holder.session, &current, &next),
            async {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                f.sign_in(&current).await
            }
        );
        holder = changed.expect("changed");
        if let Ok(old) = old {
            assert!(
                !f.live(&old.secret).await,
                "round {round}: a session opened with the old password survived the change"
            );
        }
        current = next;
    }
}

async fn ended_sessions_are_pruned(backend: Backend) {
    let f = fixture(backend).await;
    let idle = f
        .sign_in(&f.ann.one_time_password)
        .await
        .expect("signed in");
    f.clock.advance(Duration::from_secs(30 * 60));
    let recent = f
        .sign_in(&f.ann.one_time_password)
        .await
        .expect("signed in");
    assert_eq!(f.sessions.prune().await.expect("pruned"), 0);
    f.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(f.sessions.prune().await.expect("pruned"), 1, "the idle one");
    assert!(f.live(&recent.secret).await);
    assert!(!f.live(&idle.secret).await);
    assert_eq!(f.stored_hashes().await.len(), 1);
}

/// Whether an email has an account must not show in how long a refusal takes. Not a benchmark:
/// the bound is loose (3×) against noise, while the leak it guards against (skipping the
/// Argon2id check for unknown emails) makes them tens of times faster.
async fn unknown_emails_cost_what_wrong_passwords_cost(backend: Backend) {
    let f = fixture(backend).await;
    let mut wrong = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        assert!(f.sign_in("not the password").await.is_err());
        wrong.push(started.elapsed());
        let started = std::time::Instant::now();
        let refused = f
            .sessions
            .sign_in(&email("nobody@example.com"), "not the password", None, None)
            .await;
        assert!(refused.is_err());
        unknown.push(started.elapsed());
    }
    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let (wrong, unknown) = (median(wrong), median(unknown));
    let ratio = wrong.as_secs_f64() / unknown.as_secs_f64();
    assert!(
        (1.0 / 3.0..3.0).contains(&ratio),
        "wrong password {wrong:?} against unknown email {unknown:?}"
    );
}

async fn an_invitation_sets_one_password_however_many_race(backend: Backend) {
    let f = fixture(backend).await;
    let shared: Arc<dyn Clock> = Arc::new(f.clock.clone());
    let (bo, invitation) = UserStore::new(f.test_db.db.clone(), shared)
        .invite(
            &email("bo@example.com"),
            &Label::parse("Bo").expect("name"),
            &f.workspace.id,
            Role::Member,
            Duration::from_secs(3600),
        )
        .await
        .expect("invited");
    let token = invitation.token.expose().to_owned();
    let stored: (String,) = with_reader!(&f.test_db.db, pool => {
        sqlx::query_as("SELECT token_hash FROM invitations").fetch_one(pool).await
    })
    .expect("row");
    assert_ne!(stored.0, token, "only a hash is stored");

    let passwords: Vec<String> = (0..6).map(|n| format!("password number {n}")).collect();
    let attempts = passwords
        .iter()
        .map(|p| f.sessions.accept_invitation(&token, p));
    let outcomes = futures_util::future::join_all(attempts).await;
    let winners: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.is_ok().then_some(i))
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    for (i, outcome) in outcomes.iter().enumerate() {
        if !winners.contains(&i) {
            assert!(
                matches!(outcome, Err(SessionError::Invitation)),
                "{outcome:?}"
            );
        }
    }
    let chosen = &passwords[winners[0]];
    let signed_in = f
        .sessions
        .sign_in(&email("bo@example.com"), chosen, None, None)
        .await
        .expect("the winner's password is the one set");
    assert_eq!(signed_in.user.id, bo.user.id);
    assert!(!signed_in.session.must_change_password);
}
