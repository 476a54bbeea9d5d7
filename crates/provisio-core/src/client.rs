//! Clients: the customers of the billing system whose services Provisio provisions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::ClientId;
use crate::money::Currency;
use crate::text::{DisplayName, Email, TextError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientStatus {
    Active,
    Archived,
}

impl ClientStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Archived => "archived",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "archived" => Some(Self::Archived),
            _ => None,
        }
    }
}

/// Custom fields: short snake_case keys to text values (e.g. `pass_key`).
pub type CustomFields = BTreeMap<String, String>;

/// Checks a custom-field key: 1 to 64 of `a-z 0-9 _`, starting with a letter.
pub fn check_custom_field_key(k: &str) -> Result<(), TextError> {
    let ok = !k.is_empty()
        && k.len() <= 64
        && k.starts_with(|c: char| c.is_ascii_lowercase())
        && k.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(TextError {
            rule: "pattern",
            message: format!(
                "custom field key '{k}' must be 1 to 64 of a-z, 0-9 and '_', starting with a letter"
            ),
        })
    }
}

/// At most this many bytes per custom field value.
pub const CUSTOM_FIELD_MAX_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Client {
    pub id: ClientId,
    pub name: DisplayName,
    pub email: Email,
    pub status: ClientStatus,
    /// Balance in minor units of `currency` (cents for EUR), exact.
    pub balance_minor: i64,
    pub currency: Currency,
    pub custom_fields: CustomFields,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A client about to be stored; the store assigns the id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewClient {
    pub name: DisplayName,
    pub email: Email,
    pub status: ClientStatus,
    pub balance_minor: i64,
    pub currency: Currency,
    pub custom_fields: CustomFields,
}
