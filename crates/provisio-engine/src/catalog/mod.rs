//! Record keeping: create, change, list and remove clients, servers, products and services,
//! with every write parsed and validated against the module's schemas before it is stored.

pub(crate) mod cache;
mod clients;
pub(crate) mod load_reads;
pub(crate) mod order_lane;
mod products;
mod servers;
mod services;

pub use cache::inherit as inherit_catalog;
pub use services::Ordered;

use crate::error::not_found;
use std::collections::HashMap;

use provisio_core::client::{
    check_custom_field_key, Client, ClientStatus, CustomFields, NewClient, CUSTOM_FIELD_MAX_LEN,
};
use provisio_core::module::Action;
use provisio_core::module::{ModuleInfo, SchemaScope};
use provisio_core::money::Currency;
use provisio_core::page::{Page, PageRequest};
use provisio_core::product::{merge_chain, resolve_chain, AutoSetup, NewProduct, Product};
use provisio_core::secret::{as_sealed, generate_password};
use provisio_core::server::{NewServer, Server, DEFAULT_MAX_CONCURRENT};
use provisio_core::service::{generate_username, InvoiceRef, NewService, Service, ServiceStatus};
use provisio_core::settings::{Mode, Settings};
use provisio_core::text::{DisplayName, Email, ExternalId, Handle, Username};
use provisio_core::{ClientId, ProductId, ServerId, ServiceId};
use provisio_store::{ClientFilter, ProductFilter, ServerFilter, ServiceFilter};
use secrecy::{ExposeSecret, SecretString};

use crate::error::Problems;
use crate::input::*;
use crate::{Engine, EngineError, Result};

const DEFAULT_GROUP: &str = "default";
const MAX_CONCURRENT_LIMIT: u32 = 10_000;
const MAX_PER_SECOND_LIMIT: u32 = 1_000_000;

/// A product with what inheritance makes of it.
#[derive(Debug, Clone)]
pub struct ProductView {
    pub product: Product,
    pub extends_name: Option<String>,
    /// The merged, validated settings (defaults filled in); secrets still sealed.
    pub effective: Settings,
}

fn conflict(message: impl Into<String>) -> EngineError {
    EngineError::Conflict {
        field: None,
        message: message.into(),
    }
}

/// Callers never send sealed markers: they only ever see secrets redacted, so a marker in
/// input is either a mistake or an attempt to plant ciphertext.
fn reject_markers(p: &mut Problems, prefix: &str, s: &Settings) {
    for (k, v) in s {
        if as_sealed(v).is_some() {
            p.push(&format!("{prefix}.{k}"), "type", "must be a plain value");
        }
    }
}

/// Applies a settings patch: keys set, `null` removes.
fn merge_patch(current: &Settings, patch: &Settings) -> Settings {
    let mut out = current.clone();
    for (k, v) in patch {
        if v.is_null() {
            out.remove(k);
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

fn check_limits(p: &mut Problems, max_concurrent: u32, max_per_second: Option<u32>) {
    if max_concurrent == 0 || max_concurrent > MAX_CONCURRENT_LIMIT {
        p.push(
            "max_concurrent",
            "range",
            format!("must be between 1 and {MAX_CONCURRENT_LIMIT}"),
        );
    }
    if let Some(r) = max_per_second {
        if r == 0 || r > MAX_PER_SECOND_LIMIT {
            p.push(
                "max_per_second",
                "range",
                format!("must be between 1 and {MAX_PER_SECOND_LIMIT}"),
            );
        }
    }
}

fn check_custom_fields<'a>(
    p: &mut Problems,
    fields: impl Iterator<Item = (&'a String, Option<&'a String>)>,
) {
    for (k, v) in fields {
        if let Err(e) = check_custom_field_key(k) {
            p.push(&format!("custom_fields.{k}"), e.rule, e.message);
        }
        if v.is_some_and(|v| v.chars().count() > CUSTOM_FIELD_MAX_LEN) {
            p.push(
                &format!("custom_fields.{k}"),
                "max_length",
                format!("must be at most {CUSTOM_FIELD_MAX_LEN} characters"),
            );
        }
    }
}

/// Longest module output name a product may copy into a client field.
const OUTPUT_NAME_MAX_LEN: usize = 100;

fn check_client_fields(
    p: &mut Problems,
    map: provisio_core::product::ClientFieldMap,
) -> provisio_core::product::ClientFieldMap {
    for (field, output) in &map {
        if let Err(e) = check_custom_field_key(field) {
            p.push(&format!("client_fields.{field}"), e.rule, e.message);
        }
        let ok = !output.is_empty()
            && output.len() <= OUTPUT_NAME_MAX_LEN
            && output
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            p.push(
                &format!("client_fields.{field}"),
                "pattern",
                format!(
                    "must name a module output: 1 to {OUTPUT_NAME_MAX_LEN} of a-z A-Z 0-9 _ - ."
                ),
            );
        }
    }
    map
}

impl Engine {
    pub(crate) fn module(&self, p: &mut Problems, name: &str) -> Option<&ModuleInfo> {
        let found = self.modules.info(name);
        if found.is_none() {
            let known: Vec<&str> = self.modules.names().collect();
            p.push(
                "module",
                "unknown",
                format!("unknown module '{name}' (known: {})", known.join(", ")),
            );
        }
        found
    }

    /// Validates settings completely against a module schema, adds problems under
    /// `settings.` and returns them normalised with secrets sealed.
    pub(crate) fn complete_settings(
        &self,
        p: &mut Problems,
        info: &ModuleInfo,
        scope: SchemaScope,
        settings: &Settings,
    ) -> Option<Settings> {
        let schema = info.schema(scope);
        match schema.validate(settings, Mode::Complete) {
            Ok(mut s) => {
                let extra = self
                    .modules
                    .get(&info.name)
                    .map(|m| m.check_settings(scope, &s))
                    .unwrap_or_default();
                if !extra.is_empty() {
                    p.extend_prefixed("settings", extra);
                    return None;
                }
                self.cipher.seal_settings(schema, &mut s);
                Some(s)
            }
            Err(errors) => {
                p.extend_prefixed("settings", errors);
                None
            }
        }
    }
}

/// A sealed value as stored inside a settings-like map (job params).
pub(crate) fn sealed_value(s: &provisio_core::secret::Sealed) -> serde_json::Value {
    use base64::Engine as _;
    serde_json::json!({ provisio_core::secret::SEALED_MARKER: base64::engine::general_purpose::STANDARD.encode(&s.0) })
}
