//! The typed client of Provisio's REST API (feature `client`): one method per operation
//! over the wire types of this crate, the API key on every request, an `Idempotency-Key`
//! on every POST (kept across the client's own retries, so a retried create places one
//! service), and errors decoded into [`ApiError`] with the problem document.

use std::time::Duration;

use provisio_core::module::ModuleInfo;
use provisio_core::settings::FieldError;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret as _, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::problem::Problem;
use crate::requests::{
    ActionInput, AuditInput, CleanupRequest, ClientCreate, ClientPatch, CollectQuery, GroupRequest,
    HandlerCreate, HandlerPatch, KeyCreate, LoginUrlRequest, MembersQuery, ProductCreate,
    ProductPatch, ResellerCreate, ResellerInput, ResolveBody, RetryFailedBody, RuleCreate,
    RulePatch, ServerCreate, ServerPatch, ServiceCreate, ServicePatch, SyncInput, TopupInput,
    TransactionCreate,
};
use crate::views::{
    Audit, ClientBatchAnswer, ClientView, Collected, ConnectionTestView, DeliveryDetailView,
    DeliveryView, EventView, Finding, GroupMembers, GroupOp, GroupResult, HandlerView, JobView,
    KeyView, List, LoginUrl, MemberResult, ModuleList, NewKeyView, PasswordView, ProductView,
    ResellerView, RetriedView, RuleRun, RuleView, ServerView, ServiceBatchAnswer, ServiceUsage,
    ServiceUsageLine, ServiceView, SyncReport, Topup, TransactionView, UsagePolicy, UsageReading,
};

/// The largest page the API serves, used when every page is wanted anyway.
pub const MAX_PAGE: u32 = 1000;
/// The longest the client sleeps on an in-progress 409 or a 503 before its next attempt,
/// whatever `Retry-After` says, so a caller's own timeout stays the bound.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// How the client talks to the server.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// For one attempt of one request; a held action (`wait`) adds its hold.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// How often a request whose answer was lost (a timeout, a cut connection), that
    /// found its first attempt still running (409 with `Retry-After`) or that met a busy
    /// server (503 with `Retry-After`) is sent again, after the pause the server asks. A
    /// POST is sent again under the same `Idempotency-Key`, so it acts once.
    pub retries: u32,
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            // Long enough for a busy server, short enough that a hung one does not hang a
            // caller forever.
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            retries: 2,
            user_agent: concat!("provisio-api/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// What went wrong with a request, for a program to act on and for a person as one line
/// (`Display`).
#[derive(Debug)]
pub enum ApiError {
    /// The base URL or a path could not make a URL.
    Url(String),
    /// The server answered an error status. `problem` is its problem document when the
    /// body is one; `summary` the one line a person reads (status, detail, field messages).
    Status {
        status: u16,
        problem: Option<Box<Problem>>,
        retry_after: Option<Duration>,
        summary: String,
    },
    /// No connection could be made; `refused` when nothing listens there.
    Unreachable {
        base: String,
        refused: bool,
        cause: String,
    },
    /// No answer within the timeout (after every retry).
    Timeout { base: String, secs: u64 },
    /// The connection failed while the request or answer was under way.
    Transport { base: String, cause: String },
    /// A success status with a body that is not the expected answer.
    Decode {
        base: String,
        status: u16,
        cause: String,
    },
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Url(m) => f.write_str(m),
            ApiError::Status { summary, .. } => f.write_str(summary),
            ApiError::Unreachable {
                base,
                refused: true,
                ..
            } => write!(
                f,
                "cannot reach Provisio at {base}: is 'provisio serve' running?"
            ),
            ApiError::Unreachable { base, cause, .. } => {
                write!(f, "cannot reach Provisio at {base}: {cause}")
            }
            ApiError::Timeout { base, secs } => {
                write!(f, "Provisio at {base} did not answer within {secs} seconds")
            }
            ApiError::Transport { base, cause } => {
                write!(f, "request to Provisio at {base} failed: {cause}")
            }
            ApiError::Decode {
                base,
                status,
                cause,
            } => write!(
                f,
                "Provisio at {base} answered {status} with a body that is not the expected \
                 answer ({cause}): is --url right?"
            ),
        }
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The problem document of an error answer.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ApiError::Status {
                problem: Some(p), ..
            } => Some(p),
            _ => None,
        }
    }

    /// Every field that broke a rule (empty unless a validation problem).
    pub fn field_errors(&self) -> &[FieldError] {
        self.problem().map(|p| p.errors.as_slice()).unwrap_or(&[])
    }
}

/// The records of a listing and whether the server holds more than were fetched.
#[derive(Debug, Clone)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub more: bool,
}

/// A filter or paging parameter; pairs with an empty value are left out, so unset filters
/// can be passed through as they are.
pub type Query<'a> = [(&'a str, String)];

/// A connection to one Provisio instance.
pub struct Client {
    http: reqwest::Client,
    /// The base URL as given, without a trailing slash, so paths can be appended as text.
    base: String,
    key: Option<SecretString>,
    options: ClientOptions,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("key", &self.key.as_ref().map(|_| "(secret)"))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Checks the base URL now, so a typo fails before any request with a message naming it.
    pub fn new(base_url: &str, api_key: Option<&str>) -> Result<Client, ApiError> {
        Self::with_options(base_url, api_key, ClientOptions::default())
    }

    pub fn with_options(
        base_url: &str,
        api_key: Option<&str>,
        options: ClientOptions,
    ) -> Result<Client, ApiError> {
        let base = base_url.trim().trim_end_matches('/').to_string();
        let bad = |why: String| ApiError::Url(format!("invalid --url '{base_url}': {why}"));
        let url = Url::parse(&base).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https".into()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("it must not have a query or fragment".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.timeout)
            .user_agent(options.user_agent.clone())
            .build()
            .map_err(|e| ApiError::Url(format!("cannot set up the HTTP client: {e}")))?;
        let key = api_key
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| SecretString::from(k.to_string()));
        Ok(Client {
            http,
            base,
            key,
            options,
        })
    }

    /// The base URL requests go to, for messages.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    // --- clients -------------------------------------------------------------------------

    pub async fn create_client(&self, body: &ClientCreate) -> Result<ClientView, ApiError> {
        self.post("/v1/clients", &[], Some(body), Duration::ZERO)
            .await
    }

    pub async fn get_client(&self, id: i64) -> Result<ClientView, ApiError> {
        self.get(&format!("/v1/clients/{id}"), &[]).await
    }

    /// One page of clients (`status`, `email`, `external_id`, `limit`, `cursor`, …).
    pub async fn list_clients(&self, query: &Query<'_>) -> Result<List<ClientView>, ApiError> {
        self.get("/v1/clients", query).await
    }

    /// Changes what the patch names (`custom_fields` keys set to `None` are removed).
    pub async fn update_client(
        &self,
        id: i64,
        changes: &ClientPatch,
    ) -> Result<ClientView, ApiError> {
        self.patch(&format!("/v1/clients/{id}"), changes).await
    }

    // The archive, rotate-secret and redeliver routes read no body, so none is sent.
    pub async fn archive_client(&self, id: i64) -> Result<ClientView, ApiError> {
        self.post::<(), _>(
            &format!("/v1/clients/{id}/archive"),
            &[],
            None,
            Duration::ZERO,
        )
        .await
    }

    pub async fn add_transaction(
        &self,
        client_id: i64,
        body: &TransactionCreate,
    ) -> Result<TransactionView, ApiError> {
        self.post(
            &format!("/v1/clients/{client_id}/transactions"),
            &[],
            Some(body),
            Duration::ZERO,
        )
        .await
    }

    pub async fn create_clients_batch(
        &self,
        clients: &[Value],
    ) -> Result<ClientBatchAnswer, ApiError> {
        let body = serde_json::json!({ "clients": clients });
        self.post("/v1/clients/batch", &[], Some(&body), Duration::ZERO)
            .await
    }

    // --- servers, products, modules -----------------------------------------------------

    pub async fn create_server(&self, body: &ServerCreate) -> Result<ServerView, ApiError> {
        self.post("/v1/servers", &[], Some(body), Duration::ZERO)
            .await
    }

    /// `key`: the server's id or name.
    pub async fn get_server(&self, key: &str) -> Result<ServerView, ApiError> {
        self.get(&format!("/v1/servers/{}", segment(key)), &[])
            .await
    }

    /// Changes what the patch names (`settings` keys set to `null` are removed).
    pub async fn update_server(
        &self,
        key: &str,
        changes: &ServerPatch,
    ) -> Result<ServerView, ApiError> {
        self.patch(&format!("/v1/servers/{}", segment(key)), changes)
            .await
    }

    /// Tries the server's settings against the remote, outside the queue.
    pub async fn test_server(&self, key: &str) -> Result<ConnectionTestView, ApiError> {
        self.post::<(), _>(
            &format!("/v1/servers/{}/test", segment(key)),
            &[],
            None,
            Duration::ZERO,
        )
        .await
    }

    pub async fn create_product(&self, body: &ProductCreate) -> Result<ProductView, ApiError> {
        self.post("/v1/products", &[], Some(body), Duration::ZERO)
            .await
    }

    /// `key`: the product's id or name.
    pub async fn get_product(&self, key: &str) -> Result<ProductView, ApiError> {
        self.get(&format!("/v1/products/{}", segment(key)), &[])
            .await
    }

    /// Changes what the patch names (`settings` keys set to `null` remove the override).
    pub async fn update_product(
        &self,
        key: &str,
        changes: &ProductPatch,
    ) -> Result<ProductView, ApiError> {
        self.patch(&format!("/v1/products/{}", segment(key)), changes)
            .await
    }

    pub async fn list_modules(&self) -> Result<ModuleList, ApiError> {
        self.get("/v1/modules", &[]).await
    }

    /// One module: its capabilities, custom actions and settings schemas.
    pub async fn get_module(&self, name: &str) -> Result<ModuleInfo, ApiError> {
        self.get(&format!("/v1/modules/{}", segment(name)), &[])
            .await
    }

    // --- services and actions -------------------------------------------------------------

    /// Orders a service: it starts `pending`, and its create job is queued when the
    /// product sets up on order.
    pub async fn create_service(&self, body: &ServiceCreate) -> Result<ServiceView, ApiError> {
        self.post("/v1/services", &[], Some(body), Duration::ZERO)
            .await
    }

    pub async fn get_service(&self, id: i64) -> Result<ServiceView, ApiError> {
        self.get(&format!("/v1/services/{id}"), &[]).await
    }

    pub async fn list_services(&self, query: &Query<'_>) -> Result<List<ServiceView>, ApiError> {
        self.get("/v1/services", query).await
    }

    /// Changes what the patch names; username and password only while pending.
    pub async fn update_service(
        &self,
        id: i64,
        changes: &ServicePatch,
    ) -> Result<ServiceView, ApiError> {
        self.patch(&format!("/v1/services/{id}"), changes).await
    }

    pub async fn service_password(&self, id: i64) -> Result<PasswordView, ApiError> {
        self.get(&format!("/v1/services/{id}/password"), &[]).await
    }

    /// Up to 1,000 orders, each `{"idempotency_key"?, "order": {...}}`.
    pub async fn create_services_batch(
        &self,
        orders: &[Value],
    ) -> Result<ServiceBatchAnswer, ApiError> {
        let body = serde_json::json!({ "orders": orders });
        self.post("/v1/services/batch", &[], Some(&body), Duration::ZERO)
            .await
    }

    /// Requests `action` (its wire name, `change-password`, or a module's custom action) on
    /// a service and answers its job. With `wait`, the server holds the answer until the job
    /// ends or the wait runs out, and the job is as it is then. Empty `fields` send no body.
    pub async fn service_action(
        &self,
        id: i64,
        action: &str,
        fields: &ActionInput,
        wait: Option<Duration>,
    ) -> Result<JobView, ApiError> {
        let query = [(
            "wait",
            wait.map(|w| w.as_secs().to_string()).unwrap_or_default(),
        )];
        let body = (!fields.is_empty()).then_some(fields);
        self.post(
            &format!("/v1/services/{id}/{}", segment(action)),
            &query,
            body,
            wait.unwrap_or_default(),
        )
        .await
    }

    pub async fn login_url(&self, id: i64, body: &LoginUrlRequest) -> Result<LoginUrl, ApiError> {
        self.post(
            &format!("/v1/services/{id}/login-url"),
            &[],
            Some(body),
            Duration::ZERO,
        )
        .await
    }

    /// A service's jobs (`limit`, `cursor`).
    pub async fn service_jobs(
        &self,
        id: i64,
        query: &Query<'_>,
    ) -> Result<List<JobView>, ApiError> {
        self.get(&format!("/v1/services/{id}/jobs"), query).await
    }

    // --- jobs -------------------------------------------------------------------------------

    /// One job with every attempt (`history`).
    pub async fn get_job(&self, id: i64) -> Result<JobView, ApiError> {
        self.get(&format!("/v1/jobs/{id}"), &[]).await
    }

    pub async fn list_jobs(&self, query: &Query<'_>) -> Result<List<JobView>, ApiError> {
        self.get("/v1/jobs", query).await
    }

    /// Polls the job until it is no longer pending or running, or `timeout` passes (then
    /// the job as it is).
    pub async fn wait_job(&self, id: i64, timeout: Duration) -> Result<JobView, ApiError> {
        let until = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            let job = self.get_job(id).await?;
            let open = matches!(
                job.state,
                provisio_core::job::JobState::Pending | provisio_core::job::JobState::Running
            );
            if !open || tokio::time::Instant::now() + pause > until {
                return Ok(job);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    pub async fn retry_job(&self, id: i64) -> Result<JobView, ApiError> {
        self.post::<(), _>(&format!("/v1/jobs/{id}/retry"), &[], None, Duration::ZERO)
            .await
    }

    pub async fn resolve_job(&self, id: i64, note: &str) -> Result<JobView, ApiError> {
        let body = ResolveBody {
            note: note.to_string(),
        };
        self.post(
            &format!("/v1/jobs/{id}/resolve"),
            &[],
            Some(&body),
            Duration::ZERO,
        )
        .await
    }

    /// Retries every failed job, or only those of one server (id or name).
    pub async fn retry_failed(&self, server: Option<&str>) -> Result<RetriedView, ApiError> {
        let body = RetryFailedBody {
            server: server.map(str::to_string),
        };
        self.post("/v1/jobs/retry", &[], Some(&body), Duration::ZERO)
            .await
    }

    // --- keys ------------------------------------------------------------------------------

    pub async fn list_keys(&self) -> Result<Vec<KeyView>, ApiError> {
        self.get("/v1/keys", &[]).await
    }

    /// Makes a key (`name`, `role`, and a scope for client and reseller keys); the answer
    /// holds the key, which is never shown again.
    pub async fn create_key(&self, spec: &KeyCreate) -> Result<NewKeyView, ApiError> {
        self.post("/v1/keys", &[], Some(spec), Duration::ZERO).await
    }

    pub async fn revoke_key(&self, id: i64) -> Result<KeyView, ApiError> {
        self.call::<(), _>(
            Method::DELETE,
            &format!("/v1/keys/{id}"),
            &[],
            None,
            Duration::ZERO,
        )
        .await
    }

    // --- handlers and deliveries ------------------------------------------------------------

    pub async fn list_handlers(&self) -> Result<List<HandlerView>, ApiError> {
        self.get("/v1/handlers", &[]).await
    }

    /// `key`: the handler's id or name.
    pub async fn get_handler(&self, key: &str) -> Result<HandlerView, ApiError> {
        self.get(&format!("/v1/handlers/{}", segment(key)), &[])
            .await
    }

    /// Creates a gate or notify handler; an `http` handler's signing secret is in this
    /// answer only.
    pub async fn create_handler(&self, body: &HandlerCreate) -> Result<HandlerView, ApiError> {
        self.post("/v1/handlers", &[], Some(body), Duration::ZERO)
            .await
    }

    pub async fn update_handler(
        &self,
        key: &str,
        changes: &HandlerPatch,
    ) -> Result<HandlerView, ApiError> {
        self.patch(&format!("/v1/handlers/{}", segment(key)), changes)
            .await
    }

    pub async fn delete_handler(&self, key: &str) -> Result<(), ApiError> {
        self.delete(&format!("/v1/handlers/{}", segment(key))).await
    }

    /// A new signing secret, in this answer only; the old one keeps signing for the
    /// server's rotation overlap.
    pub async fn rotate_handler_secret(&self, key: &str) -> Result<HandlerView, ApiError> {
        self.post(
            &format!("/v1/handlers/{}/rotate-secret", segment(key)),
            &[],
            None::<&()>,
            Duration::ZERO,
        )
        .await
    }

    /// One page of deliveries (`handler`, `state`, `event_id`, `limit`, `cursor`).
    pub async fn list_deliveries(&self, query: &Query<'_>) -> Result<List<DeliveryView>, ApiError> {
        self.get("/v1/deliveries", query).await
    }

    /// One delivery with its attempt log.
    pub async fn get_delivery(&self, id: i64) -> Result<DeliveryDetailView, ApiError> {
        self.get(&format!("/v1/deliveries/{id}"), &[]).await
    }

    pub async fn redeliver(&self, id: i64) -> Result<DeliveryView, ApiError> {
        self.post(
            &format!("/v1/deliveries/{id}/redeliver"),
            &[],
            None::<&()>,
            Duration::ZERO,
        )
        .await
    }

    // --- rules ----------------------------------------------------------------------------

    pub async fn list_rules(&self) -> Result<List<RuleView>, ApiError> {
        self.get("/v1/rules", &[]).await
    }

    /// `key`: the rule's id or name.
    pub async fn get_rule(&self, key: &str) -> Result<RuleView, ApiError> {
        self.get(&format!("/v1/rules/{}", segment(key)), &[]).await
    }

    pub async fn create_rule(&self, body: &RuleCreate) -> Result<RuleView, ApiError> {
        self.post("/v1/rules", &[], Some(body), Duration::ZERO)
            .await
    }

    pub async fn update_rule(&self, key: &str, changes: &RulePatch) -> Result<RuleView, ApiError> {
        self.patch(&format!("/v1/rules/{}", segment(key)), changes)
            .await
    }

    pub async fn delete_rule(&self, key: &str) -> Result<(), ApiError> {
        self.delete(&format!("/v1/rules/{}", segment(key))).await
    }

    /// One page of rule firings (`rule`, `limit`, `cursor`).
    pub async fn list_rule_runs(&self, query: &Query<'_>) -> Result<List<RuleRun>, ApiError> {
        self.get("/v1/rule-runs", query).await
    }

    // --- resellers ------------------------------------------------------------------------

    pub async fn list_resellers(&self, query: &Query<'_>) -> Result<List<ResellerView>, ApiError> {
        self.get("/v1/resellers", query).await
    }

    pub async fn get_reseller(&self, id: i64) -> Result<ResellerView, ApiError> {
        self.get(&format!("/v1/resellers/{id}"), &[]).await
    }

    pub async fn create_reseller(&self, body: &ResellerCreate) -> Result<ResellerView, ApiError> {
        self.post("/v1/resellers", &[], Some(body), Duration::ZERO)
            .await
    }

    pub async fn update_reseller(
        &self,
        id: i64,
        changes: &ResellerInput,
    ) -> Result<ResellerView, ApiError> {
        self.patch(&format!("/v1/resellers/{id}"), changes).await
    }

    // --- collect, invoice groups, clean-up ----------------------------------------------

    /// One page of `collect` (`limit`, `cursor`).
    pub async fn collect(
        &self,
        body: &CollectQuery,
        query: &Query<'_>,
    ) -> Result<List<Collected>, ApiError> {
        self.post("/v1/collect", query, Some(body), Duration::ZERO)
            .await
    }

    /// One page of an invoice group's members.
    pub async fn group_members(
        &self,
        invoice: &str,
        query: &MembersQuery,
    ) -> Result<GroupMembers, ApiError> {
        self.get(&format!("/v1/groups/{}", segment(invoice)), &query.pairs())
            .await
    }

    /// Runs `op` on one page of the group's members; a `wait` in the body holds the answer
    /// that long, and the timeout grows by as much.
    pub async fn group_operation(
        &self,
        invoice: &str,
        op: GroupOp,
        body: &GroupRequest,
    ) -> Result<GroupResult, ApiError> {
        let hold = Duration::from_secs(body.wait.unwrap_or(0));
        let op = serde_json::to_value(op)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.post(
            &format!("/v1/groups/{}/{op}", segment(invoice)),
            &[],
            Some(body),
            hold,
        )
        .await
    }

    /// The services the clean-up terminates (or would).
    pub async fn cleanup(&self, body: &CleanupRequest) -> Result<Vec<MemberResult>, ApiError> {
        self.post("/v1/cleanup", &[], Some(body), Duration::ZERO)
            .await
    }

    // --- usage ----------------------------------------------------------------------------

    /// Starts a sync of every usage-reporting server, or of one (`{"server": …}`).
    pub async fn start_usage_sync(&self, body: &SyncInput) -> Result<SyncReport, ApiError> {
        self.post("/v1/usage/syncs", &[], Some(body), Duration::ZERO)
            .await
    }

    pub async fn list_usage_syncs(&self, query: &Query<'_>) -> Result<List<SyncReport>, ApiError> {
        self.get("/v1/usage/syncs", query).await
    }

    pub async fn get_usage_sync(&self, id: i64) -> Result<SyncReport, ApiError> {
        self.get(&format!("/v1/usage/syncs/{id}"), &[]).await
    }

    pub async fn service_usage(&self, id: i64) -> Result<ServiceUsage, ApiError> {
        self.get(&format!("/v1/services/{id}/usage"), &[]).await
    }

    /// One page of many services' usage (`status`, `server_id`, `product_id`, `limit`, `cursor`).
    pub async fn usage_of_services(
        &self,
        query: &Query<'_>,
    ) -> Result<List<ServiceUsageLine>, ApiError> {
        self.get("/v1/usage/services", query).await
    }

    /// One page of a service's readings (`metric`, `limit`, `cursor`).
    pub async fn usage_history(
        &self,
        id: i64,
        query: &Query<'_>,
    ) -> Result<List<UsageReading>, ApiError> {
        self.get(&format!("/v1/services/{id}/usage/history"), query)
            .await
    }

    pub async fn list_topups(&self, id: i64) -> Result<Vec<Topup>, ApiError> {
        self.get(&format!("/v1/services/{id}/topups"), &[]).await
    }

    /// `{"metric", "amount", "note"?, "idempotency_key"?}`.
    pub async fn add_topup(&self, id: i64, body: &TopupInput) -> Result<Topup, ApiError> {
        self.post(
            &format!("/v1/services/{id}/topups"),
            &[],
            Some(body),
            Duration::ZERO,
        )
        .await
    }

    /// `product`: its id or name.
    pub async fn get_usage_policy(&self, product: &str) -> Result<UsagePolicy, ApiError> {
        self.get(
            &format!("/v1/products/{}/usage-policy", segment(product)),
            &[],
        )
        .await
    }

    pub async fn set_usage_policy(
        &self,
        product: &str,
        policy: &UsagePolicy,
    ) -> Result<UsagePolicy, ApiError> {
        self.put(
            &format!("/v1/products/{}/usage-policy", segment(product)),
            policy,
        )
        .await
    }

    pub async fn delete_usage_policy(&self, product: &str) -> Result<(), ApiError> {
        self.delete(&format!("/v1/products/{}/usage-policy", segment(product)))
            .await
    }

    // --- audits and events ----------------------------------------------------------------

    /// Starts audits (`{"server"?, "fix"?, "dry_run"?, "force"?}`); they run in the background.
    pub async fn start_audits(&self, body: &AuditInput) -> Result<Vec<Audit>, ApiError> {
        self.post("/v1/audits", &[], Some(body), Duration::ZERO)
            .await
    }

    /// One page of audits (`server`, `limit`, `cursor`).
    pub async fn list_audits(&self, query: &Query<'_>) -> Result<List<Audit>, ApiError> {
        self.get("/v1/audits", query).await
    }

    pub async fn get_audit(&self, id: i64) -> Result<Audit, ApiError> {
        self.get(&format!("/v1/audits/{id}"), &[]).await
    }

    /// An audit's findings (`kind` to keep one kind of drift).
    pub async fn audit_findings(
        &self,
        id: i64,
        query: &Query<'_>,
    ) -> Result<Vec<Finding>, ApiError> {
        self.get(&format!("/v1/audits/{id}/findings"), query).await
    }

    /// One page of events (`type`, `subject`, `since`, `until`, `actor`, `limit`, `cursor`).
    pub async fn list_events(&self, query: &Query<'_>) -> Result<List<EventView>, ApiError> {
        self.get("/v1/events", query).await
    }

    // --- the generic verbs the operations above are made of --------------------------------

    /// `GET path?query`; `path` starts with `/v1/` and has its variable segments encoded
    /// with [`segment`].
    pub async fn get<A: DeserializeOwned>(
        &self,
        path: &str,
        query: &Query<'_>,
    ) -> Result<A, ApiError> {
        self.call::<(), A>(Method::GET, path, query, None, Duration::ZERO)
            .await
    }

    /// `POST path?query` with a JSON body or none (then without a Content-Type, so the
    /// server takes its defaults), for a request the server may hold open for up to `hold`
    /// on purpose (`?wait=SECS`): the timeout is extended by that much.
    pub async fn post<B: Serialize + ?Sized, A: DeserializeOwned>(
        &self,
        path: &str,
        query: &Query<'_>,
        body: Option<&B>,
        hold: Duration,
    ) -> Result<A, ApiError> {
        self.call(Method::POST, path, query, body, hold).await
    }

    pub async fn patch<B: Serialize + ?Sized, A: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<A, ApiError> {
        self.call(Method::PATCH, path, &[], Some(body), Duration::ZERO)
            .await
    }

    pub async fn put<B: Serialize + ?Sized, A: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<A, ApiError> {
        self.call(Method::PUT, path, &[], Some(body), Duration::ZERO)
            .await
    }

    /// `DELETE path`; whatever the server answers besides the status is not needed.
    pub async fn delete(&self, path: &str) -> Result<(), ApiError> {
        self.send(Method::DELETE, path, &[], None, Duration::ZERO)
            .await
            .map(|_| ())
    }

    /// Fetches `limit` records of a listing, or with `all` every record, `limit` per request.
    pub async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        filters: &Query<'_>,
        limit: u32,
        all: bool,
    ) -> Result<Listing<T>, ApiError> {
        let mut listing = Listing {
            items: Vec::new(),
            more: false,
        };
        let mut cursor: Option<String> = None;
        loop {
            let mut query = filters.to_vec();
            query.push(("limit", limit.to_string()));
            if let Some(c) = cursor.take() {
                query.push(("cursor", c));
            }
            let page: List<T> = self.get(path, &query).await?;
            listing.items.extend(page.items);
            match page.next_cursor.filter(|c| !c.is_empty()) {
                Some(next) if all => cursor = Some(next),
                next => {
                    listing.more = next.is_some();
                    return Ok(listing);
                }
            }
        }
    }

    async fn call<B: Serialize + ?Sized, A: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &Query<'_>,
        body: Option<&B>,
        hold: Duration,
    ) -> Result<A, ApiError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ApiError::Url(format!("cannot encode the request body: {e}")))?;
        let (status, bytes) = self.send(method, path, query, body, hold).await?;
        // A 204 has no body; answer types that allow it decode from `null`.
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"null"
        } else {
            &bytes
        };
        serde_json::from_slice(text).map_err(|e| ApiError::Decode {
            base: self.base.clone(),
            status: status.as_u16(),
            cause: e.to_string(),
        })
    }

    /// Sends one request, again after a lost answer or an in-progress 409 as the options
    /// allow; every attempt of a POST carries the same `Idempotency-Key`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &Query<'_>,
        body: Option<Vec<u8>>,
        hold: Duration,
    ) -> Result<(StatusCode, Vec<u8>), ApiError> {
        let url = self.url(path, query)?;
        let timeout = self.options.timeout + hold;
        let idempotency_key = (method == Method::POST).then(new_idempotency_key);
        let mut attempt = 0;
        loop {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .timeout(timeout);
            if let Some(key) = &self.key {
                // bearer_auth marks the header sensitive, which keeps it out of debug output.
                request = request.bearer_auth(key.expose_secret());
            }
            if let Some(k) = &idempotency_key {
                request = request.header("Idempotency-Key", k);
            }
            if let Some(body) = &body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let answer = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    response
                        .bytes()
                        .await
                        .map(|b| (status, headers, b.to_vec()))
                }
                Err(e) => Err(e),
            };
            match answer {
                Ok((status, _, bytes)) if status.is_success() => return Ok((status, bytes)),
                Ok((status, headers, bytes)) => {
                    let retry_after = retry_after(&headers);
                    // The server says when to come back: an in-progress 409 (the first
                    // attempt of this very POST still runs) or a 503 (briefly unable to
                    // serve). Every attempt is idempotent, so sending it again is safe.
                    let come_back = match status {
                        StatusCode::CONFLICT => idempotency_key.is_some(),
                        StatusCode::SERVICE_UNAVAILABLE => true,
                        _ => false,
                    };
                    if come_back && retry_after.is_some() && attempt < self.options.retries {
                        attempt += 1;
                        let pause = retry_after.unwrap_or_default().min(MAX_RETRY_AFTER);
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    return Err(self.status_error(status, retry_after, &bytes));
                }
                Err(e) if lost_answer(&e) && attempt < self.options.retries => {
                    attempt += 1;
                }
                Err(e) => return Err(self.transport_error(&e, timeout)),
            }
        }
    }

    fn status_error(
        &self,
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> ApiError {
        let problem = serde_json::from_slice::<Problem>(body).ok().map(Box::new);
        let mut summary = problem_line(status, body);
        if status == StatusCode::UNAUTHORIZED && self.key.is_none() {
            summary.push_str(" (no API key given: use --api-key or PROVISIO_API_KEY)");
        }
        ApiError::Status {
            status: status.as_u16(),
            problem,
            retry_after,
            summary,
        }
    }

    fn url(&self, path: &str, query: &Query<'_>) -> Result<Url, ApiError> {
        let mut url = Url::parse(&format!("{}{path}", self.base)).map_err(|e| {
            ApiError::Url(format!(
                "cannot build a URL from '{}{path}': {e}",
                self.base
            ))
        })?;
        let pairs: Vec<_> = query.iter().filter(|(_, v)| !v.is_empty()).collect();
        if !pairs.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    fn transport_error(&self, e: &reqwest::Error, timeout: Duration) -> ApiError {
        let base = self.base.clone();
        if e.is_connect() {
            ApiError::Unreachable {
                base,
                refused: is_refused(e),
                cause: root_cause(e),
            }
        } else if e.is_timeout() {
            ApiError::Timeout {
                base,
                secs: timeout.as_secs(),
            }
        } else {
            ApiError::Transport {
                base,
                cause: root_cause(e),
            }
        }
    }
}

/// A request whose answer never came although it may have reached the server: sending it
/// again is safe only because every attempt is idempotent (a keyed POST, or a GET, PUT,
/// PATCH or DELETE). A refused connection reached nothing and fails at once.
fn lost_answer(e: &reqwest::Error) -> bool {
    e.is_timeout() || (!e.is_connect() && (e.is_request() || e.is_body()))
}

fn new_idempotency_key() -> String {
    format!("pc-{:032x}", rand::random::<u128>())
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// Encodes one variable path segment (a name may hold characters that mean something in a URL).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One line describing an error answer: the status code, the problem's `detail` (or
/// `title`), and for validation errors every field message, e.g.
/// `422 invalid input: settings.port: must be at most 65535; name: must not be empty`.
pub fn problem_line(status: StatusCode, body: &[u8]) -> String {
    let code = status.as_u16();
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let problem: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        // Not a problem document (a proxy's page, plain text): show its first line, briefly.
        _ => {
            let text = String::from_utf8_lossy(body);
            let first = text.lines().map(str::trim).find(|l| !l.is_empty());
            return match first {
                Some(line) => format!("{code} {}", truncate(line, 200)),
                None => format!("{code} {reason}"),
            };
        }
    };
    let text = |key: &str| {
        problem
            .get(key)
            .and_then(Value::as_str)
            .map(one_line)
            .filter(|s| !s.is_empty())
    };
    let detail = text("detail");
    let messages: Vec<String> = problem
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(field_message)
        .collect();
    if messages.is_empty() {
        let base = detail.or_else(|| text("title")).unwrap_or(reason);
        return format!("{code} {base}");
    }
    // The server may already have put the messages into `detail`; never say them twice,
    // but keep a detail that adds something ("invalid input").
    let prefix = detail
        .filter(|d| !messages.iter().any(|m| d.contains(m.as_str())))
        .unwrap_or_else(|| "invalid input".to_string());
    format!("{code} {prefix}: {}", messages.join("; "))
}

/// A validation error's message, prefixed with its field unless the message names it already.
fn field_message(error: &Value) -> Option<String> {
    let message = error.get("message").and_then(Value::as_str).map(one_line);
    let field = error.get("field").and_then(Value::as_str).unwrap_or("");
    match message {
        Some(m) if field.is_empty() || m.starts_with(field) => Some(m),
        Some(m) => Some(format!("{field}: {m}")),
        None if !field.is_empty() => {
            let rule = error
                .get("rule")
                .and_then(Value::as_str)
                .unwrap_or("invalid");
            Some(format!("{field}: {rule}"))
        }
        None => None,
    }
}

/// Callers print errors as one line; a multi-line server message must not break that.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn is_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(status: u16, body: &Value) -> String {
        let status = StatusCode::from_u16(status).unwrap();
        problem_line(status, body.to_string().as_bytes())
    }

    #[test]
    fn validation_errors_are_joined_after_the_detail() {
        let body = json!({
            "type": "about:blank", "title": "Unprocessable Entity", "status": 422,
            "detail": "invalid input",
            "errors": [
                {"field": "settings.port", "rule": "max", "message": "settings.port: must be at most 65535"},
                {"field": "name", "rule": "required", "message": "must not be empty"},
            ]
        });
        assert_eq!(
            line(422, &body),
            "422 invalid input: settings.port: must be at most 65535; name: must not be empty"
        );
    }

    #[test]
    fn messages_already_in_the_detail_are_not_repeated() {
        let body = json!({
            "title": "Unprocessable Entity", "status": 422,
            "detail": "invalid input: name: must not be empty",
            "errors": [{"field": "name", "rule": "required", "message": "name: must not be empty"}]
        });
        assert_eq!(
            line(422, &body),
            "422 invalid input: name: must not be empty"
        );
    }

    #[test]
    fn plain_problems_show_their_detail_or_title() {
        let not_found =
            json!({"title": "Not Found", "status": 404, "detail": "client 7 not found"});
        assert_eq!(line(404, &not_found), "404 client 7 not found");
        let conflict =
            json!({"title": "Conflict", "status": 409, "detail": "name is already taken"});
        assert_eq!(line(409, &conflict), "409 name is already taken");
        let untitled = json!({"title": "Unauthorized", "status": 401});
        assert_eq!(line(401, &untitled), "401 Unauthorized");
    }

    #[test]
    fn multi_line_details_become_one_line() {
        let body = json!({"status": 500, "detail": "storage\n  failed"});
        assert_eq!(line(500, &body), "500 storage failed");
    }

    #[test]
    fn bodies_that_are_not_problems_still_give_one_line() {
        let status = StatusCode::BAD_GATEWAY;
        assert_eq!(problem_line(status, b""), "502 bad gateway");
        assert_eq!(
            problem_line(status, b"\n<html>upstream down</html>\nmore"),
            "502 <html>upstream down</html>"
        );
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("radius-1.eu"), "radius-1.eu");
        assert_eq!(segment("a b/c?"), "a%20b%2Fc%3F");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn urls_keep_a_base_path_and_skip_empty_filters() {
        let api = Client::new("http://example.test/provisio/", None).unwrap();
        let url = api
            .url(
                "/v1/clients",
                &[("status", "active".into()), ("email", String::new())],
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://example.test/provisio/v1/clients?status=active"
        );
    }

    #[test]
    fn bad_base_urls_are_refused_with_the_flag_named() {
        let e = Client::new("ftp://x", None).unwrap_err().to_string();
        assert!(e.starts_with("invalid --url 'ftp://x'"), "{e}");
        assert!(Client::new("not a url", None).is_err());
    }

    /// Answers one request per canned `(status, body)` on a local port, closing each
    /// connection, and returns the base URL and the request heads it received.
    async fn canned(
        answers: Vec<(u16, &'static str)>,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut heads = Vec::new();
            for (status, body) in answers {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the client closed before the request ended");
                    head.extend_from_slice(&buf[..n]);
                }
                heads.push(String::from_utf8_lossy(&head).to_lowercase());
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(response.as_bytes()).await.unwrap();
            }
            heads
        });
        (base, server)
    }

    #[tokio::test]
    async fn all_follows_the_cursor_and_sends_the_key() {
        let (base, server) = canned(vec![
            (
                200,
                r#"{"items": [{"id": 1}, {"id": 2}], "next_cursor": "c2"}"#,
            ),
            (200, r#"{"items": [{"id": 3}], "next_cursor": null}"#),
        ])
        .await;
        let api = Client::new(&base, Some("k123")).unwrap();
        let filters = [("status", "active".to_string()), ("email", String::new())];
        let listing: Listing<Value> = api.list("/v1/clients", &filters, 2, true).await.unwrap();
        assert_eq!(listing.items.len(), 3);
        assert!(!listing.more);
        let heads = server.await.unwrap();
        assert!(
            heads[0].starts_with("get /v1/clients?status=active&limit=2 "),
            "{}",
            heads[0]
        );
        assert!(
            heads[1].starts_with("get /v1/clients?status=active&limit=2&cursor=c2 "),
            "{}",
            heads[1]
        );
        assert!(heads
            .iter()
            .all(|h| h.contains("authorization: bearer k123")));
    }

    #[tokio::test]
    async fn one_page_says_whether_more_remain() {
        let (base, server) = canned(vec![(
            200,
            r#"{"items": [{"id": 1}], "next_cursor": "c1"}"#,
        )])
        .await;
        let api = Client::new(&base, None).unwrap();
        let listing: Listing<Value> = api.list("/v1/servers", &[], 1, false).await.unwrap();
        assert_eq!((listing.items.len(), listing.more), (1, true));
        let heads = server.await.unwrap();
        assert!(!heads[0].contains("authorization"));
    }

    #[tokio::test]
    async fn posts_without_a_body_send_no_content_type() {
        let (base, server) = canned(vec![
            (202, r#"{"id": 1, "state": "pending"}"#),
            (200, r#"{"id": 2, "state": "done"}"#),
            (200, r#"{"ok": true, "error": null}"#),
        ])
        .await;
        let api = Client::new(&base, None).unwrap();
        let queued: Value = api
            .post::<Value, _>("/v1/services/5/renew", &[], None, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(queued["state"], "pending");
        let body = serde_json::json!({"reason": "holiday"});
        let wait = [("wait", "30".to_string())];
        let done: Value = api
            .post(
                "/v1/services/5/suspend",
                &wait,
                Some(&body),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        assert_eq!(done["state"], "done");
        api.test_server("r1").await.unwrap();
        let heads = server.await.unwrap();
        assert!(
            heads[0].starts_with("post /v1/services/5/renew "),
            "{}",
            heads[0]
        );
        assert!(!heads[0].contains("content-type"), "{}", heads[0]);
        assert!(
            heads[1].starts_with("post /v1/services/5/suspend?wait=30 "),
            "{}",
            heads[1]
        );
        assert!(heads[1].contains("content-type: application/json"));
        assert!(!heads[2].contains("content-type"), "{}", heads[2]);
        // Every POST carries a key of its own.
        let keys: Vec<&str> = heads
            .iter()
            .map(|h| {
                h.lines()
                    .find_map(|l| l.strip_prefix("idempotency-key: "))
                    .expect("an Idempotency-Key")
            })
            .collect();
        assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
    }

    #[tokio::test]
    async fn errors_and_empty_answers_come_back_as_expected() {
        let (base, _server) = canned(vec![
            (204, ""),
            (
                404,
                r#"{"title": "Not Found", "status": 404, "detail": "client 7 not found"}"#,
            ),
            (
                401,
                r#"{"title": "Unauthorized", "status": 401, "detail": "missing API key"}"#,
            ),
        ])
        .await;
        let api = Client::new(&base, None).unwrap();
        api.delete("/v1/clients/7").await.unwrap();
        let e = api.get::<Value>("/v1/clients/7", &[]).await.unwrap_err();
        assert_eq!(e.to_string(), "404 client 7 not found");
        let e = api
            .get::<Value>("/v1/clients", &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("401 missing API key (no API key given"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_url_and_the_fix() {
        // Bind then drop a listener to get a local port that nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let api = Client::new(&base, None).unwrap();
        let e = api
            .get::<Value>("/v1/clients", &[])
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("cannot reach Provisio at {base}: is 'provisio serve' running?")
        );
    }
}
