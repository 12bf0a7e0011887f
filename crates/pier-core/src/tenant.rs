//! The tenant boundary. Every tenant-owned row of every capability carries a `workspace_id`, and
//! every query filters by the caller's (see `docs/architecture.md`, invariant 1), so the id
//! lives here where every capability can name it without depending on the others.

crate::define_id!(
    /// A workspace id, `ws_…`.
    WorkspaceId,
    "ws"
);
