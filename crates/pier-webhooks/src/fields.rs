//! The fields an endpoint's owner sets, which can only be built valid:
//! [`EndpointFields::for_new`] (a new endpoint) and [`EndpointFields::patch`] (a change) apply
//! every rule and report every field's error, so an in-process caller gets the API's rules.

use std::collections::BTreeMap;

use pier_core::{Patch, ValidationErrors};
use url::Url;

use crate::guard::Guard;
use crate::model::{Endpoint, EventTypeName, Metadata, bounds, check_metadata};

/// The fields an endpoint's owner sets, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointFields {
    pub(crate) url: Url,
    pub(crate) description: Option<String>,
    pub(crate) event_types: Vec<EventTypeName>,
    pub(crate) enabled: bool,
    pub(crate) rate_limit_per_second: Option<u32>,
    pub(crate) ordered: bool,
    pub(crate) ed25519: bool,
    pub(crate) metadata: Metadata,
}

/// A change to an endpoint's fields, member by member as in a JSON Merge Patch (a new endpoint
/// is a change to nothing): `Clear` clears `description`, `event_types` (all events),
/// `rate_limit_per_second` and `metadata`, and leaves a flag as it is. Unchecked until
/// [`EndpointFields::for_new`] or [`EndpointFields::patch`].
#[derive(Debug, Default)]
pub struct EndpointPatch {
    pub url: Patch<String>,
    pub description: Patch<String>,
    pub event_types: Patch<Vec<String>>,
    pub enabled: Patch<bool>,
    pub rate_limit_per_second: Patch<u32>,
    pub ordered: Patch<bool>,
    pub ed25519: Patch<bool>,
    pub metadata: Patch<BTreeMap<String, String>>,
}

impl EndpointFields {
    /// A new endpoint's fields (`url` is required, and `guard` must allow it), or every field's
    /// error.
    pub fn for_new(change: EndpointPatch, guard: &Guard) -> Result<Self, ValidationErrors> {
        check(None, change, guard)
    }

    /// `endpoint`'s fields with `change` applied, or every field's error.
    pub fn patch(
        endpoint: &Endpoint,
        change: EndpointPatch,
        guard: &Guard,
    ) -> Result<Self, ValidationErrors> {
        check(Some(endpoint), change, guard)
    }

    pub fn url(&self) -> &Url {
        &self.url
    }
}

/// Applies `change` to `base` (a create's base is `None`), collecting every field's error.
fn check(
    base: Option<&Endpoint>,
    change: EndpointPatch,
    guard: &Guard,
) -> Result<EndpointFields, ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let url = match (change.url, base) {
        (Patch::Set(url), _) => errors.check_coded("url", guard.check_url(&url), |e| e.code()),
        (Patch::Keep, Some(base)) => Url::parse(&base.url).ok(),
        _ => {
            errors.add("url", "required", "must be given and not null");
            None
        }
    };
    let description = match change.description {
        Patch::Set(text) => errors
            .check(
                "description",
                "invalid",
                pier_core::validation::trimmed_text(&text, bounds::DESCRIPTION_CHARS),
            )
            .map(Some),
        Patch::Clear => Some(None),
        Patch::Keep => Some(base.and_then(|b| b.description.clone())),
    };
    let event_types = match change.event_types {
        Patch::Set(list) => errors.check_set(
            "event_types",
            &list,
            (bounds::EVENT_TYPE_FILTERS, "event types"),
            EventTypeName::parse,
        ),
        Patch::Clear => Some(Vec::new()),
        Patch::Keep => Some(
            base.map(|b| {
                b.event_types
                    .iter()
                    .filter_map(|t| EventTypeName::parse(t).ok())
                    .collect()
            })
            .unwrap_or_default(),
        ),
    };
    let rate_limit_per_second = match change.rate_limit_per_second {
        Patch::Set(rate) => errors
            .check_range(
                "rate_limit_per_second",
                rate,
                &bounds::RATE_LIMIT_PER_SECOND,
            )
            .map(Some),
        Patch::Clear => Some(None),
        Patch::Keep => Some(base.and_then(|b| b.rate_limit_per_second)),
    };
    let metadata = match change.metadata {
        Patch::Set(map) => errors.check("metadata", "invalid", check_metadata(&map).map(|()| map)),
        Patch::Clear => Some(BTreeMap::new()),
        Patch::Keep => Some(base.map(|b| b.metadata.clone()).unwrap_or_default()),
    };
    // A flag sent as `null` stays as it is.
    let flag = |patch: Patch<bool>, current: Option<bool>, default: bool| match patch {
        Patch::Set(value) => value,
        Patch::Keep | Patch::Clear => current.unwrap_or(default),
    };
    let enabled = flag(change.enabled, base.map(|b| b.enabled), true);
    let ordered = flag(change.ordered, base.map(|b| b.ordered), false);
    let ed25519 = flag(change.ed25519, base.map(|b| b.ed25519), false);
    errors.into_result()?;
    match (
        url,
        description,
        event_types,
        rate_limit_per_second,
        metadata,
    ) {
        (Some(url), Some(description), Some(event_types), Some(rate), Some(metadata)) => {
            Ok(EndpointFields {
                url,
                description,
                event_types,
                enabled,
                rate_limit_per_second: rate,
                ordered,
                ed25519,
                metadata,
            })
        }
        _ => Err(ValidationErrors::single(
            "body",
            "invalid",
            "invalid endpoint",
        )),
    }
}
