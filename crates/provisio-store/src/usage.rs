//! Storage for usage (current values, readings, top-ups, product policies), usage sync runs
//! and audit reports: the [`UsageStore`] trait and its row shapes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use provisio_core::audit::{Audit, AuditState, Finding, FixMode};
use provisio_core::event::NewEvent;
use provisio_core::page::{Page, PageRequest};
use provisio_core::service::ServiceStatus;
use provisio_core::usage::{
    NewReading, NewTopup, StoredPolicy, Topup, UsagePolicy, UsageReading, UsageState,
};
use provisio_core::{ProductId, ServerId, ServiceId};
use sqlx::types::Json;

use crate::rows::from_ts;
use crate::{Result, StoreError};

/// What applying one reading did.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageApplied {
    pub state: UsageState,
    pub changed: bool,
    /// `service.usage_exceeded` was announced for it.
    pub exceeded_now: bool,
}

/// A usage sync run and its report (per server progress and totals, as JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct SyncRun {
    pub id: i64,
    pub slot: Option<String>,
    pub state: String,
    pub report: serde_json::Value,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewAudit {
    pub server_id: ServerId,
    /// A scheduled audit's time slot: a second process planning the same slot gets `None`.
    pub slot: Option<String>,
    pub fix: Option<FixMode>,
    pub dry_run: bool,
    pub force: bool,
}

/// The end of an audit, written with the events announcing it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditFinish {
    pub state: AuditState,
    pub remote_accounts: i64,
    pub local_services: i64,
    pub counts: std::collections::BTreeMap<String, i64>,
    pub note: Option<String>,
    pub findings: Vec<Finding>,
}

/// One live local service, as much as a sync or an audit needs.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountRow {
    pub service_id: ServiceId,
    pub username: String,
    pub status: ServiceStatus,
    pub product_id: ProductId,
}

#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Applies readings in one transaction: current values, top-up consumption, a history
    /// row per changed value, and `service.usage_updated` (per service) and
    /// `service.usage_exceeded` (per service and metric, once per period) events.
    async fn apply_usage(&self, readings: &[NewReading]) -> Result<Vec<UsageApplied>>;
    async fn service_usage(&self, id: ServiceId) -> Result<Vec<UsageState>>;
    /// The current usage and the top-ups of many services at once (a page of a listing),
    /// in a few `IN (…)` queries rather than two per service.
    async fn usage_of_services(&self, ids: &[ServiceId]) -> Result<(Vec<UsageState>, Vec<Topup>)>;
    /// Readings of a service (optionally one metric), oldest first.
    async fn usage_readings(
        &self,
        id: ServiceId,
        metric: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<UsageReading>>;
    /// Removes readings taken before `before`; returns how many.
    async fn purge_usage_readings(&self, before: DateTime<Utc>) -> Result<u64>;
    /// Adds a top-up; with an idempotency key already used for the service, returns the
    /// earlier one and `true` (nothing changed).
    async fn add_topup(&self, service: ServiceId, new: &NewTopup) -> Result<(Topup, bool)>;
    async fn list_topups(&self, service: ServiceId) -> Result<Vec<Topup>>;

    async fn set_usage_policy(&self, product: ProductId, policy: &UsagePolicy) -> Result<()>;
    async fn delete_usage_policy(&self, product: ProductId) -> Result<bool>;
    async fn usage_policies(&self) -> Result<Vec<StoredPolicy>>;

    /// Starts a sync run; `None` when `slot` is already taken (another process runs it).
    async fn insert_sync_run(
        &self,
        slot: Option<&str>,
        report: &serde_json::Value,
    ) -> Result<Option<SyncRun>>;
    async fn update_sync_run(
        &self,
        id: i64,
        state: &str,
        report: &serde_json::Value,
        finished: bool,
    ) -> Result<()>;
    async fn get_sync_run(&self, id: i64) -> Result<Option<SyncRun>>;
    /// Newest first would be nicer to read, but cursors grow: oldest first like every list.
    async fn list_sync_runs(&self, page: PageRequest) -> Result<Page<SyncRun>>;
    /// Removes at most `batch` usage sync runs that finished before `before` (never one
    /// still running). Returns how many.
    async fn trim_sync_runs(&self, before: DateTime<Utc>, batch: u32) -> Result<u64>;
    /// Removes at most `batch` audits that finished before `before`, findings with them
    /// (they are stored in the audit's row); never one still running. Returns how many.
    async fn trim_audits(&self, before: DateTime<Utc>, batch: u32) -> Result<u64>;

    /// Starts an audit; `None` when its slot is taken.
    async fn insert_audit(&self, new: &NewAudit) -> Result<Option<Audit>>;
    async fn finish_audit(&self, id: i64, fin: &AuditFinish, events: &[NewEvent]) -> Result<Audit>;
    async fn get_audit(&self, id: i64) -> Result<Option<Audit>>;
    async fn audit_findings(&self, id: i64) -> Result<Option<Vec<Finding>>>;
    async fn list_audits(&self, server: Option<ServerId>, page: PageRequest)
        -> Result<Page<Audit>>;

    /// Every service on a server that is not terminated.
    async fn server_accounts(&self, server: ServerId) -> Result<Vec<AccountRow>>;

    /// Stores a service an audit found only on the remote, announced as `service.imported`
    /// in the same transaction.
    async fn audit_import(
        &self,
        new: &provisio_core::service::NewService,
        audit_id: i64,
    ) -> Result<provisio_core::service::Service>;
    /// Sets what an audit found on the remote (status and/or product) on a service whose
    /// status is still `expected`, announced as `service.status_corrected`; `None` when the
    /// service changed meanwhile. A new `suspended` status records reason `audit`.
    async fn audit_correct(
        &self,
        id: ServiceId,
        expected: ServiceStatus,
        status: Option<ServiceStatus>,
        product: Option<ProductId>,
        audit_id: i64,
    ) -> Result<Option<provisio_core::service::Service>>;
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

#[derive(sqlx::FromRow)]
pub(crate) struct UsageRow {
    service_id: i64,
    metric: String,
    period_start: i64,
    used: f64,
    limit_value: Option<f64>,
    unit: Option<String>,
    topup_used: f64,
    exceeded_period: Option<i64>,
    updated_at: i64,
}

impl TryFrom<UsageRow> for UsageState {
    type Error = StoreError;
    fn try_from(r: UsageRow) -> Result<Self> {
        Ok(UsageState {
            service_id: ServiceId(r.service_id),
            metric: r.metric,
            period_start: from_ts(r.period_start)?,
            used: r.used,
            limit: r.limit_value,
            unit: r.unit,
            topup_used: r.topup_used,
            exceeded_period: r.exceeded_period.map(from_ts).transpose()?,
            updated_at: from_ts(r.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ReadingRow {
    id: i64,
    service_id: i64,
    metric: String,
    period_start: i64,
    used: f64,
    limit_value: Option<f64>,
    at: i64,
}

impl TryFrom<ReadingRow> for UsageReading {
    type Error = StoreError;
    fn try_from(r: ReadingRow) -> Result<Self> {
        Ok(UsageReading {
            id: r.id,
            service_id: ServiceId(r.service_id),
            metric: r.metric,
            period_start: from_ts(r.period_start)?,
            used: r.used,
            limit: r.limit_value,
            at: from_ts(r.at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct TopupRow {
    pub(crate) id: i64,
    pub(crate) service_id: i64,
    pub(crate) metric: String,
    pub(crate) amount: f64,
    pub(crate) consumed: f64,
    note: Option<String>,
    idempotency_key: Option<String>,
    created_at: i64,
}

impl TryFrom<TopupRow> for Topup {
    type Error = StoreError;
    fn try_from(r: TopupRow) -> Result<Self> {
        Ok(Topup {
            id: r.id,
            service_id: ServiceId(r.service_id),
            metric: r.metric,
            amount: r.amount,
            consumed: r.consumed,
            note: r.note,
            idempotency_key: r.idempotency_key,
            created_at: from_ts(r.created_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct PolicyRow {
    product_id: i64,
    policy: Json<serde_json::Value>,
}

impl TryFrom<PolicyRow> for StoredPolicy {
    type Error = StoreError;
    fn try_from(r: PolicyRow) -> Result<Self> {
        Ok(StoredPolicy {
            product_id: ProductId(r.product_id),
            policy: serde_json::from_value(r.policy.0).map_err(|e| corrupt("usage policy", e))?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SyncRow {
    id: i64,
    slot: Option<String>,
    state: String,
    report: Json<serde_json::Value>,
    started_at: i64,
    finished_at: Option<i64>,
}

impl TryFrom<SyncRow> for SyncRun {
    type Error = StoreError;
    fn try_from(r: SyncRow) -> Result<Self> {
        Ok(SyncRun {
            id: r.id,
            slot: r.slot,
            state: r.state,
            report: r.report.0,
            started_at: from_ts(r.started_at)?,
            finished_at: r.finished_at.map(from_ts).transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    id: i64,
    server_id: i64,
    state: String,
    fix: Option<String>,
    dry_run: bool,
    force: bool,
    remote_accounts: i64,
    local_services: i64,
    counts: Json<std::collections::BTreeMap<String, i64>>,
    note: Option<String>,
    started_at: i64,
    finished_at: Option<i64>,
}

impl TryFrom<AuditRow> for Audit {
    type Error = StoreError;
    fn try_from(r: AuditRow) -> Result<Self> {
        let fix = match r.fix.as_deref() {
            None => None,
            Some("local") => Some(FixMode::Local),
            Some("remote") => Some(FixMode::Remote),
            Some(other) => return Err(corrupt("audit fix", other)),
        };
        Ok(Audit {
            id: r.id,
            server_id: ServerId(r.server_id),
            state: AuditState::parse(&r.state).ok_or_else(|| corrupt("audit state", &r.state))?,
            fix,
            dry_run: r.dry_run,
            force: r.force,
            remote_accounts: r.remote_accounts,
            local_services: r.local_services,
            counts: r.counts.0,
            note: r.note,
            started_at: from_ts(r.started_at)?,
            finished_at: r.finished_at.map(from_ts).transpose()?,
        })
    }
}

/// The columns of an audit without its findings (which may be large).
pub(crate) const AUDIT_COLUMNS: &str = "id, server_id, state, fix, dry_run, force, \
    remote_accounts, local_services, counts, note, started_at, finished_at";

#[derive(sqlx::FromRow)]
pub(crate) struct AccountRowRaw {
    id: i64,
    username: String,
    status: String,
    product_id: i64,
}

impl TryFrom<AccountRowRaw> for AccountRow {
    type Error = StoreError;
    fn try_from(r: AccountRowRaw) -> Result<Self> {
        Ok(AccountRow {
            service_id: ServiceId(r.id),
            username: r.username,
            status: ServiceStatus::parse(&r.status)
                .ok_or_else(|| corrupt("service status", &r.status))?,
            product_id: ProductId(r.product_id),
        })
    }
}
