//! Audit: page through a server's remote accounts (`list_accounts`), compare them with the
//! local services on that server, store the report with an `audit.drift_found` event, and
//! optionally fix the drift on either side.
//!
//! Fixes are guarded: when the remote listing came back empty or ended early while local
//! services exist, nothing is fixed unless the caller forces it (an empty answer from a
//! broken remote must never turn into "mark everything failed"). A dry run stores the report
//! with the exact actions a fix would take and changes nothing else.

mod fix;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use provisio_api::requests::AuditInput;
use provisio_core::audit::{
    compare, remote_status, Audit, AuditState, DriftKind, Finding, FixMode, LocalAccount,
};
use provisio_core::event::NewEvent;
use provisio_core::module::{Action, Capability, RemoteAccount};
use provisio_core::page::{Page, PageRequest};
use provisio_core::server::Server;
use provisio_core::service::{NewService, ServiceStatus};
use provisio_core::settings::Settings;
use provisio_core::text::Username;
use provisio_core::{ClientId, ProductId, ServerId, ServiceId};
use provisio_store::{AuditFinish, NewAudit, ProductFilter};
use serde_json::Value;

use crate::error::Problems;
use crate::input::ActionInput;
use crate::input::RecordRef;
use crate::paging::Cursors;
use crate::{Engine, EngineError, Result};

/// How audits run.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Cron expression of the scheduled audit (report only, no fix); `None` turns it off.
    pub schedule: Option<String>,
    /// Accounts asked for per `list_accounts` call.
    pub page_size: u32,
    /// Servers audited at once.
    pub parallel_servers: usize,
    /// Pages one listing may take before it is stopped as endless.
    pub max_pages: u32,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            schedule: None,
            page_size: 1000,
            parallel_servers: 16,
            max_pages: 10_000,
        }
    }
}

/// A server's remote listing as far as it went.
pub(crate) struct Listing {
    pub accounts: Vec<RemoteAccount>,
    /// Why the listing ended before its last page.
    pub ended_early: Option<String>,
    /// It was stopped because its cursors repeated, cycled or passed `max_pages`: the
    /// remote is broken, and nothing it sent can be compared.
    pub runaway: bool,
}

/// What one audit needs besides its server, checked once for all servers.
#[derive(Debug, Clone)]
struct Plan {
    fix: Option<FixMode>,
    dry_run: bool,
    force: bool,
    client: Option<ClientId>,
    product: Option<ProductId>,
}

/// Products of one module by the package they stand for.
struct Packages {
    /// Product id → its package (its `package` setting, else its name).
    of: HashMap<ProductId, String>,
    /// Package → the first product (lowest id) with it.
    by_package: HashMap<String, ProductId>,
}

impl Engine {
    /// Starts an audit of each server the input names; returns them at once (running).
    pub async fn start_audits(self: &Arc<Self>, input: AuditInput) -> Result<Vec<Audit>> {
        let (servers, plan) = self.check_audit(&input).await?;
        let mut started = Vec::new();
        for s in &servers {
            let new = NewAudit {
                server_id: s.id,
                slot: None,
                fix: plan.fix,
                dry_run: plan.dry_run,
                force: plan.force,
            };
            if let Some(a) = self.store.insert_audit(&new).await? {
                started.push((a, s.clone()));
            }
        }
        let limit = Arc::new(tokio::sync::Semaphore::new(
            self.options.audit.parallel_servers.max(1),
        ));
        let out = started.iter().map(|(a, _)| a.clone()).collect();
        for (a, s) in started {
            let engine = self.clone();
            let plan = plan.clone();
            let limit = limit.clone();
            // The run's fixes and events are the doing of whoever started it.
            tokio::spawn(provisio_store::inherit(async move {
                let _permit = limit.acquire().await;
                engine.run_audit(a.id, s, plan).await;
            }));
        }
        Ok(out)
    }

    /// Audits one server now and returns the finished report (the bench and tests).
    pub async fn audit_now(self: &Arc<Self>, input: AuditInput) -> Result<Vec<Audit>> {
        let (servers, plan) = self.check_audit(&input).await?;
        let mut out = Vec::new();
        for s in servers {
            let new = NewAudit {
                server_id: s.id,
                slot: None,
                fix: plan.fix,
                dry_run: plan.dry_run,
                force: plan.force,
            };
            if let Some(a) = self.store.insert_audit(&new).await? {
                out.push(self.run_audit(a.id, s, plan.clone()).await);
            }
        }
        Ok(out)
    }

    async fn check_audit(&self, input: &AuditInput) -> Result<(Vec<Server>, Plan)> {
        let mut p = Problems::default();
        if input.dry_run && input.fix.is_none() {
            p.push(
                "dry_run",
                "requires",
                "needs fix: a dry run shows what a fix would do",
            );
        }
        let mut client = None;
        if let Some(c) = input.client {
            match self.store.get_client(ClientId(c)).await? {
                Some(c) => client = Some(c.id),
                None => p.push("client", "exists", "no such client"),
            }
        }
        if input.fix == Some(FixMode::Local) && input.client.is_none() {
            p.push(
                "client",
                "required",
                "fix local imports orphan accounts under this client",
            );
        }
        if input.client.is_some() && input.fix != Some(FixMode::Local) {
            p.push(
                "client",
                "not_applicable",
                "only fix local imports accounts",
            );
        }
        let mut product = None;
        if let Some(r) = &input.product {
            match self.find_product(r).await {
                Ok(pr) => product = Some(pr),
                Err(EngineError::NotFound { .. }) => p.push("product", "exists", "no such product"),
                Err(e) => return Err(e),
            }
        }
        let servers = match &input.server {
            Some(r) => match self.find_server(r).await {
                Ok(s) => {
                    if !self
                        .modules
                        .info(&s.module)
                        .is_some_and(|m| m.can(Capability::ListAccounts))
                    {
                        p.push(
                            "server",
                            "capability",
                            format!("module '{}' cannot list accounts", s.module),
                        );
                    }
                    vec![s]
                }
                Err(EngineError::NotFound { .. }) => {
                    p.push("server", "exists", "no such server");
                    vec![]
                }
                Err(e) => return Err(e),
            },
            None => self.audit_servers().await?,
        };
        if let (Some(pr), [s]) = (&product, servers.as_slice()) {
            if pr.module != s.module {
                p.push(
                    "product",
                    "module",
                    format!("must use module '{}'", s.module),
                );
            }
        }
        p.finish()?;
        Ok((
            servers,
            Plan {
                fix: input.fix,
                dry_run: input.dry_run,
                force: input.force,
                client,
                product: product.map(|p| p.id),
            },
        ))
    }

    async fn audit_servers(&self) -> Result<Vec<Server>> {
        self.enabled_servers_with(Capability::ListAccounts).await
    }

    /// The scheduled audit: every server, report only; one process per slot.
    pub(crate) async fn scheduled_audits(self: &Arc<Self>, slot: &str) {
        let servers = match self.audit_servers().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "listing servers for the audit failed");
                return;
            }
        };
        let plan = Plan {
            fix: None,
            dry_run: false,
            force: false,
            client: None,
            product: None,
        };
        for s in servers {
            let new = NewAudit {
                server_id: s.id,
                slot: Some(slot.to_string()),
                fix: None,
                dry_run: false,
                force: false,
            };
            match self.store.insert_audit(&new).await {
                Ok(Some(a)) => {
                    self.run_audit(a.id, s, plan.clone()).await;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "starting a scheduled audit failed"),
            }
        }
    }

    /// Pages through the remote listing, following cursors through [`Cursors`].
    pub(crate) async fn list_remote(&self, server: &Server) -> Listing {
        let mut listing = Listing {
            accounts: Vec::new(),
            ended_early: None,
            runaway: false,
        };
        let (module, base) = match self.server_request(server, Action::ListAccounts) {
            Ok(p) => (p.module, p.request),
            Err(e) => {
                listing.ended_early = Some(e);
                return listing;
            }
        };
        let mut cursors = Cursors::new(self.options.audit.max_pages, "audit.max_pages");
        let mut cursor: Option<String> = None;
        let pace = server
            .max_per_second
            .filter(|r| *r > 0)
            .map(|r| std::time::Duration::from_secs_f64(1.0 / f64::from(r)));
        let mut last: Option<std::time::Instant> = None;
        loop {
            if let (Some(p), Some(at)) = (pace, last) {
                let wait = p.saturating_sub(at.elapsed());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            let mut req = base.clone();
            req.params
                .insert("limit".into(), Value::from(self.options.audit.page_size));
            if let Some(c) = &cursor {
                req.params.insert("cursor".into(), Value::String(c.clone()));
            }
            last = Some(std::time::Instant::now());
            match self.call_read(module.as_ref(), &req).await {
                Ok(reply) => {
                    listing.accounts.extend(reply.accounts);
                    match cursors.next(reply.next) {
                        Ok(Some(n)) => cursor = Some(n),
                        Ok(None) => return listing,
                        Err(why) => {
                            listing.ended_early = Some(why);
                            listing.runaway = true;
                            return listing;
                        }
                    }
                }
                Err(e) => {
                    listing.ended_early = Some(e.to_string());
                    return listing;
                }
            }
        }
    }

    async fn packages(&self, module: &str) -> Result<Packages> {
        let mut of = HashMap::new();
        let mut by_package = HashMap::new();
        let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
        loop {
            let got = self
                .store
                .list_products(
                    &ProductFilter {
                        module: Some(module.to_string()),
                        ..Default::default()
                    },
                    page,
                )
                .await?;
            for p in got.items {
                let view = self.product_view(p).await?;
                let package = match view.effective.get("package") {
                    Some(Value::String(s)) => s.clone(),
                    _ => view.product.name.to_string(),
                };
                by_package.entry(package.clone()).or_insert(view.product.id);
                of.insert(view.product.id, package);
            }
            match got.next {
                Some(n) => page.after = Some(n),
                None => break,
            }
        }
        Ok(Packages { of, by_package })
    }

    /// Runs a stored audit to its end; never fails (a failure is the audit's state).
    async fn run_audit(self: &Arc<Self>, id: i64, server: Server, plan: Plan) -> Audit {
        use futures::FutureExt as _;
        let t0 = std::time::Instant::now();
        // A panic fails this audit like an internal error, never leaves it running.
        let r = std::panic::AssertUnwindSafe(self.audit_inner(id, &server, &plan))
            .catch_unwind()
            .await
            .unwrap_or_else(|payload| {
                let why = crate::jobs::call::panic_message(payload.as_ref());
                Err(EngineError::Conflict {
                    field: None,
                    message: format!("the audit panicked: {why}"),
                })
            });
        let fin = match r {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, audit = id, "audit failed");
                AuditFinish {
                    state: AuditState::Failed,
                    remote_accounts: 0,
                    local_services: 0,
                    counts: BTreeMap::new(),
                    note: Some("the audit failed internally; see the server log".into()),
                    findings: Vec::new(),
                }
            }
        };
        crate::metrics::audit(
            server.name.as_str(),
            fin.state != AuditState::Failed,
            &fin.counts,
            t0.elapsed(),
        );
        let mut events = Vec::new();
        if !fin.findings.is_empty() {
            events.push(NewEvent::new(
                "audit.drift_found",
                format!("server:{}", server.id),
                serde_json::json!({
                    "audit_id": id,
                    "server_id": server.id,
                    "server": server.name.as_str(),
                    "counts": fin.counts,
                    "fix": plan.fix.map(|f| f.as_str()),
                    "dry_run": plan.dry_run,
                }),
            ));
        }
        match self.store.finish_audit(id, &fin, &events).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, audit = id, "storing the audit report failed");
                Audit {
                    id,
                    server_id: server.id,
                    state: AuditState::Failed,
                    fix: plan.fix,
                    dry_run: plan.dry_run,
                    force: plan.force,
                    remote_accounts: fin.remote_accounts,
                    local_services: fin.local_services,
                    counts: fin.counts,
                    note: Some("the report could not be stored".into()),
                    started_at: self.now(),
                    finished_at: None,
                }
            }
        }
    }

    async fn audit_inner(&self, id: i64, server: &Server, plan: &Plan) -> Result<AuditFinish> {
        let listing = self.list_remote(server).await;
        let (remote, ended_early) = (listing.accounts, listing.ended_early);
        if listing.runaway {
            let why = ended_early.unwrap_or_default();
            tracing::warn!(audit = id, server = %server.name, %why, "audit listing stopped");
            return Ok(AuditFinish {
                state: AuditState::Failed,
                remote_accounts: remote.len() as i64,
                local_services: 0,
                counts: DriftKind::ALL
                    .iter()
                    .map(|k| (k.as_str().to_string(), 0))
                    .collect(),
                note: Some(format!(
                    "the remote listing was stopped and nothing was compared: {why}"
                )),
                findings: Vec::new(),
            });
        }
        let packages = self.packages(&server.module).await?;
        let local: Vec<LocalAccount> = self
            .store
            .server_accounts(server.id)
            .await?
            .into_iter()
            .map(|a| LocalAccount {
                package: packages.of.get(&a.product_id).cloned(),
                service_id: a.service_id,
                username: a.username,
                status: a.status,
            })
            .collect();
        let live = local
            .iter()
            .filter(|l| matches!(l.status, ServiceStatus::Active | ServiceStatus::Suspended))
            .count();
        let mut findings = compare(&remote, &local);
        let mut counts: BTreeMap<String, i64> = DriftKind::ALL
            .iter()
            .map(|k| (k.as_str().to_string(), 0))
            .collect();
        for f in &findings {
            *counts.entry(f.kind.as_str().to_string()).or_default() += 1;
        }
        let mut notes = Vec::new();
        if let Some(why) = &ended_early {
            notes.push(format!("the remote listing ended early: {why}"));
        }
        let unsafe_listing = live > 0 && (remote.is_empty() || ended_early.is_some());
        if let Some(mode) = plan.fix {
            if unsafe_listing && !plan.force {
                notes.push(format!(
                    "fix refused: the remote listing was {} while {live} local services exist; \
                     check the remote, or run again with force",
                    if remote.is_empty() {
                        "empty"
                    } else {
                        "incomplete"
                    }
                ));
            } else {
                let statuses: HashMap<ServiceId, ServiceStatus> =
                    local.iter().map(|l| (l.service_id, l.status)).collect();
                for f in findings.iter_mut() {
                    f.fix = Some(
                        self.fix_one(id, server, mode, plan, &packages, &statuses, f)
                            .await,
                    );
                }
            }
        }
        if ended_early.is_some() && remote.is_empty() && live > 0 && plan.fix.is_none() {
            // Without any listing, every local service would look missing.
            return Ok(AuditFinish {
                state: AuditState::Failed,
                remote_accounts: 0,
                local_services: local.len() as i64,
                counts,
                note: Some(notes.join("; ")),
                findings,
            });
        }
        Ok(AuditFinish {
            state: AuditState::Done,
            remote_accounts: remote.len() as i64,
            local_services: local.len() as i64,
            counts,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
            findings,
        })
    }

    /// Plans (dry run) or takes the fix for one finding; returns what it did or would do.
    pub async fn get_audit(&self, id: i64) -> Result<Audit> {
        self.store
            .get_audit(id)
            .await?
            .ok_or_else(|| EngineError::NotFound {
                what: "audit",
                key: id.to_string(),
            })
    }

    /// An audit's findings, optionally of one kind.
    pub async fn audit_findings(&self, id: i64, kind: Option<DriftKind>) -> Result<Vec<Finding>> {
        let all = self
            .store
            .audit_findings(id)
            .await?
            .ok_or_else(|| EngineError::NotFound {
                what: "audit",
                key: id.to_string(),
            })?;
        Ok(match kind {
            Some(k) => all.into_iter().filter(|f| f.kind == k).collect(),
            None => all,
        })
    }

    pub async fn list_audits(
        &self,
        server: Option<&RecordRef>,
        page: PageRequest,
    ) -> Result<Page<Audit>> {
        let server: Option<ServerId> = match server {
            Some(r) => Some(self.find_server(r).await?.id),
            None => None,
        };
        Ok(self.store.list_audits(server, page).await?)
    }
}

/// What of an engine error a report may show: the caller-facing message, never internals.
fn public(e: &EngineError) -> String {
    match e {
        EngineError::Store(_) | EngineError::Secret(_) => {
            "internal error (see the server log)".into()
        }
        other => other.to_string(),
    }
}
