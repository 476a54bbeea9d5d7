//! Automation rules: on an event about a client, after an optional delay, run an action
//! (order a service, suspend or unsuspend the client's services).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::event::{EventId, EventType};
use crate::ids::RuleId;
use crate::text::Handle;

/// What a rule does when it fires. Each acts on the client the event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleAction {
    /// Orders a service of `product` for the client (placed like any order, or on `server`).
    CreateService {
        product: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server: Option<String>,
    },
    /// Suspends the client's active services with `reason`.
    SuspendServices {
        #[schema(max_length = 200, pattern = r"\S")]
        reason: String,
    },
    /// Unsuspends the client's suspended services; with `only_reason`, only those
    /// suspended for it (so `non-payment` never lifts an `abuse` suspension).
    UnsuspendServices {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(max_length = 200, pattern = r"\S")]
        only_reason: Option<String>,
    },
}

impl RuleAction {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CreateService { .. } => "create_service",
            Self::SuspendServices { .. } => "suspend_services",
            Self::UnsuspendServices { .. } => "unsuspend_services",
        }
    }
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: RuleId,
    pub name: Handle,
    /// The event that fires it.
    pub on: EventType,
    pub action: RuleAction,
    /// How long after the event it runs (a grace period). When the event is a balance
    /// crossing, the run is skipped if the balance has crossed back by then.
    pub delay: Duration,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewRule {
    pub name: Handle,
    pub on: EventType,
    pub action: RuleAction,
    pub delay: Duration,
    pub enabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleRunState {
    Pending,
    Running,
    Done,
    /// Its condition no longer held when it was due (the balance crossed back).
    Skipped,
    Failed,
}

impl RuleRunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "running" => Some(Self::Running),
            "done" => Some(Self::Done),
            "skipped" => Some(Self::Skipped),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One firing of a rule for one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RuleRun {
    pub id: i64,
    #[schema(value_type = i64)]
    pub rule_id: RuleId,
    #[schema(value_type = i64)]
    pub event_id: EventId,
    pub subject: String,
    pub due_at: DateTime<Utc>,
    pub state: RuleRunState,
    /// What it did (`queued suspend on services 4, 7`) or why it did nothing.
    pub result: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
