//! Automation rules: records (checked like any input) and the loop that runs their due
//! firings. A firing acts through the same paths as the API, so gates and lifecycle checks
//! apply to it too (a VIP gate stops a non-payment suspension as surely as a manual one).

use std::sync::Arc;
use std::time::Duration;

use crate::shutdown::Shutdown;
use provisio_core::event::{EventType, CATALOGUE};
use provisio_core::module::Action;
use provisio_core::page::PageRequest;
use provisio_core::rule::{NewRule, Rule, RuleAction, RuleRun, RuleRunState};
use provisio_core::service::ServiceStatus;
use provisio_core::text::Handle;
use provisio_core::{ClientId, RuleId, ServiceId};
use provisio_store::ServiceFilter;

use crate::error::Problems;
use crate::input::ActionInput;
use crate::input::{RecordRef, ServiceCreate};
use crate::{Engine, EngineError, Result};

/// Longest grace a rule may wait: a year.
pub const MAX_DELAY_SECS: u64 = 366 * 86_400;
const RUN_LEASE: Duration = Duration::from_secs(300);

// The bodies are the API's wire types, defined once in `provisio-api`.
pub use provisio_api::requests::{RuleCreate, RulePatch};

impl Engine {
    async fn check_rule(
        &self,
        p: &mut Problems,
        name: &str,
        on: &str,
        action: &RuleAction,
        delay_secs: u64,
    ) -> Result<Option<(Handle, EventType)>> {
        let name = p.take("name", Handle::parse(name));
        let on = match EventType::parse(on) {
            Ok(t) if !t.is_catalogued() => {
                p.push(
                    "on",
                    "catalogue",
                    format!("'{on}' is not an event Provisio emits"),
                );
                None
            }
            Ok(t) if !(t.as_str().starts_with("client.") || t.as_str().starts_with("service.")) => {
                p.push(
                    "on",
                    "subject",
                    "must be a client.* or service.* event: rules act on a client",
                );
                None
            }
            Ok(t) if t.as_str().ends_with(".before") => {
                p.push(
                    "on",
                    "before",
                    "a .before event may still be forbidden; use the outcome (.succeeded)",
                );
                None
            }
            Ok(t) => Some(t),
            Err(e) => {
                p.push("on", e.rule, e.message);
                None
            }
        };
        if delay_secs > MAX_DELAY_SECS {
            p.push(
                "delay_secs",
                "range",
                format!("must be at most {MAX_DELAY_SECS}"),
            );
        }
        match action {
            RuleAction::CreateService { product, server } => {
                match self.find_product(&RecordRef::Name(product.clone())).await {
                    Ok(_) => {}
                    Err(EngineError::NotFound { .. }) => p.push(
                        "action.product",
                        "exists",
                        format!("no product '{product}'"),
                    ),
                    Err(e) => return Err(e),
                }
                if let Some(s) = server {
                    match self.find_server(&RecordRef::Name(s.clone())).await {
                        Ok(_) => {}
                        Err(EngineError::NotFound { .. }) => {
                            p.push("action.server", "exists", format!("no server '{s}'"))
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            RuleAction::SuspendServices { reason } => {
                let n = reason.trim().chars().count();
                if n == 0 || n > 200 {
                    p.push("action.reason", "length", "must be 1 to 200 characters");
                }
            }
            RuleAction::UnsuspendServices { only_reason } => {
                if only_reason
                    .as_ref()
                    .is_some_and(|r| r.trim().is_empty() || r.trim().chars().count() > 200)
                {
                    p.push(
                        "action.only_reason",
                        "length",
                        "must be 1 to 200 characters",
                    );
                }
            }
        }
        Ok(name.zip(on))
    }

    pub async fn create_rule(&self, input: RuleCreate) -> Result<Rule> {
        let mut p = Problems::default();
        let delay = input.delay_secs.unwrap_or(0);
        let checked = self
            .check_rule(&mut p, &input.name, &input.on, &input.action, delay)
            .await?;
        p.finish()?;
        let (name, on) = checked.expect("checked");
        Ok(self
            .store
            .insert_rule(&NewRule {
                name,
                on,
                action: input.action,
                delay: Duration::from_secs(delay),
                enabled: input.enabled.unwrap_or(true),
            })
            .await?)
    }

    pub async fn find_rule(&self, r: &RecordRef) -> Result<Rule> {
        let found = match r {
            RecordRef::Id(i) => self.store.get_rule(RuleId(*i)).await?,
            RecordRef::Name(n) => self.store.get_rule_by_name(n).await?,
        };
        found.ok_or_else(|| EngineError::NotFound {
            what: "rule",
            key: r.to_string(),
        })
    }

    pub async fn list_rules(&self) -> Result<Vec<Rule>> {
        Ok(self.store.list_rules().await?)
    }

    pub async fn update_rule(&self, r: &RecordRef, patch: RulePatch) -> Result<Rule> {
        let rule = self.find_rule(r).await?;
        let name = patch.name.unwrap_or_else(|| rule.name.to_string());
        let on = patch.on.unwrap_or_else(|| rule.on.to_string());
        let action = patch.action.unwrap_or(rule.action);
        let delay = patch.delay_secs.unwrap_or(rule.delay.as_secs());
        let mut p = Problems::default();
        let checked = self.check_rule(&mut p, &name, &on, &action, delay).await?;
        p.finish()?;
        let (name, on) = checked.expect("checked");
        Ok(self
            .store
            .update_rule(
                rule.id,
                &NewRule {
                    name,
                    on,
                    action,
                    delay: Duration::from_secs(delay),
                    enabled: patch.enabled.unwrap_or(rule.enabled),
                },
            )
            .await?)
    }

    pub async fn delete_rule(&self, r: &RecordRef) -> Result<()> {
        let rule = self.find_rule(r).await?;
        self.store.delete_rule(rule.id).await?;
        Ok(())
    }

    pub async fn list_rule_runs(
        &self,
        rule: Option<&RecordRef>,
        page: PageRequest,
    ) -> Result<provisio_core::page::Page<RuleRun>> {
        let id = match rule {
            Some(r) => Some(self.find_rule(r).await?.id),
            None => None,
        };
        Ok(self.store.list_rule_runs(id, page).await?)
    }

    /// Runs one due firing; says how it ended and what it did.
    async fn run_rule(&self, run: &RuleRun) -> (RuleRunState, String) {
        use futures::FutureExt as _;
        // A panic costs this run, not the loop that runs every rule.
        // A chain of rules reacting to each other's doings stops at the depth limit.
        let depth = match self.store.get_event(run.event_id).await {
            Ok(Some(e)) => e.depth,
            // A trimmed event was an outside one long ago.
            Ok(None) => 0,
            Err(e) => {
                return (
                    RuleRunState::Failed,
                    format!("reading its event failed: {e}"),
                )
            }
        };
        let max = self.options.hooks.max_rule_depth;
        if depth >= max {
            return (
                RuleRunState::Skipped,
                format!(
                    "the event is {depth} rule firings deep, the most [hooks] max_rule_depth \
                     ({max}) allows; the chain stops here"
                ),
            );
        }
        // What the rule does is recorded as the rule's doing, one firing deeper.
        let actor = provisio_core::access::Actor::Rule { id: run.rule_id.0 };
        let tried = std::panic::AssertUnwindSafe(provisio_store::acting_at(
            actor,
            depth + 1,
            self.try_run_rule(run),
        ))
        .catch_unwind()
        .await
        .unwrap_or_else(|payload| {
            let why = crate::jobs::call::panic_message(payload.as_ref());
            tracing::error!(rule = %run.rule_id, panic = %why, "a rule run panicked");
            Ok((RuleRunState::Failed, format!("the run panicked: {why}")))
        });
        match tried {
            Ok(outcome) => outcome,
            Err(e) => (RuleRunState::Failed, e.to_string()),
        }
    }

    async fn try_run_rule(&self, run: &RuleRun) -> Result<(RuleRunState, String)> {
        let Some(rule) = self.store.get_rule(run.rule_id).await? else {
            return Ok((RuleRunState::Skipped, "the rule was deleted".into()));
        };
        if !rule.enabled {
            return Ok((RuleRunState::Skipped, "the rule is disabled".into()));
        }
        let client = match crate::hooks::deliver::subject_id(&run.subject, "client") {
            Some(id) => ClientId(id),
            None => match crate::hooks::deliver::subject_id(&run.subject, "service") {
                Some(id) => match self.store.get_service(ServiceId(id)).await? {
                    Some(s) => s.client_id,
                    None => {
                        return Ok((RuleRunState::Skipped, "the service no longer exists".into()))
                    }
                },
                None => {
                    return Ok((
                        RuleRunState::Skipped,
                        format!("subject {} is not a client or service", run.subject),
                    ))
                }
            },
        };
        let Some(c) = self.store.get_client(client).await? else {
            return Ok((RuleRunState::Skipped, "the client no longer exists".into()));
        };
        // A grace period is a chance to pay: if the balance crossed back meanwhile, the
        // rule's reason is gone.
        match rule.on.as_str() {
            "client.balance_nonpositive" if c.balance_minor > 0 => {
                return Ok((
                    RuleRunState::Skipped,
                    format!("the balance is positive again ({})", c.balance_minor),
                ))
            }
            "client.balance_nonnegative" if c.balance_minor < 0 => {
                return Ok((
                    RuleRunState::Skipped,
                    format!("the balance is negative again ({})", c.balance_minor),
                ))
            }
            _ => {}
        }
        match &rule.action {
            RuleAction::CreateService { product, server } => {
                // One firing orders one service, however often it runs (a crash or an
                // expired lease between the order and the run's record runs it again).
                let key = format!("rule:{}:event:{}", rule.id, run.event_id.0);
                if let Some(s) = self.store.find_service_by_order_key(&key).await? {
                    return Ok((
                        RuleRunState::Done,
                        format!(
                            "service {} ({}) was already ordered by this firing",
                            s.id, s.username
                        ),
                    ));
                }
                let s = self
                    .create_service(ServiceCreate {
                        order_key: Some(key),
                        client_id: client,
                        product: RecordRef::Name(product.clone()),
                        server: server.clone().map(RecordRef::Name),
                        username: None,
                        password: None,
                        invoice: None,
                        parent_invoice: None,
                        settings: Default::default(),
                        external_id: None,
                    })
                    .await?;
                Ok((
                    RuleRunState::Done,
                    format!("ordered service {} ({})", s.id, s.username),
                ))
            }
            RuleAction::SuspendServices { reason } => {
                let services = self.client_services(client, ServiceStatus::Active).await?;
                let mut report = Vec::new();
                for s in services {
                    let input = ActionInput {
                        reason: Some(reason.clone()),
                        ..Default::default()
                    };
                    report.push(
                        match self.request_action(s.id, Action::Suspend, input).await {
                            Ok(j) => format!("service {}: suspend queued (job {})", s.id, j.id),
                            Err(e) => format!("service {}: {e}", s.id),
                        },
                    );
                }
                Ok((RuleRunState::Done, summary(report, "no active services")))
            }
            RuleAction::UnsuspendServices { only_reason } => {
                let services = self
                    .client_services(client, ServiceStatus::Suspended)
                    .await?;
                let mut report = Vec::new();
                for s in services {
                    let reason = s.suspension.as_ref().map(|x| x.reason.as_str().to_string());
                    if only_reason.is_some() && reason != *only_reason {
                        continue;
                    }
                    report.push(
                        match self
                            .request_action(s.id, Action::Unsuspend, ActionInput::default())
                            .await
                        {
                            Ok(j) => format!("service {}: unsuspend queued (job {})", s.id, j.id),
                            Err(e) => format!("service {}: {e}", s.id),
                        },
                    );
                }
                Ok((
                    RuleRunState::Done,
                    summary(report, "no services suspended for that reason"),
                ))
            }
        }
    }

    async fn client_services(
        &self,
        client: ClientId,
        status: ServiceStatus,
    ) -> Result<Vec<provisio_core::service::Service>> {
        self.all_services(&ServiceFilter {
            client_id: Some(client),
            status: Some(status),
            ..Default::default()
        })
        .await
    }
}

fn summary(report: Vec<String>, empty: &str) -> String {
    if report.is_empty() {
        empty.to_string()
    } else {
        report.join("; ")
    }
}

/// Checks a rule's event against the catalogue, for config loading.
pub fn is_rule_event(s: &str) -> bool {
    CATALOGUE.contains(&s)
}

/// Runs due rule firings until told to stop.
pub(crate) async fn rule_loop(engine: Arc<Engine>, mut stop: Shutdown) {
    let mut last_requeue: Option<std::time::Instant> = None;
    let pulse = engine
        .heartbeats()
        .register("rules", engine.options.jobs.poll_interval);
    loop {
        pulse.beat();
        if last_requeue.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
            last_requeue = Some(std::time::Instant::now());
            if let Err(e) = engine.store.requeue_expired_rule_runs(engine.now()).await {
                tracing::warn!(error = %e, "requeueing rule runs failed");
            }
        }
        let now = engine.now();
        let lease = now + chrono::Duration::from_std(RUN_LEASE).expect("small");
        let runs = match engine.store.claim_rule_runs(now, lease, 50).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "claiming rule runs failed");
                Vec::new()
            }
        };
        let busy = runs.len() == 50;
        for run in runs {
            let (state, result) = engine.run_rule(&run).await;
            tracing::info!(rule = %run.rule_id, subject = %run.subject, state = state.as_str(), result, "rule ran");
            if crate::metrics::enabled() {
                if let Ok(Some(rule)) = engine.store.get_rule(run.rule_id).await {
                    crate::metrics::rule_run(rule.name.as_str(), state.as_str());
                }
            }
            if let Err(e) = engine.store.finish_rule_run(run.id, state, &result).await {
                tracing::warn!(error = %e, "recording a rule run failed");
            }
        }
        if stop.is_stopping() {
            return;
        }
        if !busy {
            tokio::select! {
                _ = tokio::time::sleep(engine.options.jobs.poll_interval) => {}
                _ = stop.stopped() => return,
            }
        }
    }
}
