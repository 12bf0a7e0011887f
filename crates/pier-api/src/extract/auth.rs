//! Authorization in handler signatures: `Authed<perm::ApiKeysWrite>` only extracts when the
//! authenticated caller holds that permission, so a handler's access rule is visible at a glance.
//! Authentication itself runs earlier, as middleware, so idempotency can scope keys per caller.

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use pier_auth::{Permission, Principal, Resource, ResourceType};

use crate::AppState;
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
        PermissionsRead,
        PermissionsWrite,
        FlagsRead,
        FlagsWrite,
        FlagsEvaluate,
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
        let principal = principal(parts)?;
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

fn principal(parts: &Parts) -> Result<Principal, ApiError> {
    parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
        ApiError::internal(anyhow::anyhow!("route is missing the authentication layer"))
    })
}

/// The authenticated caller, proven to hold permission `P` on the one link, queue or webhook
/// endpoint the path names: by its role, or by a resource grant. The decision is
/// [`pier_auth::ResourceGrants::authorize`]'s.
#[derive(Debug, Clone)]
pub struct OnResource<P> {
    pub principal: Principal,
    _permission: PhantomData<P>,
}

impl<P: RequiredPermission> FromRequestParts<AppState> for OnResource<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = principal(parts)?;
        let Some((kind, action)) = ResourceType::of(P::PERMISSION) else {
            return Err(ApiError::internal(anyhow::anyhow!(
                "`{}` is not a permission on single resources",
                P::PERMISSION
            )));
        };
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!("resource path: {e}")))?;
        let decision = state
            .identity()
            .grants()
            .authorize(&principal, action, Resource { kind, id: &id })
            .await?;
        if !decision.allowed() {
            return Err(ApiError::forbidden(format!(
                "this credential lacks the `{}` permission and holds no grant on this {kind}",
                P::PERMISSION
            )));
        }
        Ok(Self {
            principal,
            _permission: PhantomData,
        })
    }
}
