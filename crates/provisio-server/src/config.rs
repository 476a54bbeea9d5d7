//! Configuration: embedded defaults, then a TOML file, then `PROVISIO_*` environment
//! variables, then command-line flags, parsed once into [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use provisio_engine::Declared;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Everything `provisio serve` needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the REST API listens on.
    pub listen: SocketAddr,
    /// `sqlite://PATH` (or a bare path) or `postgres://…`.
    pub database_url: String,
    /// The 32-byte key that encrypts secrets at rest, as 64 hex characters or base64. When
    /// absent, the key is read from `secret_key_file`, which is created on first start.
    #[serde(default)]
    pub secret_key: Option<SecretString>,
    pub secret_key_file: PathBuf,
    /// Where the first admin API key is written when the database has none.
    pub admin_key_file: PathBuf,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The currency of clients created without one.
    pub default_currency: String,
    /// Log lines as JSON instead of text.
    pub log_json: bool,
    /// Where the `script` module finds executables; paths outside it are refused.
    pub modules_dir: PathBuf,
    /// Run the job worker in this process (an API-only node sets this to false).
    pub worker: bool,
    /// Days stored events are kept.
    pub event_retention_days: u32,
    /// How jobs are run and retried.
    pub jobs: JobsConfig,
    /// Where script handlers must live; paths outside it are refused.
    pub handlers_dir: PathBuf,
    /// How notify deliveries are retried and handlers disabled.
    pub hooks: HooksConfig,
    /// Usage sync: period, page size, schedule.
    pub usage: UsageConfig,
    /// Audits: schedule, page size.
    pub audit: AuditConfig,
    /// The relay email handlers send through.
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    /// Periodic clean-up of long-suspended services.
    #[serde(default)]
    pub cleanup: CleanupConfig,
    /// Bounds on the HTTP server: how long a request may take and how many run at once.
    #[serde(default)]
    pub http: HttpConfig,
    /// How long finished history is kept.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Export of job-attempt and delivery spans over OTLP; off unless an endpoint is set.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// What modules, handlers and the SMTP relay may connect to, and how much of an answer
    /// is read.
    #[serde(default)]
    pub outbound: OutboundConfig,
    /// Bounds on every template render (`http` module, email handlers).
    #[serde(default)]
    pub templates: TemplatesConfig,
    /// The admin console at `/console`: how long a sign-in lasts, whether its cookie is
    /// marked `Secure`.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// Servers, products, handlers and rules declared in the file, applied at start.
    #[serde(default)]
    pub servers: Vec<serde_json::Value>,
    #[serde(default)]
    pub products: Vec<serde_json::Value>,
    #[serde(default)]
    pub handlers: Vec<serde_json::Value>,
    #[serde(default)]
    pub rules: Vec<serde_json::Value>,
}

/// The `[http]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Seconds a request may take before it is answered 503; longer than the longest
    /// `?wait=` (300 s) so that only a hung request meets it.
    pub request_timeout_seconds: u64,
    /// Requests served at once; beyond it a request is answered 503 with `Retry-After`
    /// rather than queued without bound. `/healthz` is never refused.
    pub max_concurrent_requests: usize,
    /// Requests with an invalid key one client address may make in a minute; past it the
    /// address is answered 429 with `Retry-After`, whatever key it sends, until the minute
    /// ends.
    pub auth_failures_per_minute: u32,
    /// Largest body of a batch request (`POST /v1/services/batch`, `/v1/clients/batch`),
    /// in bytes; every other request keeps to `max_body_bytes`.
    pub max_batch_body_bytes: usize,
    /// An address (`127.0.0.1:9464`) serving `/metrics` and `/readyz` without a key, for a
    /// Prometheus scraper on a private network; off when absent.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            request_timeout_seconds: 330,
            max_concurrent_requests: 1024,
            auth_failures_per_minute: 20,
            max_batch_body_bytes: 16 * 1024 * 1024,
            metrics_listen: None,
        }
    }
}

/// The `[console]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// How long a console sign-in lasts (`"12 hours"`, `"30m"`): 1 minute to 30 days.
    pub session_ttl: String,
    /// Mark the session cookie `Secure`. Provisio serves plain HTTP, so set this when a TLS
    /// proxy is in front of it; a request that arrives with `X-Forwarded-Proto: https` gets
    /// a `Secure` cookie either way.
    pub secure_cookie: bool,
    /// How long the overview's counts and chart are kept before they are read again
    /// (seconds, 0 to 60; 0 reads them on every look). The page says when they were read.
    pub overview_cache_seconds: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            session_ttl: "12 hours".into(),
            secure_cookie: false,
            overview_cache_seconds: 5,
        }
    }
}

impl ConsoleConfig {
    /// The session lifetime, or an error naming the key and its range.
    pub fn ttl(&self) -> Result<std::time::Duration, ConfigError> {
        let d = parse_duration(&self.session_ttl)
            .map_err(|m| ConfigError::Invalid(format!("console.session_ttl: {m}")))?;
        if d < std::time::Duration::from_secs(60) || d > std::time::Duration::from_secs(30 * 86_400)
        {
            return Err(ConfigError::Invalid(
                "console.session_ttl: must be 1 minute to 30 days".into(),
            ));
        }
        if self.overview_cache_seconds > 60 {
            return Err(ConfigError::Invalid(
                "console.overview_cache_seconds: must be 0 to 60".into(),
            ));
        }
        Ok(d)
    }
}

impl HttpConfig {
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.request_timeout_seconds == 0 || self.max_concurrent_requests == 0 {
            return Err(ConfigError::Invalid(
                "http.request_timeout_seconds/max_concurrent_requests: must be positive".into(),
            ));
        }
        if self.auth_failures_per_minute == 0 {
            return Err(ConfigError::Invalid(
                "http.auth_failures_per_minute: must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// The `[telemetry]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// An OpenTelemetry collector's OTLP/HTTP address (`http://collector:4318`; `/v1/traces`
    /// is added unless given) to send spans to, as protobuf; off when absent.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute of exported spans.
    pub service_name: String,
    /// How long one export request may take.
    pub otlp_timeout_seconds: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "provisio".into(),
            otlp_timeout_seconds: 10,
        }
    }
}

impl TelemetryConfig {
    pub fn check(&self) -> Result<(), ConfigError> {
        if let Some(e) = &self.otlp_endpoint {
            let ok = url::Url::parse(e)
                .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(ConfigError::Invalid(
                    "telemetry.otlp_endpoint: must be an http:// or https:// URL".into(),
                ));
            }
        }
        if self.otlp_timeout_seconds == 0 {
            return Err(ConfigError::Invalid(
                "telemetry.otlp_timeout_seconds: must be positive".into(),
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "telemetry.service_name: must not be empty".into(),
            ));
        }
        Ok(())
    }
}

/// The `[outbound]` section. Loopback, private, link-local, shared, unique-local,
/// multicast and unspecified addresses are refused unless `allow` names them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Networks opened beyond the public internet, in CIDR notation
    /// (`["10.20.0.0/16", "127.0.0.1/32"]`).
    pub allow: Vec<String>,
    /// The directory the `radius` module's SQLite databases must be in; without it none
    /// is opened.
    pub radius_sqlite_dir: Option<PathBuf>,
    /// The most of an http handler's or gate's answer that is read, in bytes.
    pub max_handler_reply_bytes: usize,
    /// The most of an answer the `http` and `scim` modules read, in bytes.
    pub max_module_reply_bytes: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            radius_sqlite_dir: None,
            max_handler_reply_bytes: 1024 * 1024,
            max_module_reply_bytes: provisio_modules::DEFAULT_MAX_REPLY_BYTES,
        }
    }
}

/// The `[templates]` section: how much work and output one template render may take.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplatesConfig {
    /// minijinja fuel: roughly the instructions one render may execute.
    pub fuel: u64,
    /// Bytes one render may write.
    pub max_output_bytes: usize,
}

impl Default for TemplatesConfig {
    fn default() -> Self {
        let d = provisio_modules::render::TemplateLimits::default();
        Self {
            fuel: d.fuel,
            max_output_bytes: d.max_output_bytes,
        }
    }
}

impl OutboundConfig {
    /// The policy, or a message naming the bad entry.
    pub fn policy(&self) -> Result<provisio_modules::outbound::OutboundPolicy, ConfigError> {
        provisio_modules::outbound::OutboundPolicy::parse(&self.allow)
            .map_err(|m| ConfigError::Invalid(format!("outbound.{m}")))
    }

    fn check(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("max_handler_reply_bytes", self.max_handler_reply_bytes),
            ("max_module_reply_bytes", self.max_module_reply_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "outbound.{key}: must be positive"
                )));
            }
        }
        self.policy().map(|_| ())
    }
}

impl Config {
    /// The options the built-in modules run with.
    pub fn module_options(&self) -> Result<provisio_modules::ModuleOptions, ConfigError> {
        self.outbound.check()?;
        Ok(provisio_modules::ModuleOptions {
            modules_dir: self.modules_dir.clone(),
            outbound: self.outbound.policy()?,
            max_reply_bytes: self.outbound.max_module_reply_bytes,
            radius_sqlite_dir: self.outbound.radius_sqlite_dir.clone(),
            templates: self.templates.limits()?,
        })
    }
}

impl TemplatesConfig {
    /// The limits, or an error naming the key and its range.
    pub fn limits(&self) -> Result<provisio_modules::render::TemplateLimits, ConfigError> {
        if !(1_000..=1_000_000_000).contains(&self.fuel) {
            return Err(ConfigError::Invalid(
                "templates.fuel: must be 1000 to 1000000000".into(),
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_output_bytes) {
            return Err(ConfigError::Invalid(
                "templates.max_output_bytes: must be 1024 to 67108864".into(),
            ));
        }
        Ok(provisio_modules::render::TemplateLimits {
            fuel: self.fuel,
            max_output_bytes: self.max_output_bytes,
        })
    }
}

/// The `[retention]` section: how long finished history is kept, as durations (`"90
/// days"`); `"0"` keeps that kind forever.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Finished jobs with their attempts (a service's latest job of each action stays).
    pub jobs: String,
    /// Finished deliveries with their attempts.
    pub deliveries: String,
    pub rule_runs: String,
    /// Finished audits with their findings.
    pub audits: String,
    pub usage_syncs: String,
    /// The kept answers of requests sent with an `Idempotency-Key`; at least an hour.
    pub idempotency_keys: String,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            jobs: "90 days".into(),
            deliveries: "30 days".into(),
            rule_runs: "30 days".into(),
            audits: "90 days".into(),
            usage_syncs: "30 days".into(),
            idempotency_keys: "24 hours".into(),
        }
    }
}

impl RetentionConfig {
    /// The engine's retention options, or a message naming the bad key.
    pub fn to_options(&self) -> Result<provisio_engine::RetentionOptions, ConfigError> {
        let keep = |k: &str, v: &str| -> Result<Option<std::time::Duration>, ConfigError> {
            let d = parse_duration(v)
                .map_err(|m| ConfigError::Invalid(format!("retention.{k}: {m}")))?;
            // Zero would trim everything finished at once; it means "keep forever".
            Ok((!d.is_zero()).then_some(d))
        };
        Ok(provisio_engine::RetentionOptions {
            jobs: keep("jobs", &self.jobs)?,
            deliveries: keep("deliveries", &self.deliveries)?,
            rule_runs: keep("rule_runs", &self.rule_runs)?,
            audits: keep("audits", &self.audits)?,
            usage_syncs: keep("usage_syncs", &self.usage_syncs)?,
            idempotency_keys: match keep("idempotency_keys", &self.idempotency_keys)? {
                // A retry often comes minutes or hours later (a billing cron's next run).
                Some(d) if d < std::time::Duration::from_secs(3600) => {
                    return Err(ConfigError::Invalid(
                        "retention.idempotency_keys: must be at least 1 hour (or \"0\" to keep forever)"
                            .into(),
                    ))
                }
                d => d,
            },
            ..Default::default()
        })
    }
}

/// The `[cleanup]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupConfig {
    /// Terminate services suspended at least this long, e.g. `"30 days"`; off when absent.
    #[serde(default)]
    pub terminate_suspended_after: Option<String>,
}

impl CleanupConfig {
    pub fn after(&self) -> Result<Option<std::time::Duration>, ConfigError> {
        match &self.terminate_suspended_after {
            None => Ok(None),
            Some(s) => match provisio_engine::groups::parse_since(s) {
                Ok(d) if d.is_zero() => Err(ConfigError::Invalid(
                    "cleanup.terminate_suspended_after: must be longer than zero".into(),
                )),
                Ok(d) => Ok(Some(d)),
                Err(e) => Err(ConfigError::Invalid(format!(
                    "cleanup.terminate_suspended_after: {e}"
                ))),
            },
        }
    }
}

/// The `[hooks]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// Delays between the attempts of a notify delivery; after the last, it is `failed`.
    pub retry_schedule: Vec<String>,
    /// Deliveries one process sends at once.
    pub max_in_flight: u32,
    /// How long a delivery being sent stays leased without a heartbeat (renewed every
    /// third of it): another process sends a dead one's deliveries about this long after.
    pub delivery_lease: String,
    /// Default time a notify handler may keep failing before it is disabled.
    pub disable_after: String,
    /// How long a rotated-out signing secret still signs alongside the new one.
    pub rotation_overlap: String,
    /// Rules react to events at most this many rule firings deep (an event a request
    /// caused is depth 0; one a rule's action caused, one more than the event it reacted
    /// to). `[[rules]]` declares rules, so the limit lives here with the other hooks.
    pub max_rule_depth: u32,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            retry_schedule: ["5s", "5m", "30m", "2h", "5h", "10h", "10h"]
                .map(String::from)
                .to_vec(),
            max_in_flight: 32,
            delivery_lease: "30s".into(),
            disable_after: "5d".into(),
            rotation_overlap: "24h".into(),
            max_rule_depth: 3,
        }
    }
}

/// The `[usage]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageConfig {
    /// Cron expression of the scheduled sync (5 fields, or 6 with seconds); `""` turns it off.
    pub schedule: String,
    /// `monthly` or `daily` (UTC): when recurring usage starts again.
    pub period: provisio_core::usage::Period,
    /// Accounts asked for per module call.
    pub page_size: u32,
    /// Servers synced at once.
    pub parallel_servers: usize,
    /// Seconds one page call may take.
    pub call_timeout_seconds: u64,
    /// Days readings are kept.
    pub history_days: u32,
    /// Pages one server's sync may read before it is stopped as endless.
    pub max_pages: u32,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            schedule: "0 * * * *".into(),
            period: provisio_core::usage::Period::Monthly,
            page_size: 1000,
            parallel_servers: 128,
            call_timeout_seconds: 120,
            history_days: 400,
            max_pages: 10_000,
        }
    }
}

/// The `[audit]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Cron expression of the scheduled audit (report only, never a fix); `""` (the
    /// default) turns it off.
    pub schedule: String,
    /// Accounts asked for per `list_accounts` call.
    pub page_size: u32,
    /// Servers audited at once.
    pub parallel_servers: usize,
    /// Pages one server's listing may take before the audit is stopped as endless.
    pub max_pages: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            schedule: String::new(),
            page_size: 1000,
            parallel_servers: 16,
            max_pages: 10_000,
        }
    }
}

impl Config {
    /// The engine's usage and audit options, or a message naming the bad key.
    pub fn usage_audit_options(
        &self,
    ) -> Result<
        (
            provisio_engine::usage::UsageOptions,
            provisio_engine::audit::AuditOptions,
        ),
        ConfigError,
    > {
        let bad = |k: &str, m: String| ConfigError::Invalid(format!("{k}: {m}"));
        let cron = |k: &str, s: &str| -> Result<Option<String>, ConfigError> {
            if s.trim().is_empty() {
                return Ok(None);
            }
            provisio_engine::usage::check_cron(s).map_err(|m| bad(k, m))?;
            Ok(Some(s.to_string()))
        };
        let u = &self.usage;
        if u.page_size == 0 || u.page_size > 100_000 {
            return Err(bad("usage.page_size", "must be 1 to 100000".into()));
        }
        if self.audit.page_size == 0 || self.audit.page_size > 100_000 {
            return Err(bad("audit.page_size", "must be 1 to 100000".into()));
        }
        if u.max_pages == 0 {
            return Err(bad("usage.max_pages", "must be at least 1".into()));
        }
        if self.audit.max_pages == 0 {
            return Err(bad("audit.max_pages", "must be at least 1".into()));
        }
        let usage = provisio_engine::usage::UsageOptions {
            period: u.period,
            page_size: u.page_size,
            schedule: cron("usage.schedule", &u.schedule)?,
            history: std::time::Duration::from_secs(u64::from(u.history_days.max(1)) * 86_400),
            parallel_servers: u.parallel_servers.max(1),
            page_attempts: 3,
            call_timeout: std::time::Duration::from_secs(u.call_timeout_seconds.max(1)),
            max_pages: u.max_pages,
        };
        let audit = provisio_engine::audit::AuditOptions {
            schedule: cron("audit.schedule", &self.audit.schedule)?,
            page_size: self.audit.page_size,
            parallel_servers: self.audit.parallel_servers.max(1),
            max_pages: self.audit.max_pages,
        };
        Ok((usage, audit))
    }
}

/// The `[smtp]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// The sender, e.g. `Provisio <noreply@example.net>`.
    pub from: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SecretString>,
    /// `none`, `starttls` or `tls`.
    #[serde(default)]
    pub tls: provisio_engine::mailer::SmtpTls,
    /// Send `username` and `password` even when `tls` is `none`. Off unless set: on a
    /// plaintext connection anyone on the path can read them.
    #[serde(default)]
    pub allow_plaintext_auth: bool,
}

fn default_smtp_port() -> u16 {
    25
}

impl Config {
    /// The engine's handler options, or a message naming the bad key.
    pub fn hook_options(&self) -> Result<provisio_engine::HookOptions, ConfigError> {
        let bad = |k: &str, m: String| ConfigError::Invalid(format!("{k}: {m}"));
        let h = &self.hooks;
        let schedule = h
            .retry_schedule
            .iter()
            .map(|d| parse_duration(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| bad("hooks.retry_schedule", m))?;
        if h.max_in_flight == 0 {
            return Err(bad("hooks.max_in_flight", "must be positive".into()));
        }
        let delivery_lease =
            parse_duration(&h.delivery_lease).map_err(|m| bad("hooks.delivery_lease", m))?;
        // Renewed every third: under a second leaves a busy node no room; over an hour, a
        // dead node's messages wait too long.
        if !(std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(3600))
            .contains(&delivery_lease)
        {
            return Err(bad(
                "hooks.delivery_lease",
                format!("'{}' must be from 1s to 1h", h.delivery_lease),
            ));
        }
        let disable_after =
            parse_duration(&h.disable_after).map_err(|m| bad("hooks.disable_after", m))?;
        let rotation_overlap =
            parse_duration(&h.rotation_overlap).map_err(|m| bad("hooks.rotation_overlap", m))?;
        let smtp = match &self.smtp {
            None => None,
            Some(s) => {
                let o = provisio_engine::mailer::SmtpOptions {
                    host: s.host.clone(),
                    port: s.port,
                    from: s.from.clone(),
                    username: s.username.clone(),
                    password: s.password.clone(),
                    tls: s.tls,
                    allow_plaintext_auth: s.allow_plaintext_auth,
                };
                o.check().map_err(ConfigError::Invalid)?;
                Some(o)
            }
        };
        self.outbound.check()?;
        Ok(provisio_engine::HookOptions {
            max_reply_bytes: self.outbound.max_handler_reply_bytes,
            handlers_dir: self.handlers_dir.clone(),
            schedule: provisio_core::handler::DeliverySchedule(schedule),
            max_in_flight: h.max_in_flight,
            delivery_lease,
            disable_after,
            rotation_overlap,
            smtp,
            max_rule_depth: match h.max_rule_depth {
                d @ 1..=20 => d,
                _ => return Err(bad("hooks.max_rule_depth", "must be 1 to 20".into())),
            },
        })
    }
}

/// The `[jobs]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// Delays between attempts, e.g. `["10s", "1m", "1h"]`: one retry per entry.
    pub retry_schedule: Vec<String>,
    /// Spread of each delay, 0 to 1 (0.2 = ±20%).
    pub retry_jitter: f64,
    /// Seconds a job stays leased without a heartbeat.
    pub lease_seconds: u64,
    /// Seconds one module call may take at most before its outcome counts as unknown.
    pub call_timeout_seconds: u64,
    /// Jobs one process runs at once.
    pub max_in_flight: u32,
    /// Jobs per server a process holds claimed ahead, each begun the moment one of its own
    /// calls to that server ends (0: none; at most its fair share of the server's places).
    #[serde(default = "default_standby")]
    pub standby: u32,
    /// Milliseconds between looks for due jobs when nothing woke the worker.
    pub poll_interval_ms: u64,
    /// Milliseconds between those looks on PostgreSQL while its notifications of queued
    /// jobs reach the worker (LISTEN): only what no notification announces waits this long.
    pub fallback_poll_ms: u64,
    /// Consecutive transient failures that open a server's circuit breaker.
    pub breaker_failures: u32,
    /// Seconds the breaker stays open before a probe.
    pub breaker_open_seconds: u64,
    /// On SIGTERM or SIGINT, seconds the jobs still running may take to finish (their
    /// leases kept) before they are cancelled and handed back to the queue.
    pub drain_seconds: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            retry_schedule: [
                "10s", "30s", "1m", "5m", "15m", "30m", "1h", "2h", "4h", "8h",
            ]
            .map(String::from)
            .to_vec(),
            retry_jitter: 0.2,
            lease_seconds: 60,
            call_timeout_seconds: 900,
            max_in_flight: 256,
            standby: default_standby(),
            poll_interval_ms: 200,
            fallback_poll_ms: 2000,
            breaker_failures: 5,
            breaker_open_seconds: 30,
            drain_seconds: 30,
        }
    }
}

/// Parses `90` (seconds), `90s`, `5m`, `2h`, `1d`, `500ms` or any other humantime notation
/// (`1h 30m`, `2 days`) into a duration.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    // A bare number has always meant seconds here; humantime wants a unit.
    let parsed = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        humantime::parse_duration(&format!("{t}s"))
    } else {
        humantime::parse_duration(t)
    };
    parsed.map_err(|e| match e {
        humantime::DurationError::NumberOverflow => format!("'{s}' is out of range for a duration"),
        _ => format!("'{s}' is not a duration such as 30s, 5m, 2h or 1d"),
    })
}

fn default_standby() -> u32 {
    8
}

impl JobsConfig {
    /// The engine's job options, or a message naming the bad key.
    pub fn to_options(&self) -> Result<provisio_engine::JobOptions, ConfigError> {
        let bad = |k: &str, m: String| ConfigError::Invalid(format!("jobs.{k}: {m}"));
        let delays = self
            .retry_schedule
            .iter()
            .map(|d| parse_duration(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| bad("retry_schedule", m))?;
        if !(0.0..=1.0).contains(&self.retry_jitter) {
            return Err(bad("retry_jitter", "must be between 0 and 1".into()));
        }
        if self.lease_seconds == 0 || self.max_in_flight == 0 || self.poll_interval_ms == 0 {
            return Err(bad(
                "lease_seconds/max_in_flight/poll_interval_ms",
                "must be positive".into(),
            ));
        }
        if self.fallback_poll_ms == 0 {
            return Err(bad("fallback_poll_ms", "must be positive".into()));
        }
        Ok(provisio_engine::JobOptions {
            retry: provisio_core::job::RetryPolicy {
                delays,
                jitter: self.retry_jitter,
            },
            lease: std::time::Duration::from_secs(self.lease_seconds),
            call_timeout: std::time::Duration::from_secs(self.call_timeout_seconds.max(1)),
            max_in_flight: self.max_in_flight,
            standby: self.standby,
            poll_interval: std::time::Duration::from_millis(self.poll_interval_ms),
            fallback_poll: std::time::Duration::from_millis(self.fallback_poll_ms),
            drain: std::time::Duration::from_secs(self.drain_seconds),
            breaker: provisio_engine::limits::BreakerOptions {
                failures_to_open: self.breaker_failures.max(1),
                open_for: std::time::Duration::from_secs(self.breaker_open_seconds),
            },
        })
    }
}

#[derive(Serialize)]
struct Defaults {
    listen: &'static str,
    database_url: &'static str,
    secret_key_file: &'static str,
    admin_key_file: &'static str,
    max_body_bytes: usize,
    default_currency: &'static str,
    log_json: bool,
    modules_dir: &'static str,
    worker: bool,
    event_retention_days: u32,
    handlers_dir: &'static str,
}

const DEFAULTS: Defaults = Defaults {
    listen: "127.0.0.1:8470",
    database_url: "sqlite://provisio.db",
    secret_key_file: "provisio.secret-key",
    admin_key_file: "provisio.admin-key",
    max_body_bytes: 1024 * 1024,
    default_currency: "EUR",
    log_json: false,
    modules_dir: "modules",
    worker: true,
    event_retention_days: 90,
    handlers_dir: "handlers",
};

/// The environment variables read (each `PROVISIO_` + the key in upper case).
const ENV_KEYS: &[&str] = &[
    "listen",
    "database_url",
    "secret_key",
    "secret_key_file",
    "admin_key_file",
    "max_body_bytes",
    "default_currency",
    "log_json",
    "modules_dir",
    "worker",
    "event_retention_days",
    "handlers_dir",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Values given on the command line, which win over everything else.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
}

impl Config {
    /// Reads the layers; `file` is the `--config` path, if any.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(&DEFAULTS))
            .merge(Serialized::default("jobs", JobsConfig::default()))
            .merge(Serialized::default("hooks", HooksConfig::default()))
            .merge(Serialized::default("usage", UsageConfig::default()))
            .merge(Serialized::default("audit", AuditConfig::default()))
            .merge(Serialized::default("http", HttpConfig::default()))
            .merge(Serialized::default("retention", RetentionConfig::default()))
            .merge(Serialized::default("telemetry", TelemetryConfig::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError::Missing(f.to_path_buf()));
            }
            fig = fig.merge(Toml::file_exact(f));
        }
        fig = fig
            .merge(Env::prefixed("PROVISIO_").only(ENV_KEYS))
            .merge(Serialized::defaults(overrides));
        // figment's messages name the key and the source but never echo a value.
        fig.extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// Defaults only (plus environment), as `provisio serve` without `--config` uses.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::load(None, &Overrides::default())
    }

    /// The declared servers and products, parsed with the same strictness as the API.
    pub fn declared(&self) -> Result<Declared, ConfigError> {
        let mut d = Declared::default();
        for (i, v) in self.servers.iter().enumerate() {
            d.servers.push(
                serde_json::from_value(v.clone())
                    .map_err(|e| ConfigError::Invalid(format!("servers[{i}]: {e}")))?,
            );
        }
        for (i, v) in self.products.iter().enumerate() {
            d.products.push(
                serde_json::from_value(v.clone())
                    .map_err(|e| ConfigError::Invalid(format!("products[{i}]: {e}")))?,
            );
        }
        for (i, v) in self.handlers.iter().enumerate() {
            d.handlers.push(
                serde_json::from_value(v.clone())
                    .map_err(|e| ConfigError::Invalid(format!("handlers[{i}]: {e}")))?,
            );
        }
        for (i, v) in self.rules.iter().enumerate() {
            d.rules.push(
                serde_json::from_value(v.clone())
                    .map_err(|e| ConfigError::Invalid(format!("rules[{i}]: {e}")))?,
            );
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_read_the_documented_notations() {
        for (text, secs) in [
            ("90", 90),
            ("90s", 90),
            ("5m", 300),
            ("2h", 7200),
            ("1d", 86_400),
            (" 5d ", 432_000),
            ("1h 30m", 5400),
        ] {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_secs(secs),
                "{text}"
            );
        }
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        for bad in ["soon", "", "5x", "-5s"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("is not a duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn an_overflowing_duration_is_an_error_naming_the_field() {
        let huge = "213503982334602d";
        let jobs = JobsConfig {
            retry_schedule: vec!["1s".into(), huge.into()],
            ..JobsConfig::default()
        };
        let e = jobs.to_options().unwrap_err().to_string();
        assert!(
            e.contains("jobs.retry_schedule") && e.contains("out of range"),
            "{e}"
        );

        let mut cfg = Config::load(None, &Overrides::default()).unwrap();
        cfg.hooks.disable_after = huge.into();
        let e = cfg.hook_options().unwrap_err().to_string();
        assert!(e.contains("hooks.disable_after"), "{e}");

        let cleanup = CleanupConfig {
            terminate_suspended_after: Some(huge.into()),
        };
        let e = cleanup.after().unwrap_err().to_string();
        assert!(e.contains("cleanup.terminate_suspended_after"), "{e}");
    }

    #[test]
    fn the_delivery_lease_defaults_to_30s_and_is_bounded() {
        let mut cfg = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(
            cfg.hook_options().unwrap().delivery_lease,
            Duration::from_secs(30)
        );
        for bad in ["500ms", "2h", "0"] {
            cfg.hooks.delivery_lease = bad.into();
            let e = cfg.hook_options().unwrap_err().to_string();
            assert!(
                e.contains("hooks.delivery_lease") && e.contains("from 1s to 1h"),
                "{bad}: {e}"
            );
        }
        cfg.hooks.delivery_lease = "soon".into();
        let e = cfg.hook_options().unwrap_err().to_string();
        assert!(e.contains("hooks.delivery_lease"), "{e}");
        cfg.hooks.delivery_lease = "2s".into();
        assert_eq!(
            cfg.hook_options().unwrap().delivery_lease,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn retention_defaults_zero_and_bad_keys() {
        let cfg = Config::load(None, &Overrides::default()).unwrap();
        let o = cfg.retention.to_options().unwrap();
        assert_eq!(o.jobs, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(o.deliveries, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(o.audits, Some(Duration::from_secs(90 * 86_400)));
        let mut r = cfg.retention.clone();
        r.rule_runs = "0".into();
        r.usage_syncs = "2 weeks".into();
        let o = r.to_options().unwrap();
        assert_eq!(o.rule_runs, None, "0 keeps forever");
        assert_eq!(o.usage_syncs, Some(Duration::from_secs(14 * 86_400)));
        r.audits = "soon".into();
        let e = r.to_options().unwrap_err().to_string();
        assert!(e.contains("retention.audits"), "{e}");
    }

    fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("provisio.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), &Overrides::default())
    }

    #[test]
    fn outbound_refuses_special_ranges_by_default_and_names_bad_entries() {
        let cfg = Config::load(None, &Overrides::default()).unwrap();
        let modules = cfg.module_options().unwrap();
        assert!(modules.outbound.allowed().is_empty());
        assert_eq!(modules.max_reply_bytes, 16 * 1024 * 1024);
        assert_eq!(modules.radius_sqlite_dir, None);
        assert_eq!(cfg.hook_options().unwrap().max_reply_bytes, 1024 * 1024);
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(cfg
            .outbound
            .policy()
            .unwrap()
            .check(ip("127.0.0.1"), None)
            .is_err());

        let cfg = from_toml("[outbound]\nallow = [\"10.20.0.0/16\", \"127.0.0.1/32\"]\nmax_module_reply_bytes = 4096\nradius_sqlite_dir = \"/var/lib/radius\"\n").unwrap();
        let modules = cfg.module_options().unwrap();
        assert!(modules.outbound.check(ip("10.20.9.9"), None).is_ok());
        assert!(modules.outbound.check(ip("10.21.0.1"), None).is_err());
        assert_eq!(modules.max_reply_bytes, 4096);
        assert_eq!(
            modules.radius_sqlite_dir,
            Some(PathBuf::from("/var/lib/radius"))
        );

        let cfg = from_toml("[outbound]\nallow = [\"10.0.0.0/8\", \"localhost\"]\n").unwrap();
        let e = cfg.module_options().unwrap_err().to_string();
        assert!(
            e.contains("outbound.allow[1]: \"localhost\" is not a network in CIDR notation"),
            "{e}"
        );
        let e = cfg.hook_options().unwrap_err().to_string();
        assert!(e.contains("outbound.allow[1]"), "{e}");
        let cfg = from_toml("[outbound]\nmax_handler_reply_bytes = 0\n").unwrap();
        let e = cfg.hook_options().unwrap_err().to_string();
        assert!(
            e.contains("outbound.max_handler_reply_bytes: must be positive"),
            "{e}"
        );
        let e = from_toml("[outbound]\nallow_all = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("allow_all"), "{e}");
    }

    #[test]
    fn smtp_credentials_are_never_sent_in_the_clear_unless_allowed() {
        let smtp = "[smtp]\nhost = \"mail.example.net\"\nfrom = \"noreply@example.net\"\nusername = \"relay\"\npassword = \"Relay-Pass-31\"\n";
        let e = from_toml(smtp)
            .unwrap()
            .hook_options()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("smtp.username: credentials would be sent over a plaintext connection"),
            "{e}"
        );
        assert!(!e.contains("Relay-Pass-31"), "{e}");
        for ok in [
            "tls = \"starttls\"\n",
            "tls = \"tls\"\n",
            "allow_plaintext_auth = true\n",
        ] {
            let cfg = from_toml(&format!("{smtp}{ok}")).unwrap();
            assert!(cfg.hook_options().is_ok(), "{ok}");
        }
        // Without credentials there is nothing to expose.
        let plain = "[smtp]\nhost = \"127.0.0.1\"\nfrom = \"noreply@example.net\"\n";
        assert!(from_toml(plain).unwrap().hook_options().is_ok());
    }

    #[test]
    fn template_limits_and_page_caps_default_and_name_bad_keys() {
        let mut cfg = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(
            cfg.templates.limits().unwrap(),
            provisio_modules::render::TemplateLimits::default()
        );
        let (usage, audit) = cfg.usage_audit_options().unwrap();
        assert_eq!((usage.max_pages, audit.max_pages), (10_000, 10_000));
        cfg.templates.fuel = 10;
        let e = cfg.templates.limits().unwrap_err().to_string();
        assert!(e.contains("templates.fuel: must be 1000 to"), "{e}");
        cfg.templates.fuel = 5000;
        cfg.templates.max_output_bytes = 0;
        let e = cfg.templates.limits().unwrap_err().to_string();
        assert!(e.contains("templates.max_output_bytes"), "{e}");
        cfg.audit.max_pages = 0;
        let e = cfg.usage_audit_options().unwrap_err().to_string();
        assert!(e.contains("audit.max_pages: must be at least 1"), "{e}");
    }
}
