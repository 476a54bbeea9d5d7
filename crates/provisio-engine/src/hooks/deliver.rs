//! Getting messages to handlers: the transports (signed HTTP POST, confined script, email
//! over SMTP), the dispatcher that turns new events into deliveries and rule runs, and the
//! loop that sends due deliveries with retries, logs every attempt and keeps handlers' health.
//!
//! Deliveries run on their own tasks with their own concurrency cap, so a dead or slow
//! receiver never holds up jobs, and a delivery waits only for earlier deliveries of the same
//! subject to the same handler.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;
use provisio_core::event::Event;
use provisio_core::handler::{
    Delivery, DeliveryAttempt, DeliveryState, EmailTemplate, Handler, HandlerKind, HandlerStatus,
    Phase,
};
use provisio_core::module::redact;
use provisio_core::trace::{TraceContext, TraceId};
use provisio_core::webhook;
use provisio_core::{DeliveryId, ServiceId};
use provisio_modules::render::{off_runtime, TemplateLimits};
use provisio_store::{DeliveryUpdate, HandlerFilter, HandlerHealth, NewDelivery, NewRuleRun};
use rand::Rng;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::Engine;

/// How much of a receiver's answer the delivery log keeps.
const EXCERPT_LEN: usize = 500;
/// The most often a loop returns expired delivery leases to the queue.
const REQUEUE_EVERY: Duration = Duration::from_secs(5);
const DISPATCH_BATCH: u32 = 500;

/// What a handler answered.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: Option<u16>,
    pub body: Vec<u8>,
}

/// Why a handler call failed; messages hold no secret.
#[derive(Debug)]
pub(crate) struct CallFailure {
    pub status: Option<u16>,
    pub detail: String,
    /// Retrying cannot help: the outbound policy refused the target.
    pub permanent: bool,
}

impl CallFailure {
    pub(crate) fn new(status: Option<u16>, detail: String) -> Self {
        Self {
            status,
            detail,
            permanent: false,
        }
    }

    fn refused(refused: &provisio_modules::outbound::Refused) -> Self {
        Self {
            status: None,
            detail: format!("nothing was sent: {refused}"),
            permanent: true,
        }
    }
}

fn excerpt(body: &[u8], secrets: &[&str]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_LEN * 4)]);
    let cut: String = text.chars().take(EXCERPT_LEN).collect();
    Some(redact(&cut, secrets))
}

enum Cut {
    TooLarge,
    Broken,
}

/// The answer's body, read only up to `max` bytes: a larger one is refused, not buffered.
async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, Cut> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|_| Cut::Broken)? {
        if body.len() + chunk.len() > max {
            return Err(Cut::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Renders an email handler's recipient, subject and body, each within `limits`.
fn render_email(
    limits: &TemplateLimits,
    t: &EmailTemplate,
    context: &Value,
) -> Result<(String, String, String), String> {
    let mut env = minijinja::Environment::new();
    limits.apply(&mut env);
    let render = |what: &str, text: &str| {
        let failed = |e: minijinja::Error| {
            let why = limits.message(&e).unwrap_or_else(|| e.to_string());
            format!("rendering the {what} failed: {why}")
        };
        let template = env.template_from_str(text).map_err(failed)?;
        limits.render(&template, context).map_err(failed)
    };
    Ok((
        render("recipient", &t.to)?,
        render("subject", &t.subject)?,
        render("body", &t.body)?,
    ))
}

/// Checks that a template compiles, for refusing a bad one when it is stored.
pub(crate) fn check_template(text: &str) -> Result<(), String> {
    let env = minijinja::Environment::new();
    env.template_from_str(text)
        .map(|_| ())
        .map_err(|e| format!("does not compile: {e}"))
}

impl Engine {
    /// The secrets an `http` handler signs with right now: the current one, and the one
    /// before the last rotation while its overlap lasts.
    fn signing_secrets(&self, h: &Handler) -> Result<Vec<webhook::Secret>, String> {
        let mut out = Vec::new();
        let mut add = |sealed: &provisio_core::secret::Sealed| -> Result<(), String> {
            let text = self
                .cipher
                .open(sealed)
                .map_err(|_| "the handler's signing secret could not be decrypted".to_string())?;
            let s = webhook::Secret::parse(text.expose_secret())
                .map_err(|_| "the handler's signing secret is malformed".to_string())?;
            out.push(s);
            Ok(())
        };
        if let Some(s) = &h.secret {
            add(s)?;
        }
        if let (Some(s), Some(until)) = (&h.previous_secret, h.previous_secret_until) {
            if until > self.now() {
                add(s)?;
            }
        }
        Ok(out)
    }

    /// Sends one JSON message to an `http` or `script` handler and waits for its answer.
    pub(crate) async fn call_handler(
        &self,
        h: &Handler,
        msg_id: &str,
        body: &[u8],
    ) -> Result<Answer, CallFailure> {
        let fail = |detail: String| CallFailure::new(None, detail);
        match h.kind {
            HandlerKind::Http => {
                let secrets = self.signing_secrets(h).map_err(fail)?;
                let refs: Vec<&webhook::Secret> = secrets.iter().collect();
                let url = reqwest::Url::parse(&h.target)
                    .map_err(|_| fail("the handler's target is not a URL".into()))?;
                // Address literals reach no resolver, so the policy is asked here.
                self.options
                    .outbound
                    .check_url(&url)
                    .map_err(|r| CallFailure::refused(&r))?;
                let mut req = self
                    .http
                    .post(url)
                    .timeout(h.timeout)
                    .header("content-type", "application/json")
                    .header(
                        "user-agent",
                        concat!("provisio/", env!("CARGO_PKG_VERSION")),
                    )
                    .header("traceparent", outgoing_trace().traceparent());
                for (name, value) in webhook::headers(&refs, msg_id, self.now().timestamp(), body) {
                    req = req.header(name, value);
                }
                let resp = req.body(body.to_vec()).send().await.map_err(|e| {
                    if let Some(r) = provisio_modules::outbound::refusal(&e) {
                        return CallFailure::refused(r);
                    }
                    fail(if e.is_timeout() {
                        format!("no answer within {} ms", h.timeout.as_millis())
                    } else if e.is_connect() {
                        "could not connect".to_string()
                    } else {
                        "the request failed".to_string()
                    })
                })?;
                let status = resp.status().as_u16();
                let max = self.options.hooks.max_reply_bytes;
                let body = match tokio::time::timeout(h.timeout, read_capped(resp, max)).await {
                    Ok(Ok(b)) => b,
                    Ok(Err(Cut::TooLarge)) => {
                        return Err(CallFailure::new(
                            Some(status),
                            format!(
                                "the answer exceeds {max} bytes ([outbound] max_handler_reply_bytes) and was not read"
                            ),
                        ))
                    }
                    Ok(Err(Cut::Broken)) => Vec::new(),
                    Err(_) => {
                        return Err(CallFailure::new(
                            Some(status),
                            format!(
                                "the answer did not arrive within {} ms",
                                h.timeout.as_millis()
                            ),
                        ))
                    }
                };
                if (200..300).contains(&status) {
                    Ok(Answer {
                        status: Some(status),
                        body,
                    })
                } else {
                    Err(CallFailure::new(
                        Some(status),
                        format!(
                            "answered {status}{}",
                            excerpt(&body, &[])
                                .map(|e| format!(": {e}"))
                                .unwrap_or_default()
                        ),
                    ))
                }
            }
            HandlerKind::Script => {
                use provisio_modules::script::exec::{run_confined, ExecError};
                match run_confined(
                    &self.options.hooks.handlers_dir,
                    &h.target,
                    body.to_vec(),
                    h.timeout,
                )
                .await
                {
                    Ok(out) if out.code == Some(0) => Ok(Answer {
                        status: None,
                        body: out.stdout,
                    }),
                    Ok(out) => Err(fail(format!(
                        "exited with {}{}",
                        out.code
                            .map(|c| format!("status {c}"))
                            .unwrap_or_else(|| "a signal".into()),
                        excerpt(&out.stderr, &[])
                            .map(|e| format!(": {}", e.trim()))
                            .unwrap_or_default()
                    ))),
                    Err(ExecError::TimedOut(d)) => Err(fail(format!(
                        "no answer within {} ms; killed",
                        d.as_millis()
                    ))),
                    Err(e) => Err(fail(e.to_string())),
                }
            }
            HandlerKind::Email => Err(fail("email handlers are not called with JSON".into())),
        }
    }

    /// Renders an email handler's templates for `event` and sends the message.
    async fn send_email(&self, h: &Handler, event: &Event) -> Result<Answer, CallFailure> {
        let fail = |detail: String| CallFailure::new(None, detail);
        let smtp = self
            .smtp
            .as_ref()
            .ok_or_else(|| fail("no [smtp] relay is configured".into()))?;
        let t = h
            .email
            .as_ref()
            .ok_or_else(|| fail("the handler has no templates".into()))?;
        let context = self.email_context(event).await.map_err(fail)?;
        // On the blocking pool and within the limits: a template that does too much work
        // fails this delivery for good instead of stalling an async worker.
        let (limits, templates) = (self.options.templates, t.clone());
        let (to, subject, body) = off_runtime(move || render_email(&limits, &templates, &context))
            .await
            .map_err(fail)?
            .map_err(|detail| CallFailure {
                permanent: true,
                ..fail(detail)
            })?;
        smtp.send(to.trim(), subject.trim(), body, h.timeout)
            .await
            .map_err(|e| CallFailure {
                status: None,
                detail: e.message,
                permanent: e.permanent,
            })?;
        Ok(Answer {
            status: None,
            body: Vec::new(),
        })
    }

    /// What email templates see: the event and, read now, the service, client and product it
    /// concerns (no secrets).
    async fn email_context(&self, event: &Event) -> Result<Value, String> {
        let data = &event.payload;
        let service_id = data
            .pointer("/service/id")
            .and_then(Value::as_i64)
            .or_else(|| subject_id(&event.subject, "service"));
        let mut client_id = data
            .pointer("/client/id")
            .and_then(Value::as_i64)
            .or_else(|| subject_id(&event.subject, "client"));
        let load = |e: provisio_store::StoreError| format!("loading records failed: {e}");
        let mut service = Value::Null;
        let mut product = Value::Null;
        if let Some(id) = service_id {
            if let Some(s) = self.store.get_service(ServiceId(id)).await.map_err(load)? {
                client_id = client_id.or(Some(s.client_id.0));
                if let Ok(p) = self
                    .get_product(&crate::input::RecordRef::Id(s.product_id.0))
                    .await
                {
                    let (settings, _) = provisio_core::secret::redact_settings(&p.effective);
                    product = json!({"id": p.product.id, "name": p.product.name.as_str(), "settings": settings});
                }
                service = crate::events::service_payload(&s);
            }
        }
        let client = match client_id {
            Some(id) => self
                .store
                .get_client(provisio_core::ClientId(id))
                .await
                .map_err(load)?
                .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
                .unwrap_or(Value::Null),
            None => Value::Null,
        };
        Ok(json!({
            "event": {"id": event.id, "type": event.kind.as_str(), "at": event.at, "subject": event.subject, "actor": event.actor, "data": data},
            "service": service,
            "client": client,
            "product": product,
        }))
    }

    /// Hands new events to the notify handlers and rules that want them. Returns how many
    /// events it looked at.
    pub(crate) async fn dispatch_events(&self) -> provisio_store::Result<usize> {
        let events = self.store.undispatched_events(DISPATCH_BATCH).await?;
        if events.is_empty() {
            return Ok(0);
        }
        let handlers = self
            .store
            .list_handlers(&HandlerFilter {
                phase: Some(Phase::Notify),
                status: Some(HandlerStatus::Enabled),
            })
            .await?;
        let rules = self.store.list_rules().await?;
        let mut deliveries = Vec::new();
        let mut runs = Vec::new();
        for e in &events {
            for h in &handlers {
                // A handler hears only what happened after it was set up.
                if h.listens_to(&e.kind) && e.at >= h.created_at {
                    deliveries.push(NewDelivery {
                        handler_id: h.id,
                        event_id: e.id,
                        event_type: e.kind.clone(),
                        subject: e.subject.clone(),
                        next_at: e.at,
                    });
                }
            }
            for r in rules.iter().filter(|r| r.enabled && r.on == e.kind) {
                if e.at >= r.created_at {
                    runs.push(NewRuleRun {
                        rule_id: r.id,
                        event_id: e.id,
                        subject: e.subject.clone(),
                        due_at: e.at
                            + chrono::Duration::from_std(r.delay)
                                .unwrap_or(chrono::Duration::zero()),
                    });
                }
            }
        }
        let ids: Vec<_> = events.iter().map(|e| e.id).collect();
        self.store.dispatch(&ids, &deliveries, &runs).await?;
        Ok(events.len())
    }

    /// Runs one delivery attempt and says how it ended.
    async fn attempt_delivery(&self, d: &Delivery, owner: &str) -> DeliveryUpdate {
        let started = self.now();
        let t0 = Instant::now();
        let attempt_no = d.attempts + 1;
        let event = self.store.get_event(d.event_id).await;
        let trace = TraceContext::in_trace(
            event
                .as_ref()
                .ok()
                .and_then(Option::as_ref)
                .and_then(job_trace)
                .unwrap_or_else(TraceId::random),
        );
        let span = crate::trace::delivery_span(d, trace);
        // A panic costs this attempt, not the loop that sends every delivery.
        let outcome =
            {
                use futures::FutureExt as _;
                use tracing::Instrument as _;
                let attempt = provisio_modules::trace::scope(trace, self.try_delivery(d, event))
                    .instrument(span.clone());
                std::panic::AssertUnwindSafe(attempt)
                .catch_unwind()
                .await
                .unwrap_or_else(|payload| {
                    let why = crate::jobs::call::panic_message(payload.as_ref());
                    tracing::error!(delivery = %d.id, panic = %why, "a delivery attempt panicked");
                    Err(CallFailure::new(None, format!("the attempt panicked: {why}")))
                })
            };
        let duration_ms = t0.elapsed().as_millis() as i64;
        let (succeeded, status_code, detail) = match &outcome {
            Ok((answer, secrets)) => (
                true,
                answer.status,
                excerpt(
                    &answer.body,
                    &secrets.iter().map(String::as_str).collect::<Vec<_>>(),
                ),
            ),
            Err(f) => (false, f.status, Some(f.detail.clone())),
        };
        let permanent = matches!(&outcome, Err(f) if f.permanent);
        span.record("outcome", if succeeded { "ok" } else { "failed" });
        let (state, next_at, last_error) = if succeeded {
            (DeliveryState::Succeeded, started, None)
        } else if permanent {
            // A refused target stays refused until the configuration changes.
            (DeliveryState::Failed, started, detail.clone())
        } else {
            match self.options.hooks.schedule.delay_after(attempt_no) {
                Some(delay) => (
                    DeliveryState::Pending,
                    started + jittered(delay),
                    detail.clone(),
                ),
                None => (DeliveryState::Failed, started, detail.clone()),
            }
        };
        DeliveryUpdate {
            id: d.id,
            owner: owner.to_string(),
            state,
            attempts: attempt_no,
            next_at,
            last_error,
            attempt: DeliveryAttempt {
                attempt: attempt_no,
                at: started,
                duration_ms,
                succeeded,
                status_code: status_code.map(i32::from),
                detail,
            },
        }
    }

    async fn try_delivery(
        &self,
        d: &Delivery,
        event: provisio_store::Result<Option<Event>>,
    ) -> Result<(Answer, Vec<String>), CallFailure> {
        let fail = |detail: &str| CallFailure::new(None, detail.to_string());
        let h = self
            .store
            .get_handler(d.handler_id)
            .await
            .map_err(|_| fail("loading the handler failed"))?
            .ok_or_else(|| fail("the handler no longer exists"))?;
        let event = event
            .map_err(|_| fail("loading the event failed"))?
            .ok_or_else(|| fail("the event is no longer stored (past its retention)"))?;
        let secrets: Vec<String> = self
            .signing_secrets(&h)
            .unwrap_or_default()
            .iter()
            .map(|s| s.encode().expose_secret().to_string())
            .collect();
        let answer = match h.kind {
            HandlerKind::Email => self.send_email(&h, &event).await?,
            _ => {
                let body = notify_body(&event);
                self.call_handler(&h, &format!("evt_{}", event.id.0), &body)
                    .await?
            }
        };
        Ok((answer, secrets))
    }
}

/// The trace of the job whose outcome `e` announces, so its deliveries join that trace.
fn job_trace(e: &Event) -> Option<TraceId> {
    TraceId::parse(e.payload.get("job")?.get("trace_id")?.as_str()?)
}

/// The context of a handler call: the task's (a delivery's span, or the action request a
/// gate is asked for), or a trace of its own where the task has none.
fn outgoing_trace() -> TraceContext {
    provisio_modules::trace::current().unwrap_or_else(|| TraceContext::in_trace(TraceId::random()))
}

/// The JSON a notify handler receives: Standard Webhooks' `type`, `timestamp` and `data`,
/// plus the event's id and subject.
pub(crate) fn notify_body(e: &Event) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": format!("evt_{}", e.id.0),
        "type": e.kind.as_str(),
        "timestamp": e.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "subject": e.subject,
        "actor": e.actor,
        "data": e.payload,
    }))
    .unwrap_or_default()
}

pub(crate) fn subject_id(subject: &str, kind: &str) -> Option<i64> {
    subject
        .strip_prefix(kind)
        .and_then(|r| r.strip_prefix(':'))
        .and_then(|n| n.parse().ok())
}

/// ±10 %, so handlers that failed together do not all retry in the same instant.
fn jittered(d: Duration) -> chrono::Duration {
    let ms = d.as_millis() as f64 * rand::thread_rng().gen_range(0.9..=1.1);
    chrono::Duration::milliseconds(ms as i64)
}

/// The deliveries this process is sending, whose leases the heartbeat renews.
type Held = Arc<Mutex<HashSet<DeliveryId>>>;

/// One delivery's place in [`Held`], given up however its task ends (a panic included), so
/// that no lease is renewed for a delivery no longer being sent.
struct Holding(Held, DeliveryId);

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.lock().unwrap().remove(&self.1);
    }
}

/// Renews the leases of the deliveries being sent, every third of a lease, so that a lease
/// runs out only when its process died (or stalled longer than a lease), however long the
/// handler takes. Stopped by the delivery loop ([`Renewer`]) once its last delivery finished.
async fn renew_delivery_leases(engine: Arc<Engine>, owner: String, held: Held) {
    let lease = engine.options.hooks.delivery_lease;
    let every = lease / 3;
    loop {
        tokio::time::sleep(every).await;
        let ids: Vec<DeliveryId> = held.lock().unwrap().iter().copied().collect();
        if ids.is_empty() {
            continue;
        }
        let until = engine.now() + chrono::Duration::from_std(lease).unwrap_or_default();
        if let Err(e) = engine.store.renew_deliveries(&owner, &ids, until).await {
            tracing::warn!(error = %e, "renewing delivery leases failed");
        }
    }
}

/// Dispatches events and sends due deliveries until told to stop; deliveries in flight
/// finish first, their leases renewed until then.
pub(crate) async fn delivery_loop(engine: Arc<Engine>, owner: String, mut stop: Shutdown) {
    let mut inflight: JoinSet<()> = JoinSet::new();
    let mut last_requeue: Option<Instant> = None;
    let cap = engine.options.hooks.max_in_flight as usize;
    let lease = engine.options.hooks.delivery_lease;
    // A dead process's deliveries wait out their lease and at most this.
    let requeue_every = (lease / 2).min(REQUEUE_EVERY);
    let held: Held = Arc::default();
    let renewer = Renewer(tokio::spawn(renew_delivery_leases(
        engine.clone(),
        owner.clone(),
        held.clone(),
    )));
    let pulse = engine
        .heartbeats()
        .register("deliveries", engine.options.jobs.poll_interval);
    loop {
        pulse.beat();
        while inflight.try_join_next().is_some() {}
        let mut busy = false;
        match engine.dispatch_events().await {
            Ok(n) => busy |= n as u32 == DISPATCH_BATCH,
            Err(e) => tracing::warn!(error = %e, "handing out events failed"),
        }
        if last_requeue.is_none_or(|t| t.elapsed() > requeue_every) {
            last_requeue = Some(Instant::now());
            match engine.store.requeue_expired_deliveries(engine.now()).await {
                Ok(n) if n > 0 => {
                    tracing::warn!(deliveries = n, "took over deliveries of a stopped worker")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "requeueing deliveries failed"),
            }
        }
        let free = cap.saturating_sub(inflight.len());
        if free > 0 {
            let now = engine.now();
            let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
            match engine
                .store
                .claim_deliveries(&owner, now, until, free as u32)
                .await
            {
                Ok(claimed) => {
                    busy |= claimed.len() == free;
                    for d in claimed {
                        let engine = engine.clone();
                        let owner = owner.clone();
                        held.lock().unwrap().insert(d.id);
                        let holding = Holding(held.clone(), d.id);
                        inflight.spawn(async move {
                            let _holding = holding;
                            let t0 = Instant::now();
                            let update = engine.attempt_delivery(&d, &owner).await;
                            let took = t0.elapsed();
                            // Handlers are labelled by name; the read happens only when
                            // metrics are recorded.
                            let name = if crate::metrics::enabled() {
                                engine.store.get_handler(d.handler_id).await.ok().flatten().map(|h| h.name.to_string())
                            } else {
                                None
                            };
                            if let Some(n) = &name {
                                crate::metrics::delivery(n, update.attempt.succeeded, took);
                            }
                            if !update.attempt.succeeded {
                                tracing::info!(
                                    delivery = %d.id,
                                    handler = %d.handler_id,
                                    attempt = update.attempts,
                                    error = update.last_error.as_deref().unwrap_or(""),
                                    "delivery attempt failed"
                                );
                            }
                            match engine.store.finish_delivery(&update).await {
                                Ok(HandlerHealth::Disabled) => {
                                    tracing::warn!(
                                        handler = %d.handler_id,
                                        "handler disabled after failing longer than its disable_after"
                                    );
                                    if let Some(n) = &name {
                                        crate::metrics::handler_disabled(n);
                                    }
                                }
                                Ok(_) => {}
                                Err(e) => tracing::warn!(error = %e, "recording a delivery failed"),
                            }
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming deliveries failed"),
            }
        }
        if stop.is_stopping() {
            break;
        }
        if !busy && stop.sleep(engine.options.jobs.poll_interval).await {
            break;
        }
    }
    while inflight.join_next().await.is_some() {}
    drop(renewer);
}

/// The lease heartbeat's task, stopped when the delivery loop ends however it ends.
struct Renewer(tokio::task::JoinHandle<()>);

impl Drop for Renewer {
    fn drop(&mut self) {
        self.0.abort();
    }
}
