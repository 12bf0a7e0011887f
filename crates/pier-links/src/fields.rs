//! The fields a link's owner sets, which can only be built valid: [`LinkFields::for_new`] (a new
//! link) and [`LinkFields::patch`] (a change) apply every rule and report every field's error,
//! so an in-process caller (a worker, the console) gets the same rules as the API.

use std::ops::RangeInclusive;

use pier_core::{HashGate, Patch, Timestamp, ValidationErrors};

use crate::link::{PasswordChange, RedirectStatus, Tag, Title};
use crate::{LinkError, Slug, Target};

/// The most clicks a link can be limited to.
pub const MAX_CLICKS: RangeInclusive<i64> = 1..=1_000_000_000_000;

/// A link's owner-set fields, checked. A `None` slug asks the store to generate one.
#[derive(Debug, Clone)]
pub struct LinkFields {
    pub(crate) slug: Option<Slug>,
    pub(crate) target: Target,
    pub(crate) title: Option<Title>,
    /// Distinct and sorted, at most [`Tag::MAX_PER_LINK`].
    pub(crate) tags: Vec<Tag>,
    pub(crate) redirect_status: RedirectStatus,
    /// In the future when set.
    pub(crate) expires_at: Option<Timestamp>,
    /// Within [`MAX_CLICKS`].
    pub(crate) max_clicks: Option<i64>,
    pub(crate) password: PasswordChange,
}

/// A change to a link's fields, member by member as in a JSON Merge Patch (a new link is a
/// change to nothing): left out keeps a field, `Clear` clears `title`, `tags`, `expires_at`,
/// `max_clicks` and `password` and resets `redirect_status`. Unchecked until
/// [`LinkFields::for_new`] or [`LinkFields::patch`].
#[derive(Debug, Default)]
pub struct LinkPatch {
    pub url: Patch<String>,
    pub slug: Patch<String>,
    pub title: Patch<String>,
    pub tags: Patch<Vec<String>>,
    pub redirect_status: Patch<u16>,
    pub expires_at: Patch<Timestamp>,
    pub max_clicks: Patch<i64>,
    /// In plain text; hashed by [`CheckedFields::hashed`].
    pub password: Patch<String>,
}

/// Fields that passed every rule, with the new password, if any, still to be hashed.
#[derive(Debug)]
pub struct CheckedFields {
    fields: LinkFields,
    new_password: Option<String>,
}

impl LinkFields {
    /// A new link's fields (`url` is required), or every field's error. `now` decides whether
    /// `expires_at` is in the future.
    pub fn for_new(change: LinkPatch, now: Timestamp) -> Result<CheckedFields, ValidationErrors> {
        check(None, change, now)
    }

    /// These fields with `change` applied, or every field's error.
    pub fn patch(
        self,
        change: LinkPatch,
        now: Timestamp,
    ) -> Result<CheckedFields, ValidationErrors> {
        check(Some(self), change, now)
    }

    pub fn slug(&self) -> Option<&Slug> {
        self.slug.as_ref()
    }
}

impl CheckedFields {
    /// Hashes the new password within the node's bound on concurrent hashes: Argon2id takes
    /// tens of milliseconds and 19 MiB.
    pub async fn hashed(mut self, hashing: &HashGate) -> Result<LinkFields, LinkError> {
        if let Some(password) = self.new_password {
            let hash = hashing.hash(&password).await?.map_err(LinkError::Hash)?;
            self.fields.password = PasswordChange::Set(hash);
        }
        Ok(self.fields)
    }
}

/// Applies `change` to `base` (a create's base is `None`), collecting every field's error.
fn check(
    base: Option<LinkFields>,
    change: LinkPatch,
    now: Timestamp,
) -> Result<CheckedFields, ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let required = |errors: &mut ValidationErrors, field: &str| {
        errors.add(field, "required", "must be given and not null");
    };
    let target = match (change.url, base.as_ref()) {
        (Patch::Set(url), _) => errors.check_coded("url", Target::parse(&url), |e| e.code()),
        (Patch::Keep, Some(base)) => Some(base.target.clone()),
        _ => {
            required(&mut errors, "url");
            None
        }
    };
    let slug = match (change.slug, base.as_ref()) {
        (Patch::Set(slug), _) => errors
            .check_coded("slug", Slug::parse(&slug), |e| e.code())
            .map(Some),
        (Patch::Clear, Some(_)) => {
            required(&mut errors, "slug");
            None
        }
        (Patch::Keep, Some(base)) => Some(base.slug.clone()),
        (Patch::Clear | Patch::Keep, None) => Some(None),
    };
    let title = match change.title {
        Patch::Set(t) => errors.check("title", "invalid", Title::parse(&t)).map(Some),
        Patch::Clear => Some(None),
        Patch::Keep => Some(base.as_ref().and_then(|b| b.title.clone())),
    };
    let tags = match change.tags {
        Patch::Set(list) => {
            errors.check_set("tags", &list, (Tag::MAX_PER_LINK, "tags"), Tag::parse)
        }
        Patch::Clear => Some(Vec::new()),
        Patch::Keep => Some(base.as_ref().map(|b| b.tags.clone()).unwrap_or_default()),
    };
    let redirect_status = match change.redirect_status {
        Patch::Set(code) => RedirectStatus::from_code(code).or_else(|| {
            let message = "must be 301, 302, 307 or 308";
            errors.add("redirect_status", "invalid", message);
            None
        }),
        Patch::Clear => Some(RedirectStatus::default()),
        Patch::Keep => Some(base.as_ref().map(|b| b.redirect_status).unwrap_or_default()),
    };
    let expires_at = match change.expires_at {
        Patch::Set(at) if at <= now => {
            errors.add("expires_at", "in_past", "must be in the future");
            None
        }
        patch => patch.apply(base.as_ref().and_then(|b| b.expires_at)),
    };
    let max_clicks = match change.max_clicks {
        Patch::Set(n) => errors.check_range("max_clicks", n, &MAX_CLICKS).map(Some),
        Patch::Clear => Some(None),
        Patch::Keep => Some(base.as_ref().and_then(|b| b.max_clicks)),
    };
    let (password, new_password) = match change.password {
        Patch::Set(pw) => {
            errors.check("password", "invalid", pier_core::password::check(&pw));
            (PasswordChange::Keep, Some(pw))
        }
        Patch::Clear => (PasswordChange::Remove, None),
        Patch::Keep => (PasswordChange::Keep, None),
    };
    errors.into_result()?;
    match (target, slug, title, tags, redirect_status, max_clicks) {
        (Some(target), Some(slug), Some(title), Some(tags), Some(status), Some(max_clicks)) => {
            Ok(CheckedFields {
                fields: LinkFields {
                    slug,
                    target,
                    title,
                    tags,
                    redirect_status: status,
                    expires_at,
                    max_clicks,
                    password,
                },
                new_password,
            })
        }
        _ => Err(ValidationErrors::single("body", "invalid", "invalid link")),
    }
}
