//! Usage: syncing usage from every server whose module reports it (pages of many accounts
//! per call, servers in parallel, each within its limits), top-ups, product policies that
//! act on exceeding, and the schedule that runs a sync by itself.
//!
//! A sync is a stored run whose report (per server: progress, services updated, unknown
//! usernames, errors, duration) is updated while it runs, so the CLI can poll it and draw
//! progress; the work happens in the engine of the process that started it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use provisio_core::module::{Action, ActionReply, ActionRequest, Capability, ModuleError};
use provisio_core::page::{Page, PageRequest};
use provisio_core::server::Server;
use provisio_core::service::ServiceStatus;
use provisio_core::settings::Settings;
use provisio_core::usage::{
    NewReading, NewTopup, OnExceed, Period, Topup, UsagePolicy, UsageReading, UsageState,
};
use provisio_core::{ProductId, ServiceId};
use provisio_store::SyncRun;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use utoipa::ToSchema;

use crate::error::Problems;
use crate::input::RecordRef;
use crate::jobs::request::ActionInput;
use crate::runtime::Shutdown;
use crate::{Engine, EngineError, Result};

/// How usage is synced.
#[derive(Debug, Clone)]
pub struct UsageOptions {
    pub period: Period,
    /// Accounts asked for per module call (`params.limit`).
    pub page_size: u32,
    /// Cron expression of the scheduled sync; `None` turns it off.
    pub schedule: Option<String>,
    /// Readings older than this are trimmed.
    pub history: Duration,
    /// Servers synced at once.
    pub parallel_servers: usize,
    /// Tries per page when the remote fails transiently.
    pub page_attempts: u32,
    /// The longest one page call may take.
    pub call_timeout: Duration,
}

impl Default for UsageOptions {
    fn default() -> Self {
        Self {
            period: Period::Monthly,
            page_size: 1000,
            schedule: Some("0 * * * *".into()),
            history: Duration::from_secs(400 * 86_400),
            parallel_servers: 128,
            page_attempts: 3,
            call_timeout: Duration::from_secs(120),
        }
    }
}

/// `POST /v1/usage/syncs`: which servers to sync (all with the usage capability when absent).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncInput {
    /// A server by id or name.
    pub server: Option<RecordRef>,
}

/// `POST /v1/services/{id}/topups`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopupInput {
    /// The metric it adds quota to (`data`, `disk`, …).
    pub metric: String,
    /// How much, in the metric's unit; more than zero.
    pub amount: f64,
    pub note: Option<String>,
    /// The same key again returns the first top-up and adds nothing.
    pub idempotency_key: Option<String>,
}

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

impl SyncReport {
    fn from_run(run: SyncRun) -> Self {
        let servers = run
            .report
            .get("servers")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        Self {
            id: run.id,
            state: run.state,
            servers,
            started_at: run.started_at,
            finished_at: run.finished_at,
        }
    }
}

/// A service's usage: current values per metric, top-ups and the quota left.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ServiceUsage {
    pub service_id: i64,
    pub metrics: Vec<MetricView>,
    pub topups: Vec<Topup>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
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

/// The live services of one server by username, and the products' limits.
struct Directory {
    by_name: HashMap<String, (ServiceId, ProductId, ServiceStatus)>,
}

/// Per product: where each metric's limit comes from and what exceeding does.
#[derive(Clone)]
struct ProductLimits {
    settings: Settings,
    policy: Option<UsagePolicy>,
}

impl ProductLimits {
    fn limit(&self, metric: &str, reported: Option<f64>) -> Option<f64> {
        let key = self
            .policy
            .as_ref()
            .and_then(|p| p.limits.get(metric).cloned())
            .unwrap_or_else(|| format!("{metric}_limit"));
        match self.settings.get(&key) {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => reported,
        }
    }
}

/// What a server's sync writes into the run while it goes.
type Progress = Arc<Mutex<Vec<ServerSync>>>;

/// Updates this server's row of the progress.
type SetProgress<'a> = &'a (dyn Fn(&mut dyn FnMut(&mut ServerSync)) + Sync);

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase())
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Engine {
    /// Starts a sync in the background and returns its run at once; poll
    /// [`Engine::usage_sync`] for progress.
    pub async fn start_usage_sync(self: &Arc<Self>, input: SyncInput) -> Result<SyncReport> {
        let servers = self.usage_servers(input.server.as_ref()).await?;
        let run = self
            .begin_sync(&servers, None)
            .await?
            .ok_or_else(|| EngineError::Conflict {
                field: None,
                message: "a sync with this slot is already running".into(),
            })?;
        let engine = self.clone();
        let id = run.id;
        tokio::spawn(async move {
            engine.run_usage_sync(id, servers).await;
        });
        Ok(SyncReport::from_run(run))
    }

    /// Servers a sync covers: the named one (which must report usage) or every enabled
    /// server whose module does.
    pub async fn usage_servers(&self, only: Option<&RecordRef>) -> Result<Vec<Server>> {
        if let Some(r) = only {
            let s = self.find_server(r).await?;
            if !self
                .modules
                .info(&s.module)
                .is_some_and(|m| m.can(Capability::Usage))
            {
                let mut p = Problems::default();
                p.push(
                    "server",
                    "capability",
                    format!("module '{}' does not report usage", s.module),
                );
                return Err(EngineError::Invalid(p.0));
            }
            return Ok(vec![s]);
        }
        self.enabled_servers_with(Capability::Usage).await
    }

    /// Stores a new run for `servers`; `None` when `slot` was taken by another process.
    pub async fn begin_sync(
        &self,
        servers: &[Server],
        slot: Option<&str>,
    ) -> Result<Option<SyncRun>> {
        let rows: Vec<ServerSync> = servers
            .iter()
            .map(|s| ServerSync {
                server_id: s.id.0,
                server: s.name.to_string(),
                state: "pending".into(),
                ..Default::default()
            })
            .collect();
        Ok(self
            .store
            .insert_sync_run(slot, &serde_json::json!({ "servers": rows }))
            .await?)
    }

    /// Runs a stored sync run to its end: every server in parallel (at most
    /// `parallel_servers` at once), pages of one server in order, the report written as it
    /// goes. Never fails: problems end up in the report.
    pub async fn run_usage_sync(self: &Arc<Self>, run_id: i64, servers: Vec<Server>) -> SyncReport {
        let progress: Progress = Arc::new(Mutex::new(
            servers
                .iter()
                .map(|s| ServerSync {
                    server_id: s.id.0,
                    server: s.name.to_string(),
                    state: "pending".into(),
                    ..Default::default()
                })
                .collect(),
        ));
        let policies = match self.policy_map().await {
            Ok(p) => Arc::new(p),
            Err(e) => {
                tracing::error!(error = %e, "loading usage policies failed");
                Arc::new(HashMap::new())
            }
        };
        let limit = Arc::new(tokio::sync::Semaphore::new(
            self.options.usage.parallel_servers.max(1),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, server) in servers.into_iter().enumerate() {
            let engine = self.clone();
            let progress = progress.clone();
            let policies = policies.clone();
            let limit = limit.clone();
            tasks.spawn(async move {
                let _permit = limit.acquire().await;
                engine.sync_server(i, server, progress, policies).await;
            });
        }
        // Write the report while servers run, so pollers see progress.
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                done = tasks.join_next() => {
                    if done.is_none() { break; }
                }
                _ = tick.tick() => {
                    let snapshot = progress.lock().unwrap().clone();
                    let report = serde_json::json!({ "servers": snapshot });
                    if let Err(e) = self.store.update_sync_run(run_id, "running", &report, false).await {
                        tracing::warn!(error = %e, run = run_id, "writing sync progress failed");
                    }
                }
            }
        }
        let snapshot = progress.lock().unwrap().clone();
        let state = if snapshot.iter().all(|s| s.state == "done") {
            "done"
        } else {
            "partial"
        };
        let report = serde_json::json!({ "servers": snapshot });
        if let Err(e) = self
            .store
            .update_sync_run(run_id, state, &report, true)
            .await
        {
            tracing::error!(error = %e, run = run_id, "writing the sync report failed");
        }
        match self.store.get_sync_run(run_id).await {
            Ok(Some(run)) => SyncReport::from_run(run),
            _ => SyncReport {
                id: run_id,
                state: state.into(),
                servers: snapshot,
                started_at: Utc::now(),
                finished_at: Some(Utc::now()),
            },
        }
    }

    pub async fn usage_sync(&self, id: i64) -> Result<SyncReport> {
        self.store
            .get_sync_run(id)
            .await?
            .map(SyncReport::from_run)
            .ok_or_else(|| EngineError::NotFound {
                what: "usage sync",
                key: id.to_string(),
            })
    }

    pub async fn usage_syncs(&self, page: PageRequest) -> Result<Page<SyncReport>> {
        Ok(self
            .store
            .list_sync_runs(page)
            .await?
            .map(SyncReport::from_run))
    }

    async fn policy_map(&self) -> Result<HashMap<ProductId, UsagePolicy>> {
        Ok(self
            .store
            .usage_policies()
            .await?
            .into_iter()
            .map(|p| (p.product_id, p.policy))
            .collect())
    }

    /// A product's limits: its effective settings and the nearest policy up its `extends`
    /// chain.
    async fn product_limits(
        &self,
        id: ProductId,
        policies: &HashMap<ProductId, UsagePolicy>,
    ) -> Result<ProductLimits> {
        let view = self.get_product(&RecordRef::Id(id.0)).await?;
        let mut policy = policies.get(&id).cloned();
        let mut parent = view.product.extends;
        let mut hops = 0;
        while policy.is_none() && hops < 32 {
            let Some(p) = parent else { break };
            policy = policies.get(&p).cloned();
            parent = self.store.get_product(p).await?.and_then(|x| x.extends);
            hops += 1;
        }
        Ok(ProductLimits {
            settings: view.effective,
            policy,
        })
    }

    async fn sync_server(
        self: &Arc<Self>,
        slot: usize,
        server: Server,
        progress: Progress,
        policies: Arc<HashMap<ProductId, UsagePolicy>>,
    ) {
        let t0 = Instant::now();
        let set = |f: &mut dyn FnMut(&mut ServerSync)| {
            let mut p = progress.lock().unwrap();
            f(&mut p[slot]);
            p[slot].duration_ms = t0.elapsed().as_millis() as u64;
        };
        set(&mut |s| s.state = "running".into());
        let result = self.sync_server_pages(&server, &set, &policies).await;
        set(&mut |s| match &result {
            Ok(()) => s.state = "done".into(),
            Err(e) => {
                s.state = "failed".into();
                s.errors.push(e.clone());
            }
        });
    }

    async fn sync_server_pages(
        self: &Arc<Self>,
        server: &Server,
        set: SetProgress<'_>,
        policies: &Arc<HashMap<ProductId, UsagePolicy>>,
    ) -> std::result::Result<(), String> {
        let crate::jobs::call::Prepared {
            module,
            request: base,
        } = self.server_request(server, Action::Usage)?;
        let accounts = self
            .store
            .server_accounts(server.id)
            .await
            .map_err(|e| format!("loading the server's services failed: {e}"))?;
        let dir = Directory {
            by_name: accounts
                .into_iter()
                .map(|a| (a.username, (a.service_id, a.product_id, a.status)))
                .collect(),
        };
        let expected = dir.by_name.len() as u64;
        set(&mut |s| s.expected = expected);
        let period_start = self.options.usage.period.start(Utc::now());

        // Pages are fetched in order (each needs the previous cursor) while the previous
        // page is written: the remote's delay and the database's work overlap.
        let (tx, mut rx) = mpsc::channel::<ActionReply>(2);
        let writer = {
            let engine = self.clone();
            let policies = policies.clone();
            async move {
                let mut limits: HashMap<ProductId, Option<ProductLimits>> = HashMap::new();
                let mut totals = (0u64, 0u64, 0u64, Vec::<String>::new(), Vec::<String>::new());
                while let Some(reply) = rx.recv().await {
                    let r = engine
                        .write_page(&dir, &reply, period_start, &policies, &mut limits)
                        .await;
                    match r {
                        Ok(w) => {
                            totals.0 += w.updated;
                            totals.1 += w.unknown.len() as u64;
                            totals.2 += w.exceeded;
                            for u in w.unknown {
                                if totals.3.len() < 10 {
                                    totals.3.push(u);
                                }
                            }
                            totals.4.extend(w.errors);
                        }
                        Err(e) => {
                            totals.4.push(format!("writing usage failed: {e}"));
                            return Err(totals);
                        }
                    }
                }
                Ok(totals)
            }
        };
        let writer = tokio::spawn(writer);

        let mut cursor: Option<String> = None;
        let pace = server
            .max_per_second
            .filter(|r| *r > 0)
            .map(|r| Duration::from_secs_f64(1.0 / f64::from(r)));
        let mut last_call: Option<Instant> = None;
        let mut failure = None;
        loop {
            if let (Some(p), Some(at)) = (pace, last_call) {
                let wait = p.saturating_sub(at.elapsed());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            let mut req = base.clone();
            req.params
                .insert("limit".into(), Value::from(self.options.usage.page_size));
            req.params
                .insert("since".into(), Value::String(period_start.to_rfc3339()));
            if let Some(c) = &cursor {
                req.params.insert("cursor".into(), Value::String(c.clone()));
            }
            last_call = Some(Instant::now());
            let reply = match self.call_read(module.as_ref(), &req).await {
                Ok(r) => r,
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            };
            let n = reply.usage.len() as u64;
            let next = reply.next.clone().filter(|n| !n.is_empty());
            set(&mut |s| {
                s.pages += 1;
                s.reported += n;
            });
            if tx.send(reply).await.is_err() {
                break;
            }
            match next {
                Some(n) if cursor.as_deref() == Some(n.as_str()) => {
                    failure = Some("the module returned the current cursor as the next one".into());
                    break;
                }
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        drop(tx);
        let totals = match writer.await {
            Ok(Ok(t)) => t,
            Ok(Err(t)) => {
                failure.get_or_insert_with(|| t.4.last().cloned().unwrap_or_default());
                t
            }
            Err(e) => return Err(format!("the usage writer stopped: {e}")),
        };
        set(&mut |s| {
            s.services_updated = totals.0;
            s.unknown_usernames = totals.1;
            s.exceeded = totals.2;
            s.unknown_sample = totals.3.clone();
            s.errors.extend(totals.4.iter().cloned());
        });
        match failure {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    /// A read-only module call (usage, list_accounts) with a timeout, tried again on a
    /// transient or unknown failure (reading twice is harmless).
    pub(crate) async fn call_read(
        &self,
        module: &dyn provisio_core::module::Module,
        req: &ActionRequest,
    ) -> std::result::Result<ActionReply, ModuleError> {
        let attempts = self.options.usage.page_attempts.max(1);
        let limit = self.options.usage.call_timeout;
        let mut delay = Duration::from_millis(500);
        let mut last = None;
        for attempt in 1..=attempts {
            let r = match tokio::time::timeout(limit, module.call(req)).await {
                Ok(r) => r,
                Err(_) => Err(ModuleError::transient(format!(
                    "{}: the module did not answer within {}s",
                    req.action,
                    limit.as_secs()
                ))),
            };
            match r {
                Ok(reply) => return Ok(reply),
                Err(e) if e.kind == provisio_core::module::ErrorKind::Permanent => return Err(e),
                Err(e) => {
                    last = Some(e);
                    if attempt < attempts {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| ModuleError::transient("no attempt was made")))
    }

    async fn write_page(
        self: &Arc<Self>,
        dir: &Directory,
        reply: &ActionReply,
        period_start: DateTime<Utc>,
        policies: &HashMap<ProductId, UsagePolicy>,
        limits: &mut HashMap<ProductId, Option<ProductLimits>>,
    ) -> Result<PageWritten> {
        let mut out = PageWritten::default();
        let mut readings = Vec::new();
        let mut products: HashMap<ServiceId, ProductId> = HashMap::new();
        for report in &reply.usage {
            let Some(&(sid, pid, _)) = dir.by_name.get(&report.username) else {
                out.unknown.push(report.username.clone());
                continue;
            };
            products.insert(sid, pid);
            if let std::collections::hash_map::Entry::Vacant(slot) = limits.entry(pid) {
                let l = match self.product_limits(pid, policies).await {
                    Ok(l) => Some(l),
                    Err(e) => {
                        out.errors.push(format!("product {pid}: {e}"));
                        None
                    }
                };
                slot.insert(l);
            }
            let pl = limits.get(&pid).and_then(|l| l.as_ref());
            for (name, m) in &report.metrics {
                if !is_metric_name(name) || !m.used.is_finite() {
                    out.errors.push(format!(
                        "{}: metric {:?} skipped (names are [a-z][a-z0-9_]*, values finite)",
                        report.username,
                        name.chars().take(64).collect::<String>()
                    ));
                    continue;
                }
                let limit = match pl {
                    Some(pl) => pl.limit(name, m.limit),
                    None => m.limit,
                };
                readings.push(NewReading {
                    service_id: sid,
                    metric: name.clone(),
                    used: m.used,
                    limit: limit.filter(|l| l.is_finite()),
                    unit: m.unit.clone(),
                    period_start,
                });
            }
        }
        let applied = self.store.apply_usage(&readings).await?;
        let mut changed: Vec<ServiceId> = applied
            .iter()
            .filter(|a| a.changed)
            .map(|a| a.state.service_id)
            .collect();
        changed.sort_unstable();
        changed.dedup();
        out.updated = changed.len() as u64;
        for a in applied.iter().filter(|a| a.exceeded_now) {
            out.exceeded += 1;
            let Some(pid) = products.get(&a.state.service_id) else {
                continue;
            };
            let Some(policy) = limits
                .get(pid)
                .and_then(|l| l.as_ref())
                .and_then(|l| l.policy.clone())
            else {
                continue;
            };
            if let Err(e) = self
                .act_on_exceeding(a.state.service_id, &a.state.metric, &policy)
                .await
            {
                out.errors.push(format!(
                    "service {}: acting on exceeding {}: {e}",
                    a.state.service_id, a.state.metric
                ));
            }
        }
        Ok(out)
    }

    async fn act_on_exceeding(
        &self,
        service: ServiceId,
        metric: &str,
        policy: &UsagePolicy,
    ) -> Result<()> {
        if !policy.metrics.is_empty() && !policy.metrics.iter().any(|m| m == metric) {
            return Ok(());
        }
        match &policy.on_exceed {
            None => Ok(()),
            Some(OnExceed::Suspend) => {
                let s = self.get_service(service).await?;
                if s.status != ServiceStatus::Active {
                    return Ok(());
                }
                self.request_action(
                    service,
                    Action::Suspend,
                    ActionInput {
                        reason: Some("usage".into()),
                        ..Default::default()
                    },
                )
                .await
                .map(|_| ())
            }
            Some(OnExceed::ChangePackage { product }) => self
                .request_action(
                    service,
                    Action::ChangePackage,
                    ActionInput {
                        product: Some(RecordRef::Name(product.clone())),
                        ..Default::default()
                    },
                )
                .await
                .map(|_| ()),
        }
    }

    /// Adds a top-up to a service.
    pub async fn add_topup(&self, id: ServiceId, input: TopupInput) -> Result<(Topup, bool)> {
        let mut p = Problems::default();
        if !is_metric_name(&input.metric) {
            p.push(
                "metric",
                "pattern",
                "must match [a-z][a-z0-9_]* (at most 64 characters)",
            );
        }
        if !(input.amount.is_finite() && input.amount > 0.0) {
            p.push("amount", "range", "must be a number greater than zero");
        }
        if input.note.as_ref().is_some_and(|n| n.chars().count() > 500) {
            p.push("note", "length", "must be at most 500 characters");
        }
        if let Some(k) = &input.idempotency_key {
            if k.is_empty() || k.len() > 200 {
                p.push("idempotency_key", "length", "must be 1 to 200 characters");
            }
        }
        p.finish()?;
        self.get_service(id).await?;
        Ok(self
            .store
            .add_topup(
                id,
                &NewTopup {
                    metric: input.metric,
                    amount: input.amount,
                    note: input.note,
                    idempotency_key: input.idempotency_key,
                },
            )
            .await?)
    }

    /// A service's current usage with its top-ups.
    pub async fn service_usage(&self, id: ServiceId) -> Result<ServiceUsage> {
        self.get_service(id).await?;
        let states = self.store.service_usage(id).await?;
        let topups = self.store.list_topups(id).await?;
        Ok(ServiceUsage {
            service_id: id.0,
            metrics: states.iter().map(|s| metric_view(s, &topups)).collect(),
            topups,
        })
    }

    pub async fn usage_history(
        &self,
        id: ServiceId,
        metric: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<UsageReading>> {
        self.get_service(id).await?;
        Ok(self.store.usage_readings(id, metric, page).await?)
    }

    /// Sets a product's usage policy (checked: the package it changes to must exist).
    pub async fn set_usage_policy(
        &self,
        product: &RecordRef,
        policy: UsagePolicy,
    ) -> Result<UsagePolicy> {
        let p = self.find_product(product).await?;
        let mut problems = Problems::default();
        for (metric, setting) in &policy.limits {
            if !is_metric_name(metric) {
                problems.push(
                    &format!("limits.{metric}"),
                    "pattern",
                    "metric names match [a-z][a-z0-9_]*",
                );
            }
            if setting.is_empty() || setting.len() > 100 {
                problems.push(
                    &format!("limits.{metric}"),
                    "length",
                    "must name a product setting",
                );
            }
        }
        for (i, m) in policy.metrics.iter().enumerate() {
            if !is_metric_name(m) {
                problems.push(
                    &format!("metrics.{i}"),
                    "pattern",
                    "metric names match [a-z][a-z0-9_]*",
                );
            }
        }
        if let Some(OnExceed::ChangePackage { product }) = &policy.on_exceed {
            match self.find_product(&RecordRef::Name(product.clone())).await {
                Ok(target) if target.module != p.module => problems.push(
                    "on_exceed.product",
                    "module",
                    format!(
                        "must use module '{}' like the product it applies to",
                        p.module
                    ),
                ),
                Ok(_) => {}
                Err(EngineError::NotFound { .. }) => {
                    problems.push("on_exceed.product", "exists", "no such product")
                }
                Err(e) => return Err(e),
            }
        }
        problems.finish()?;
        self.store.set_usage_policy(p.id, &policy).await?;
        Ok(policy)
    }

    pub async fn usage_policy(&self, product: &RecordRef) -> Result<Option<UsagePolicy>> {
        let p = self.find_product(product).await?;
        Ok(self.policy_map().await?.remove(&p.id))
    }

    pub async fn delete_usage_policy(&self, product: &RecordRef) -> Result<bool> {
        let p = self.find_product(product).await?;
        Ok(self.store.delete_usage_policy(p.id).await?)
    }
}

#[derive(Default)]
struct PageWritten {
    updated: u64,
    unknown: Vec<String>,
    exceeded: u64,
    errors: Vec<String>,
}

fn metric_view(s: &UsageState, topups: &[Topup]) -> MetricView {
    let left: f64 = topups
        .iter()
        .filter(|t| t.metric == s.metric)
        .map(|t| (t.amount - t.consumed).max(0.0))
        .sum::<f64>()
        // An empty sum of floats is -0.0; show 0.
        + 0.0;
    let quota = s.limit.map(|l| l + left + s.topup_used);
    MetricView {
        metric: s.metric.clone(),
        used: s.used,
        limit: s.limit,
        unit: s.unit.clone(),
        period_start: s.period_start,
        topup_left: left,
        topup_used: s.topup_used,
        quota,
        exceeded: quota.is_some_and(|q| s.used > q),
        updated_at: s.updated_at,
    }
}

/// Runs scheduled syncs and audits: at each cron occurrence, one process (the first to
/// store the occurrence's slot) runs it; the others see the slot taken and skip.
pub(crate) async fn schedule_loop(engine: Arc<Engine>, mut stop: Shutdown) {
    let usage = engine
        .options
        .usage
        .schedule
        .as_deref()
        .and_then(parse_cron);
    let audit = engine
        .options
        .audit
        .schedule
        .as_deref()
        .and_then(parse_cron);
    if usage.is_none() && audit.is_none() {
        return;
    }
    let mut next_usage = usage.as_ref().and_then(|c| next_after(c, Utc::now()));
    let mut next_audit = audit.as_ref().and_then(|c| next_after(c, Utc::now()));
    let mut last_purge = Instant::now();
    loop {
        let now = Utc::now();
        let due = [next_usage, next_audit].into_iter().flatten().min();
        let wait = due
            .map(|d| (d - now).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(3600))
            .min(Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.stopped() => return,
        }
        let now = Utc::now();
        if let (Some(at), Some(c)) = (next_usage, usage.as_ref()) {
            if at <= now {
                next_usage = next_after(c, now);
                let slot = format!("usage:{}", at.to_rfc3339());
                match engine.usage_servers(None).await {
                    Ok(servers) => match engine.begin_sync(&servers, Some(&slot)).await {
                        Ok(Some(run)) => {
                            let e = engine.clone();
                            tokio::spawn(async move { e.run_usage_sync(run.id, servers).await });
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "starting the scheduled usage sync failed")
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "listing servers for the usage sync failed")
                    }
                }
            }
        }
        if let (Some(at), Some(c)) = (next_audit, audit.as_ref()) {
            if at <= now {
                next_audit = next_after(c, now);
                let slot = format!("audit:{}", at.to_rfc3339());
                let e = engine.clone();
                tokio::spawn(async move { e.scheduled_audits(&slot).await });
            }
        }
        if last_purge.elapsed() > Duration::from_secs(3600) {
            last_purge = Instant::now();
            let before = Utc::now()
                - chrono::Duration::from_std(engine.options.usage.history).unwrap_or_default();
            if let Err(e) = engine.store.purge_usage_readings(before).await {
                tracing::warn!(error = %e, "trimming usage readings failed");
            }
        }
    }
}

/// A cron expression (five fields, or six with seconds), or `None` (logged) when invalid.
pub fn parse_cron(s: &str) -> Option<croner::Cron> {
    if s.trim().is_empty() {
        return None;
    }
    match croner::Cron::new(s).with_seconds_optional().parse() {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(schedule = s, error = %e, "invalid cron expression; schedule off");
            None
        }
    }
}

/// Checks a cron expression, for configuration loading.
pub fn check_cron(s: &str) -> std::result::Result<(), String> {
    croner::Cron::new(s)
        .with_seconds_optional()
        .parse()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn next_after(c: &croner::Cron, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    c.find_next_occurrence(&t, false).ok()
}
