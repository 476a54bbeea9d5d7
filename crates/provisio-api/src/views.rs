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

// --- handlers, deliveries and rules ----------------------------------------------------

pub use provisio_core::handler::DeliveryAttempt;
pub use provisio_core::rule::RuleRun;

/// A handler as the API shows it; its signing secret only right after creation or rotation.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HandlerView {
    pub id: i64,
    pub name: String,
    pub kind: provisio_core::handler::HandlerKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<provisio_core::handler::EmailTemplate>,
    pub status: provisio_core::handler::HandlerStatus,
    pub phase: provisio_core::handler::Phase,
    pub events: Vec<String>,
    pub timeout_ms: u64,
    pub order: i32,
    /// Gates: what a failing gate means.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_error: Option<provisio_core::handler::OnError>,
    /// Notify handlers: seconds of failing before the engine disables it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_after_secs: Option<u64>,
    pub failing_since: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    /// Until when the secret before the last rotation still signs.
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// The signing secret: present only in the answer that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

// By hand, so a signing secret never reaches a log through `{:?}`.
impl std::fmt::Debug for HandlerView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerView")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("phase", &self.phase)
            .field("status", &self.status)
            .field("secret", &self.secret.as_ref().map(|_| "(secret)"))
            .finish_non_exhaustive()
    }
}

impl From<provisio_core::handler::Handler> for HandlerView {
    fn from(h: provisio_core::handler::Handler) -> Self {
        use provisio_core::handler::{HandlerKind, Phase};
        let target = |k| (h.kind == k).then(|| h.target.clone());
        Self {
            id: h.id.0,
            url: target(HandlerKind::Http),
            script: target(HandlerKind::Script),
            name: h.name.into(),
            kind: h.kind,
            email: h.email,
            status: h.status,
            phase: h.phase,
            events: h.events.iter().map(|p| p.as_str().to_string()).collect(),
            timeout_ms: h.timeout.as_millis() as u64,
            order: h.order,
            on_error: (h.phase == Phase::Gate).then_some(h.on_error),
            disable_after_secs: (h.phase == Phase::Notify).then_some(h.disable_after.as_secs()),
            failing_since: h.failing_since,
            disabled_reason: h.disabled_reason,
            previous_secret_until: h.previous_secret_until.filter(|t| *t > Utc::now()),
            secret: None,
            created_at: h.created_at,
            updated_at: h.updated_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub handler_id: i64,
    pub event_id: i64,
    pub event_type: String,
    pub subject: String,
    pub state: provisio_core::handler::DeliveryState,
    pub attempts: u32,
    /// When the next attempt runs, while it is pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<provisio_core::handler::Delivery> for DeliveryView {
    fn from(d: provisio_core::handler::Delivery) -> Self {
        use provisio_core::handler::DeliveryState;
        Self {
            id: d.id.0,
            handler_id: d.handler_id.0,
            event_id: d.event_id.0,
            event_type: d.event_type.to_string(),
            subject: d.subject,
            next_attempt_at: (d.state == DeliveryState::Pending).then_some(d.next_at),
            state: d.state,
            attempts: d.attempts,
            last_error: d.last_error,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryDetailView {
    #[serde(flatten)]
    pub delivery: DeliveryView,
    /// Every attempt: when, how long, the status code and the start of the answer.
    pub log: Vec<DeliveryAttempt>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RuleView {
    pub id: i64,
    pub name: String,
    pub on: String,
    pub action: provisio_core::rule::RuleAction,
    pub delay_secs: u64,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<provisio_core::rule::Rule> for RuleView {
    fn from(r: provisio_core::rule::Rule) -> Self {
        Self {
            id: r.id.0,
            name: r.name.into(),
            on: r.on.to_string(),
            action: r.action,
            delay_secs: r.delay.as_secs(),
            enabled: r.enabled,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

// --- resellers -------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResellerView {
    pub id: i64,
    pub name: String,
    pub status: provisio_core::access::ResellerStatus,
    pub created_at: DateTime<Utc>,
}

impl From<provisio_core::access::Reseller> for ResellerView {
    fn from(r: provisio_core::access::Reseller) -> Self {
        Self {
            id: r.id.0,
            name: r.name.into(),
            status: r.status,
            created_at: r.created_at,
        }
    }
}

// --- collect and invoice groups --------------------------------------------------------

/// What a group operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupOp {
    Edit,
    Suspend,
    Activate,
    Delete,
    Transfer,
}

impl GroupOp {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "edit" => Self::Edit,
            "suspend" => Self::Suspend,
            "activate" => Self::Activate,
            "delete" => Self::Delete,
            "transfer" => Self::Transfer,
            _ => return None,
        })
    }
}

/// What happened (or would happen) to one member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MemberResult {
    pub service_id: i64,
    pub username: String,
    /// `master` (its `invoice` is the group's) or `child`.
    pub role: String,
    pub status: String,
    /// What it undergoes: `suspend`, `terminate`, `change_package`, `move to client 4`, or
    /// `nothing` with the reason in `detail`.
    pub action: String,
    /// `planned` (dry run), `queued`, `done`, `failed`, `skipped` or `refused`.
    pub outcome: String,
    pub job_id: Option<i64>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GroupResult {
    pub invoice: String,
    pub operation: GroupOp,
    pub dry_run: bool,
    /// This page's members, masters first.
    pub members: Vec<MemberResult>,
    /// More members remain: send the same request again with this as `after`. `null` on
    /// the last page.
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GroupMembers {
    pub invoice: String,
    pub members: Vec<MemberResult>,
    /// More members remain: ask again with this as `after`; `null` on the last page.
    pub next: Option<String>,
}

/// One service as `collect` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Collected {
    pub service_id: i64,
    /// Whether the service is active (not suspended, not ended).
    pub active: bool,
    /// The chosen fields, nested by their dots.
    #[schema(value_type = Object)]
    pub values: Value,
}

// --- usage -----------------------------------------------------------------------------

pub use provisio_core::usage::{Topup, UsagePolicy, UsageReading};

/// One server's part of a sync.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServerSync {
    pub server_id: i64,
    pub server: String,
    /// `pending`, `running`, `done`, `failed`.
    pub state: String,
    /// Live local services on the server: what progress is measured against.
    pub expected: u64,
    /// Accounts the remote reported so far.
    pub reported: u64,
    pub pages: u64,
    /// Services whose usage changed.
    pub services_updated: u64,
    /// Reported usernames with no live local service.
    pub unknown_usernames: u64,
    /// Up to ten of them, for a person to look at.
    pub unknown_sample: Vec<String>,
    pub exceeded: u64,
    pub errors: Vec<String>,
    pub duration_ms: u64,
}

/// A sync run as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SyncReport {
    pub id: i64,
    /// `running`, `done` (every server synced), `partial` (some failed).
    pub state: String,
    pub servers: Vec<ServerSync>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A service's usage: current values per metric, top-ups and the quota left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceUsage {
    pub service_id: i64,
    pub metrics: Vec<MetricView>,
    pub topups: Vec<Topup>,
}

/// One service of a usage listing: who it is to the billing system and its usage now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceUsageLine {
    pub service_id: i64,
    /// The billing system's id for the service (WHMCS's `serviceid`).
    pub external_id: Option<String>,
    pub username: String,
    pub status: ServiceStatus,
    pub metrics: Vec<MetricView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricView {
    pub metric: String,
    pub used: f64,
    pub limit: Option<f64>,
    pub unit: Option<String>,
    pub period_start: DateTime<Utc>,
    /// Top-up quota not yet consumed (over all periods).
    pub topup_left: f64,
    /// Consumed from top-ups in this period.
    pub topup_used: f64,
    /// `limit` plus every top-up this period may still draw; `None` without a limit.
    pub quota: Option<f64>,
    pub exceeded: bool,
    pub updated_at: DateTime<Utc>,
}

// --- audits ----------------------------------------------------------------------------

pub use provisio_core::audit::{Audit, Finding};
