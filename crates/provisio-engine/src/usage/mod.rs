//! Usage: syncing usage from every server whose module reports it (pages of many accounts
//! per call, servers in parallel, each within its limits), top-ups, product policies that
//! act on exceeding, and the schedule that runs a sync by itself.
//!
//! A sync is a stored run whose report (per server: progress, services updated, unknown
//! usernames, errors, duration) is updated while it runs, so the CLI can poll it and draw
//! progress; the work happens in the engine of the process that started it.

mod schedule;
mod sync;

pub(crate) use schedule::schedule_loop;
pub use schedule::{check_cron, parse_cron};
// The answers are the API's wire types, defined once in `provisio-api`.
pub use provisio_api::requests::{SyncInput, TopupInput};
pub use provisio_api::views::{MetricView, ServerSync, ServiceUsage, ServiceUsageLine, SyncReport};

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
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::Problems;
use crate::input::ActionInput;
use crate::input::RecordRef;
use crate::shutdown::Shutdown;
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
    /// Pages one server's sync may take before it is stopped as endless.
    pub max_pages: u32,
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
            max_pages: 10_000,
        }
    }
}

/// A stored run as the API shows it; the per-server part is kept as JSON in the run.
fn sync_report(run: SyncRun) -> SyncReport {
    let servers = run
        .report
        .get("servers")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    SyncReport {
        id: run.id,
        state: run.state,
        servers,
        started_at: run.started_at,
        finished_at: run.finished_at,
    }
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
        tokio::spawn(provisio_store::inherit(async move {
            engine.run_usage_sync(id, servers).await;
        }));
        Ok(sync_report(run))
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
            tasks.spawn(provisio_store::inherit(async move {
                use futures::FutureExt as _;
                let _permit = limit.acquire().await;
                // A panic costs this server's part of the run, which then ends `partial`.
                let synced = std::panic::AssertUnwindSafe(engine.sync_server(
                    i,
                    server,
                    progress.clone(),
                    policies,
                ))
                .catch_unwind()
                .await;
                if let Err(payload) = synced {
                    let why = crate::jobs::call::panic_message(payload.as_ref());
                    tracing::error!(run = run_id, panic = %why, "a server's usage sync panicked");
                    if let Some(s) = progress.lock().unwrap().get_mut(i) {
                        s.state = "failed".into();
                        s.errors.push(format!("the sync panicked: {why}"));
                    }
                }
            }));
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
            Ok(Some(run)) => sync_report(run),
            _ => SyncReport {
                id: run_id,
                state: state.into(),
                servers: snapshot,
                started_at: self.now(),
                finished_at: Some(self.now()),
            },
        }
    }

    pub async fn usage_sync(&self, id: i64) -> Result<SyncReport> {
        self.store
            .get_sync_run(id)
            .await?
            .map(sync_report)
            .ok_or_else(|| EngineError::NotFound {
                what: "usage sync",
                key: id.to_string(),
            })
    }

    /// The newest `limit` syncs, newest first (the listing pages oldest first).
    pub async fn recent_usage_syncs(&self, limit: u32) -> Result<Vec<SyncReport>> {
        Ok(self
            .store
            .recent_sync_runs(limit)
            .await?
            .into_iter()
            .map(sync_report)
            .collect())
    }

    pub async fn usage_syncs(&self, page: PageRequest) -> Result<Page<SyncReport>> {
        Ok(self.store.list_sync_runs(page).await?.map(sync_report))
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
            if k.is_empty() || k.chars().count() > 200 {
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

    /// The usage of a page of services (those `filter` selects), read in a few queries for
    /// the whole page, so that a billing system's daily usage update is one request.
    pub async fn usage_of_services(
        &self,
        filter: &provisio_store::ServiceFilter,
        page: PageRequest,
    ) -> Result<Page<ServiceUsageLine>> {
        let services = self.store.list_services(filter, page).await?;
        let ids: Vec<ServiceId> = services.items.iter().map(|s| s.id).collect();
        let (states, topups) = self.store.usage_of_services(&ids).await?;
        let mut by_service: HashMap<ServiceId, (Vec<&UsageState>, Vec<Topup>)> = HashMap::new();
        for s in &states {
            by_service.entry(s.service_id).or_default().0.push(s);
        }
        for t in topups {
            by_service.entry(t.service_id).or_default().1.push(t);
        }
        Ok(Page {
            next: services.next,
            items: services
                .items
                .into_iter()
                .map(|s| {
                    let metrics = by_service
                        .get(&s.id)
                        .map(|(st, tp)| st.iter().map(|u| metric_view(u, tp)).collect())
                        .unwrap_or_default();
                    ServiceUsageLine {
                        service_id: s.id.0,
                        external_id: s.external_id.map(Into::into),
                        username: s.username.into(),
                        status: s.status,
                        metrics,
                    }
                })
                .collect(),
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
