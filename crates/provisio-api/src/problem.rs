//! The problem document (RFC 9457) every error answer of the API carries, as
//! `application/problem+json`.

use provisio_core::settings::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A problem document (RFC 9457).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For validation problems: every field that broke a rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<FieldProblem>)]
    pub errors: Vec<FieldError>,
    /// For actions a gate forbade: the handler that said no.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// For actions a gate forbade: its reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For requests the key's role may not make: the roles that may.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

/// One field that broke one rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FieldProblem {
    /// The field, as a dotted path (`settings.port`).
    pub field: String,
    /// The rule's machine-readable name (`required`, `max`, `enum`, …).
    pub rule: String,
    pub message: String,
}
