//! What callers send to create or change records: the same shapes come from the REST API
//! (JSON) and from the config file (TOML). Unknown fields are refused so a typo never
//! passes silently.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use provisio_core::client::{ClientStatus, TransactionKind};
use provisio_core::product::AutoSetup;
use provisio_core::settings::Settings;
use provisio_core::ClientId;
use secrecy::SecretString;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::patch::Patch;

/// A record named by id or by name (`3` or `"basic"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
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
    /// Reads a path segment: digits are an id, anything else a name.
    pub fn from_segment(s: &str) -> Self {
        match s.parse::<i64>() {
            Ok(i) => RecordRef::Id(i),
            Err(_) => RecordRef::Name(s.to_string()),
        }
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
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
    #[serde(default)]
    #[schema(pattern = r"^[A-Z]{3}$")]
    pub currency: Option<String>,
    /// Opening balance in minor units (cents); 0 when absent.
    #[serde(default)]
    pub balance_minor: Option<i64>,
    #[serde(default)]
    pub status: Option<ClientStatus>,
    #[serde(default)]
    #[schema(schema_with = schemas::custom_fields)]
    pub custom_fields: BTreeMap<String, String>,
    /// The reseller the client belongs to (a reseller key's own, when it creates the client).
    #[serde(default)]
    pub reseller_id: Option<i64>,
    /// The billing system's own id for the client (WHMCS's `userid`), unique among clients.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$", max_length = 128)]
    pub external_id: Option<String>,
    /// The key the client is created under (one item of a batch), so creating it again
    /// finds the first client. Set by the server, never read from a body.
    #[serde(skip)]
    pub order_key: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientPatch {
    #[schema(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@.\s\x00-\x1f\x7f-\x9f][^@\s\x00-\x1f\x7f-\x9f]*\.[^@\s\x00-\x1f\x7f-\x9f]*[^@.\s\x00-\x1f\x7f-\x9f]$"
    )]
    pub email: Option<String>,
    pub status: Option<ClientStatus>,
    /// Keys to set; a `null` value removes the key.
    #[schema(schema_with = schemas::custom_fields_patch)]
    pub custom_fields: Option<BTreeMap<String, Option<String>>>,
    /// Moves the client to this reseller.
    pub reseller_id: Option<i64>,
    /// Sets the billing system's id for the client; `null` removes it.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$", max_length = 128)]
    pub external_id: Patch<String>,
}

/// A change of a client's balance. `payment` and `credit` increase the balance; `charge`
/// and `refund` (money paid back to the client) decrease it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
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
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerCreate {
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub name: String,
    pub module: String,
    /// Servers of one group are interchangeable for new services; `default` when absent.
    #[serde(default)]
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub group: Option<String>,
    /// Per the module's server schema; secret fields are stored encrypted and never shown.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: Settings,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000)]
    pub max_concurrent: Option<u32>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_per_second: Option<u32>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerPatch {
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub name: Option<String>,
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub group: Option<String>,
    /// Keys to set; a `null` value removes the key.
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Settings>,
    #[schema(minimum = 1, maximum = 10000)]
    pub max_concurrent: Option<u32>,
    /// `null` removes the limit.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 1000000)]
    pub max_per_second: Patch<u32>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductCreate {
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub name: String,
    pub module: String,
    /// The name of the product whose settings this one inherits.
    #[serde(default)]
    pub extends: Option<String>,
    #[serde(default)]
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub server_group: Option<String>,
    /// This product's own settings (overrides of the parent's).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: Settings,
    #[serde(default)]
    pub auto_setup: Option<AutoSetup>,
    /// Module outputs to copy into the client's custom fields when an action succeeds:
    /// client field name → output name.
    #[serde(default)]
    #[schema(schema_with = schemas::client_fields)]
    pub client_fields: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub name: Option<String>,
    /// `null` makes the product stand alone.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub extends: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub server_group: Patch<String>,
    /// Keys to set; a `null` value removes the override (the parent's value applies again).
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Settings>,
    pub auto_setup: Option<AutoSetup>,
    /// Replaces the whole map.
    #[schema(schema_with = schemas::client_fields)]
    pub client_fields: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceCreate {
    #[schema(value_type = i64)]
    pub client_id: ClientId,
    /// The product, by id or name.
    pub product: RecordRef,
    /// The server, by id or name; when absent the enabled server of the product's module and
    /// group with the fewest live services is chosen.
    #[serde(default)]
    pub server: Option<RecordRef>,
    /// Generated when absent.
    #[serde(default)]
    #[schema(max_length = 64, pattern = r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")]
    pub username: Option<String>,
    /// Generated when absent; stored encrypted.
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 8, max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub password: Option<SecretString>,
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f]+$"
    )]
    pub invoice: Option<String>,
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f]+$"
    )]
    pub parent_invoice: Option<String>,
    /// Per the module's service schema.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: Settings,
    /// The billing system's own id for the service (WHMCS's `serviceid`), unique among
    /// services.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$", max_length = 128)]
    pub external_id: Option<String>,
    /// The key the order is placed under (a rule firing's), so placing it again finds the
    /// first service. Set by the engine, never read from a body.
    #[serde(skip)]
    pub order_key: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServicePatch {
    /// Only while the service is pending (afterwards the remote knows it).
    #[schema(max_length = 64, pattern = r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")]
    pub username: Option<String>,
    /// Only while the service is pending; later use the change-password action.
    #[schema(value_type = Option<String>, min_length = 8, max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub password: Option<SecretString>,
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 100, pattern = r"^[^\s\x00-\x1f\x7f-\x9f]+$")]
    pub invoice: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 100, pattern = r"^[^\s\x00-\x1f\x7f-\x9f]+$")]
    pub parent_invoice: Patch<String>,
    /// Keys to set; a `null` value removes the key.
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Settings>,
    /// Sets the billing system's id for the service; `null` removes it.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$", max_length = 128)]
    pub external_id: Patch<String>,
}

/// What an action request may carry; which fields apply depends on the action.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionInput {
    /// suspend: `non-payment`, `holiday`, `abuse`, `admin`, `usage` or free text; `admin`
    /// when absent.
    pub reason: Option<String>,
    /// suspend: when the engine unsuspends by itself.
    pub until: Option<DateTime<Utc>>,
    /// change_password: the new password; generated when absent.
    #[schema(value_type = Option<String>, min_length = 8, max_length = 128)]
    pub password: Option<SecretString>,
    /// change_package: the new product, by id or name.
    pub product: Option<RecordRef>,
}

/// Schemas of fields whose rules utoipa's attributes cannot state (map keys, list items).
pub mod schemas {
    use provisio_core::client::CUSTOM_FIELD_MAX_LEN;
    use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, Schema, SchemaType, Type};
    use utoipa::openapi::Array;

    /// A custom field's key, as `check_custom_field_key` accepts it.
    const FIELD_KEY: &str = "^[a-z][a-z0-9_]{0,63}$";

    fn keys() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(FIELD_KEY))
            .build()
    }

    fn string(nullable: bool, max: usize) -> Object {
        let ty = if nullable {
            SchemaType::from_iter([Type::String, Type::Null])
        } else {
            SchemaType::from(Type::String)
        };
        ObjectBuilder::new()
            .schema_type(ty)
            .max_length(Some(max))
            .build()
    }

    fn map(nullable_values: bool, max: usize) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property_names(Some(keys()))
            .additional_properties(Some(Schema::Object(string(nullable_values, max))))
    }

    /// `custom_fields` of a new client: field key to value.
    pub fn custom_fields() -> Object {
        map(false, CUSTOM_FIELD_MAX_LEN).build()
    }

    /// `custom_fields` of a client patch: a `null` value removes the key.
    pub fn custom_fields_patch() -> Object {
        map(true, CUSTOM_FIELD_MAX_LEN)
            .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
            .build()
    }

    /// `client_fields` of a product: client field key to the module output copied into it.
    pub fn client_fields() -> Object {
        let output = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[A-Za-z0-9_.-]{1,100}$"))
            .build();
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
            .property_names(Some(keys()))
            .additional_properties(Some(Schema::Object(output)))
            .build()
    }

    /// The events a rule may fire on: the catalogue's `client.*` and `service.*` outcomes
    /// (never a `.before`, which may still be forbidden).
    fn rule_event(nullable: bool) -> Object {
        let events = provisio_core::event::CATALOGUE
            .iter()
            .filter(|e| e.starts_with("client.") || e.starts_with("service."))
            .filter(|e| !e.ends_with(".before"));
        let ty = if nullable {
            SchemaType::from_iter([Type::String, Type::Null])
        } else {
            SchemaType::from(Type::String)
        };
        let mut values: Vec<serde_json::Value> = events.map(|e| (*e).into()).collect();
        if nullable {
            values.push(serde_json::Value::Null);
        }
        ObjectBuilder::new()
            .schema_type(ty)
            .enum_values(Some(values))
            .build()
    }

    /// A new rule's `on`.
    pub fn rule_on() -> Object {
        rule_event(false)
    }

    /// A rule patch's `on`.
    pub fn rule_on_patch() -> Object {
        rule_event(true)
    }

    fn event_pattern() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(provisio_core::event::MAX_LEN))
            .pattern(Some(r"^([a-z][a-z0-9_]*|\*)(\.([a-z][a-z0-9_]*|\*))*$"))
            .build()
    }

    /// A handler's `events`: at least one event type or pattern.
    pub fn event_patterns() -> Array {
        ArrayBuilder::new()
            .items(event_pattern())
            .min_items(Some(1))
            .build()
    }

    /// A handler patch's `events`.
    pub fn event_patterns_patch() -> Array {
        ArrayBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
            .items(event_pattern())
            .min_items(Some(1))
            .build()
    }
}
