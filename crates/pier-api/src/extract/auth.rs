//! Authorization in handler signatures: `Authed<perm::ApiKeysWrite>` only extracts when the
//! authenticated caller holds that permission, so a handler's access rule is visible at a glance.
//! Authentication itself runs earlier, as middleware, so idempotency can scope keys per caller.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use pier_auth::{Permission, Principal};

use crate::problem::ApiError;

/// A permission named by a marker type.
pub trait RequiredPermission: Send + Sync + 'static {
    const PERMISSION: Permission;
}

/// The marker types, one per [`Permission`].
pub mod perm {
    use super::{Permission, RequiredPermission};

    macro_rules! markers {
        ($($name:ident),* $(,)?) => {$(
            #[derive(Debug)]
            pub struct $name;
            impl RequiredPermission for $name {
                const PERMISSION: Permission = Permission::$name;
            }
        )*};
    }

    markers!(
        WorkspaceRead,
        ApiKeysRead,
        ApiKeysWrite,
        JobsRead,
        JobsWrite,
        JobsWork,
        RateLimitsRead,
        RateLimitsWrite,
        RateLimitsCheck,
        LinksRead,
        LinksWrite,
        WebhooksRead,
        WebhooksWrite,
        EventsPublish,
        OAuthClientsRead,
        OAuthClientsWrite,
    );
}

/// The authenticated caller, proven to hold permission `P`.
#[derive(Debug, Clone)]
pub struct Authed<P> {
    pub principal: Principal,
    _permission: PhantomData<P>,
}

impl<S: Send + Sync, P: RequiredPermission> FromRequestParts<S> for Authed<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!("route is missing the authentication layer"))
            })?;
        if !principal.can(P::PERMISSION) {
            return Err(ApiError::forbidden(format!(
                "this credential lacks the `{}` permission",
                P::PERMISSION
            )));
        }
        Ok(Self {
            principal,
            _permission: PhantomData,
        })
    }
}
