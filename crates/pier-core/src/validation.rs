//! Field-level validation errors, collected so a client sees every problem in one `422`.

use serde::Serialize;

/// One invalid field: `{"field": "name", "code": "too_long", "message": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The JSON path of the field, e.g. `scopes[2]`, or the query parameter name.
    pub field: String,
    /// A stable, machine-readable reason, e.g. `required`, `too_long`, `invalid`.
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
}

/// A non-empty list of field errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// A single error, for the common case of one bad field.
    pub fn single(field: &str, code: &str, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, code, message);
        errors
    }

    pub fn add(&mut self, field: &str, code: &str, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_owned(),
            code: code.to_owned(),
            message: message.into(),
        });
    }

    /// Keeps the value of `result`, recording its error under `field`.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        code: &str,
        result: Result<T, E>,
    ) -> Option<T> {
        result
            .map_err(|e| self.add(field, code, e.to_string()))
            .ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was recorded.
    pub fn into_result(self) -> Result<(), Self> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }

    pub fn first_message(&self) -> Option<&str> {
        self.0.first().map(|e| e.message.as_str())
    }
}

impl std::fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for ValidationErrors {}
