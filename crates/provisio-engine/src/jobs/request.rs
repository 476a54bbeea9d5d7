//! Asking for actions: checking them against the service's lifecycle, writing the job (in
//! the same transaction as the record that caused it), and the module queue's operations.

use std::time::Duration;

use chrono::{DateTime, Utc};
use provisio_core::job::{status_after, Attempt, Job, JobId, JobState, NewJob};
use provisio_core::module::Action;
use provisio_core::page::{Page, PageRequest};
use provisio_core::service::{Service, ServiceStatus};
use provisio_core::settings::Settings;
use provisio_core::trace::{TraceContext, TraceId};
use provisio_core::{ServerId, ServiceId};
use provisio_store::JobFilter;
use rand::RngCore;
use secrecy::SecretString;
use serde_json::Value;

use crate::error::Problems;
use crate::input::{ActionInput, RecordRef};
use crate::jobs::plan;
use crate::{Engine, EngineError, Result};

/// A job with its attempt history.
#[derive(Debug, Clone)]
pub struct JobDetail {
    pub job: Job,
    pub attempts: Vec<Attempt>,
}

/// A string a gate set, checked for length; the message never shows the value.
pub(crate) fn gate_text(
    v: &Value,
    field: &str,
    min: usize,
    max: usize,
) -> std::result::Result<String, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{field}: must be a string"))?;
    let n = s.chars().count();
    if !(min..=max).contains(&n) {
        return Err(format!("{field}: must be {min} to {max} characters"));
    }
    Ok(s.to_string())
}

/// How often `wait_for_jobs` rereads the jobs it waits for when nothing was announced
/// (jobs other processes run), and the least time between two such rereads.
const RECHECK_EVERY: Duration = Duration::from_secs(3);
const RECHECK_GAP: Duration = Duration::from_secs(2);

pub(crate) fn new_idempotency_key() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Engine {
    pub(crate) fn new_job(
        &self,
        server_id: ServerId,
        action: Action,
        params: Settings,
        run_after: DateTime<Utc>,
    ) -> NewJob {
        NewJob {
            server_id,
            action,
            params,
            idempotency_key: new_idempotency_key(),
            max_attempts: self.options.jobs.retry.max_attempts(),
            run_after,
            // The trace of the request that asked, so its gate calls and the job share one.
            trace_id: provisio_modules::trace::current()
                .map(|c| c.trace_id)
                .unwrap_or_else(TraceId::random),
        }
    }

    /// The status the service will have once its open jobs have run, so that a suspend can
    /// be queued behind the create that makes it possible.
    async fn projected_status(&self, id: ServiceId) -> Result<(Service, ServiceStatus)> {
        // Open jobs first, the service second: a job's end and the status it sets commit
        // together, so this order never sees a finished create's job gone but its status
        // not yet set (the other order would, and refuse a valid action).
        let open = self
            .store
            .list_jobs(
                &JobFilter {
                    service_id: Some(id),
                    open_only: true,
                    ..Default::default()
                },
                PageRequest::first(PageRequest::MAX_LIMIT),
            )
            .await?;
        let service = self.get_service(id).await?;
        let projected = open.items.iter().fold(service.status, |st, j| {
            status_after(&j.action).unwrap_or(st)
        });
        Ok((service, projected))
    }

    /// The custom actions the service's server offers (its module's, per the server's
    /// settings), in the module's order: what a billing system shows as buttons.
    pub async fn service_custom_actions(&self, id: ServiceId) -> Result<Vec<String>> {
        let service = self.get_service(id).await?;
        let server = self
            .store
            .get_server(service.server_id)
            .await?
            .ok_or_else(|| EngineError::NotFound {
                what: "server",
                key: service.server_id.to_string(),
            })?;
        Ok(self
            .modules
            .get(&server.module)
            .map(|m| m.custom_actions(&server.settings))
            .unwrap_or_default())
    }

    /// Queues `action` on a service and wakes the worker. The status changes only when the
    /// remote has confirmed it.
    pub async fn request_action(
        &self,
        id: ServiceId,
        action: Action,
        input: ActionInput,
    ) -> Result<Job> {
        // One trace for the gates asked and the job queued (and so for all its attempts).
        let trace = TraceContext::in_trace(TraceId::random());
        provisio_modules::trace::scope(trace, self.request_action_traced(id, action, input)).await
    }

    async fn request_action_traced(
        &self,
        id: ServiceId,
        action: Action,
        input: ActionInput,
    ) -> Result<Job> {
        let service = self.get_service(id).await?;
        let server = self
            .store
            .get_server(service.server_id)
            .await?
            .ok_or_else(|| EngineError::NotFound {
                what: "server",
                key: service.server_id.to_string(),
            })?;
        let module = self.modules.get(&server.module);
        let offered = module
            .map(|m| m.custom_actions(&server.settings))
            .unwrap_or_default();
        // The checks that need the projected status come after those that do not, so a
        // request for an action the module lacks does not read the service's jobs.
        let mut target = plan::Target {
            server: &server,
            module: module.map(|m| m.info()),
            offered: &offered,
            status: service.status,
            product_id: service.product_id,
        };
        plan::check_capable(&target, &action)?;
        let (service, projected) = self.projected_status(service.id).await?;
        target.status = projected;
        plan::check_runnable(&target, &action)?;
        let new_product = match (&action, &input.product) {
            (Action::ChangePackage, Some(r)) => match self.find_product(r).await {
                Ok(prod) => plan::NewProduct::Found(Box::new(prod)),
                Err(EngineError::NotFound { .. }) => plan::NewProduct::Missing,
                Err(e) => return Err(e),
            },
            _ => plan::NewProduct::None,
        };
        let mut params = plan::params(
            &self.cipher,
            self.now(),
            &target,
            &action,
            &input,
            new_product,
        )?;

        let mut service = service;
        let gated = self
            .gate_action(&mut service, &server.module, &action, &mut params)
            .await;
        if let Err(EngineError::Forbidden { handler, reason }) = &gated {
            // The refusal goes into the job history, so whoever looks at the service later
            // sees why the action never ran.
            let job = self.new_job(
                service.server_id,
                action.clone(),
                params.clone(),
                self.now(),
            );
            let message = format!("forbidden by handler '{handler}': {reason}");
            self.store
                .insert_refused_job(service.id, &job, &message)
                .await?;
        }
        let service_changed = gated?;
        if service_changed {
            service = self.store.update_service(&service).await?;
        }
        let before = crate::events::before(&params, action.as_str(), &service);
        let job = self.new_job(service.server_id, action, params, self.now());
        let stored = self.store.enqueue_job(service.id, &job, &[before]).await?;
        self.wake.notify_one();
        self.count_enqueued(vec![&stored]).await;
        Ok(stored)
    }

    /// Runs the gates of `service.<action>.before`, applying their changes to the job's
    /// params and (for create) to the service; says whether the service changed.
    pub(crate) async fn gate_action(
        &self,
        service: &mut Service,
        module: &str,
        action: &Action,
        params: &mut Settings,
    ) -> Result<bool> {
        let event = format!("service.{}.before", action.as_str());
        // Most actions meet no gate: then neither the client is read nor a payload built.
        let gates = self.gates_listening(&event).await?;
        if gates.is_empty() {
            return Ok(false);
        }
        let client = self.store.get_client(service.client_id).await?;
        let (shown, _) = provisio_core::secret::redact_settings(params);
        let payload = serde_json::json!({
            "action": action.as_str(),
            "params": shown,
            "service": crate::events::service_payload(service),
            "client": client,
        });
        let info = self.modules.info(module).cloned();
        let mut changed = false;
        let mut apply = |data: &serde_json::Map<String, Value>, payload: &mut Value| {
            crate::hooks::gates::check_keys(data, action)?;
            for (k, v) in data {
                match k.as_str() {
                    "reason" => {
                        let r = gate_text(v, "reason", 1, 200)?;
                        params.insert("reason".into(), Value::String(r.clone()));
                        payload["params"]["reason"] = Value::String(r);
                    }
                    "password" => {
                        let pw = SecretString::from(gate_text(v, "password", 8, 128)?);
                        let sealed = self.cipher.seal_str(&pw);
                        if *action == Action::ChangePassword {
                            params.insert(
                                "new_password".into(),
                                crate::catalog::sealed_value(&sealed),
                            );
                        } else {
                            service.password = sealed;
                            changed = true;
                        }
                    }
                    "username" => {
                        let u = gate_text(v, "username", 1, 64)?;
                        service.username = provisio_core::text::Username::parse(&u)
                            .map_err(|e| format!("username: {e}"))?;
                        payload["service"]["username"] = Value::String(u);
                        changed = true;
                    }
                    "settings" => {
                        let Value::Object(new) = v else {
                            return Err("settings: must be an object".to_string());
                        };
                        let info = info.as_ref().ok_or("the module is not installed")?;
                        let mut open =
                            self.cipher.open_settings(&service.settings).map_err(|_| {
                                "the service's settings could not be opened".to_string()
                            })?;
                        for (sk, sv) in new {
                            open.insert(sk.clone(), sv.clone());
                        }
                        let mut p = Problems::default();
                        let settings = self
                            .complete_settings(
                                &mut p,
                                info,
                                provisio_core::module::SchemaScope::Service,
                                &open,
                            )
                            .ok_or_else(|| {
                                p.0.iter()
                                    .map(|e| e.message.clone())
                                    .collect::<Vec<_>>()
                                    .join("; ")
                            })?;
                        let (shown, _) = provisio_core::secret::redact_settings(&settings);
                        payload["service"]["settings"] = Value::Object(shown);
                        service.settings = settings;
                        changed = true;
                    }
                    _ => unreachable!("check_keys let through only known fields"),
                }
            }
            Ok(())
        };
        self.ask_gates(&gates, &event, payload, &mut apply).await?;
        Ok(changed)
    }

    /// Accepts a pending order: for a product set up `on_accept`, queues its create.
    pub async fn accept_service(&self, id: ServiceId) -> Result<Job> {
        let service = self.get_service(id).await?;
        let product = self
            .find_product(&RecordRef::Id(service.product_id.0))
            .await?;
        if product.auto_setup != provisio_core::product::AutoSetup::OnAccept {
            return Err(EngineError::Conflict {
                field: None,
                message: format!(
                    "product '{}' is set up {}, not on acceptance; {}",
                    product.name,
                    product.auto_setup.as_str().replace('_', " "),
                    if product.auto_setup == provisio_core::product::AutoSetup::Manual {
                        "run create instead"
                    } else {
                        "its create was queued when it was ordered"
                    }
                ),
            });
        }
        if service.status != ServiceStatus::Pending {
            return Err(EngineError::Conflict {
                field: None,
                message: format!(
                    "service {id} is {}; only a pending order can be accepted",
                    service.status.as_str()
                ),
            });
        }
        // request_action refuses a second create while one is queued (the projected
        // status is then active), so accepting twice cannot create twice.
        self.request_action(id, Action::Create, ActionInput::default())
            .await
    }

    pub async fn get_job(&self, id: JobId) -> Result<JobDetail> {
        let job = self
            .store
            .get_job(id)
            .await?
            .ok_or_else(|| EngineError::NotFound {
                what: "job",
                key: id.to_string(),
            })?;
        let attempts = self.store.job_attempts(id).await?;
        Ok(JobDetail { job, attempts })
    }

    pub async fn list_jobs(&self, f: &JobFilter, page: PageRequest) -> Result<Page<Job>> {
        Ok(self.store.list_jobs(f, page).await?)
    }

    /// A failed job runs again, with a fresh set of retries.
    pub async fn retry_job(&self, id: JobId) -> Result<Job> {
        let job = self.get_job(id).await?.job;
        let extra = self.options.jobs.retry.max_attempts();
        match self.store.retry_job(id, self.now(), extra).await? {
            Some(j) => {
                self.wake.notify_one();
                Ok(j)
            }
            None => Err(EngineError::Conflict {
                field: None,
                message: format!(
                    "job {id} is {}; only failed jobs can be retried",
                    job.state.as_str()
                ),
            }),
        }
    }

    /// Retries every failed job, optionally only those of one server; returns how many.
    pub async fn retry_failed(&self, server: Option<ServerId>) -> Result<usize> {
        let mut n = 0;
        let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
        let extra = self.options.jobs.retry.max_attempts();
        loop {
            let failed = self
                .store
                .list_jobs(
                    &JobFilter {
                        state: Some(JobState::Failed),
                        server_id: server,
                        ..Default::default()
                    },
                    page,
                )
                .await?;
            for j in &failed.items {
                if self
                    .store
                    .retry_job(j.id, self.now(), extra)
                    .await?
                    .is_some()
                {
                    n += 1;
                }
            }
            match failed.next {
                Some(c) => page.after = Some(c),
                None => break,
            }
        }
        if n > 0 {
            self.wake.notify_one();
        }
        Ok(n)
    }

    /// A person marks a failed job handled.
    pub async fn resolve_job(&self, id: JobId, note: &str) -> Result<Job> {
        let mut p = Problems::default();
        if note.trim().is_empty() || note.chars().count() > 2000 {
            p.push("note", "length", "must be 1 to 2000 characters");
        }
        p.finish()?;
        let job = self.get_job(id).await?.job;
        self.store
            .resolve_job(id, note.trim(), self.now())
            .await?
            .ok_or_else(|| EngineError::Conflict {
                field: None,
                message: format!(
                    "job {id} is {}; only failed jobs can be resolved",
                    job.state.as_str()
                ),
            })
    }

    /// Waits up to `timeout` for many jobs at once and returns each as it was last seen.
    /// Waiting for them one by one would re-read every waiting job on each finish.
    pub async fn wait_for_jobs(
        &self,
        ids: &[JobId],
        timeout: Duration,
    ) -> Result<std::collections::HashMap<JobId, Job>> {
        use tokio::sync::broadcast::error::RecvError;
        let mut rx = self.finished.subscribe();
        let mut drain = self.drain_until.subscribe();
        let asked = tokio::time::Instant::now() + timeout;
        let mut pending: std::collections::HashSet<JobId> = ids.iter().copied().collect();
        let mut recheck = true;
        let mut first = true;
        let mut last_recheck = tokio::time::Instant::now();
        while !pending.is_empty() {
            // Jobs that ended before we listened, ended in other processes, or whose
            // announcement was lost while the receiver lagged are found only by reading
            // them: at once, then at most every few seconds, in batches.
            if recheck && (first || last_recheck.elapsed() >= RECHECK_GAP) {
                first = false;
                last_recheck = tokio::time::Instant::now();
                let ids: Vec<JobId> = pending.iter().copied().collect();
                for j in self.store.get_jobs(&ids).await? {
                    if j.state.is_final() {
                        pending.remove(&j.id);
                    }
                }
                recheck = false;
                continue;
            }
            let deadline = self.drain_deadline().map_or(asked, |d| d.min(asked));
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                r = rx.recv() => match r {
                    Ok((id, state)) => {
                        if state.is_final() {
                            pending.remove(&id);
                        }
                    }
                    Err(RecvError::Lagged(_)) => recheck = true,
                    Err(RecvError::Closed) => recheck = true,
                },
                _ = tokio::time::sleep(RECHECK_EVERY) => recheck = true,
                _ = tokio::time::sleep_until(deadline) => {}
                _ = drain.changed() => {}
            }
        }
        // Every job as it is now, final or (at the deadline) not.
        Ok(self
            .store
            .get_jobs(ids)
            .await?
            .into_iter()
            .map(|j| (j.id, j))
            .collect())
    }

    /// Waits up to `timeout` for a job to reach a final state and returns it as it is then.
    pub async fn wait_for_job(&self, id: JobId, timeout: Duration) -> Result<Job> {
        let mut rx = self.finished.subscribe();
        let mut drain = self.drain_until.subscribe();
        let asked = tokio::time::Instant::now() + timeout;
        loop {
            // A stopping process answers by the end of its drain.
            let deadline = self.drain_deadline().map_or(asked, |d| d.min(asked));
            let job = self.get_job(id).await?.job;
            if job.state.is_final() || tokio::time::Instant::now() >= deadline {
                return Ok(job);
            }
            // Another process may finish it: poll as well as listen.
            let tick = tokio::time::sleep(Duration::from_millis(250));
            // Reread on our job's announcement only; other jobs end all the time.
            let mut tick = std::pin::pin!(tick);
            loop {
                tokio::select! {
                    r = rx.recv() => match r {
                        Ok((j, _)) if j != id => continue,
                        _ => {}
                    },
                    _ = &mut tick => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = drain.changed() => {}
                }
                break;
            }
        }
    }
}
