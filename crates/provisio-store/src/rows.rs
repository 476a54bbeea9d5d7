//! Row shapes shared by both databases and their conversion to domain records.

use chrono::{DateTime, Utc};
use provisio_core::client::{Client, ClientStatus, Transaction, TransactionId, TransactionKind};
use provisio_core::money::Currency;
use provisio_core::product::{AutoSetup, Product};
use provisio_core::secret::Sealed;
use provisio_core::server::Server;
use provisio_core::service::{InvoiceRef, Service, ServiceStatus, SuspendReason, Suspension};
use provisio_core::settings::Settings;
use provisio_core::text::{DisplayName, Email, ExternalId, Handle, Username};
use provisio_core::{ClientId, ProductId, ServerId, ServiceId};
use sqlx::types::Json;

use crate::{ApiKey, StoreError};

pub(crate) fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_ts(us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| StoreError::Corrupt(format!("time {us}")))
}

/// A server as its events show it: secret settings left out.
pub(crate) fn server_record(s: &provisio_core::server::Server) -> (String, serde_json::Value) {
    let (settings, secrets) = provisio_core::secret::redact_settings(&s.settings);
    (
        format!("server:{}", s.id),
        serde_json::json!({"server": {
            "id": s.id, "name": s.name.as_str(), "module": s.module, "group": s.group.as_str(),
            "settings": settings, "secrets": secrets, "max_concurrent": s.max_concurrent,
            "max_per_second": s.max_per_second, "enabled": s.enabled,
        }}),
    )
}

/// A handler as its events show it: no signing secret, no email templates' text.
pub(crate) fn handler_record(h: &provisio_core::handler::Handler) -> (String, serde_json::Value) {
    (
        format!("handler:{}", h.id),
        serde_json::json!({"handler": {
            "id": h.id, "name": h.name.as_str(), "kind": h.kind.as_str(), "phase": h.phase.as_str(),
            "target": h.target, "status": h.status.as_str(),
            "events": h.events.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
            "order": h.order, "on_error": h.on_error.as_str(),
        }}),
    )
}

/// A rule as its events show it.
pub(crate) fn rule_record(r: &provisio_core::rule::Rule) -> (String, serde_json::Value) {
    (
        format!("rule:{}", r.id),
        serde_json::json!({"rule": {
            "id": r.id, "name": r.name.as_str(), "on": r.on.as_str(), "action": r.action,
            "delay_secs": r.delay.as_secs(), "enabled": r.enabled,
        }}),
    )
}

/// A product as its events show it: secret settings left out.
pub(crate) fn product_record(p: &provisio_core::product::Product) -> (String, serde_json::Value) {
    let (settings, secrets) = provisio_core::secret::redact_settings(&p.settings);
    (
        format!("product:{}", p.id),
        serde_json::json!({"product": {
            "id": p.id, "name": p.name.as_str(), "module": p.module, "extends": p.extends,
            "server_group": p.server_group.as_ref().map(|g| g.as_str()),
            "settings": settings, "secrets": secrets, "auto_setup": p.auto_setup.as_str(),
        }}),
    )
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

#[derive(sqlx::FromRow)]
pub(crate) struct ClientRow {
    id: i64,
    name: String,
    email: String,
    status: String,
    balance_minor: i64,
    currency: String,
    custom_fields: Json<std::collections::BTreeMap<String, String>>,
    created_at: i64,
    updated_at: i64,
    reseller_id: Option<i64>,
    external_id: Option<String>,
}

fn external_id(v: Option<String>) -> Result<Option<ExternalId>, StoreError> {
    v.as_deref()
        .map(ExternalId::parse)
        .transpose()
        .map_err(|e| corrupt("external_id", e))
}

impl TryFrom<ClientRow> for Client {
    type Error = StoreError;
    fn try_from(r: ClientRow) -> Result<Self, StoreError> {
        Ok(Client {
            id: ClientId(r.id),
            name: DisplayName::parse(&r.name).map_err(|e| corrupt("client name", e))?,
            email: Email::parse(&r.email).map_err(|e| corrupt("client email", e))?,
            status: ClientStatus::parse(&r.status)
                .ok_or_else(|| corrupt("client status", &r.status))?,
            balance_minor: r.balance_minor,
            currency: Currency::parse(&r.currency).map_err(|e| corrupt("currency", e))?,
            custom_fields: r.custom_fields.0,
            reseller_id: r.reseller_id.map(provisio_core::ResellerId),
            external_id: external_id(r.external_id)?,
            created_at: from_ts(r.created_at)?,
            updated_at: from_ts(r.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ServerRow {
    id: i64,
    name: String,
    module: String,
    server_group: String,
    settings: Json<Settings>,
    max_concurrent: i64,
    max_per_second: Option<i64>,
    enabled: bool,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<ServerRow> for Server {
    type Error = StoreError;
    fn try_from(r: ServerRow) -> Result<Self, StoreError> {
        Ok(Server {
            id: ServerId(r.id),
            name: Handle::parse(&r.name).map_err(|e| corrupt("server name", e))?,
            module: r.module,
            group: Handle::parse(&r.server_group).map_err(|e| corrupt("server group", e))?,
            settings: r.settings.0,
            max_concurrent: u32::try_from(r.max_concurrent)
                .map_err(|e| corrupt("max_concurrent", e))?,
            max_per_second: r
                .max_per_second
                .map(u32::try_from)
                .transpose()
                .map_err(|e| corrupt("max_per_second", e))?,
            enabled: r.enabled,
            created_at: from_ts(r.created_at)?,
            updated_at: from_ts(r.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ProductRow {
    id: i64,
    name: String,
    module: String,
    extends: Option<i64>,
    server_group: Option<String>,
    settings: Json<Settings>,
    auto_setup: String,
    client_fields: Json<provisio_core::product::ClientFieldMap>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<ProductRow> for Product {
    type Error = StoreError;
    fn try_from(r: ProductRow) -> Result<Self, StoreError> {
        Ok(Product {
            id: ProductId(r.id),
            name: Handle::parse(&r.name).map_err(|e| corrupt("product name", e))?,
            module: r.module,
            extends: r.extends.map(ProductId),
            server_group: r
                .server_group
                .as_deref()
                .map(Handle::parse)
                .transpose()
                .map_err(|e| corrupt("server group", e))?,
            settings: r.settings.0,
            auto_setup: AutoSetup::parse(&r.auto_setup)
                .ok_or_else(|| corrupt("auto_setup", &r.auto_setup))?,
            client_fields: r.client_fields.0,
            created_at: from_ts(r.created_at)?,
            updated_at: from_ts(r.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ServiceRow {
    id: i64,
    client_id: i64,
    product_id: i64,
    server_id: i64,
    username: String,
    password: Vec<u8>,
    status: String,
    suspend_reason: Option<String>,
    suspended_at: Option<i64>,
    suspended_until: Option<i64>,
    invoice: Option<String>,
    parent_invoice: Option<String>,
    settings: Json<Settings>,
    outputs: Json<Settings>,
    product_overrides: Json<Settings>,
    external_id: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl ServiceRow {
    pub(crate) fn id(&self) -> i64 {
        self.id
    }
}

impl TryFrom<ServiceRow> for Service {
    type Error = StoreError;
    fn try_from(r: ServiceRow) -> Result<Self, StoreError> {
        let invoice = |v: Option<String>| {
            v.as_deref()
                .map(InvoiceRef::parse)
                .transpose()
                .map_err(|e| corrupt("invoice", e))
        };
        let suspension = match (r.suspend_reason, r.suspended_at) {
            (Some(reason), Some(since)) => Some(Suspension {
                reason: SuspendReason::from(reason),
                since: from_ts(since)?,
                until: r.suspended_until.map(from_ts).transpose()?,
            }),
            _ => None,
        };
        Ok(Service {
            id: ServiceId(r.id),
            client_id: ClientId(r.client_id),
            product_id: ProductId(r.product_id),
            server_id: ServerId(r.server_id),
            username: Username::parse(&r.username).map_err(|e| corrupt("username", e))?,
            password: Sealed(r.password),
            status: ServiceStatus::parse(&r.status)
                .ok_or_else(|| corrupt("service status", &r.status))?,
            suspension,
            invoice: invoice(r.invoice)?,
            parent_invoice: invoice(r.parent_invoice)?,
            settings: r.settings.0,
            outputs: r.outputs.0,
            product_overrides: r.product_overrides.0,
            external_id: external_id(r.external_id)?,
            created_at: from_ts(r.created_at)?,
            updated_at: from_ts(r.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ApiKeyRow {
    id: i64,
    name: String,
    prefix: String,
    hash: String,
    created_at: i64,
    last_used_at: Option<i64>,
    role: String,
    client_id: Option<i64>,
    reseller_id: Option<i64>,
    actions: Option<Json<Vec<String>>>,
    reveal_secrets: bool,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = StoreError;
    fn try_from(r: ApiKeyRow) -> Result<Self, StoreError> {
        use provisio_core::access::{Role, Scope};
        let role = Role::parse(&r.role).ok_or_else(|| corrupt("key role", &r.role))?;
        let scope = match (r.client_id, r.reseller_id) {
            (Some(c), None) => Some(Scope::Client(provisio_core::ClientId(c))),
            (None, Some(x)) => Some(Scope::Reseller(provisio_core::ResellerId(x))),
            (None, None) => None,
            _ => return Err(corrupt("key scope", "both a client and a reseller")),
        };
        if role.is_scoped() != scope.is_some() {
            return Err(corrupt("key scope", r.role));
        }
        Ok(ApiKey {
            id: r.id,
            name: r.name,
            prefix: r.prefix,
            hash: r.hash,
            created_at: from_ts(r.created_at)?,
            last_used_at: r.last_used_at.map(from_ts).transpose()?,
            role,
            scope,
            actions: r.actions.map(|a| a.0),
            reveal_secrets: r.reveal_secrets,
            expires_at: r.expires_at.map(from_ts).transpose()?,
            revoked_at: r.revoked_at.map(from_ts).transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ResellerRow {
    id: i64,
    name: String,
    status: String,
    created_at: i64,
}

impl TryFrom<ResellerRow> for provisio_core::access::Reseller {
    type Error = StoreError;
    fn try_from(r: ResellerRow) -> Result<Self, StoreError> {
        use provisio_core::access::ResellerStatus;
        Ok(provisio_core::access::Reseller {
            id: provisio_core::ResellerId(r.id),
            name: DisplayName::parse(&r.name).map_err(|e| corrupt("reseller name", e))?,
            status: ResellerStatus::parse(&r.status)
                .ok_or_else(|| corrupt("reseller status", &r.status))?,
            created_at: from_ts(r.created_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    id: i64,
    service_id: i64,
    server_id: i64,
    action: String,
    state: String,
    params: Json<Settings>,
    idempotency_key: String,
    attempts: i64,
    max_attempts: i64,
    run_after: i64,
    lease_owner: Option<String>,
    lease_until: Option<i64>,
    needs_lookup: bool,
    last_error: Option<String>,
    error_kind: Option<String>,
    note: Option<String>,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
    #[sqlx(default)]
    actor: Option<String>,
    #[sqlx(default)]
    depth: i64,
    #[sqlx(default)]
    trace_id: Option<String>,
    #[sqlx(default)]
    standby: bool,
}

impl JobRow {
    /// Claimed ahead of a free place (migration 0020).
    pub(crate) fn standby(&self) -> bool {
        self.standby
    }
}

/// A stored actor; one this version cannot read is left out rather than failing the row.
fn actor_of(s: Option<String>) -> Option<provisio_core::access::Actor> {
    s.as_deref()
        .and_then(provisio_core::access::Actor::from_stored)
}

pub(crate) fn error_kind_str(k: provisio_core::module::ErrorKind) -> &'static str {
    k.as_str()
}

fn parse_error_kind(s: &str) -> Option<provisio_core::module::ErrorKind> {
    use provisio_core::module::ErrorKind::*;
    [Transient, Permanent, Unknown]
        .into_iter()
        .find(|k| k.as_str() == s)
}

impl TryFrom<JobRow> for provisio_core::job::Job {
    type Error = StoreError;
    fn try_from(r: JobRow) -> Result<Self, StoreError> {
        use provisio_core::job::{Job, JobId, JobState};
        Ok(Job {
            id: JobId(r.id),
            service_id: ServiceId(r.service_id),
            server_id: ServerId(r.server_id),
            action: provisio_core::module::Action::from_stored(&r.action),
            state: JobState::parse(&r.state).ok_or_else(|| corrupt("job state", &r.state))?,
            params: r.params.0,
            idempotency_key: r.idempotency_key,
            attempts: u32::try_from(r.attempts).map_err(|e| corrupt("attempts", e))?,
            max_attempts: u32::try_from(r.max_attempts).map_err(|e| corrupt("max_attempts", e))?,
            run_after: from_ts(r.run_after)?,
            lease_owner: r.lease_owner,
            lease_until: r.lease_until.map(from_ts).transpose()?,
            needs_lookup: r.needs_lookup,
            last_error: r.last_error,
            error_kind: r.error_kind.as_deref().and_then(parse_error_kind),
            note: r.note,
            actor: actor_of(r.actor),
            depth: u32::try_from(r.depth).unwrap_or(u32::MAX),
            trace_id: r
                .trace_id
                .as_deref()
                .map(|t| {
                    provisio_core::trace::TraceId::parse(t).ok_or_else(|| corrupt("trace_id", t))
                })
                .transpose()?,
            created_at: from_ts(r.created_at)?,
            updated_at: from_ts(r.updated_at)?,
            finished_at: r.finished_at.map(from_ts).transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AttemptRow {
    job_id: i64,
    attempt: i64,
    started_at: i64,
    duration_ms: i64,
    outcome: String,
    message: Option<String>,
}

impl TryFrom<AttemptRow> for provisio_core::job::Attempt {
    type Error = StoreError;
    fn try_from(r: AttemptRow) -> Result<Self, StoreError> {
        Ok(provisio_core::job::Attempt {
            job_id: provisio_core::job::JobId(r.job_id),
            attempt: u32::try_from(r.attempt).map_err(|e| corrupt("attempt", e))?,
            started_at: from_ts(r.started_at)?,
            duration_ms: r.duration_ms,
            outcome: r.outcome,
            message: r.message,
        })
    }
}

/// A server with jobs due, and how many of its jobs run now.
#[derive(sqlx::FromRow)]
pub(crate) struct CapacityRow {
    pub id: i64,
    pub max_concurrent: i64,
    pub running: i64,
    /// Of `running`, the claimer's own.
    pub own: i64,
    /// Workers seen within a lease, the claimer among them.
    pub live: i64,
    pub finishing: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    id: i64,
    #[sqlx(rename = "type")]
    kind: String,
    at: i64,
    subject: String,
    payload: Json<serde_json::Value>,
    #[sqlx(default)]
    actor: Option<String>,
    #[sqlx(default)]
    depth: i64,
}

impl TryFrom<EventRow> for provisio_core::event::Event {
    type Error = StoreError;
    fn try_from(r: EventRow) -> Result<Self, StoreError> {
        Ok(provisio_core::event::Event {
            id: provisio_core::event::EventId(r.id),
            kind: provisio_core::event::EventType::parse(&r.kind)
                .map_err(|e| corrupt("event type", e))?,
            at: from_ts(r.at)?,
            subject: r.subject,
            payload: r.payload.0,
            actor: actor_of(r.actor),
            depth: u32::try_from(r.depth).unwrap_or(u32::MAX),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct TransactionRow {
    id: i64,
    client_id: i64,
    kind: String,
    amount_minor: i64,
    balance_after: i64,
    idempotency_key: String,
    description: Option<String>,
    created_at: i64,
    #[sqlx(default)]
    actor: Option<String>,
}

impl TryFrom<TransactionRow> for Transaction {
    type Error = StoreError;
    fn try_from(r: TransactionRow) -> Result<Self, StoreError> {
        Ok(Transaction {
            id: TransactionId(r.id),
            client_id: ClientId(r.client_id),
            kind: TransactionKind::parse(&r.kind)
                .ok_or_else(|| corrupt("transaction kind", &r.kind))?,
            amount_minor: r.amount_minor,
            balance_after: r.balance_after,
            idempotency_key: r.idempotency_key,
            description: r.description,
            actor: actor_of(r.actor),
            created_at: from_ts(r.created_at)?,
        })
    }
}
