//! The formats of bulk link transfers, shared by import ([`super::import`]) and export
//! ([`super::export`]): NDJSON (one JSON object a line) or CSV (a header row naming the
//! columns, then one link a row, its tags in one cell separated by `,`). An export re-imports:
//! its CSV starts with the columns an import reads, and an import skips the read-only columns
//! an export adds after them.

use serde::Deserialize;

/// The formats of imports and exports.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BulkFormat {
    /// One JSON object a line (`application/x-ndjson`).
    #[default]
    Ndjson,
    /// A header row, then one link a row (`text/csv`).
    Csv,
}

impl BulkFormat {
    pub(super) fn of_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next()?.trim();
        if essence.eq_ignore_ascii_case("application/x-ndjson") {
            Some(Self::Ndjson)
        } else if essence.eq_ignore_ascii_case("text/csv") {
            Some(Self::Csv)
        } else {
            None
        }
    }

    pub(super) fn content_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }

    pub(super) fn attachment(self) -> &'static str {
        match self {
            Self::Ndjson => "attachment; filename=\"links.ndjson\"",
            Self::Csv => "attachment; filename=\"links.csv\"",
        }
    }
}
