//! The bodies that start runs: usage syncs, top-ups and audits.

use provisio_core::audit::FixMode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::RecordRef;

/// `POST /v1/usage/syncs`: which servers to sync (all with the usage capability when absent).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncInput {
    /// A server by id or name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<RecordRef>,
}

/// `POST /v1/services/{id}/topups`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopupInput {
    /// The metric it adds quota to (`data`, `disk`, …).
    #[schema(pattern = r"^[a-z][a-z0-9_]{0,63}$")]
    pub metric: String,
    /// How much, in the metric's unit; more than zero.
    #[schema(exclusive_minimum = 0)]
    pub amount: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The same key again returns the first top-up and adds nothing.
    #[schema(min_length = 1, max_length = 200)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `POST /v1/audits`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditInput {
    /// A server by id or name; every enabled server that can list accounts when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<RecordRef>,
    /// Fix the drift: `local` (records follow the remote) or `remote` (the remote follows
    /// the records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<FixMode>,
    /// Report the actions a fix would take without taking them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Fix even when the remote listing was empty or ended early.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// `fix: local`: the client orphan accounts are imported under (required then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<i64>,
    /// `fix: local`: the product of imported orphans whose package matches no product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<RecordRef>,
}
