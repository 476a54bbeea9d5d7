//! The record bodies: what callers send to create or change records. The server and the
//! config file (TOML) read these shapes, and the typed client writes them. Unknown fields
//! are refused so a typo never passes silently; absent fields are not written, so a patch
//! the client sends changes only what it names.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use provisio_core::client::{ClientStatus, TransactionKind};
use provisio_core::product::AutoSetup;
use provisio_core::settings::Settings;
use provisio_core::ClientId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::patch::Patch;
use super::schemas;
use super::{RecordRef, Secret};

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCreate {
    #[schema(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@.\s\x00-\x1f\x7f-\x9f][^@\s\x00-\x1f\x7f-\x9f]*\.[^@\s\x00-\x1f\x7f-\x9f]*[^@.\s\x00-\x1f\x7f-\x9f]$"
    )]
    pub email: String,
    /// ISO 4217 code; the instance default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Z]{3}$")]
    pub currency: Option<String>,
    /// Opening balance in minor units (cents); 0 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_minor: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ClientStatus>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(schema_with = schemas::custom_fields)]
    pub custom_fields: BTreeMap<String, String>,
    /// The reseller the client belongs to (a reseller key's own, when it creates the client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reseller_id: Option<i64>,
    /// The billing system's own id for the client (WHMCS's `userid`), unique among clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$", max_length = 128)]
    pub external_id: Option<String>,
    /// The key the client is created under (one item of a batch), so creating it again
    /// finds the first client. Set by the server, never read from a body.
    #[serde(skip)]
    pub order_key: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientPatch {
    #[schema(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@.\s\x00-\x1f\x7f-\x9f][^@\s\x00-\x1f\x7f-\x9f]*\.[^@\s\x00-\x1f\x7f-\x9f]*[^@.\s\x00-\x1f\x7f-\x9f]$"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ClientStatus>,
    /// Keys to set; a `null` value removes the key.
    #[schema(schema_with = schemas::custom_fields_patch)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_fields: Option<BTreeMap<String, Option<String>>>,
    /// Moves the client to this reseller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reseller_id: Option<i64>,
    /// Sets the billing system's id for the client; `null` removes it.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$", max_length = 128)]
    pub external_id: Patch<String>,
}

/// A change of a client's balance. `payment` and `credit` increase the balance; `charge`
/// and `refund` (money paid back to the client) decrease it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransactionCreate {
    pub kind: TransactionKind,
    /// Positive, in minor units of the client's currency (cents); `kind` gives the direction.
    #[schema(minimum = 1)]
    pub amount_minor: i64,
    /// 1 to 100 characters, unique per client: sending the same transaction again with the
    /// same key returns the stored one instead of applying it twice.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub idempotency_key: String,
    /// At most 500 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 500)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerCreate {
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub name: String,
    pub module: String,
    /// Servers of one group are interchangeable for new services; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub group: Option<String>,
    /// Per the module's server schema; secret fields are stored encrypted and never shown.
    #[serde(default, skip_serializing_if = "Settings::is_empty")]
    #[schema(value_type = Object)]
    pub settings: Settings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10000)]
    pub max_concurrent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerPatch {
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Keys to set; a `null` value removes the key.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<Settings>,
    #[schema(minimum = 1, maximum = 10000)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// `null` removes the limit.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 1000000)]
    pub max_per_second: Patch<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductCreate {
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub name: String,
    pub module: String,
    /// The name of the product whose settings this one inherits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub server_group: Option<String>,
    /// This product's own settings (overrides of the parent's).
    #[serde(default, skip_serializing_if = "Settings::is_empty")]
    #[schema(value_type = Object)]
    pub settings: Settings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_setup: Option<AutoSetup>,
    /// Module outputs to copy into the client's custom fields when an action succeeds:
    /// client field name → output name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schemas::client_fields)]
    pub client_fields: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `null` makes the product stand alone.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    #[schema(value_type = Option<String>)]
    pub extends: Patch<String>,
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    #[schema(value_type = Option<String>, max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub server_group: Patch<String>,
    /// Keys to set; a `null` value removes the override (the parent's value applies again).
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<Settings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_setup: Option<AutoSetup>,
    /// Replaces the whole map.
    #[schema(schema_with = schemas::client_fields)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_fields: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceCreate {
    #[schema(value_type = i64)]
    pub client_id: ClientId,
    /// The product, by id or name.
    pub product: RecordRef,
    /// The server, by id or name; when absent the enabled server of the product's module and
    /// group with the fewest live services is chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<RecordRef>,
    /// Generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 64, pattern = r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")]
    pub username: Option<String>,
    /// Generated when absent; stored encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, min_length = 8, max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f]+$"
    )]
    pub invoice: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f]+$"
    )]
    pub parent_invoice: Option<String>,
    /// Per the module's service schema.
    #[serde(default, skip_serializing_if = "Settings::is_empty")]
    #[schema(value_type = Object)]
    pub settings: Settings,
    /// The billing system's own id for the service (WHMCS's `serviceid`), unique among
    /// services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$", max_length = 128)]
    pub external_id: Option<String>,
    /// The key the order is placed under (a rule firing's), so placing it again finds the
    /// first service. Set by the engine, never read from a body.
    #[serde(skip)]
    pub order_key: Option<String>,
}

impl ServiceCreate {
    /// An order of `product` for `client_id`, every other field left to the defaults.
    pub fn new(client_id: ClientId, product: RecordRef) -> Self {
        Self {
            client_id,
            product,
            server: None,
            username: None,
            password: None,
            invoice: None,
            parent_invoice: None,
            settings: Settings::new(),
            external_id: None,
            order_key: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServicePatch {
    /// Only while the service is pending (afterwards the remote knows it).
    #[schema(max_length = 64, pattern = r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Only while the service is pending; later use the change-password action.
    #[schema(value_type = Option<String>, min_length = 8, max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 100, pattern = r"^[^\s\x00-\x1f\x7f-\x9f]+$")]
    pub invoice: Patch<String>,
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 100, pattern = r"^[^\s\x00-\x1f\x7f-\x9f]+$")]
    pub parent_invoice: Patch<String>,
    /// Keys to set; a `null` value removes the key.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<Settings>,
    /// Sets the billing system's id for the service; `null` removes it.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$", max_length = 128)]
    pub external_id: Patch<String>,
}

/// What an action request may carry; which fields apply depends on the action.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionInput {
    /// suspend: `non-payment`, `holiday`, `abuse`, `admin`, `usage` or free text; `admin`
    /// when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// suspend: when the engine unsuspends by itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// change_password: the new password; generated when absent.
    #[schema(value_type = Option<String>, min_length = 8, max_length = 128)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// change_package: the new product, by id or name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<RecordRef>,
}

impl ActionInput {
    /// No field given: the action runs with its defaults, and the client sends no body.
    pub fn is_empty(&self) -> bool {
        self.reason.is_none()
            && self.until.is_none()
            && self.password.is_none()
            && self.product.is_none()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_patch_writes_only_what_it_changes_and_reads_back_the_same() {
        let patch = ServicePatch {
            invoice: Patch::Clear,
            external_id: Patch::Set("ws-9".into()),
            ..Default::default()
        };
        let body = serde_json::to_value(&patch).unwrap();
        assert_eq!(body, json!({"invoice": null, "external_id": "ws-9"}));
        let back: ServicePatch = serde_json::from_value(body).unwrap();
        assert_eq!(back.invoice, Patch::Clear);
        assert_eq!(back.parent_invoice, Patch::Keep);
        assert_eq!(back.external_id, Patch::Set("ws-9".to_string()));
        assert_eq!(
            serde_json::to_value(ServicePatch::default()).unwrap(),
            json!({})
        );
    }

    #[test]
    fn an_order_sends_its_password_but_never_shows_it() {
        let mut order = ServiceCreate::new(ClientId(7), RecordRef::from_segment("basic"));
        order.password = Some("a-long-password-1".into());
        order.order_key = Some("kept-by-the-server".into());
        let body = serde_json::to_value(&order).unwrap();
        assert_eq!(
            body,
            json!({"client_id": 7, "product": "basic", "password": "a-long-password-1"})
        );
        assert!(!format!("{order:?}").contains("a-long-password-1"));
        // The server's own key is never read from a body.
        let e = serde_json::from_value::<ServiceCreate>(json!({
            "client_id": 7, "product": 3, "order_key": "x"
        }))
        .unwrap_err();
        assert!(e.to_string().contains("order_key"), "{e}");
    }

    #[test]
    fn an_action_without_fields_is_empty() {
        assert!(ActionInput::default().is_empty());
        let a = ActionInput {
            product: Some(RecordRef::from_segment("12")),
            ..Default::default()
        };
        assert!(!a.is_empty());
        assert_eq!(serde_json::to_value(&a).unwrap(), json!({"product": 12}));
    }
}
