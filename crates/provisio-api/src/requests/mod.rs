//! The request bodies: the one definition the server's routes (and the config file) read
//! and the typed client writes, so the two cannot drift. Unknown fields are refused, so a
//! body with a field the server does not know fails loudly instead of being dropped.

mod patch;
mod records;
mod runs;
pub mod schemas;
mod secret;

pub use patch::Patch;
pub use records::{
    ActionInput, ClientCreate, ClientPatch, ProductCreate, ProductPatch, ServerCreate, ServerPatch,
    ServiceCreate, ServicePatch, TransactionCreate,
};
pub use runs::{AuditInput, SyncInput, TopupInput};
pub use secret::Secret;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    /// What the person did about it.
    #[schema(max_length = 2000, pattern = r"\S")]
    pub note: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryFailedBody {
    /// Only this server's failed jobs (id or name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

/// A record named by id or by name (`3` or `"basic"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum RecordRef {
    Id(i64),
    Name(String),
}

impl std::fmt::Display for RecordRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordRef::Id(i) => write!(f, "{i}"),
            RecordRef::Name(n) => write!(f, "'{n}'"),
        }
    }
}

impl RecordRef {
    /// Reads a path segment or what a person typed: digits are an id, anything else a name.
    pub fn from_segment(s: &str) -> Self {
        match s.parse::<i64>() {
            Ok(i) => RecordRef::Id(i),
            Err(_) => RecordRef::Name(s.to_string()),
        }
    }
}

// `POST /v1/services/{id}/login-url`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginUrlRequest {
    /// Ask on behalf of this service's holder: allowed for the service itself, or from a
    /// group's master into its children.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_service: Option<i64>,
}
