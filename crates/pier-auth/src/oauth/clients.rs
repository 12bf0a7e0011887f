//! OAuth clients: the applications a workspace registers to obtain access tokens.
//!
//! A confidential client has a secret (shown once at registration, stored hashed); a public
//! client (a browser or native app that cannot keep one) has none and may only use the
//! authorization code grant, where PKCE stands in for it. A client acts within its workspace and
//! can never hold more than it was registered with: its scopes, and the role of whoever
//! registered it.

use std::fmt;
use std::str::FromStr;

use pier_core::{Label, Timestamp, ValidationErrors, WorkspaceId, define_id};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::opaque::{self, Opaque};
use crate::{Permission, PermissionSet, Principal, Role};

define_id!(
    /// An OAuth client id, `client_…`. Not secret.
    ClientId,
    "client"
);

/// The most redirect URIs one client may register.
pub const MAX_REDIRECT_URIS: usize = 10;
const MAX_REDIRECT_URI_BYTES: usize = 2000;

/// How a client obtains tokens. The implicit and password grants are not offered (RFC 9700).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    AuthorizationCode,
    ClientCredentials,
    RefreshToken,
}

impl GrantType {
    pub const ALL: &'static [GrantType] = &[
        GrantType::AuthorizationCode,
        GrantType::ClientCredentials,
        GrantType::RefreshToken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::ClientCredentials => "client_credentials",
            Self::RefreshToken => "refresh_token",
        }
    }
}

impl fmt::Display for GrantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GrantType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .copied()
            .find(|g| g.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "`{}` is not an offered grant type; expected authorization_code, \
                     client_credentials or refresh_token",
                    pier_core::id::Truncated(s)
                )
            })
    }
}

/// Whether a client can keep a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientType {
    Confidential,
    Public,
}

/// A registered client, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClient {
    pub client_id: ClientId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub client_type: ClientType,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    /// The most a token issued to this client may carry.
    pub scopes: Vec<Permission>,
    /// The role of whoever registered the client: its tokens never exceed it.
    pub role: Role,
    pub created_at: Timestamp,
}

impl OAuthClient {
    pub fn allows(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }

    /// The most its tokens may carry: its scopes within its role.
    pub fn permissions(&self) -> PermissionSet {
        self.scopes
            .iter()
            .copied()
            .collect::<PermissionSet>()
            .intersect(self.role.permissions())
    }
}

/// A registration as the caller sent it; [`NewClient::new`] checks it.
#[derive(Debug, Clone, Default)]
pub struct ClientRequest {
    pub name: String,
    /// `confidential` (when `None`) or `public`.
    pub client_type: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
}

/// A client to register, only built valid by [`NewClient::new`].
#[derive(Debug, Clone)]
pub struct NewClient {
    pub(super) name: Label,
    pub(super) client_type: ClientType,
    pub(super) redirect_uris: Vec<String>,
    pub(super) grant_types: Vec<GrantType>,
    pub(super) scopes: PermissionSet,
    pub(super) role: Role,
}

impl NewClient {
    /// Checks a registration: each field, then the rules between them. The client gets the
    /// grantor's role and may carry no scope the grantor does not hold.
    pub fn new(request: ClientRequest, grantor: &Principal) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let name = errors.check("name", "invalid", Label::parse(&request.name));
        let client_type = match request.client_type.as_deref() {
            None | Some("confidential") => ClientType::Confidential,
            Some("public") => ClientType::Public,
            Some(_) => {
                errors.add("client_type", "invalid", "must be confidential or public");
                ClientType::Confidential
            }
        };
        if request.redirect_uris.len() > MAX_REDIRECT_URIS {
            errors.add(
                "redirect_uris",
                "too_many",
                format!("at most {MAX_REDIRECT_URIS}"),
            );
        }
        let mut redirect_uris = Vec::new();
        for (i, uri) in request.redirect_uris.iter().enumerate() {
            let field = format!("redirect_uris[{i}]");
            if let Some(uri) = errors.check(&field, "invalid", check_redirect_uri(uri))
                && !redirect_uris.contains(&uri)
            {
                redirect_uris.push(uri);
            }
        }
        let mut grant_types = Vec::new();
        for (i, text) in request.grant_types.iter().enumerate() {
            let field = format!("grant_types[{i}]");
            if let Some(g) = errors.check(&field, "invalid", text.parse::<GrantType>())
                && !grant_types.contains(&g)
            {
                grant_types.push(g);
            }
        }
        let mut scopes = Vec::new();
        for (i, text) in request.scopes.iter().enumerate() {
            let field = format!("scopes[{i}]");
            if let Some(p) = errors.check(&field, "invalid", text.parse::<Permission>()) {
                if grantor.can(p) {
                    scopes.push(p);
                } else {
                    errors.add(
                        &field,
                        "scope_exceeds_caller",
                        format!("this credential does not hold `{p}`, so cannot grant it"),
                    );
                }
            }
        }
        errors.into_result()?;
        let Some(name) = name else {
            return Err(ValidationErrors::single("name", "invalid", "invalid name"));
        };
        let new = Self {
            name,
            client_type,
            redirect_uris,
            grant_types,
            scopes: scopes.into_iter().collect(),
            role: grantor.role(),
        };
        new.check()
            .map_err(|(field, message)| ValidationErrors::single(field, "invalid", message))?;
        Ok(new)
    }

    /// The rules between fields: what each grant type needs and what a public client may do.
    /// Returns the field and message of the first broken rule.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.grant_types.is_empty() {
            return Err(("grant_types", "name at least one grant type".to_owned()));
        }
        let has = |g| self.grant_types.contains(&g);
        if has(GrantType::AuthorizationCode) && self.redirect_uris.is_empty() {
            return Err((
                "redirect_uris",
                "the authorization_code grant needs at least one redirect URI".to_owned(),
            ));
        }
        if has(GrantType::RefreshToken) && !has(GrantType::AuthorizationCode) {
            return Err((
                "grant_types",
                "refresh_token comes with authorization_code: nothing else issues refresh tokens"
                    .to_owned(),
            ));
        }
        if has(GrantType::ClientCredentials) && self.client_type == ClientType::Public {
            return Err((
                "grant_types",
                "a public client has no secret, so it cannot use client_credentials".to_owned(),
            ));
        }
        if self.scopes.iter().next().is_none() {
            return Err(("scopes", "name at least one scope".to_owned()));
        }
        Ok(())
    }
}

/// Checks a redirect URI for registration. It must be absolute, `https` (or `http` to this
/// machine's loopback, for native apps, RFC 8252), without a fragment or credentials, and
/// written in its normal form: it is later compared byte for byte, so no two spellings may
/// mean the same address.
pub fn check_redirect_uri(text: &str) -> Result<String, String> {
    if text.len() > MAX_REDIRECT_URI_BYTES {
        return Err(format!("longer than {MAX_REDIRECT_URI_BYTES} bytes"));
    }
    let url = url::Url::parse(text).map_err(|e| format!("not an absolute URL: {e}"))?;
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err("must be https (or http to localhost, 127.0.0.1 or [::1])".to_owned()),
    }
    if url.fragment().is_some() {
        return Err("may not have a fragment".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("may not carry credentials".to_owned());
    }
    if url.as_str() != text {
        return Err(format!("write it in its normal form, `{url}`"));
    }
    Ok(text.to_owned())
}

/// A client's stored row.
#[derive(sqlx::FromRow)]
pub(super) struct ClientRow {
    id: String,
    workspace_id: String,
    name: String,
    redirect_uris: String,
    grant_types: String,
    scopes: String,
    role: String,
    secret_hash: Option<String>,
    created_at: i64,
}

pub(super) const COLUMNS: &str = "id, workspace_id, name, redirect_uris, grant_types, scopes, \
                                  role, secret_hash, created_at";

impl ClientRow {
    /// Whether `secret` is this client's, compared in constant time. A public client has none
    /// and matches no secret.
    pub(super) fn secret_matches(&self, secret: &str) -> bool {
        self.secret_hash.as_ref().is_some_and(|stored| {
            Opaque::parse(Opaque::CLIENT_SECRET, secret).is_some()
                && bool::from(stored.as_bytes().ct_eq(opaque::hash(secret).as_bytes()))
        })
    }
}

impl TryFrom<ClientRow> for OAuthClient {
    type Error = sqlx::Error;
    fn try_from(row: ClientRow) -> Result<Self, sqlx::Error> {
        let decode = |e: String| sqlx::Error::Decode(e.into());
        Ok(Self {
            client_id: ClientId::from_trusted(row.id),
            workspace_id: WorkspaceId::from_trusted(row.workspace_id),
            name: row.name,
            client_type: match row.secret_hash {
                Some(_) => ClientType::Confidential,
                None => ClientType::Public,
            },
            redirect_uris: serde_json::from_str(&row.redirect_uris)
                .map_err(|e| decode(e.to_string()))?,
            grant_types: row
                .grant_types
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(decode)?,
            scopes: PermissionSet::from_names(&row.scopes).iter().collect(),
            role: row.role.parse().map_err(decode)?,
            created_at: Timestamp::from_micros(row.created_at),
        })
    }
}

pub(super) fn grant_type_names(grants: &[GrantType]) -> String {
    grants
        .iter()
        .map(|g| g.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_must_be_exact_and_safe() {
        for good in [
            "https://app.example/callback",
            "https://app.example:8443/cb?tenant=1",
            "http://127.0.0.1:8123/cb",
            "http://localhost/cb",
        ] {
            assert_eq!(check_redirect_uri(good).as_deref(), Ok(good), "{good}");
        }
        for bad in [
            "app.example/callback",
            "http://app.example/callback",
            "https://app.example/cb#frag",
            "https://user:pw@app.example/cb",
            "https://APP.example/cb",
            "https://app.example/a/../cb",
            "javascript:alert(1)",
            "https://app.example",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }
}
