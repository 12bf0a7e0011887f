//! The webhooks' slice of the state.

use std::sync::Arc;

use pier_webhooks::{Publisher, WebhookStore};

/// What the webhook routes take as `State<WebhooksState>`.
#[derive(Debug, Clone)]
pub struct WebhooksState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    store: WebhookStore,
    publisher: Publisher,
}

impl WebhooksState {
    pub(crate) fn new(store: WebhookStore) -> Self {
        Self(Arc::new(Inner {
            publisher: Publisher::start(&store),
            store,
        }))
    }

    /// Webhook endpoints, event types and published events.
    pub fn store(&self) -> &WebhookStore {
        &self.0.store
    }

    /// Publishes events, committed in groups (see [`Publisher`]).
    pub fn publisher(&self) -> &Publisher {
        &self.0.publisher
    }
}
