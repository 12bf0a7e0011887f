//! Permissions, the roles that bundle them, and permission sets (a key's scopes).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! permissions {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// One thing a caller may do. Scopes on a key are permissions.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[derive(Serialize, Deserialize)]
        pub enum Permission {
            $(#[serde(rename = $name)] $variant),*
        }

        impl Permission {
            pub const ALL: &'static [Permission] = &[$(Permission::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(Permission::$variant => $name),* }
            }
        }

        impl FromStr for Permission {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok(Permission::$variant),)*
                    other => Err(format!(
                        "`{}` is not a known scope; expected one of: {}",
                        pier_core::id::Truncated(other),
                        [$($name),*].join(", ")
                    )),
                }
            }
        }
    };
}

permissions! {
    WorkspaceRead => "workspace:read",
    ApiKeysRead => "api_keys:read",
    ApiKeysWrite => "api_keys:write",
    JobsRead => "jobs:read",
    JobsWrite => "jobs:write",
    JobsWork => "jobs:work",
    RateLimitsRead => "rate_limits:read",
    RateLimitsWrite => "rate_limits:write",
    RateLimitsCheck => "rate_limits:check",
    LinksRead => "links:read",
    LinksWrite => "links:write",
    WebhooksRead => "webhooks:read",
    WebhooksWrite => "webhooks:write",
    EventsPublish => "events:publish",
    OAuthClientsRead => "oauth_clients:read",
    OAuthClientsWrite => "oauth_clients:write",
    PermissionsRead => "permissions:read",
    PermissionsWrite => "permissions:write",
    FlagsRead => "flags:read",
    FlagsWrite => "flags:write",
    FlagsEvaluate => "flags:evaluate",
}

// By hand: the derive cannot read the names through the macro above.
impl utoipa::PartialSchema for Permission {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .enum_values(Some(Permission::ALL.iter().map(|p| p.as_str())))
            .into()
    }
}

impl utoipa::ToSchema for Permission {}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Permission {
    fn bit(self) -> u64 {
        1 << (self as u32)
    }
}

/// A set of permissions, stored as a bit mask.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct PermissionSet(u64);

impl PermissionSet {
    pub const fn empty() -> Self {
        Self(0)
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn is_subset_of(self, other: Self) -> bool {
        self.0 & !other.0 == 0
    }

    #[must_use]
    pub fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .iter()
            .copied()
            .filter(move |p| self.contains(*p))
    }

    /// Space-separated names, the form scopes are stored in.
    pub fn to_names(self) -> String {
        self.iter()
            .map(Permission::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Parses the stored form; unknown names (from a newer version) are ignored, never granted.
    pub fn from_names(names: &str) -> Self {
        names
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect()
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |mask, p| mask | p.bit()))
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// A fixed bundle of permissions. Declared from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Member,
    Viewer,
}

impl Role {
    pub const ALL: &'static [Role] = &[Role::Owner, Role::Admin, Role::Member, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
            Self::Viewer => "viewer",
        }
    }

    /// The permission matrix of the crate docs.
    pub fn permissions(self) -> PermissionSet {
        use Permission::*;
        match self {
            Self::Owner | Self::Admin => Permission::ALL.iter().copied().collect(),
            Self::Member => [
                WorkspaceRead,
                JobsRead,
                JobsWrite,
                JobsWork,
                RateLimitsRead,
                RateLimitsCheck,
                LinksRead,
                LinksWrite,
                WebhooksRead,
                EventsPublish,
                FlagsRead,
                FlagsWrite,
                FlagsEvaluate,
            ]
            .into_iter()
            .collect(),
            Self::Viewer => [
                WorkspaceRead,
                JobsRead,
                RateLimitsRead,
                LinksRead,
                WebhooksRead,
                FlagsRead,
                FlagsEvaluate,
            ]
            .into_iter()
            .collect(),
        }
    }

    /// The less powerful of the two: what a credential acting for both may hold.
    #[must_use]
    pub fn at_most(self, other: Role) -> Role {
        if self.outranks_or_equals(other) {
            other
        } else {
            self
        }
    }

    /// True when a holder of `self` may manage keys of role `other`.
    pub fn outranks_or_equals(self, other: Role) -> bool {
        (self as u8) <= (other as u8)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "`{}` is not a role; expected owner, admin, member or viewer",
                    pier_core::id::Truncated(s)
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_nest() {
        for pair in Role::ALL.windows(2) {
            assert!(pair[1].permissions().is_subset_of(pair[0].permissions()));
            assert!(pair[0].outranks_or_equals(pair[1]));
            assert!(!pair[1].outranks_or_equals(pair[0]));
            assert_eq!(pair[0].at_most(pair[1]), pair[1]);
            assert_eq!(pair[1].at_most(pair[0]), pair[1]);
        }
        assert!(!Role::Viewer.permissions().contains(Permission::JobsWrite));
        assert!(!Role::Member.permissions().contains(Permission::ApiKeysRead));
    }

    #[test]
    fn names_round_trip() {
        let set: PermissionSet = [Permission::JobsRead, Permission::ApiKeysWrite]
            .into_iter()
            .collect();
        assert_eq!(PermissionSet::from_names(&set.to_names()), set);
        assert!("jobs:fly".parse::<Permission>().is_err());
        assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
    }
}
