//! Jobs: durable, retried executions of an action, their attempts, the retry schedule and
//! the lifecycle rules that say which action may follow which status.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{ServerId, ServiceId};
use crate::module::{Action, ErrorKind};
use crate::service::ServiceStatus;
use crate::settings::Settings;

/// Identifies a job.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for `run_after`, for a worker, or for earlier jobs of its service.
    Pending,
    /// Leased by a worker.
    Running,
    /// The remote confirmed the action.
    Done,
    /// Parked: a permanent error or retries exhausted; a person retries or resolves it.
    Failed,
    /// A person marked a failed job handled.
    Resolved,
    /// Dropped without running: by the time its turn came the action no longer applied.
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        Self::Pending,
        Self::Running,
        Self::Done,
        Self::Failed,
        Self::Resolved,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Resolved => "resolved",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// No worker will touch the job again by itself.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub service_id: ServiceId,
    pub server_id: ServerId,
    pub action: Action,
    pub state: JobState,
    /// Action parameters; secrets (a new password) sealed.
    pub params: Settings,
    pub idempotency_key: String,
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_after: DateTime<Utc>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    /// The last attempt's outcome is unknown: look the account up before acting again.
    pub needs_lookup: bool,
    pub last_error: Option<String>,
    pub error_kind: Option<ErrorKind>,
    pub note: Option<String>,
    /// Who asked for it; `None` for jobs stored before actors were recorded.
    pub actor: Option<crate::access::Actor>,
    /// Rule firings between the outside world and this job (0: none).
    pub depth: u32,
    /// The W3C trace every attempt of the job belongs to, set when it is queued; `None`
    /// for jobs stored before trace ids were kept.
    pub trace_id: Option<crate::trace::TraceId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A job about to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub server_id: ServerId,
    pub action: Action,
    pub params: Settings,
    pub idempotency_key: String,
    pub max_attempts: u32,
    pub run_after: DateTime<Utc>,
    pub trace_id: crate::trace::TraceId,
}

/// One try of a job, for the history.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub job_id: JobId,
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    /// `ok`, `transient`, `permanent`, `unknown`, `skipped` (lookup showed it done), `cancelled`.
    pub outcome: String,
    /// Redacted.
    pub message: Option<String>,
}

/// When to try again: one delay per retry, with ±`jitter` spread so that many jobs failing
/// together do not come back together.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub delays: Vec<Duration>,
    /// Fraction of each delay to spread by, e.g. 0.2 for ±20%.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// Ten attempts over about sixteen hours: quick at first for blips, then hourly for outages.
    fn default() -> Self {
        let s = Duration::from_secs;
        Self {
            delays: vec![
                s(10),
                s(30),
                s(60),
                s(5 * 60),
                s(15 * 60),
                s(30 * 60),
                s(60 * 60),
                s(2 * 3600),
                s(4 * 3600),
                s(8 * 3600),
            ],
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// Attempts in all: the first one and one per delay.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The wait before attempt `attempts + 1`, after `attempts` tries, given a random number
    /// in [0, 1) for the jitter; `None` when retries are exhausted.
    pub fn delay_after(&self, attempts: u32, random: f64) -> Option<Duration> {
        let base = self.delays.get(attempts.checked_sub(1)? as usize)?;
        let factor = 1.0 + self.jitter * (2.0 * random - 1.0);
        Some(base.mul_f64(factor.max(0.0)))
    }
}

/// Why an action cannot run on a service in its (projected) status.
pub fn check_transition(status: ServiceStatus, action: &Action) -> Result<(), String> {
    use ServiceStatus::*;
    let ok = match action {
        Action::Create => matches!(status, Pending | Failed),
        Action::Suspend => matches!(status, Active),
        Action::Unsuspend => matches!(status, Suspended),
        Action::Terminate => matches!(status, Active | Suspended),
        Action::ChangePassword | Action::ChangePackage | Action::Renew | Action::Custom(_) => {
            matches!(status, Active | Suspended)
        }
        _ => true,
    };
    if ok {
        return Ok(());
    }
    Err(match (status, action) {
        (Terminated, _) => "the service is terminated; nothing can be done on it".into(),
        (Pending | Failed, Action::Terminate) => format!(
            "the service is {}: nothing exists on the remote to terminate; delete the service instead",
            status.as_str()
        ),
        (Pending | Failed, _) => format!(
            "the service is {}; run create first",
            status.as_str()
        ),
        (Active, Action::Unsuspend) => "the service is active, not suspended".into(),
        (Suspended, Action::Suspend) => "the service is already suspended".into(),
        (Active | Suspended, Action::Create) => "the service already exists on the remote".into(),
        _ => format!("{} is not possible on a {} service", action, status.as_str()),
    })
}

/// The status a service has after `action` succeeded, when the action changes it.
pub fn status_after(action: &Action) -> Option<ServiceStatus> {
    match action {
        Action::Create | Action::Unsuspend => Some(ServiceStatus::Active),
        Action::Suspend => Some(ServiceStatus::Suspended),
        Action::Terminate => Some(ServiceStatus::Terminated),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_spreads_ten_attempts_over_most_of_a_day() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts(), 11);
        let total: Duration = p.delays.iter().sum();
        assert!(total > Duration::from_secs(12 * 3600) && total < Duration::from_secs(24 * 3600));
        assert_eq!(p.delay_after(1, 0.5), Some(Duration::from_secs(10)));
        assert_eq!(p.delay_after(1, 0.0), Some(Duration::from_secs(8)));
        assert_eq!(p.delay_after(11, 0.5), None);
        assert_eq!(p.delay_after(0, 0.5), None);
    }

    #[test]
    fn lifecycle_rules() {
        use ServiceStatus::*;
        assert!(check_transition(Pending, &Action::Create).is_ok());
        assert!(check_transition(Active, &Action::Suspend).is_ok());
        assert!(check_transition(Active, &Action::Unsuspend)
            .unwrap_err()
            .contains("not suspended"));
        assert!(check_transition(Terminated, &Action::Suspend)
            .unwrap_err()
            .contains("terminated"));
        assert!(check_transition(Pending, &Action::Terminate)
            .unwrap_err()
            .contains("delete"));
        assert!(check_transition(Suspended, &Action::Terminate).is_ok());
        assert_eq!(status_after(&Action::Suspend), Some(Suspended));
        assert_eq!(status_after(&Action::Renew), None);
    }
}
