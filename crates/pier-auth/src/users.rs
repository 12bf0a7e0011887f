//! Users: the people who sign in (API keys are the credentials of programs), and their
//! memberships in workspaces, each with one of the fixed [`Role`]s.
//!
//! A user's email is their login: stored lower-cased, unique across the service. Their password
//! is kept only as an Argon2id hash (see [`pier_core::password`]); a user made by an operator
//! gets a random one-time password and must choose their own at first sign-in.

use std::sync::Arc;

use pier_core::validation::plain_text;
use pier_core::{Clock, Label, Timestamp, WorkspaceId, define_id};
use pier_db::{Db, Tx, with_reader, with_tx};
use rand::Rng;
use serde::Serialize;

use crate::Role;
use crate::invitations::Invitation;

define_id!(
    /// A user id, `usr_…`.
    UserId,
    "usr"
);

/// The shortest password a user may choose (NIST SP 800-63B's minimum).
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Checks a password a user chose: [`MIN_PASSWORD_CHARS`] to
/// [`pier_core::password::MAX_CHARS`] characters, no control characters.
pub fn check_password(password: &str) -> Result<(), String> {
    plain_text(password, MIN_PASSWORD_CHARS, pier_core::password::MAX_CHARS)
}

/// An email address as a login: trimmed and lower-cased, so `Ann@Example.com` and
/// `ann@example.com` are one account. The rules are deliberately plain: one `@`, a local part of
/// 1 to 64 characters without spaces or control characters, and an ASCII domain name (an
/// international domain is written in its `xn--` form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub const MAX_CHARS: usize = 254;

    /// The rules below as a JSON Schema, for the OpenAPI document.
    pub fn schema() -> utoipa::openapi::schema::ObjectBuilder {
        use pier_core::schema::{CONTROL, SPACE};
        let label = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
        pier_core::schema::string(3, Self::MAX_CHARS).pattern(Some(format!(
            "^[^@{CONTROL}{SPACE}]{{1,64}}@{label}(\\.{label})*$"
        )))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let email = text.trim();
        if email.is_empty() {
            return Err("must not be empty".into());
        }
        if email.chars().count() > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        let Some((local, domain)) = email.split_once('@') else {
            return Err("must be an email address, name@domain".into());
        };
        let local_ok = (1..=64).contains(&local.chars().count())
            && !local
                .chars()
                .any(|c| c == '@' || c.is_whitespace() || c.is_control());
        if !local_ok {
            return Err("the part before @ must be 1 to 64 characters, without spaces".into());
        }
        let label_ok = |label: &str| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if domain.len() > 253 || !domain.split('.').all(label_ok) {
            return Err("the domain must be a host name such as example.com".into());
        }
        // Checked as typed; lower-cased after (which may change a character's length).
        Ok(Self(email.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user, as the service shows them. The password hash never leaves the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub display_name: String,
    /// Set for a one-time password: the user must choose a password at their next sign-in.
    pub must_change_password: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A user's place in a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub workspace_id: WorkspaceId,
    pub user_id: UserId,
    pub role: Role,
    pub created_at: Timestamp,
}

/// A workspace member: the user and their role there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user: User,
    pub role: Role,
}

/// A user made by an operator, with the one-time password to hand over (shown once, stored
/// only as a hash).
pub struct CreatedUser {
    pub user: User,
    pub membership: Membership,
    pub one_time_password: String,
}

impl std::fmt::Debug for CreatedUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedUser")
            .field("user", &self.user)
            .field("membership", &self.membership)
            .field("one_time_password", &"[redacted]")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("a user with the email {0} exists already")]
    EmailTaken(String),
    #[error("{user} is already a member of {workspace}")]
    AlreadyMember {
        user: UserId,
        workspace: WorkspaceId,
    },
    #[error("the workspace {0} does not exist")]
    NoWorkspace(WorkspaceId),
    #[error("could not hash the password: {0}")]
    Hash(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The characters of a one-time password: no look-alikes (0/o, 1/l/i), so it survives being
/// read aloud or copied by hand.
const ONE_TIME_ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";
/// 20 characters of 31: 99 bits.
const ONE_TIME_CHARS: usize = 20;

fn one_time_password() -> String {
    let mut rng = rand::rng();
    (0..ONE_TIME_CHARS)
        .map(|_| char::from(ONE_TIME_ALPHABET[rng.random_range(0..ONE_TIME_ALPHABET.len())]))
        .collect()
}

const USER_COLUMNS: &str = "users.id, users.email, users.display_name, users.must_change_password, users.created_at, \
     users.updated_at";

#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    email: String,
    display_name: String,
    must_change_password: bool,
    created_at: i64,
    updated_at: i64,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            id: UserId::from_trusted(row.id),
            email: row.email,
            display_name: row.display_name,
            must_change_password: row.must_change_password,
            created_at: Timestamp::from_micros(row.created_at),
            updated_at: Timestamp::from_micros(row.updated_at),
        }
    }
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    #[sqlx(flatten)]
    user: UserRow,
    role: String,
}

#[derive(Debug, Clone)]
pub struct UserStore {
    db: Db,
    clock: Arc<dyn Clock>,
}

impl UserStore {
    pub fn new(db: Db, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    /// Creates a user with a one-time password and makes them a member of `workspace`, in one
    /// transaction.
    pub async fn create(
        &self,
        email: &Email,
        display_name: &Label,
        workspace: &WorkspaceId,
        role: Role,
    ) -> Result<CreatedUser, UserError> {
        let (created, _) = self
            .create_with(email, display_name, workspace, role, None)
            .await?;
        Ok(created)
    }

    /// Creates a user as [`create`](Self::create) does, with an invitation instead of a
    /// password to hand over: a link that lets them choose their own password once, within
    /// `valid_for`. Their one-time password is not meant to be shown.
    pub async fn invite(
        &self,
        email: &Email,
        display_name: &Label,
        workspace: &WorkspaceId,
        role: Role,
        valid_for: std::time::Duration,
    ) -> Result<(CreatedUser, Invitation), UserError> {
        let (created, invitation) = self
            .create_with(email, display_name, workspace, role, Some(valid_for))
            .await?;
        let invitation = invitation.ok_or_else(|| decode("the invitation was not made"))?;
        Ok((created, invitation))
    }

    async fn create_with(
        &self,
        email: &Email,
        display_name: &Label,
        workspace: &WorkspaceId,
        role: Role,
        invitation: Option<std::time::Duration>,
    ) -> Result<(CreatedUser, Option<Invitation>), UserError> {
        let one_time_password = one_time_password();
        let hash = hash_off_the_executor(&one_time_password)
            .await
            .map_err(UserError::Hash)?;
        let now = self.clock.now();
        let user = User {
            id: UserId::new(now),
            email: email.as_str().to_owned(),
            display_name: display_name.as_str().to_owned(),
            must_change_password: true,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.db.begin().await?;
        let inserted = with_tx!(&mut tx, conn => {
            sqlx::query(
                "INSERT INTO users (id, email, display_name, password_hash, \
                 must_change_password, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(user.id.as_str())
            .bind(&user.email)
            .bind(&user.display_name)
            .bind(&hash)
            .bind(user.must_change_password)
            .bind(now.as_micros())
            .execute(conn)
            .await
            .map(drop)
        });
        match inserted {
            Err(err) if pier_db::is_unique_violation(&err) => {
                return Err(UserError::EmailTaken(user.email));
            }
            other => other?,
        };
        let membership = insert_membership(&mut tx, workspace, &user.id, role, now).await?;
        let invitation = match invitation {
            Some(valid_for) => Some(Invitation::insert(&mut tx, &user.id, now, valid_for).await?),
            None => None,
        };
        tx.commit().await?;
        let created = CreatedUser {
            user,
            membership,
            one_time_password,
        };
        Ok((created, invitation))
    }

    /// Makes an existing user a member of `workspace`.
    pub async fn add_member(
        &self,
        workspace: &WorkspaceId,
        user: &UserId,
        role: Role,
    ) -> Result<Membership, UserError> {
        let mut tx = self.db.begin().await?;
        let membership =
            insert_membership(&mut tx, workspace, user, role, self.clock.now()).await?;
        tx.commit().await?;
        Ok(membership)
    }

    pub async fn by_email(&self, email: &Email) -> Result<Option<User>, sqlx::Error> {
        Ok(with_password_hash(&self.db, email)
            .await?
            .map(|(user, _)| user))
    }

    /// The members of `workspace`, by email.
    pub async fn members(&self, workspace: &WorkspaceId) -> Result<Vec<Member>, sqlx::Error> {
        let sql = format!(
            "SELECT {USER_COLUMNS}, memberships.role FROM memberships \
             JOIN users ON users.id = memberships.user_id \
             WHERE memberships.workspace_id = $1 ORDER BY users.email"
        );
        let rows: Vec<MemberRow> = with_reader!(&self.db, pool => {
            sqlx::query_as(&sql).bind(workspace.as_str()).fetch_all(pool).await
        })?;
        rows.into_iter()
            .map(|row| {
                let role = row.role.parse::<Role>().map_err(decode)?;
                Ok(Member {
                    user: row.user.into(),
                    role,
                })
            })
            .collect()
    }

    /// The workspaces `user` belongs to.
    pub async fn memberships(&self, user: &UserId) -> Result<Vec<Membership>, sqlx::Error> {
        memberships_of(&self.db, user).await
    }
}

pub(crate) async fn memberships_of(db: &Db, user: &UserId) -> Result<Vec<Membership>, sqlx::Error> {
    let rows: Vec<(String, String, i64)> = with_reader!(db, pool => {
        sqlx::query_as(
            "SELECT workspace_id, role, created_at FROM memberships WHERE user_id = $1 \
             ORDER BY workspace_id",
        )
        .bind(user.as_str())
        .fetch_all(pool)
        .await
    })?;
    rows.into_iter()
        .map(|(workspace, role, created_at)| {
            Ok(Membership {
                workspace_id: WorkspaceId::from_trusted(workspace),
                user_id: user.clone(),
                role: role.parse::<Role>().map_err(decode)?,
                created_at: Timestamp::from_micros(created_at),
            })
        })
        .collect()
}

#[derive(sqlx::FromRow)]
struct CredentialRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

/// The user whose `column` is `value`, with their password hash (which never leaves the crate).
async fn with_hash_where(
    db: &Db,
    column: &str,
    value: &str,
) -> Result<Option<(User, String)>, sqlx::Error> {
    let sql = format!("SELECT {USER_COLUMNS}, users.password_hash FROM users WHERE {column} = $1");
    let row: Option<CredentialRow> = with_reader!(db, pool => {
        sqlx::query_as(&sql).bind(value).fetch_optional(pool).await
    })?;
    Ok(row.map(|row| (row.user.into(), row.password_hash)))
}

pub(crate) async fn with_password_hash(
    db: &Db,
    email: &Email,
) -> Result<Option<(User, String)>, sqlx::Error> {
    with_hash_where(db, "email", email.as_str()).await
}

pub(crate) async fn by_id_with_password_hash(
    db: &Db,
    user: &UserId,
) -> Result<Option<(User, String)>, sqlx::Error> {
    with_hash_where(db, "id", user.as_str()).await
}

/// Replaces the user's password hash, if it is still `expected` (the one just checked), and
/// clears `must_change_password` when `chosen` (the user picked this password). The update also
/// locks the user's row until the transaction ends, which orders it against a concurrent
/// password change: a sign-in checked against the old password cannot open a session that
/// outlives the change. `false` when the password changed meanwhile.
pub(crate) async fn replace_password_hash(
    tx: &mut Tx,
    user: &UserId,
    expected: &str,
    hash: &str,
    chosen: bool,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    let changed = hash != expected;
    with_tx!(tx, conn => {
        sqlx::query(
            "UPDATE users SET password_hash = $1, \
             must_change_password = must_change_password AND NOT $2, \
             updated_at = CASE WHEN $3 THEN $4 ELSE updated_at END \
             WHERE id = $5 AND password_hash = $6",
        )
        .bind(hash)
        .bind(chosen)
        .bind(changed || chosen)
        .bind(now.as_micros())
        .bind(user.as_str())
        .bind(expected)
        .execute(conn)
        .await
        .map(|done| done.rows_affected() == 1)
    })
}

async fn insert_membership(
    tx: &mut Tx,
    workspace: &WorkspaceId,
    user: &UserId,
    role: Role,
    now: Timestamp,
) -> Result<Membership, UserError> {
    let inserted = with_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO memberships (workspace_id, user_id, role, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(workspace.as_str())
        .bind(user.as_str())
        .bind(role.as_str())
        .bind(now.as_micros())
        .execute(conn)
        .await
        .map(drop)
    });
    match inserted {
        Ok(()) => Ok(Membership {
            workspace_id: workspace.clone(),
            user_id: user.clone(),
            role,
            created_at: now,
        }),
        Err(err) if pier_db::is_unique_violation(&err) => Err(UserError::AlreadyMember {
            user: user.clone(),
            workspace: workspace.clone(),
        }),
        Err(err) if pier_db::is_foreign_key_violation(&err) => {
            Err(UserError::NoWorkspace(workspace.clone()))
        }
        Err(err) => Err(err.into()),
    }
}

/// Argon2id takes tens of milliseconds of CPU: a blocking thread's work, not the executor's.
pub(crate) async fn hash_off_the_executor(password: &str) -> Result<String, String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || pier_core::password::hash(&password))
        .await
        .map_err(|e| e.to_string())?
}

pub(crate) fn decode(message: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(message.to_string().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_plain_and_lower_cased() {
        let email = Email::parse("  Ann.Lee+pier@Example.COM ").expect("valid");
        assert_eq!(email.as_str(), "ann.lee+pier@example.com");
        assert!(Email::parse("ann@xn--bcher-kva.example").is_ok());
        for bad in [
            "",
            "ann",
            "@example.com",
            "ann@",
            "ann@@example.com",
            "a@b@example.com",
            "ann lee@example.com",
            "ann@exa mple.com",
            "ann@-example.com",
            "ann@example..com",
            "ann@bücher.example",
            "ann\u{7}@example.com",
            &format!("{}@example.com", "a".repeat(65)),
            &format!("ann@{}.com", "a".repeat(64)),
            &format!("ann@{}", "a.".repeat(127)),
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_schema_states_the_same_rules() {
        let schema = serde_json::to_value(Email::schema().build()).expect("json");
        let pattern = schema["pattern"].as_str().expect("pattern");
        assert!(
            pattern.ends_with(r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"),
            "{pattern}"
        );
        assert_eq!(schema["maxLength"], Email::MAX_CHARS);
    }

    #[test]
    fn one_time_passwords_are_long_random_and_unambiguous() {
        let first = one_time_password();
        assert_eq!(first.len(), ONE_TIME_CHARS);
        assert!(first.bytes().all(|b| ONE_TIME_ALPHABET.contains(&b)));
        assert_ne!(first, one_time_password());
        assert!(check_password(&first).is_ok());
    }

    #[test]
    fn chosen_passwords_have_a_minimum_length() {
        assert!(check_password("seven77").is_err());
        assert!(check_password("eight888").is_ok());
        assert!(check_password("with\ttab").is_err());
    }

    #[test]
    fn a_created_user_never_shows_the_password_in_debug() {
        let now = Timestamp::from_micros(0);
        let user = User {
            id: UserId::new(now),
            email: "ann@example.com".into(),
            display_name: "Ann".into(),
            must_change_password: true,
            created_at: now,
            updated_at: now,
        };
        let created = CreatedUser {
            membership: Membership {
                workspace_id: WorkspaceId::new(now),
                user_id: user.id.clone(),
                role: Role::Owner,
                created_at: now,
            },
            user,
            one_time_password: "s3cr3t-one-time".into(),
        };
        assert!(!format!("{created:?}").contains("s3cr3t"));
    }
}
