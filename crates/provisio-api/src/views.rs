//! What the API answers about each record (secrets removed, ids and times in plain JSON),
//! read by the server to answer and by the client to decode.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use provisio_core::client::{Client, ClientStatus, Transaction, TransactionKind};
use provisio_core::module::ModuleInfo;
use provisio_core::page::Page;
use provisio_core::product::AutoSetup;
use provisio_core::secret::redact_settings;
use provisio_core::server::Server;
use provisio_core::service::{Service, ServiceStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::problem::Problem;
use utoipa::ToSchema;

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> List<T> {
    pub fn from_page<R>(page: Page<R>, f: impl FnMut(R) -> T) -> Self {
        let next_cursor = page.next.map(|n| n.to_string());
        Self {
            items: page.items.into_iter().map(f).collect(),
            next_cursor,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClientView {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub status: ClientStatus,
    /// Balance in minor units of `currency`.
    pub balance_minor: i64,
    pub currency: String,
    pub custom_fields: BTreeMap<String, String>,
    /// The reseller the client belongs to, if any.
    pub reseller_id: Option<i64>,
    /// The billing system's own id for the client.
    pub external_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Client> for ClientView {
    fn from(c: Client) -> Self {
        Self {
            id: c.id.0,
            name: c.name.into(),
            email: c.email.into(),
            status: c.status,
            balance_minor: c.balance_minor,
            currency: c.currency.into(),
            custom_fields: c.custom_fields,
            reseller_id: c.reseller_id.map(|r| r.0),
            external_id: c.external_id.map(Into::into),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// A change of a client's balance. `payment` and `credit` increased it; `charge` and
/// `refund` decreased it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TransactionView {
    pub id: i64,
    pub client_id: i64,
    pub kind: TransactionKind,
    /// Positive, in minor units of the client's currency; `kind` gives the direction.
    pub amount_minor: i64,
    /// The client's balance right after this transaction.
    pub balance_after: i64,
    pub idempotency_key: String,
    pub description: Option<String>,
    /// Who recorded it.
    pub actor: Option<provisio_core::access::Actor>,
    pub created_at: DateTime<Utc>,
}

impl From<Transaction> for TransactionView {
    fn from(t: Transaction) -> Self {
        Self {
            id: t.id.0,
            client_id: t.client_id.0,
            kind: t.kind,
            amount_minor: t.amount_minor,
            balance_after: t.balance_after,
            idempotency_key: t.idempotency_key,
            description: t.description,
            actor: t.actor,
            created_at: t.created_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServerView {
    pub id: i64,
    pub name: String,
    pub module: String,
    pub group: String,
    /// Settings without the secret ones.
    #[schema(value_type = Object)]
    pub settings: Map<String, Value>,
    /// Names of the secret settings that are set (their values are never shown).
    pub secrets: Vec<String>,
    pub max_concurrent: u32,
    /// `null`: unlimited.
    pub max_per_second: Option<u32>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Server> for ServerView {
    fn from(s: Server) -> Self {
        let (settings, secrets) = redact_settings(&s.settings);
        Self {
            id: s.id.0,
            name: s.name.into(),
            module: s.module,
            group: s.group.into(),
            settings,
            secrets,
            max_concurrent: s.max_concurrent,
            max_per_second: s.max_per_second,
            enabled: s.enabled,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProductView {
    pub id: i64,
    pub name: String,
    pub module: String,
    /// The name of the product this one inherits settings from.
    pub extends: Option<String>,
    pub server_group: Option<String>,
    /// This product's own settings (overrides), without secret ones.
    #[schema(value_type = Object)]
    pub settings: Map<String, Value>,
    /// Inherited and own settings merged, defaults filled in, without secret ones.
    #[schema(value_type = Object)]
    pub effective_settings: Map<String, Value>,
    /// Names of the secret settings that are set, own or inherited.
    pub secrets: Vec<String>,
    pub auto_setup: AutoSetup,
    /// Module outputs copied into client custom fields: client field → output.
    pub client_fields: std::collections::BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SuspensionView {
    pub reason: String,
    pub since: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceView {
    pub id: i64,
    pub client_id: i64,
    pub product_id: i64,
    pub server_id: i64,
    pub username: String,
    pub status: ServiceStatus,
    pub suspension: Option<SuspensionView>,
    pub invoice: Option<String>,
    pub parent_invoice: Option<String>,
    #[schema(value_type = Object)]
    pub settings: Map<String, Value>,
    /// Values the module returned (e.g. a pass key), without secret ones.
    #[schema(value_type = Object)]
    pub outputs: Map<String, Value>,
    /// The billing system's own id for the service.
    pub external_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Service> for ServiceView {
    fn from(s: Service) -> Self {
        let (settings, _) = redact_settings(&s.settings);
        let (outputs, _) = redact_settings(&s.outputs);
        Self {
            id: s.id.0,
            client_id: s.client_id.0,
            product_id: s.product_id.0,
            server_id: s.server_id.0,
            username: s.username.into(),
            status: s.status,
            suspension: s.suspension.map(|x| SuspensionView {
                reason: x.reason.as_str().to_string(),
                since: x.since,
                until: x.until,
            }),
            invoice: s.invoice.map(Into::into),
            parent_invoice: s.parent_invoice.map(Into::into),
            settings,
            outputs,
            external_id: s.external_id.map(Into::into),
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PasswordView {
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModuleList {
    pub items: Vec<ModuleInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    /// `ok`, `transient`, `permanent`, `unknown`, `skipped` (a lookup showed it done), `cancelled`.
    pub outcome: String,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: i64,
    pub service_id: i64,
    pub server_id: i64,
    pub action: String,
    pub state: provisio_core::job::JobState,
    /// Parameters without secret ones (a new password is never shown).
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    /// The same for every attempt; modules pass it to remotes that support it.
    pub idempotency_key: String,
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_after: DateTime<Utc>,
    /// The last outcome is unknown: the next attempt looks the account up first.
    pub needs_lookup: bool,
    pub last_error: Option<String>,
    pub error_kind: Option<provisio_core::module::ErrorKind>,
    /// Set when a person resolved the job.
    pub note: Option<String>,
    /// Who asked for it: a key, a rule, the scheduler or the config file.
    pub actor: Option<provisio_core::access::Actor>,
    /// The W3C trace id (32 hex digits) of every attempt, sent to remotes in
    /// `traceparent`; absent on jobs queued before trace ids were kept.
    #[schema(value_type = Option<String>, pattern = "^[0-9a-f]{32}$")]
    pub trace_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Every attempt, on the single-job view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<AttemptView>>,
}

impl From<provisio_core::job::Job> for JobView {
    fn from(j: provisio_core::job::Job) -> Self {
        let (params, _) = redact_settings(&j.params);
        Self {
            id: j.id.0,
            service_id: j.service_id.0,
            server_id: j.server_id.0,
            action: j.action.as_str().to_string(),
            state: j.state,
            params,
            idempotency_key: j.idempotency_key,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            run_after: j.run_after,
            needs_lookup: j.needs_lookup,
            last_error: j.last_error,
            error_kind: j.error_kind,
            note: j.note,
            actor: j.actor,
            trace_id: j.trace_id.map(|t| t.to_string()),
            created_at: j.created_at,
            updated_at: j.updated_at,
            finished_at: j.finished_at,
            history: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RetriedView {
    pub retried: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConnectionTestView {
    pub ok: bool,
    /// Why the test failed (secrets removed).
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    pub id: i64,
    /// The event type, e.g. `service.suspend.succeeded`.
    #[serde(rename = "type")]
    pub kind: String,
    pub at: DateTime<Utc>,
    /// What it is about: `client:7`, `service:12`.
    pub subject: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Who caused it: a key, a rule, the scheduler or the config file.
    pub actor: Option<provisio_core::access::Actor>,
}

impl From<provisio_core::event::Event> for EventView {
    fn from(e: provisio_core::event::Event) -> Self {
        Self {
            id: e.id.0,
            kind: e.kind.as_str().to_string(),
            at: e.at,
            subject: e.subject,
            payload: e.payload,
            actor: e.actor,
        }
    }
}

impl From<provisio_core::job::Attempt> for AttemptView {
    fn from(a: provisio_core::job::Attempt) -> Self {
        Self {
            attempt: a.attempt,
            started_at: a.started_at,
            duration_ms: a.duration_ms,
            outcome: a.outcome,
            message: a.message,
        }
    }
}

impl JobView {
    /// The single-job view: the job with every attempt.
    pub fn with_history(
        job: provisio_core::job::Job,
        attempts: Vec<provisio_core::job::Attempt>,
    ) -> Self {
        let mut v = JobView::from(job);
        v.history = Some(attempts.into_iter().map(AttemptView::from).collect());
        v
    }
}

impl ProductView {
    /// A product as shown: its own and its effective settings (the engine merges the
    /// `extends` chain), both without secret values.
    pub fn new(
        p: provisio_core::product::Product,
        extends: Option<String>,
        effective: &provisio_core::settings::Settings,
    ) -> Self {
        let (settings, _) = redact_settings(&p.settings);
        let (effective_settings, secrets) = redact_settings(effective);
        Self {
            id: p.id.0,
            name: p.name.into(),
            module: p.module,
            extends,
            server_group: p.server_group.map(Into::into),
            settings,
            effective_settings,
            secrets,
            auto_setup: p.auto_setup,
            client_fields: p.client_fields,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// One order's result, at its place in the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceBatchResult {
    /// The order's position in `orders`, from 0.
    pub index: usize,
    /// 201 created, 200 placed before under its idempotency key, or the error's status.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceView>,
    /// The create job queued with it (none for products set up later).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceBatchAnswer {
    pub results: Vec<ServiceBatchResult>,
    /// Orders stored by this request.
    pub created: usize,
    /// Orders found placed before under their idempotency keys.
    pub replayed: usize,
    pub failed: usize,
}

/// One client's result, at its place in the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClientBatchResult {
    /// The client's position in `clients`, from 0.
    pub index: usize,
    /// 201 created, 200 created before under its idempotency key, or the error's status.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClientBatchAnswer {
    pub results: Vec<ClientBatchResult>,
    pub created: usize,
    pub replayed: usize,
    pub failed: usize,
}

/// The custom actions a service's server offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceActions {
    /// Names to pass as `{action}` to `POST /v1/services/{id}/{action}`.
    pub custom: Vec<String>,
}

/// A short-lived single sign-on link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoginUrl {
    pub url: String,
}

/// A key as listed: never the key itself, only its first characters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    pub id: i64,
    pub name: String,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    pub role: provisio_core::access::Role,
    pub client_id: Option<i64>,
    pub reseller_id: Option<i64>,
    /// What a client key may run; absent for the role's default.
    pub actions: Option<Vec<String>>,
    pub reveal_secrets: bool,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new key: the record, and the key itself, which is never shown again.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NewKeyView {
    #[serde(flatten)]
    pub record: KeyView,
    pub key: String,
}

// By hand, so the new key never reaches a log through `{:?}`.
impl std::fmt::Debug for NewKeyView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKeyView")
            .field("record", &self.record)
            .field("key", &"(secret)")
            .finish()
    }
}
