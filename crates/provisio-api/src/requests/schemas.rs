//! Schemas of fields whose rules utoipa's attributes cannot state (map keys, list items),
//! referred to by `#[schema(schema_with = …)]` on the request bodies.

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
