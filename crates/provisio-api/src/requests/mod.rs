//! The request bodies: the one definition the server's routes (and the config file) read
//! and the typed client writes, so the two cannot drift. Unknown fields are refused, so a
//! body with a field the server does not know fails loudly instead of being dropped.

mod access;
mod groups;
mod hooks;
mod patch;
mod records;
mod runs;
pub mod schemas;
mod secret;

pub use access::{KeyCreate, ResellerCreate, ResellerInput};
pub use groups::{CleanupRequest, CollectQuery, GroupRequest, MembersQuery};
pub use hooks::{HandlerCreate, HandlerPatch, RuleCreate, RulePatch};
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

/// Checks the moved bodies share: what the server read before reads the same, is written
/// back the same, and a field it does not know is refused, naming it.
#[cfg(test)]
pub(crate) mod checks {
    use serde::de::DeserializeOwned;
    use serde::Serialize;
    use serde_json::Value;

    /// `body` (written as the client writes it) read and written again is `body`; the typed
    /// value read back is returned for the caller's own checks.
    pub fn round_trips<T: Serialize + DeserializeOwned>(body: Value) -> T {
        let typed: T = serde_json::from_value(body.clone()).expect("the body reads");
        assert_eq!(serde_json::to_value(&typed).unwrap(), body);
        typed
    }

    /// `body` with one more field the type does not have is refused with the field named.
    pub fn refuses_unknown<T: DeserializeOwned + std::fmt::Debug>(mut body: Value) {
        body.as_object_mut()
            .expect("an object")
            .insert("colour".into(), "blue".into());
        refused::<T>(body, "colour");
    }

    /// `body` is refused for its field `field`, one the type never reads from a body.
    pub fn refused<T: DeserializeOwned + std::fmt::Debug>(body: Value, field: &str) {
        let e = serde_json::from_value::<T>(body).unwrap_err().to_string();
        assert!(e.contains(&format!("unknown field `{field}`")), "{e}");
    }
}
