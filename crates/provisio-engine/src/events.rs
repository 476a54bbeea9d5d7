//! Event payloads and the event log: what the engine says about services and jobs when it
//! announces them, and reading and trimming the stored events. Payloads never hold secrets.

use chrono::{DateTime, Utc};
use provisio_core::event::{Event, NewEvent};
use provisio_core::job::{Job, JobState};
use provisio_core::page::{Page, PageRequest};
use provisio_core::secret::redact_settings;
use provisio_core::service::Service;
use provisio_store::EventFilter;
use serde_json::{json, Value};

use crate::{Engine, Result};

/// A service as events show it: no password, no sealed values.
pub fn service_payload(s: &Service) -> Value {
    s.event_payload()
}

fn job_payload(job: &Job, state: JobState, attempts: u32, error: Option<&str>) -> Value {
    let (params, _) = redact_settings(&job.params);
    json!({
        "id": job.id,
        "action": job.action.as_str(),
        "state": state.as_str(),
        "attempts": attempts,
        "params": params,
        "error": error,
        "trace_id": job.trace_id,
    })
}

/// `service.<action>.before`, stored with the job that will run the action.
pub(crate) fn before(
    job_params: &provisio_core::settings::Settings,
    action: &str,
    service: &Service,
) -> NewEvent {
    let (params, _) = redact_settings(job_params);
    NewEvent::new(
        &format!("service.{action}.before"),
        format!("service:{}", service.id),
        json!({"action": action, "params": params, "service": service_payload(service)}),
    )
}

/// `service.<action>.succeeded` or `.failed` for a job that reached a final state; `None`
/// while it will still be retried.
pub(crate) fn outcome(
    job: &Job,
    state: JobState,
    attempts: u32,
    error: Option<&str>,
    service: &Service,
) -> Option<NewEvent> {
    let verdict = match state {
        JobState::Done => "succeeded",
        JobState::Failed | JobState::Cancelled => "failed",
        _ => return None,
    };
    let mut e = NewEvent::new(
        &format!("service.{}.{verdict}", job.action.as_str()),
        format!("service:{}", service.id),
        json!({"job": job_payload(job, state, attempts, error), "service": service_payload(service)}),
    );
    // The outcome is written by whichever worker ran the job; its cause is the job's.
    e.actor = job.actor.clone();
    e.depth = Some(job.depth);
    Some(e)
}

impl Engine {
    pub async fn list_events(&self, f: &EventFilter, page: PageRequest) -> Result<Page<Event>> {
        Ok(self.store.list_events(f, page).await?)
    }

    /// Drops events older than the configured retention; returns how many.
    pub async fn purge_events(&self, now: DateTime<Utc>) -> Result<u64> {
        let keep = chrono::Duration::from_std(self.options.event_retention)
            .unwrap_or(chrono::Duration::days(90));
        Ok(self.store.purge_events(now - keep).await?)
    }
}
