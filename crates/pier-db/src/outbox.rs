//! The seam through which a capability announces its state changes as events, inside the
//! transaction that makes them (invariant 2): the event exists if and only if the change
//! commits. Webhooks implement it; capabilities hold an `Arc<dyn Outbox>` and never depend on
//! the webhooks crate.

use std::future::Future;
use std::pin::Pin;

use crate::Tx;

/// A future an [`Outbox`] returns.
pub type Publishing<'a> = Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'a>>;

/// Publishes events of a workspace inside a caller's transaction.
pub trait Outbox: Send + Sync + std::fmt::Debug {
    /// Records the event `event_type` with `payload` in `tx`; it is delivered once `tx` commits,
    /// and never if it rolls back.
    fn publish<'a>(
        &'a self,
        tx: &'a mut Tx,
        workspace: &'a str,
        event_type: &'static str,
        payload: serde_json::Value,
    ) -> Publishing<'a>;
}
