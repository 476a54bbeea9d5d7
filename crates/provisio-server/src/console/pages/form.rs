//! What every console form shares: the field messages shown next to their fields, the
//! values sent back into a form, and the engine's problem split into both.

use crate::error::ApiError;

/// A page whose template draws a form. Its templates call `self.err("field")` beside each
/// field and `self.value(form.field)` in each input.
pub(crate) trait FormPage {
    /// The field messages of the last submission, `(field, message)`.
    fn field_errors(&self) -> &[(String, String)];

    /// The messages for `field` and its nested fields (`settings` also shows
    /// `settings.host`), joined; the engine may name one field more than once.
    fn err(&self, field: &str) -> Option<String> {
        messages(self.field_errors(), field)
    }

    fn value<'a>(&self, v: &'a Option<String>) -> &'a str {
        v.as_deref().unwrap_or("")
    }
}

pub(crate) fn messages(errors: &[(String, String)], field: &str) -> Option<String> {
    let nested = format!("{field}.");
    let m: Vec<&str> = errors
        .iter()
        .filter(|e| e.0 == field || e.0.starts_with(&nested))
        .map(|e| e.1.as_str())
        .collect();
    (!m.is_empty()).then(|| m.join("; "))
}

/// An engine or boundary error as a form shows it: the field messages, and the problem's
/// detail for the top of the form.
pub(crate) fn problem_fields(e: impl Into<ApiError>) -> (Vec<(String, String)>, String) {
    let p = e.into().into_problem();
    let fields = p.errors.into_iter().map(|f| (f.field, f.message)).collect();
    (fields, p.detail)
}

/// A form answered again with its field errors: 422, as the REST API answers.
pub(crate) fn unprocessable(mut r: axum::response::Response) -> axum::response::Response {
    *r.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    r
}
