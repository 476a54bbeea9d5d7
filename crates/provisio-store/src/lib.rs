//! Provisio's storage: the [`Store`] trait and its SQLite and PostgreSQL implementations.
//!
//! The store keeps records as the engine hands them over. It never sees plaintext secrets:
//! they arrive sealed (see `provisio_core::secret`).

/// One record by one key: reads the row (`None` when there is none) and maps it to its
/// record. Every `get_*` of the SQL bodies has this shape.
macro_rules! one_by {
    ($pool:expr, $row:ty, $sql:expr, $key:expr) => {{
        let row: Option<$row> = sqlx::query_as($sql)
            .bind($key)
            .fetch_optional($pool)
            .await?;
        row.map(TryInto::try_into).transpose()
    }};
}

/// Deletes at most `$batch` rows of `$table` matching `$cond` (which reads the cut as `$1`),
/// oldest ids first, in one bounded statement, so that trimming never holds the writer
/// long. Every `trim_*` of the SQL bodies has this shape.
///
/// The batch is written into the statement, not bound: PostgreSQL's generic plan of a
/// prepared statement cannot see a bound `LIMIT`, and for `trim_jobs` it then joined the
/// whole table with itself on every batch (seconds per statement at 100,000 jobs, where the
/// plan that knows the limit walks the id index for milliseconds).
macro_rules! trim_rows {
    ($writer:expr, $table:literal, $cond:literal, $before:expr, $batch:expr) => {{
        let sql = format!(
            concat!(
                "DELETE FROM ",
                $table,
                " WHERE id IN (SELECT id FROM ",
                $table,
                " WHERE ",
                $cond,
                " ORDER BY id LIMIT {})"
            ),
            u32::from($batch)
        );
        let r = sqlx::query(&sql)
            .bind($crate::rows::ts($before))
            .execute($writer)
            .await?;
        Ok(r.rows_affected())
    }};
}

/// ` AND id IN (…)` with one bound parameter per id.
fn push_ids<'a, DB: sqlx::Database>(qb: &mut sqlx::QueryBuilder<'a, DB>, ids: &[JobId])
where
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    qb.push(" AND id IN (");
    let mut sep = qb.separated(", ");
    for id in ids {
        sep.push_bind(id.0);
    }
    qb.push(")");
}

mod actor;
mod clock;
mod conns;
mod console;
mod error;
mod group;
mod hooks;
mod idempotency;
mod postgres;
mod rows;
mod rows_hooks;
mod secrets;
mod sql;
mod sql_console;
mod sql_hooks;
mod sql_idempotency;
mod sql_secrets;
mod sql_usage;
mod sqlite;
mod usage;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
pub use provisio_core::access::{Reseller, ResellerStatus, Role, Scope};
use provisio_core::client::{Client, ClientStatus, NewClient, NewTransaction, Transaction};
use provisio_core::event::{Event, EventPattern, NewEvent};
use provisio_core::job::{Attempt, Job, JobId, JobState, NewJob};
use provisio_core::module::ErrorKind;
use provisio_core::page::{Page, PageRequest};
use provisio_core::product::{NewProduct, Product};
use provisio_core::secret::Sealed;
use provisio_core::server::{NewServer, Server};
use provisio_core::service::{NewService, Service, ServiceStatus, Suspension};
use provisio_core::settings::Settings;
use provisio_core::{ClientId, ProductId, ServerId, ServiceId};

pub use actor::{acting, acting_at, current_actor, current_depth, inherit};
pub use clock::{offset_from, warn_if_off, Clock, Sample, WARN_OFFSET};
pub use console::{
    BreakerRecord, ConsoleOverview, ConsoleSession, ConsoleStore, OverviewWindow, ServerActivity,
    ServiceTimeline, CHAIN_MAX, COUNT_CAP, FAILED_SAMPLE, TIMELINE_ATTEMPTS,
};
pub use error::StoreError;
pub use group::{DirectWrite, GroupWrite};
pub use hooks::{
    DeliveryFilter, DeliveryUpdate, HandlerFilter, HandlerHealth, HookStore, NewDelivery,
    NewRuleRun,
};
pub use idempotency::{IdempotencyClaim, IdempotencyStore};
pub use postgres::PgStore;
pub use secrets::{SealedCell, SealedColumn, SecretKeyRecord, SecretKeyState, SecretStore};
pub use sqlite::SqliteStore;
pub use usage::{AccountRow, AuditFinish, NewAudit, SyncRun, UsageApplied, UsageStore};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Makes the events announcing one stored order from its service and job
/// ([`Store::insert_orders`]). A plain function, not a closure: on SQLite the orders of
/// concurrent callers are written together by one task, which makes each caller's events.
pub type Announce = for<'a> fn(&'a Service, Option<&'a Job>) -> Vec<NewEvent>;

/// Orders as a store writes them: each service with the job that provisions it, if any.
pub(crate) type Orders = Vec<(
    provisio_core::service::NewService,
    Option<provisio_core::job::NewJob>,
)>;

/// Orders as stored, in the order given.
pub(crate) type Stored = Vec<(Service, Option<Job>)>;

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientFilter {
    pub status: Option<ClientStatus>,
    pub email: Option<String>,
    pub external_id: Option<String>,
    /// Only the clients a scoped key may see.
    pub scope: Option<Scope>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerFilter {
    pub module: Option<String>,
    pub group: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProductFilter {
    pub module: Option<String>,
    pub extends: Option<ProductId>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceFilter {
    pub status: Option<ServiceStatus>,
    pub client_id: Option<ClientId>,
    pub server_id: Option<ServerId>,
    pub product_id: Option<ProductId>,
    pub invoice: Option<String>,
    pub parent_invoice: Option<String>,
    pub username: Option<String>,
    pub external_id: Option<String>,
    /// Leave out terminated services (for counting live accounts).
    pub live_only: bool,
    /// Only services suspended at or before this time.
    pub suspended_before: Option<DateTime<Utc>>,
    /// Only the services of a group: `invoice` or `parent_invoice` is this.
    pub invoice_or_parent: Option<String>,
    /// Only the services a scoped key may see.
    pub scope: Option<Scope>,
}

/// An API key as stored: only a hash of the key itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    /// The first characters of the key, shown so a person can tell keys apart.
    pub prefix: String,
    /// Hex SHA-256 of the whole key.
    pub hash: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub role: Role,
    pub scope: Option<Scope>,
    /// What a client key may run; `None` for the role's default.
    pub actions: Option<Vec<String>>,
    /// Whether the key may read service passwords (never for `readonly`).
    pub reveal_secrets: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// Whether the key may be used at `now`: neither revoked nor expired.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|t| now < t)
    }
}

/// A key about to be stored: everything but the id and times.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApiKey {
    pub name: String,
    pub prefix: String,
    pub hash: String,
    pub role: Role,
    pub scope: Option<Scope>,
    pub actions: Option<Vec<String>>,
    pub reveal_secrets: bool,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub server_id: Option<ServerId>,
    pub service_id: Option<ServiceId>,
    /// Only pending and running jobs.
    pub open_only: bool,
    /// Only the jobs of services a scoped key may see.
    pub scope: Option<Scope>,
    /// Only jobs of this action (its stored snake_case name).
    pub action: Option<String>,
    /// Only jobs whose last error is of this kind (`transient`, `permanent`, `unknown`).
    pub error_kind: Option<String>,
    /// Only jobs created before this time (the console's age filter).
    pub created_before: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events whose type matches one of these (none: all).
    pub types: Vec<EventPattern>,
    pub subject: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only the events this actor caused: `key:ID`, `rule:ID`, `scheduler`, `config`.
    pub actor: Option<String>,
    /// Only the events of services a scoped key may see.
    pub scope: Option<Scope>,
}

/// What a worker asks for when it claims jobs.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub owner: &'a str,
    pub now: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    /// At most this many jobs in all.
    pub max_total: u32,
    /// The worker's own cap per server (rate tokens, circuit breaker); servers not named
    /// are capped only by their `max_concurrent`.
    pub allowance: &'a HashMap<ServerId, u32>,
    /// The claimer's jobs that have finished their remote call but not yet had their
    /// outcome written: their slots may be reused while they still hold the lease.
    pub finishing: &'a [JobId],
    /// How many jobs to hold on standby beyond the free places, per server named (at most
    /// the claimer's fair share; none where `allowance` names the server): leased, not yet
    /// taking a place, ready to begin the moment one of the claimer's own jobs on that
    /// server ends its call. Servers not named get none.
    pub standby: &'a HashMap<ServerId, u32>,
    /// The claimer's standby jobs it has already begun in a finished job's place (that
    /// job's outcome, not yet written, will hand the place over): neither promoted again
    /// nor counted as held.
    pub started: &'a [JobId],
}

/// What a claim took: the jobs to begin now (among them standby jobs of the claimer's
/// promoted into free places) and the jobs put on standby.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claimed {
    pub run: Vec<Job>,
    pub standby: Vec<Job>,
}

/// How a service changes when its job succeeds (or create finally fails).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceChange {
    pub status: Option<ServiceStatus>,
    /// `Some(None)` clears the suspension.
    pub suspension: Option<Option<Suspension>>,
    pub outputs: Option<Settings>,
    pub password: Option<Sealed>,
    pub product_id: Option<ProductId>,
    /// Custom fields to set on the service's client (module outputs the product copies
    /// there); announced as `client.custom_fields_updated` when they change anything.
    pub client_fields: Option<std::collections::BTreeMap<String, String>>,
    /// Moves the service to another server (the end of a transfer).
    pub server_id: Option<ServerId>,
    /// A job queued in the same transaction (a transfer's terminate on its source, which
    /// must not exist unless the target's create succeeded).
    pub follow_up: Option<NewJob>,
}

/// The end of one attempt, written with the attempt record and the service change in one
/// transaction, and only while the worker still holds the job's lease.
#[derive(Debug, Clone)]
pub struct JobUpdate {
    pub job_id: JobId,
    pub service_id: ServiceId,
    pub owner: String,
    pub state: JobState,
    pub attempts: u32,
    pub run_after: DateTime<Utc>,
    pub needs_lookup: bool,
    pub last_error: Option<String>,
    pub error_kind: Option<ErrorKind>,
    pub attempt: Attempt,
    pub service: Option<ServiceChange>,
    /// Announced with the outcome, in the same transaction.
    pub events: Vec<NewEvent>,
    /// The claimer's standby job begun in this job's place when its call ended: the same
    /// transaction makes it take the place (whether or not this job's lease still held).
    pub handed_to: Option<JobId>,
}

/// What applying a balance transaction did.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionOutcome {
    /// The stored transaction: the new one, or on a replay the one stored earlier under
    /// the same idempotency key (which may differ from the request; the caller compares).
    pub transaction: Transaction,
    /// The client as it is now.
    pub client: Client,
    /// The key was already used: nothing was changed.
    pub replayed: bool,
}

/// The queue as the metrics show it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobGauges {
    /// `(state, jobs)` for every state that has jobs.
    pub by_state: Vec<(String, i64)>,
    /// The due time (`run_after`) of the pending job due longest ago.
    pub oldest_pending_due: Option<DateTime<Utc>>,
}

/// Wake-ups from the database when jobs become pending (queued, retried, handed back),
/// on whichever node wrote them: a listening connection of its own.
pub struct JobNotifications {
    listener: sqlx::postgres::PgListener,
}

impl JobNotifications {
    /// The channel the jobs trigger (migration 0014) notifies.
    pub(crate) const CHANNEL: &'static str = "provisio_jobs";

    /// Listens on a connection of its own, from a pool of one that reconnects it.
    pub(crate) async fn listen(options: &sqlx::postgres::PgConnectOptions) -> Result<Self> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options.clone());
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
        listener.listen(Self::CHANNEL).await?;
        Ok(Self { listener })
    }

    /// Waits for the next wake-up: `true` for a notification, `false` when the connection
    /// was lost (it reconnects on the next call; what was sent meanwhile is not seen, so
    /// the caller should look for jobs as if woken).
    pub async fn next(&mut self) -> Result<bool> {
        Ok(self.listener.try_recv().await?.is_some())
    }
}

/// Durable storage for Provisio's records. Every method is one transaction.
#[async_trait]
pub trait Store:
    HookStore + UsageStore + SecretStore + IdempotencyStore + ConsoleStore + Send + Sync + 'static
{
    fn backend(&self) -> Backend;
    /// Applies pending migrations; safe to call on every start.
    async fn migrate(&self) -> Result<()>;
    /// Closes the connections.
    async fn close(&self);
    /// The migrations this build knows that the database has not applied (by version):
    /// empty when it answers and is migrated. Readiness asks this.
    async fn pending_migrations(&self) -> Result<Vec<i64>>;
    /// How many jobs are in each state, and the due time of the oldest pending job: the
    /// queue gauges one node reads every few seconds.
    async fn job_gauges(&self) -> Result<JobGauges>;
    /// This node's clock, set to the database's time: every time the store stamps and every
    /// lease or due time the engine compares comes from it.
    fn clock(&self) -> &Clock;
    /// Measures the database clock's offset from the local one (the quickest of a few round
    /// trips, see [`offset_from`]), applies it to [`Store::clock`] and returns it.
    async fn sync_clock(&self) -> Result<chrono::Duration>;

    /// Stores a client and announces it: one event of each kind in `announce`, with the
    /// stored client as payload, in the same transaction.
    async fn insert_client(&self, new: &NewClient, announce: &[&str]) -> Result<Client>;
    /// Stores clients in one transaction (all or none), each announced as `insert_client`.
    async fn insert_clients(&self, clients: &[NewClient], announce: &[&str])
        -> Result<Vec<Client>>;
    async fn find_client_by_order_key(&self, key: &str) -> Result<Option<Client>>;
    async fn get_client(&self, id: ClientId) -> Result<Option<Client>>;
    /// The clients with these ids that exist, in no particular order.
    async fn get_clients(&self, ids: &[ClientId]) -> Result<Vec<Client>>;
    /// Writes every field of `client` but `created_at` and `balance_minor` (which only
    /// [`Store::apply_transaction`] changes, so an edit never undoes a concurrent payment);
    /// sets `updated_at` to now.
    async fn update_client(&self, client: &Client, announce: &[&str]) -> Result<Client>;
    async fn delete_client(&self, id: ClientId, announce: &[&str]) -> Result<bool>;
    async fn list_clients(&self, filter: &ClientFilter, page: PageRequest) -> Result<Page<Client>>;
    /// Stores a balance transaction and moves the client's balance by its amount
    /// (atomically, `balance_minor = balance_minor + delta`) in one transaction, with
    /// `client.balance_nonnegative` / `client.balance_nonpositive` when the balance crosses
    /// zero. When the client already has a transaction under `new.idempotency_key`, that one
    /// is returned (`replayed`) and nothing changes. [`StoreError::NotFound`] for a missing
    /// client, [`StoreError::OutOfRange`] when the balance would overflow.
    async fn apply_transaction(
        &self,
        client: ClientId,
        new: &NewTransaction,
    ) -> Result<TransactionOutcome>;
    /// A client's transactions, oldest first.
    async fn list_transactions(
        &self,
        client: ClientId,
        page: PageRequest,
    ) -> Result<Page<Transaction>>;

    async fn insert_server(&self, new: &NewServer) -> Result<Server>;
    async fn get_server(&self, id: ServerId) -> Result<Option<Server>>;
    async fn get_server_by_name(&self, name: &str) -> Result<Option<Server>>;
    async fn update_server(&self, server: &Server) -> Result<Server>;
    async fn delete_server(&self, id: ServerId) -> Result<bool>;
    async fn list_servers(&self, filter: &ServerFilter, page: PageRequest) -> Result<Page<Server>>;

    async fn insert_product(&self, new: &NewProduct) -> Result<Product>;
    async fn get_product(&self, id: ProductId) -> Result<Option<Product>>;
    async fn get_product_by_name(&self, name: &str) -> Result<Option<Product>>;
    async fn update_product(&self, product: &Product) -> Result<Product>;
    async fn delete_product(&self, id: ProductId) -> Result<bool>;
    async fn list_products(
        &self,
        filter: &ProductFilter,
        page: PageRequest,
    ) -> Result<Page<Product>>;

    async fn insert_service(&self, new: &NewService) -> Result<Service>;
    async fn get_service(&self, id: ServiceId) -> Result<Option<Service>>;
    /// The services with these ids that exist, in no particular order.
    /// The service ordered under `key`, if any.
    async fn find_service_by_order_key(&self, key: &str) -> Result<Option<Service>>;
    async fn get_services(&self, ids: &[ServiceId]) -> Result<Vec<Service>>;
    async fn update_service(&self, service: &Service) -> Result<Service>;
    async fn delete_service(&self, id: ServiceId) -> Result<bool>;
    async fn list_services(
        &self,
        filter: &ServiceFilter,
        page: PageRequest,
    ) -> Result<Page<Service>>;
    async fn count_services(&self, filter: &ServiceFilter) -> Result<i64>;
    /// The live (not terminated) services of each of these servers, from the counts the
    /// database keeps with every service change (one read, however many services there
    /// are). A server not found is left out.
    async fn server_loads(
        &self,
        servers: &[ServerId],
    ) -> Result<std::collections::HashMap<ServerId, i64>>;

    /// Stores a service and, when given, the job that creates it, in one transaction.
    async fn insert_service_with_job(
        &self,
        new: &NewService,
        job: Option<&NewJob>,
    ) -> Result<(Service, Option<Job>)>;
    /// Stores services, each with the job that creates it when given, in one transaction:
    /// all or none.
    async fn insert_services_with_jobs(
        &self,
        orders: &[(NewService, Option<NewJob>)],
    ) -> Result<Vec<(Service, Option<Job>)>>;
    /// [`Store::insert_services_with_jobs`] with the events announcing the orders, which
    /// `announce` makes from each stored service and job (they need the new ids), written
    /// in the same transaction: an order is never stored unannounced, and it costs one
    /// write instead of two.
    async fn insert_orders(
        &self,
        orders: &[(NewService, Option<NewJob>)],
        announce: Announce,
    ) -> Result<Vec<(Service, Option<Job>)>>;
    /// Stores a job and the events announcing it (`service.<action>.before`) together.
    async fn enqueue_job(
        &self,
        service_id: ServiceId,
        job: &NewJob,
        events: &[NewEvent],
    ) -> Result<Job>;
    /// Stores many jobs with their events in one transaction (group operations).
    async fn enqueue_jobs(&self, jobs: &[(ServiceId, NewJob, Vec<NewEvent>)]) -> Result<Vec<Job>>;
    /// Stores a job that will not run because a gate forbade it: `cancelled` from the start,
    /// with `message` as its error and one attempt saying so, so the history shows it.
    async fn insert_refused_job(
        &self,
        service_id: ServiceId,
        job: &NewJob,
        message: &str,
    ) -> Result<Job>;
    async fn get_job(&self, id: JobId) -> Result<Option<Job>>;
    /// The jobs with these ids that exist, in no particular order.
    async fn get_jobs(&self, ids: &[JobId]) -> Result<Vec<Job>>;
    async fn list_jobs(&self, filter: &JobFilter, page: PageRequest) -> Result<Page<Job>>;
    async fn job_attempts(&self, id: JobId) -> Result<Vec<Attempt>>;
    /// Leases due jobs: per server at most `max_concurrent` running in all (across every
    /// process) and the request's allowance; never a job whose service has an earlier job
    /// still pending or running.
    async fn claim_jobs(&self, req: &ClaimRequest<'_>) -> Result<Vec<Job>> {
        Ok(self.claim_ahead(req).await?.run)
    }
    /// Claims as [`Store::claim_jobs`] does, and also the standby jobs `req.standby` asks
    /// for; promotes the claimer's standby jobs into free places before newer jobs.
    async fn claim_ahead(&self, req: &ClaimRequest<'_>) -> Result<Claimed>;
    /// Marks the worker `owner` as present at `now` (its share of every server's slots is
    /// counted among the workers seen within a lease), or, with `present` false, as gone.
    async fn queue_presence(&self, owner: &str, now: DateTime<Utc>, present: bool) -> Result<()>;
    /// A stream of wake-ups when jobs become pending on any node (PostgreSQL LISTEN), or
    /// `None` where the database has none (SQLite: one process, woken in memory).
    async fn job_notifications(&self) -> Result<Option<JobNotifications>> {
        Ok(None)
    }
    /// Extends the leases `owner` holds on `ids`.
    async fn renew_leases(&self, owner: &str, ids: &[JobId], until: DateTime<Utc>) -> Result<u64>;
    /// Hands running jobs of `owner` back to the queue at once (pending, lookup first, lease
    /// cleared): a stopping worker whose calls for them were cancelled. Returns how many.
    async fn release_jobs(&self, owner: &str, ids: &[JobId], now: DateTime<Utc>) -> Result<u64>;
    /// Hands standby jobs of `owner` that it never began back to the queue as they were
    /// (pending, lease cleared, no lookup added). Returns how many.
    async fn release_standby(&self, owner: &str, ids: &[JobId], now: DateTime<Utc>) -> Result<u64>;
    /// Puts running jobs whose lease expired back to pending, marked for a lookup first
    /// (their worker died mid-action: the outcome is unknown).
    async fn requeue_expired(&self, now: DateTime<Utc>) -> Result<u64>;
    /// Applies attempt outcomes; returns, per update, whether the lease was still held.
    async fn finish_jobs(&self, updates: &[JobUpdate]) -> Result<Vec<bool>>;
    /// A failed job back to pending, due now, with `extra_attempts` more tries.
    async fn retry_job(
        &self,
        id: JobId,
        now: DateTime<Utc>,
        extra_attempts: u32,
    ) -> Result<Option<Job>>;
    /// A failed job marked handled by a person.
    async fn resolve_job(&self, id: JobId, note: &str, now: DateTime<Utc>) -> Result<Option<Job>>;
    /// Suspended services whose `until` has passed and that have no open job.
    async fn due_unsuspends(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Service>>;

    async fn insert_events(&self, events: &[NewEvent]) -> Result<()>;
    async fn list_events(&self, filter: &EventFilter, page: PageRequest) -> Result<Page<Event>>;
    /// Removes events older than `before`; returns how many.
    async fn purge_events(&self, before: DateTime<Utc>) -> Result<u64>;
    /// Removes at most `batch` finished jobs (any state but pending and running) that
    /// finished before `before`, with their attempts; the latest job of each service and
    /// action always stays, so a service's history never loses what happened last.
    /// Returns how many went; fewer than `batch` means nothing more is due.
    async fn trim_jobs(&self, before: DateTime<Utc>, batch: u32) -> Result<u64>;

    /// The catalog generation (migration 0017): a counter bumped in the same transaction as
    /// every change to an API key (but its last use), reseller, product, server or handler,
    /// by whichever process. Copies of those records read after the counter read `n` are
    /// current for as long as it still reads `n`.
    async fn catalog_generation(&self) -> Result<i64>;

    /// A key whose name is taken by a live key answers [`StoreError::Conflict`].
    async fn insert_api_key(&self, key: &NewApiKey) -> Result<ApiKey>;
    async fn find_api_key(&self, hash: &str) -> Result<Option<ApiKey>>;
    async fn get_api_key(&self, id: i64) -> Result<Option<ApiKey>>;
    async fn touch_api_key(&self, id: i64, at: DateTime<Utc>) -> Result<()>;
    /// Every key, revoked ones included, oldest first.
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>>;
    /// Marks a key revoked (it stays on record); `None` if there is no such key.
    async fn revoke_api_key(&self, id: i64, at: DateTime<Utc>) -> Result<Option<ApiKey>>;

    async fn insert_reseller(
        &self,
        name: &provisio_core::text::DisplayName,
        status: ResellerStatus,
    ) -> Result<Reseller>;
    async fn get_reseller(&self, id: provisio_core::ResellerId) -> Result<Option<Reseller>>;
    async fn update_reseller(&self, r: &Reseller) -> Result<Reseller>;
    async fn list_resellers(&self, page: PageRequest) -> Result<Page<Reseller>>;
}

/// Opens the store a database URL names: `postgres://…` or `postgresql://…` for PostgreSQL;
/// `sqlite://PATH`, `sqlite:PATH` or a bare file path for SQLite (created if missing).
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    open_with_clock(url, Clock::system()).await
}

/// [`open`] with `clock` as this node's clock (tests give one that is off).
pub async fn open_with_clock(url: &str, clock: Clock) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect_with_clock(url, clock).await?))
    } else {
        Ok(Arc::new(SqliteStore::open_with_clock(url, clock).await?))
    }
}

/// A database URL with any password replaced, fit for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            super::redact_url("postgres://app:s3cret@127.0.0.1:5432/db"),
            "postgres://app:***@127.0.0.1:5432/db"
        );
        assert_eq!(super::redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
