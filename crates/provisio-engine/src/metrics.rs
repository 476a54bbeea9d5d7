//! Prometheus metrics: every metric's name, help and buckets defined once, the process's
//! one recorder, and the small helpers the rooms call where things happen.
//!
//! The recorder is a process global (the `metrics` crate's), installed by [`install`];
//! until then every helper is a no-op costing a relaxed atomic load. Label values are
//! bounded: server and module names, actions, outcomes, states, handler and rule names;
//! never service, job or client ids.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use provisio_core::ServerId;

pub const JOBS_ENQUEUED: &str = "provisio_jobs_enqueued_total";
pub const JOB_ATTEMPTS: &str = "provisio_job_attempts_total";
pub const JOB_ATTEMPT_DURATION: &str = "provisio_job_attempt_duration_seconds";
pub const JOB_QUEUE_WAIT: &str = "provisio_job_queue_wait_seconds";
pub const JOBS: &str = "provisio_jobs";
pub const OLDEST_PENDING_AGE: &str = "provisio_oldest_pending_job_age_seconds";
pub const SERVER_IN_FLIGHT: &str = "provisio_server_in_flight";
pub const SERVER_BREAKER_OPEN: &str = "provisio_server_breaker_open";
pub const RATE_LIMITED: &str = "provisio_rate_limited_total";
pub const DELIVERIES: &str = "provisio_deliveries_total";
pub const DELIVERY_DURATION: &str = "provisio_delivery_duration_seconds";
pub const HANDLERS_DISABLED: &str = "provisio_handlers_disabled_total";
pub const GATE_DURATION: &str = "provisio_gate_duration_seconds";
pub const GATE_VERDICTS: &str = "provisio_gate_verdicts_total";
pub const RULE_RUNS: &str = "provisio_rule_runs_total";
pub const USAGE_SYNC_DURATION: &str = "provisio_usage_sync_duration_seconds";
pub const USAGE_SYNC_PAGES: &str = "provisio_usage_sync_pages_total";
pub const USAGE_SYNC_ACCOUNTS: &str = "provisio_usage_sync_accounts_total";
pub const USAGE_SYNC_LAST_SUCCESS: &str = "provisio_usage_sync_last_success_timestamp_seconds";
pub const AUDIT_DURATION: &str = "provisio_audit_duration_seconds";
pub const AUDIT_DRIFT: &str = "provisio_audit_drift_total";
pub const AUDIT_LAST_SUCCESS: &str = "provisio_audit_last_success_timestamp_seconds";
pub const HTTP_REQUESTS: &str = "provisio_http_requests_total";
pub const HTTP_DURATION: &str = "provisio_http_request_duration_seconds";

/// Calls and deliveries: milliseconds to the call timeout's minutes.
const CALL_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Waiting in the queue: a retry's delay may be an hour.
const WAIT_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];
/// Syncs and audits of whole servers: seconds to an hour.
const RUN_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0];
/// API requests: most answer in milliseconds; the request timeout bounds the rest.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Whether the helpers record: on once installed. The recorder cannot be removed again, so
/// `provisio-bench queue --metrics both` turns this off and on to compare runs.
static RECORDING: AtomicBool = AtomicBool::new(true);

/// Turns recording off or on (the bench's comparison; nothing else needs it).
pub fn set_recording(on: bool) {
    RECORDING.store(on, Ordering::Relaxed);
}

/// Installs the Prometheus recorder for this process (once; later calls answer the same
/// handle). `None` when another recorder was installed first, by something else.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(JOB_ATTEMPT_DURATION.into()), CALL_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(DELIVERY_DURATION.into()), CALL_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(GATE_DURATION.into()), CALL_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(JOB_QUEUE_WAIT.into()), WAIT_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(USAGE_SYNC_DURATION.into()), RUN_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(AUDIT_DURATION.into()), RUN_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), HTTP_BUCKETS)
                })
                .expect("bucket lists are not empty");
            let recorder = built.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// The exposition in Prometheus text format, when the recorder is installed.
pub fn render() -> Option<String> {
    HANDLE.get().and_then(Option::as_ref).map(|h| h.render())
}

/// Whether this process records metrics.
pub fn enabled() -> bool {
    RECORDING.load(Ordering::Relaxed) && HANDLE.get().is_some_and(Option::is_some)
}

/// Housekeeping the exporter needs now and then (histogram windows); the gauge loop
/// calls it.
pub fn upkeep() {
    if let Some(h) = HANDLE.get().and_then(Option::as_ref) {
        h.run_upkeep();
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(JOBS_ENQUEUED, "Jobs stored to run, by action and module.");
    describe_counter!(
        JOB_ATTEMPTS,
        "Job attempts that ended, by action, module, server and outcome (ok, skipped, transient, permanent, unknown, cancelled)."
    );
    describe_histogram!(
        JOB_ATTEMPT_DURATION,
        Unit::Seconds,
        "Time of one job attempt, from its start to its outcome."
    );
    describe_histogram!(
        JOB_QUEUE_WAIT,
        Unit::Seconds,
        "Time from a job being due to a worker claiming it."
    );
    describe_gauge!(
        JOBS,
        "Jobs in the database by state, read every few seconds by one node."
    );
    describe_gauge!(
        OLDEST_PENDING_AGE,
        Unit::Seconds,
        "How long the pending job due longest ago has been due (0 when none is)."
    );
    describe_gauge!(
        SERVER_IN_FLIGHT,
        "Actions this process runs on the server now."
    );
    describe_gauge!(
        SERVER_BREAKER_OPEN,
        "1 while this process's circuit breaker for the server is open or probing, else 0."
    );
    describe_counter!(
        RATE_LIMITED,
        "Claim turns in which the server's max_per_second held back this process's claims."
    );
    describe_counter!(
        DELIVERIES,
        "Notify delivery attempts by handler and outcome (ok, failed)."
    );
    describe_histogram!(
        DELIVERY_DURATION,
        Unit::Seconds,
        "Time of one delivery attempt."
    );
    describe_counter!(
        HANDLERS_DISABLED,
        "Handlers disabled after failing longer than their disable_after."
    );
    describe_histogram!(
        GATE_DURATION,
        Unit::Seconds,
        "Time a gate handler took to answer."
    );
    describe_counter!(
        GATE_VERDICTS,
        "Gate answers by handler and verdict (allow, change, forbid, error)."
    );
    describe_counter!(
        RULE_RUNS,
        "Rule runs by rule and how they ended (done, stopped, failed)."
    );
    describe_histogram!(
        USAGE_SYNC_DURATION,
        Unit::Seconds,
        "Time of one server's usage sync."
    );
    describe_counter!(USAGE_SYNC_PAGES, "Pages of usage read from servers.");
    describe_counter!(
        USAGE_SYNC_ACCOUNTS,
        "Accounts whose usage was read from servers."
    );
    describe_gauge!(
        USAGE_SYNC_LAST_SUCCESS,
        Unit::Seconds,
        "Unix time of the server's last usage sync that succeeded, as seen by this process."
    );
    describe_histogram!(AUDIT_DURATION, Unit::Seconds, "Time of one server's audit.");
    describe_counter!(AUDIT_DRIFT, "Differences audits found, by server and kind.");
    describe_gauge!(
        AUDIT_LAST_SUCCESS,
        Unit::Seconds,
        "Unix time of the server's last audit that succeeded, as seen by this process."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "API requests by route template, method and status class (2xx, 4xx, 5xx)."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time to answer an API request."
    );
}

/// The names the job metrics label a server's work with, kept per engine (server ids
/// are per database, and tests run several engines in one process).
#[derive(Default)]
pub(crate) struct ServerLabels {
    names: Mutex<HashMap<ServerId, Labels>>,
}

/// A server's name and module name, with the metric handles of its jobs: registered once
/// and reused, since looking a labelled series up costs more than recording to it.
#[derive(Clone)]
pub(crate) struct Labels {
    pub server: String,
    pub module: String,
    handles: std::sync::Arc<Mutex<Handles>>,
}

/// Made only while recording, so no handle of a missing recorder is ever kept.
#[derive(Default)]
struct Handles {
    in_flight: Option<metrics::Gauge>,
    /// By (action, outcome).
    attempts: HashMap<(String, String), metrics::Counter>,
    /// By action.
    durations: HashMap<String, metrics::Histogram>,
}

impl ServerLabels {
    pub(crate) fn remember(&self, id: ServerId, server: &str, module: &str) {
        let mut names = self.names.lock().unwrap();
        match names.get(&id) {
            Some(l) if l.server == server && l.module == module => {}
            _ => {
                names.insert(
                    id,
                    Labels {
                        server: server.to_string(),
                        module: module.to_string(),
                        handles: Default::default(),
                    },
                );
            }
        }
    }

    pub(crate) fn get(&self, id: ServerId) -> Option<Labels> {
        self.names.lock().unwrap().get(&id).cloned()
    }
}

pub(crate) fn job_enqueued(action: &str, module: &str) {
    if !enabled() {
        return;
    }
    counter!(JOBS_ENQUEUED, "action" => action.to_string(), "module" => module.to_string())
        .increment(1);
}

pub(crate) fn job_attempt(l: &Labels, action: &str, outcome: &str, took: Duration) {
    if !enabled() {
        return;
    }
    let mut h = l.handles.lock().unwrap();
    h.attempts
        .entry((action.to_string(), outcome.to_string()))
        .or_insert_with(|| {
            counter!(
                JOB_ATTEMPTS,
                "action" => action.to_string(),
                "module" => l.module.clone(),
                "server" => l.server.clone(),
                "outcome" => outcome.to_string()
            )
        })
        .increment(1);
    h.durations
        .entry(action.to_string())
        .or_insert_with(|| {
            histogram!(
                JOB_ATTEMPT_DURATION,
                "action" => action.to_string(),
                "module" => l.module.clone()
            )
        })
        .record(took.as_secs_f64());
}

pub(crate) fn queue_wait(seconds: f64) {
    if !enabled() {
        return;
    }
    static WAIT: OnceLock<metrics::Histogram> = OnceLock::new();
    WAIT.get_or_init(|| histogram!(JOB_QUEUE_WAIT))
        .record(seconds.max(0.0));
}

pub(crate) fn in_flight(l: &Labels, delta: f64) {
    if !enabled() {
        return;
    }
    l.handles
        .lock()
        .unwrap()
        .in_flight
        .get_or_insert_with(|| gauge!(SERVER_IN_FLIGHT, "server" => l.server.clone()))
        .increment(delta);
}

pub(crate) fn breaker(server: &str, open: bool) {
    if !enabled() {
        return;
    }
    gauge!(SERVER_BREAKER_OPEN, "server" => server.to_string()).set(if open { 1.0 } else { 0.0 });
}

pub(crate) fn rate_limited(server: &str) {
    if !enabled() {
        return;
    }
    counter!(RATE_LIMITED, "server" => server.to_string()).increment(1);
}

pub(crate) fn job_gauges(g: &provisio_store::JobGauges, now: chrono::DateTime<chrono::Utc>) {
    if !enabled() {
        return;
    }
    // Every state is written each time, so a state that emptied shows 0, not its last count.
    for state in [
        "pending",
        "running",
        "done",
        "failed",
        "cancelled",
        "resolved",
    ] {
        let n = g
            .by_state
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n);
        gauge!(JOBS, "state" => state).set(n as f64);
    }
    for (state, n) in &g.by_state {
        gauge!(JOBS, "state" => state.clone()).set(*n as f64);
    }
    let age = g.oldest_pending_due.map_or(0.0, |due| {
        ((now - due).num_milliseconds() as f64 / 1000.0).max(0.0)
    });
    gauge!(OLDEST_PENDING_AGE).set(age);
}

pub(crate) fn delivery(handler: &str, ok: bool, took: Duration) {
    if !enabled() {
        return;
    }
    let outcome = if ok { "ok" } else { "failed" };
    counter!(DELIVERIES, "handler" => handler.to_string(), "outcome" => outcome).increment(1);
    histogram!(DELIVERY_DURATION, "handler" => handler.to_string()).record(took.as_secs_f64());
}

pub(crate) fn handler_disabled(handler: &str) {
    if !enabled() {
        return;
    }
    counter!(HANDLERS_DISABLED, "handler" => handler.to_string()).increment(1);
}

pub(crate) fn gate(handler: &str, verdict: &'static str, took: Duration) {
    if !enabled() {
        return;
    }
    counter!(GATE_VERDICTS, "handler" => handler.to_string(), "verdict" => verdict).increment(1);
    histogram!(GATE_DURATION, "handler" => handler.to_string()).record(took.as_secs_f64());
}

pub(crate) fn rule_run(rule: &str, state: &str) {
    if !enabled() {
        return;
    }
    counter!(RULE_RUNS, "rule" => rule.to_string(), "state" => state.to_string()).increment(1);
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub(crate) fn usage_sync(server: &str, ok: bool, pages: u64, accounts: u64, took: Duration) {
    if !enabled() {
        return;
    }
    let s = server.to_string();
    histogram!(USAGE_SYNC_DURATION, "server" => s.clone()).record(took.as_secs_f64());
    counter!(USAGE_SYNC_PAGES, "server" => s.clone()).increment(pages);
    counter!(USAGE_SYNC_ACCOUNTS, "server" => s.clone()).increment(accounts);
    if ok {
        gauge!(USAGE_SYNC_LAST_SUCCESS, "server" => s).set(unix_now());
    }
}

pub(crate) fn audit(
    server: &str,
    ok: bool,
    drift: &std::collections::BTreeMap<String, i64>,
    took: Duration,
) {
    if !enabled() {
        return;
    }
    let s = server.to_string();
    histogram!(AUDIT_DURATION, "server" => s.clone()).record(took.as_secs_f64());
    for (kind, n) in drift {
        counter!(AUDIT_DRIFT, "server" => s.clone(), "kind" => kind.clone())
            .increment(u64::try_from(*n).unwrap_or(0));
    }
    if ok {
        gauge!(AUDIT_LAST_SUCCESS, "server" => s).set(unix_now());
    }
}

/// One answered API request; `route` is the matched route template, never the path.
pub fn http_request(route: &str, method: &str, status: u16, took: Duration) {
    if !enabled() {
        return;
    }
    let class = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    counter!(
        HTTP_REQUESTS,
        "route" => route.to_string(),
        "method" => method.to_string(),
        "status" => class
    )
    .increment(1);
    histogram!(HTTP_DURATION, "route" => route.to_string(), "method" => method.to_string())
        .record(took.as_secs_f64());
}

impl crate::Engine {
    /// The metric labels of server `id`: from memory, else read once.
    pub(crate) async fn server_labels(&self, id: ServerId) -> Option<Labels> {
        if let Some(l) = self.labels.get(id) {
            return Some(l);
        }
        let s = self.store.get_server(id).await.ok()??;
        self.labels.remember(id, s.name.as_str(), &s.module);
        self.labels.get(id)
    }

    pub(crate) fn remember_server_labels(&self, s: &provisio_core::server::Server) {
        self.labels.remember(s.id, s.name.as_str(), &s.module);
    }

    pub(crate) fn cached_server_labels(&self, id: ServerId) -> Option<Labels> {
        self.labels.get(id)
    }

    /// Counts stored jobs as enqueued (no-op without a recorder, so no server is read).
    pub(crate) async fn count_enqueued(&self, jobs: Vec<&provisio_core::job::Job>) {
        if !enabled() {
            return;
        }
        for job in jobs {
            let module = self
                .server_labels(job.server_id)
                .await
                .map_or_else(|| "unknown".to_string(), |l| l.module);
            job_enqueued(job.action.as_str(), &module);
        }
    }
}
