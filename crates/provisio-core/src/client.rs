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

/// At most this many characters per custom field value.
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
    /// The reseller the client was sold through, if any.
    pub reseller_id: Option<crate::ResellerId>,
    /// The billing system's own id for the client, unique among clients.
    pub external_id: Option<crate::text::ExternalId>,
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
    pub reseller_id: Option<crate::ResellerId>,
    pub external_id: Option<crate::text::ExternalId>,
    /// The key it is created under, unique among clients, so creating it again under the
    /// same key finds this one.
    pub order_key: Option<String>,
}

/// Identifies a stored balance transaction.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
pub struct TransactionId(pub i64);

impl std::fmt::Display for TransactionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What a balance transaction is. `payment` and `credit` increase the client's balance;
/// `charge` and `refund` (money paid back to the client) decrease it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransactionKind {
    Charge,
    Payment,
    Credit,
    Refund,
}

impl TransactionKind {
    pub const ALL: [Self; 4] = [Self::Charge, Self::Payment, Self::Credit, Self::Refund];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Charge => "charge",
            Self::Payment => "payment",
            Self::Credit => "credit",
            Self::Refund => "refund",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether this kind adds to the balance (`payment`, `credit`) rather than taking
    /// from it (`charge`, `refund`).
    pub fn increases_balance(self) -> bool {
        matches!(self, Self::Payment | Self::Credit)
    }

    /// The change to the balance of `amount_minor` (positive) of this kind.
    pub fn delta(self, amount_minor: i64) -> i64 {
        if self.increases_balance() {
            amount_minor
        } else {
            -amount_minor
        }
    }
}

/// Longest idempotency key of a transaction, in characters.
pub const IDEMPOTENCY_KEY_MAX_LEN: usize = 100;
/// Longest transaction description, in characters.
pub const DESCRIPTION_MAX_LEN: usize = 500;

/// A change of a client's balance, as stored: never changed afterwards.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transaction {
    pub id: TransactionId,
    pub client_id: ClientId,
    pub kind: TransactionKind,
    /// Always positive; `kind` says in which direction the balance moved.
    pub amount_minor: i64,
    /// The client's balance right after this transaction.
    pub balance_after: i64,
    /// Unique per client: the same key again replays this transaction.
    pub idempotency_key: String,
    pub description: Option<String>,
    /// Who recorded it; `None` for transactions stored before actors were recorded.
    pub actor: Option<crate::access::Actor>,
    pub created_at: DateTime<Utc>,
}

impl Transaction {
    pub fn delta(&self) -> i64 {
        self.kind.delta(self.amount_minor)
    }

    pub fn balance_before(&self) -> i64 {
        self.balance_after - self.delta()
    }

    /// Whether `new` asks for this same transaction (a replay) rather than a different one
    /// under a reused key. The description is not compared.
    pub fn is_replay_of(&self, new: &NewTransaction) -> bool {
        self.kind == new.kind && self.amount_minor == new.amount_minor
    }
}

/// A transaction about to be applied; the store assigns the id and the balance after.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTransaction {
    pub kind: TransactionKind,
    /// Positive.
    pub amount_minor: i64,
    pub idempotency_key: String,
    pub description: Option<String>,
}

impl NewTransaction {
    pub fn delta(&self) -> i64 {
        self.kind.delta(self.amount_minor)
    }
}

/// The event a balance change from `before` to `after` announces, if it crosses zero:
/// `client.balance_nonnegative` when it goes from below zero to zero or above,
/// `client.balance_nonpositive` when it goes from above zero to zero or below. A balance
/// that already was on that side (0 to -5, 0 to 5) crosses nothing.
pub fn balance_crossing(before: i64, after: i64) -> Option<&'static str> {
    if before < 0 && after >= 0 {
        Some("client.balance_nonnegative")
    } else if before > 0 && after <= 0 {
        Some("client.balance_nonpositive")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_move_the_balance_their_way() {
        assert_eq!(TransactionKind::Payment.delta(5), 5);
        assert_eq!(TransactionKind::Credit.delta(5), 5);
        assert_eq!(TransactionKind::Charge.delta(5), -5);
        assert_eq!(TransactionKind::Refund.delta(5), -5);
        for k in TransactionKind::ALL {
            assert_eq!(TransactionKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(TransactionKind::parse("gift"), None);
    }

    #[test]
    fn only_crossings_are_announced() {
        assert_eq!(balance_crossing(-5, 0), Some("client.balance_nonnegative"));
        assert_eq!(balance_crossing(-5, 3), Some("client.balance_nonnegative"));
        assert_eq!(balance_crossing(5, 0), Some("client.balance_nonpositive"));
        assert_eq!(balance_crossing(5, -3), Some("client.balance_nonpositive"));
        assert_eq!(balance_crossing(0, -5), None);
        assert_eq!(balance_crossing(0, 5), None);
        assert_eq!(balance_crossing(-5, -1), None);
        assert_eq!(balance_crossing(5, 1), None);
        assert_eq!(balance_crossing(0, 0), None);
        for e in ["client.balance_nonnegative", "client.balance_nonpositive"] {
            assert!(crate::event::CATALOGUE.contains(&e));
        }
    }
}
