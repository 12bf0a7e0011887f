//! Offline administration: the `keys`, `workspaces`, `users`, `migrate` and `config` commands. They work
//! on the same database as the service, whether or not it is running. Results go to stdout
//! (a new key alone on its line, for scripts); explanations go to stderr.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use pier_auth::{
    ApiKey, ApiKeyId, ApiKeyStore, Email, KeyRequest, KeySecret, NewApiKey, Role, UserStore,
    WorkspaceId, WorkspaceName, WorkspaceStore,
};
use pier_core::{Clock, Label, SystemClock, Timestamp, ValidationErrors};
use pier_db::Db;

use crate::app::open_database;
use crate::cli::{KeysCommand, UsersCommand, WorkspacesCommand};
use crate::config::Config;

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let db = open_database(config).await?;
    db.close().await;
    eprintln!(
        "Migrations applied to {}.",
        config.database_url().redacted()
    );
    Ok(())
}

/// Writes a consistent copy of the SQLite database to `to` (SQLite's `VACUUM INTO`: one read
/// transaction, so the running service keeps writing meanwhile). PostgreSQL has its own tools.
pub async fn backup(config: &Config, to: &std::path::Path) -> anyhow::Result<()> {
    let url = config.database_url();
    if url.backend() != pier_db::Backend::Sqlite {
        // Before opening anything: the message is the whole answer.
        bail!("pier backup copies the embedded SQLite database; back up PostgreSQL with pg_dump");
    }
    if to.exists() {
        bail!("{} exists already; choose a new file", to.display());
    }
    let target = to
        .to_str()
        .ok_or_else(|| anyhow!("{} is not a UTF-8 path", to.display()))?;
    let db = open_database(config).await?;
    let copied = db.copy_sqlite_to(target).await;
    db.close().await;
    copied.map_err(|e| anyhow!("cannot write the backup to {}: {e}", to.display()))?;
    eprintln!("Backed up {} to {}.", url.redacted(), to.display());
    Ok(())
}

pub fn print_config(config: &Config) -> anyhow::Result<()> {
    print!("{}", config.to_toml());
    Ok(())
}

/// The workspace named, or the only one.
async fn pick_workspace(db: &Db, named: Option<&str>) -> anyhow::Result<WorkspaceId> {
    let store = WorkspaceStore::new(db.clone(), clock());
    if let Some(text) = named {
        let id = WorkspaceId::parse(text).map_err(|e| anyhow!("--workspace: {e}"))?;
        store
            .get(&id)
            .await?
            .ok_or_else(|| anyhow!("--workspace: no workspace {id}"))?;
        return Ok(id);
    }
    let all = store.list_all().await?;
    match all.as_slice() {
        [only] => Ok(only.id.clone()),
        [] => bail!("there is no workspace yet; run `pier serve` once or `pier workspaces create`"),
        _ => bail!(
            "there are {} workspaces; choose one with --workspace",
            all.len()
        ),
    }
}

/// A stored name as a table cell: control characters (a tab would shift the columns, an escape
/// sequence would reach the terminal) are shown escaped. Names are refused with them today, but
/// rows written before that rule may still hold them.
fn cell(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn print_key(key: &ApiKey) {
    let scopes = key.scopes.as_ref().map_or("(role)".to_owned(), |s| {
        s.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")
    });
    let status = match (key.revoked_at, key.expires_at) {
        (Some(_), _) => "revoked",
        (None, Some(at)) if at <= SystemClock.now() => "expired",
        _ => "active",
    };
    println!(
        "{}\t{}\t{}\t{}\t{status}\t{}",
        key.id,
        key.prefix,
        key.role,
        scopes,
        cell(&key.name)
    );
}

/// A request's field errors named by the flags they came from (`scopes[1]` is `--scopes`).
fn flag_errors(errors: ValidationErrors) -> anyhow::Error {
    let lines: Vec<String> = errors
        .into_vec()
        .into_iter()
        .map(|e| {
            let field = e.field.split('[').next().unwrap_or_default();
            format!("--{}: {}", field.replace('_', "-"), e.message)
        })
        .collect();
    anyhow!(lines.join("; "))
}

pub async fn keys(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    if let KeysCommand::Generate = command {
        println!("{}", KeySecret::generate().expose());
        return Ok(());
    }
    let db = open_database(config).await?;
    let store = ApiKeyStore::new(db.clone(), clock());
    let result = async {
        match command {
            KeysCommand::Create {
                workspace,
                name,
                role,
                scopes,
                expires_at,
            } => {
                let expires_at = expires_at
                    .map(|t| {
                        Timestamp::parse_rfc3339(&t)
                            .ok_or_else(|| anyhow!("--expires-at: `{t}` is not an RFC 3339 time"))
                    })
                    .transpose()?;
                let request = KeyRequest {
                    name,
                    role: Some(role),
                    scopes: scopes.map(|list| list.iter().map(|s| s.trim().to_owned()).collect()),
                    expires_at,
                };
                let new = NewApiKey::new(request, SystemClock.now()).map_err(flag_errors)?;
                let workspace = pick_workspace(&db, workspace.as_deref()).await?;
                let (key, secret) = store.create(&workspace, new).await?;
                eprintln!(
                    "Created {} key {} in {workspace}. It is shown only once:",
                    key.role, key.id
                );
                println!("{}", secret.expose());
            }
            KeysCommand::List { workspace } => {
                let workspace = pick_workspace(&db, workspace.as_deref()).await?;
                for key in store.list_all(&workspace).await? {
                    print_key(&key);
                }
            }
            KeysCommand::Revoke { workspace, id } => {
                let workspace = pick_workspace(&db, workspace.as_deref()).await?;
                let id = ApiKeyId::parse(&id).map_err(|e| anyhow!("{e}"))?;
                let key = store
                    .get(&workspace, &id)
                    .await?
                    .ok_or_else(|| anyhow!("no key {id} in {workspace}"))?;
                if key.revoked_at.is_some() {
                    eprintln!("Key {id} was already revoked.");
                } else if store.revoke(&key).await?.is_none() {
                    bail!("key {id} changed while revoking it; run the command again");
                } else {
                    eprintln!("Revoked key {id}.");
                }
            }
            KeysCommand::Generate => unreachable!("handled above"),
        }
        Ok(())
    }
    .await;
    db.close().await;
    result
}

pub async fn workspaces(config: &Config, command: WorkspacesCommand) -> anyhow::Result<()> {
    let db = open_database(config).await?;
    let store = WorkspaceStore::new(db.clone(), clock());
    let result = async {
        match command {
            WorkspacesCommand::Create { name } => {
                let name = WorkspaceName::parse(&name).map_err(|e| anyhow!("name {e}"))?;
                let (workspace, key, secret) = store.create_with_owner_key(name).await?;
                eprintln!(
                    "Created workspace {} ({}) with owner key {}. It is shown only once:",
                    workspace.id,
                    cell(&workspace.name),
                    key.id
                );
                println!("{}", secret.expose());
            }
            WorkspacesCommand::List => {
                for ws in store.list_all().await? {
                    println!("{}\t{}\t{}", ws.id, ws.created_at, cell(&ws.name));
                }
            }
        }
        Ok(())
    }
    .await;
    db.close().await;
    result
}

pub async fn users(config: &Config, command: UsersCommand) -> anyhow::Result<()> {
    let db = open_database(config).await?;
    let store = UserStore::new(db.clone(), clock());
    let result = async {
        match command {
            UsersCommand::Create {
                email,
                name,
                workspace,
                role,
                invite,
            } => {
                let typed = email;
                let email = Email::parse(&typed).map_err(|e| anyhow!("--email {e}"))?;
                // The default name keeps the case the address was typed in.
                let name = name
                    .as_deref()
                    .unwrap_or_else(|| typed.trim().split('@').next().unwrap_or_default());
                let name = Label::parse(name).map_err(|e| anyhow!("--name {e}"))?;
                let role = role.parse::<Role>().map_err(|e| anyhow!("--role: {e}"))?;
                let workspace = pick_workspace(&db, workspace.as_deref()).await?;
                if let Some(user) = store.by_email(&email).await? {
                    store.add_member(&workspace, &user.id, role).await?;
                    eprintln!(
                        "{} ({}) exists already: added to {workspace} as {role}, with the \
                         password they have.",
                        user.id, user.email
                    );
                    return Ok(());
                }
                if invite {
                    let valid_for = Duration::from_secs(config.auth.invitation_ttl_secs);
                    let (created, invitation) = store
                        .invite(&email, &name, &workspace, role, valid_for)
                        .await?;
                    let base = config.auth.issuer.as_ref().map_or_else(
                        || format!("http://{}", config.server.listen),
                        |b| b.0.clone(),
                    );
                    eprintln!(
                        "Invited user {} ({}), {role} of {workspace}. The link works once, until \
                         {}; it is shown only once:",
                        created.user.id, created.user.email, invitation.expires_at
                    );
                    println!(
                        "invitation: {base}/v1/auth/invitation?token={}",
                        invitation.token.expose()
                    );
                    return Ok(());
                }
                let created = store.create(&email, &name, &workspace, role).await?;
                eprintln!(
                    "Created user {} ({}), {role} of {workspace}. Their one-time password is \
                     shown only once; they choose their own at first sign-in:",
                    created.user.id, created.user.email
                );
                println!("password: {}", created.one_time_password);
            }
            UsersCommand::List { workspace } => {
                let workspace = pick_workspace(&db, workspace.as_deref()).await?;
                for member in store.members(&workspace).await? {
                    println!(
                        "{}\t{}\t{}\t{}",
                        member.user.id,
                        cell(&member.user.email),
                        member.role,
                        cell(&member.user.display_name)
                    );
                }
            }
        }
        Ok(())
    }
    .await;
    db.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn cells_escape_control_characters() {
        assert_eq!(cell("ci\tkey\u{1b}[31m"), "ci\\tkey\\u{1b}[31m");
        assert_eq!(cell("ünïcode"), "ünïcode");
    }
}
