//! Storage for the secret keys' check values and for resealing: the [`SecretStore`] trait,
//! the columns that hold sealed values, and compare-and-set rewrites of them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::Result;

/// Where a secret key stands in this database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKeyState {
    /// New values are sealed under it.
    Current,
    /// A rotation away from it is under way: values may still be sealed under it.
    Retiring,
    /// Nothing is sealed under it any more.
    Retired,
}

impl SecretKeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Retiring => "retiring",
            Self::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "current" => Self::Current,
            "retiring" => Self::Retiring,
            "retired" => Self::Retired,
            _ => return None,
        })
    }
}

/// One secret key the database knows, by id and check value (never the key).
#[derive(Debug, Clone, PartialEq)]
pub struct SecretKeyRecord {
    pub kid: String,
    pub check_value: String,
    pub state: SecretKeyState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Every column that can hold a sealed value: a whole sealed value (`Bytes`) or JSON with
/// sealed markers inside (`Json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SealedColumn {
    ServerSettings,
    ProductSettings,
    ServicePassword,
    ServiceSettings,
    ServiceOverrides,
    HandlerSecret,
    HandlerPreviousSecret,
    JobParams,
    IdempotencyResponse,
}

impl SealedColumn {
    pub const ALL: [SealedColumn; 9] = [
        Self::ServerSettings,
        Self::ProductSettings,
        Self::ServicePassword,
        Self::ServiceSettings,
        Self::ServiceOverrides,
        Self::HandlerSecret,
        Self::HandlerPreviousSecret,
        Self::JobParams,
        Self::IdempotencyResponse,
    ];

    /// Table and column.
    pub fn location(self) -> (&'static str, &'static str) {
        match self {
            Self::ServerSettings => ("servers", "settings"),
            Self::ProductSettings => ("products", "settings"),
            Self::ServicePassword => ("services", "password"),
            Self::ServiceSettings => ("services", "settings"),
            Self::ServiceOverrides => ("services", "product_overrides"),
            Self::HandlerSecret => ("handlers", "secret"),
            Self::HandlerPreviousSecret => ("handlers", "previous_secret"),
            Self::JobParams => ("jobs", "params"),
            Self::IdempotencyResponse => ("idempotency_keys", "response"),
        }
    }

    pub fn is_json(self) -> bool {
        !matches!(
            self,
            Self::ServicePassword
                | Self::HandlerSecret
                | Self::HandlerPreviousSecret
                | Self::IdempotencyResponse
        )
    }
}

impl std::fmt::Display for SealedColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (table, column) = self.location();
        write!(f, "{table}.{column}")
    }
}

/// A stored cell holding sealed values, exactly as read, so that a rewrite can insist the
/// cell still holds it.
#[derive(Clone, PartialEq, Eq)]
pub enum SealedCell {
    Bytes(Vec<u8>),
    /// The JSON text as the database gives it back.
    Json(String),
}

impl std::fmt::Debug for SealedCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Self::Json(t) => write!(f, "Json({} chars)", t.len()),
        }
    }
}

#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Every key the database knows, current first.
    async fn secret_keys(&self) -> Result<Vec<SecretKeyRecord>>;

    /// Records `kid` as the current key when the database has none yet (first start, or
    /// the first start after key ids came in); does nothing otherwise, also when another
    /// node recorded its own key a moment earlier. Returns the keys as they then stand.
    async fn record_first_secret_key(
        &self,
        kid: &str,
        check_value: &str,
    ) -> Result<Vec<SecretKeyRecord>>;

    /// Starts a rotation to `kid`, in one transaction: the current key becomes retiring and
    /// `kid` current. Nothing happens when `kid` is already current (a resumed rotation).
    async fn begin_secret_key_rotation(&self, kid: &str, check_value: &str) -> Result<()>;

    /// Ends a rotation: every retiring key becomes retired. Returns how many did.
    async fn retire_secret_keys(&self) -> Result<u64>;

    /// Up to `limit` cells of `column` holding sealed values, by id after `after`, oldest
    /// first. For whole sealed values, only those whose first nine bytes differ from
    /// `skip_prefix` (the format and key id values already under the wanted key start with).
    async fn sealed_cells(
        &self,
        column: SealedColumn,
        skip_prefix: &[u8],
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, SealedCell)>>;

    /// Rewrites cells of `column`, each `(id, old, new)` only while the cell still holds
    /// `old`, so that a value written meanwhile by someone else is never overwritten; all
    /// in one transaction. `new` must be the same kind of cell as `old`. Returns how many
    /// were written.
    async fn replace_sealed(
        &self,
        column: SealedColumn,
        rewrites: &[(i64, SealedCell, SealedCell)],
    ) -> Result<u64>;
}
