//! Services: one thing a client has on a server, and its lifecycle.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{ClientId, ProductId, ServerId, ServiceId};
use crate::secret::Sealed;
use crate::settings::Settings;
use crate::text::{TextError, Username};

/// `pending -> active <-> suspended -> terminated`, and `failed` when create gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    Pending,
    Active,
    Suspended,
    Terminated,
    Failed,
}

impl ServiceStatus {
    pub const ALL: [ServiceStatus; 5] = [
        Self::Pending,
        Self::Active,
        Self::Suspended,
        Self::Terminated,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Terminated => "terminated",
            Self::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether the service may be removed from the records without a terminate action:
    /// nothing exists (or exists any more) on the remote.
    pub fn deletable(self) -> bool {
        matches!(self, Self::Pending | Self::Failed | Self::Terminated)
    }
}

/// Why a service is suspended. An automatic unsuspend after payment lifts only `NonPayment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum SuspendReason {
    NonPayment,
    Holiday,
    Abuse,
    Admin,
    Usage,
    Other(String),
}

impl From<String> for SuspendReason {
    fn from(s: String) -> Self {
        match s.as_str() {
            "non-payment" => Self::NonPayment,
            "holiday" => Self::Holiday,
            "abuse" => Self::Abuse,
            "admin" => Self::Admin,
            "usage" => Self::Usage,
            _ => Self::Other(s),
        }
    }
}

impl From<SuspendReason> for String {
    fn from(r: SuspendReason) -> String {
        r.as_str().to_string()
    }
}

impl SuspendReason {
    pub fn as_str(&self) -> &str {
        match self {
            Self::NonPayment => "non-payment",
            Self::Holiday => "holiday",
            Self::Abuse => "abuse",
            Self::Admin => "admin",
            Self::Usage => "usage",
            Self::Other(s) => s,
        }
    }
}

/// A billing invoice reference that groups services (`invoice`, `parent_invoice`):
/// 1 to 100 printable characters without spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "master-invoice-123")]
pub struct InvoiceRef(String);

impl InvoiceRef {
    pub fn parse(s: &str) -> Result<Self, TextError> {
        if s.is_empty() || s.chars().count() > 100 {
            return Err(TextError {
                rule: "length",
                message: "must be 1 to 100 characters".into(),
            });
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TextError {
                rule: "pattern",
                message: "must not contain spaces or control characters".into(),
            });
        }
        Ok(Self(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InvoiceRef {
    type Error = TextError;
    fn try_from(s: String) -> Result<Self, TextError> {
        Self::parse(&s)
    }
}
impl From<InvoiceRef> for String {
    fn from(v: InvoiceRef) -> String {
        v.0
    }
}

/// The suspension currently in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Suspension {
    pub reason: SuspendReason,
    pub since: DateTime<Utc>,
    /// When the engine unsuspends by itself, if ever.
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub id: ServiceId,
    pub client_id: ClientId,
    pub product_id: ProductId,
    pub server_id: ServerId,
    pub username: Username,
    pub password: Sealed,
    pub status: ServiceStatus,
    pub suspension: Option<Suspension>,
    pub invoice: Option<InvoiceRef>,
    pub parent_invoice: Option<InvoiceRef>,
    /// Settings per the module's service schema; secret fields are sealed.
    pub settings: Settings,
    /// Values the module returned (e.g. a pass key), kept for later actions and templates.
    pub outputs: Settings,
    /// This service's overrides of its product's settings (a group edit's bigger quota);
    /// secret fields sealed. Modules see the product's effective settings with these merged.
    pub product_overrides: Settings,
    /// The billing system's own id for it, unique among services.
    pub external_id: Option<crate::text::ExternalId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewService {
    pub client_id: ClientId,
    pub product_id: ProductId,
    pub server_id: ServerId,
    pub username: Username,
    pub password: Sealed,
    pub status: ServiceStatus,
    pub invoice: Option<InvoiceRef>,
    pub parent_invoice: Option<InvoiceRef>,
    pub settings: Settings,
    /// The key it is ordered under, unique among services: a rule firing's
    /// (`rule:R:event:E`), so a firing run twice orders once.
    pub order_key: Option<String>,
    pub external_id: Option<crate::text::ExternalId>,
}

/// Generates a username for a service ordered without one: `u` and 9 random lower-case
/// letters and digits, which every module accepts.
pub fn generate_username() -> Username {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    let s: String = std::iter::once('u')
        .chain((0..9).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char))
        .collect();
    Username::parse(&s).expect("generated usernames are valid")
}

impl Service {
    /// The service as events show it: no password, no sealed values.
    pub fn event_payload(&self) -> serde_json::Value {
        let s = self;
        let (outputs, _) = crate::secret::redact_settings(&s.outputs);
        let (settings, _) = crate::secret::redact_settings(&s.settings);
        serde_json::json!({
            "id": s.id,
            "client_id": s.client_id,
            "product_id": s.product_id,
            "server_id": s.server_id,
            "username": s.username.as_str(),
            "external_id": s.external_id.as_ref().map(|v| v.as_str()),
            "status": s.status.as_str(),
            "suspension": s.suspension.as_ref().map(|x| serde_json::json!({
                "reason": x.reason.as_str(),
                "since": x.since,
                "until": x.until,
            })),
            "invoice": s.invoice.as_ref().map(|v| v.as_str()),
            "parent_invoice": s.parent_invoice.as_ref().map(|v| v.as_str()),
            "settings": settings,
            "outputs": outputs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_roundtrip() {
        for r in [
            "non-payment",
            "holiday",
            "abuse",
            "admin",
            "usage",
            "moving house",
        ] {
            assert_eq!(String::from(SuspendReason::from(r.to_string())), r);
        }
    }

    #[test]
    fn invoices() {
        assert!(InvoiceRef::parse("master-invoice-123").is_ok());
        assert!(InvoiceRef::parse("a b").is_err());
        assert!(InvoiceRef::parse("").is_err());
    }

    #[test]
    fn statuses_roundtrip() {
        for s in ServiceStatus::ALL {
            assert_eq!(ServiceStatus::parse(s.as_str()), Some(s));
        }
    }
}
