//! Provisio's engine: the rules between the API (or the config file) and the store.
//!
//! It keeps the records (parses input into domain types, validates settings against module
//! schemas, resolves product inheritance, places services on servers, seals secrets), turns
//! action requests into durable jobs and runs them in its worker (leases, retries, lookups,
//! limits), keeps client balances, and announces every change as an event. Around that:
//! gates and notify handlers, automation rules, usage syncs and audits, and invoice groups.

pub mod audit;
mod balance;
mod catalog;
pub mod clock;
mod declared;
mod durations;
mod error;
pub mod events;
pub mod groups;
pub mod heartbeat;
pub mod hooks;
pub mod input;
pub mod jobs;
pub mod keys;
pub mod metrics;
mod paging;
pub mod patch;
mod runtime;
pub mod secret_keys;
mod shutdown;
pub mod trace;
pub mod usage;

// The rooms' public faces under their old names, for the server, the CLI and the benches.
pub use hooks::{handlers, mailer, rules};
pub use jobs::{limits, worker};

use std::sync::Arc;
use std::time::Duration;

use provisio_core::job::RetryPolicy;
use provisio_core::money::Currency;
use provisio_core::secret::Cipher;
use provisio_modules::Registry;
use provisio_store::Store;

pub use catalog::{inherit_catalog, Ordered, ProductView};
pub use declared::{Applied, Declared, DeclaredError};
pub use error::{EngineError, Result};
pub use handlers::{DeliveryDetail, HandlerCreate, HandlerPatch, HandlerWithSecret};
pub use input::ActionInput;
pub use jobs::request::JobDetail;
pub use rules::{RuleCreate, RulePatch};

/// Instance-wide choices the engine needs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The currency of clients created without one.
    pub default_currency: Currency,
    pub jobs: JobOptions,
    /// How long stored events are kept.
    pub event_retention: Duration,
    pub hooks: HookOptions,
    /// Terminate services suspended at least this long (checked hourly); off when `None`.
    pub cleanup_after: Option<Duration>,
    pub usage: usage::UsageOptions,
    pub audit: audit::AuditOptions,
    /// How long finished history is kept before maintenance trims it.
    pub retention: RetentionOptions,
    /// What http handlers, gates and the SMTP relay may connect to.
    pub outbound: provisio_modules::outbound::OutboundPolicy,
    /// Bounds on every email template render (the `http` module has its own copy).
    pub templates: provisio_modules::render::TemplateLimits,
}

/// How long each kind of finished history is kept; `None` keeps it forever. Only finished
/// rows go, and never a service's latest job of an action.
#[derive(Debug, Clone)]
pub struct RetentionOptions {
    /// Finished jobs with their attempts.
    pub jobs: Option<Duration>,
    /// Delivered or given-up deliveries with their attempts.
    pub deliveries: Option<Duration>,
    pub rule_runs: Option<Duration>,
    /// Finished audits with their findings.
    pub audits: Option<Duration>,
    pub usage_syncs: Option<Duration>,
    /// The kept answers of requests sent with an `Idempotency-Key`: a retry within this
    /// time gets the first answer again; after it, the key may be used afresh.
    pub idempotency_keys: Option<Duration>,
    /// Rows removed per statement: small, so the database writer is never held long.
    pub batch: u32,
}

impl Default for RetentionOptions {
    fn default() -> Self {
        let days = |n: u64| Some(Duration::from_secs(n * 86_400));
        Self {
            jobs: days(90),
            deliveries: days(30),
            rule_runs: days(30),
            audits: days(90),
            usage_syncs: days(30),
            idempotency_keys: Some(Duration::from_secs(86_400)),
            batch: 500,
        }
    }
}

/// How handlers are run and their deliveries retried.
#[derive(Debug, Clone)]
pub struct HookOptions {
    /// Script handlers must live here.
    pub handlers_dir: std::path::PathBuf,
    /// Delays between the attempts of a notify delivery.
    pub schedule: provisio_core::handler::DeliverySchedule,
    /// Deliveries one process sends at once.
    pub max_in_flight: u32,
    /// How long a claimed delivery stays leased without a heartbeat (renewed every third
    /// of it while the delivery is sent); a dead process's deliveries are sent by another
    /// about this long after it died.
    pub delivery_lease: Duration,
    /// The default `disable_after` of notify handlers.
    pub disable_after: Duration,
    /// How long a rotated-out signing secret still signs.
    pub rotation_overlap: Duration,
    pub smtp: Option<mailer::SmtpOptions>,
    /// The most of an http handler's or gate's answer that is read.
    pub max_reply_bytes: usize,
    /// Rules react to events at most this many rule firings deep; deeper, the run is
    /// skipped with the reason, so rules cannot feed each other (or themselves) forever.
    pub max_rule_depth: u32,
}

impl Default for HookOptions {
    fn default() -> Self {
        Self {
            handlers_dir: std::path::PathBuf::from("handlers"),
            schedule: Default::default(),
            max_in_flight: 32,
            delivery_lease: Duration::from_secs(30),
            disable_after: Duration::from_secs(5 * 86_400),
            rotation_overlap: Duration::from_secs(86_400),
            smtp: None,
            max_reply_bytes: 1024 * 1024,
            max_rule_depth: 3,
        }
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            default_currency: Currency::parse("EUR").expect("valid"),
            jobs: JobOptions::default(),
            event_retention: Duration::from_secs(90 * 86400),
            hooks: HookOptions::default(),
            cleanup_after: None,
            usage: usage::UsageOptions::default(),
            audit: audit::AuditOptions::default(),
            retention: RetentionOptions::default(),
            outbound: Default::default(),
            templates: Default::default(),
        }
    }
}

/// How jobs are run and retried.
#[derive(Debug, Clone)]
pub struct JobOptions {
    pub retry: RetryPolicy,
    /// How long a claimed job stays leased without a heartbeat; after that another worker
    /// takes it over (looking the account up first).
    pub lease: Duration,
    /// The longest a single module call may take before it counts as an unknown outcome
    /// (modules have their own, usually shorter, timeouts).
    pub call_timeout: Duration,
    /// Jobs one worker runs at once, over all servers.
    pub max_in_flight: u32,
    /// Jobs per server a worker holds on standby beyond the server's free places (at most
    /// its fair share of them; none on a server with a rate limit or an open breaker): each
    /// begins the moment one of the worker's own calls to that server ends, in the place
    /// that call frees, without waiting for a claim. 0 turns standby off.
    pub standby: u32,
    /// How often a worker looks for due jobs when nothing woke it.
    pub poll_interval: Duration,
    /// How often it looks while the database wakes it (PostgreSQL LISTEN): only for what
    /// no notification announces, such as a slot freed on another node.
    pub fallback_poll: Duration,
    /// On shutdown, how long jobs still running may take to finish (their leases renewed)
    /// before they are cancelled and handed back to the queue.
    pub drain: Duration,
    pub breaker: limits::BreakerOptions,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            lease: Duration::from_secs(60),
            call_timeout: Duration::from_secs(15 * 60),
            max_in_flight: 256,
            standby: 8,
            poll_interval: Duration::from_millis(200),
            fallback_poll: Duration::from_secs(2),
            drain: Duration::from_secs(30),
            breaker: limits::BreakerOptions::default(),
        }
    }
}

/// The engine, shared by every request handler and the workers.
pub struct Engine {
    store: Arc<dyn Store>,
    modules: Registry,
    cipher: Cipher,
    options: EngineOptions,
    /// Wakes this process's worker when a job is enqueued.
    wake: tokio::sync::Notify,
    /// Ids of jobs this process finished, for callers waiting on an outcome.
    finished:
        tokio::sync::broadcast::Sender<(provisio_core::job::JobId, provisio_core::job::JobState)>,
    /// For http handlers: through the outbound policy, no redirects (a signed message goes
    /// where it was configured to, and a redirect would be a target nobody checked).
    http: reqwest::Client,
    smtp: Option<mailer::Mailer>,
    /// When the process began to stop, the end of its drain: callers waiting for an
    /// outcome stop waiting by then.
    drain_until: tokio::sync::watch::Sender<Option<tokio::time::Instant>>,
    /// Server and module names for the metrics' labels.
    labels: metrics::ServerLabels,
    /// The loops' heartbeats, for readiness.
    heartbeats: heartbeat::Heartbeats,
    /// Keys, resellers, products, servers and gates, checked against the catalog generation.
    catalog: catalog::cache::CatalogCache,
    /// Single orders that arrive together, stored in one write.
    order_lane: catalog::order_lane::OrderLane,
    /// Placement's reads of server loads, shared by the orders that ask together.
    load_reads: catalog::load_reads::LoadReads,
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        modules: Registry,
        cipher: Cipher,
        options: EngineOptions,
    ) -> Self {
        let smtp = options.hooks.smtp.as_ref().and_then(|o| match mailer::Mailer::new(o, &options.outbound) {
            Ok(m) => Some(m),
            Err(e) => {
                // Config loading checks this first (SmtpOptions::check); only a caller that
                // skipped it gets here.
                tracing::error!(error = %e, "the SMTP settings are unusable; email handlers will fail");
                None
            }
        });
        let http = options
            .outbound
            .http_client()
            .build()
            .expect("a client without custom TLS settings builds");
        Self {
            store,
            modules,
            cipher,
            options,
            wake: tokio::sync::Notify::new(),
            finished: tokio::sync::broadcast::channel(4096).0,
            http,
            smtp,
            drain_until: tokio::sync::watch::channel(None).0,
            labels: Default::default(),
            heartbeats: Default::default(),
            catalog: Default::default(),
            order_lane: Default::default(),
            load_reads: Default::default(),
        }
    }

    /// The process is stopping: from now on jobs drain for at most `jobs.drain`, and
    /// callers waiting for outcomes are answered by the end of it. Idempotent.
    pub fn begin_drain(&self) {
        let end = tokio::time::Instant::now() + self.options.jobs.drain;
        self.drain_until.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(end);
                true
            } else {
                false
            }
        });
    }

    /// The end of the drain, once the process began to stop.
    pub(crate) fn drain_deadline(&self) -> Option<tokio::time::Instant> {
        *self.drain_until.borrow()
    }

    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Seals a secret under this instance's key, for callers that write records directly
    /// through the store (the bench's bulk loader).
    pub fn seal_secret(&self, secret: &secrecy::SecretString) -> provisio_core::secret::Sealed {
        self.cipher.seal_str(secret)
    }

    /// Opens a value [`Engine::seal_secret`] sealed.
    pub fn open_secret(
        &self,
        sealed: &provisio_core::secret::Sealed,
    ) -> std::result::Result<secrecy::SecretString, provisio_core::secret::SecretError> {
        self.cipher.open(sealed)
    }

    /// This node's clock, set to the database's time (see [`provisio_store::Clock`]).
    pub fn clock(&self) -> &provisio_store::Clock {
        self.store.clock()
    }

    /// The time every lease, due time and stamp of this engine is read from: the
    /// database's, so that nodes whose clocks disagree still agree on whose lease holds.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.store.clock().now()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn modules(&self) -> &Registry {
        &self.modules
    }
}
