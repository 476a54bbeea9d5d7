//! Handlers: code outside Provisio that hears about events (notify) or decides whether an
//! action may go ahead (gate), and the durable deliveries of events to notify handlers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::event::{EventId, EventPattern, EventType};
use crate::ids::{DeliveryId, HandlerId};
use crate::secret::Sealed;
use crate::text::Handle;

/// How a handler is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HandlerKind {
    /// An HTTP POST of the JSON message to `target`, signed per Standard Webhooks.
    Http,
    /// An executable inside the handlers directory: the JSON message on stdin, the answer on
    /// stdout.
    Script,
    /// An email rendered from templates and sent through the configured SMTP relay
    /// (notify only).
    Email,
}

impl HandlerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Script => "script",
            Self::Email => "email",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(Self::Http),
            "script" => Some(Self::Script),
            "email" => Some(Self::Email),
            _ => None,
        }
    }
}

/// When a handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Synchronously before the action; may allow, forbid or change it.
    Gate,
    /// After the event, as a durable delivery with retries; cannot change anything.
    Notify,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gate => "gate",
            Self::Notify => "notify",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "gate" => Some(Self::Gate),
            "notify" => Some(Self::Notify),
            _ => None,
        }
    }
}

/// What a gate's failure (error, timeout, unreadable reply) means for the action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Go ahead as if the gate had allowed it (the failure is logged).
    Allow,
    /// Refuse the action, naming the gate and what went wrong.
    #[default]
    Forbid,
}

impl OnError {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Forbid => "forbid",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Self::Allow),
            "forbid" => Some(Self::Forbid),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HandlerStatus {
    #[default]
    Enabled,
    Disabled,
}

impl HandlerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enabled" => Some(Self::Enabled),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }
}

/// The templates of an email handler (minijinja; the context is the event, the service,
/// the client and the product).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailTemplate {
    /// The recipient, e.g. `{{ client.email }}`.
    #[schema(max_length = 65536, pattern = r"\S")]
    pub to: String,
    #[schema(max_length = 65536, pattern = r"\S")]
    pub subject: String,
    /// Plain-text body.
    #[schema(max_length = 65536, pattern = r"\S")]
    pub body: String,
}

/// A stored handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Handler {
    pub id: HandlerId,
    pub name: Handle,
    pub kind: HandlerKind,
    /// The URL (`http`) or the executable relative to the handlers directory (`script`);
    /// empty for `email`.
    pub target: String,
    pub status: HandlerStatus,
    pub phase: Phase,
    pub events: Vec<EventPattern>,
    pub timeout: Duration,
    /// Gates run in ascending order (then by name).
    pub order: i32,
    pub on_error: OnError,
    /// The signing secret of an `http` handler (a `whsec_…` string, sealed).
    pub secret: Option<Sealed>,
    /// The secret before the last rotation, still signed with until `previous_secret_until`.
    pub previous_secret: Option<Sealed>,
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub email: Option<EmailTemplate>,
    /// A notify handler failing for this long without a success is disabled.
    pub disable_after: Duration,
    /// When the current run of failures began; `None` after a success.
    pub failing_since: Option<DateTime<Utc>>,
    /// Why the engine disabled it, when it did.
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Handler {
    /// Whether this handler hears events of `kind`.
    pub fn listens_to(&self, kind: &EventType) -> bool {
        self.events.iter().any(|p| p.matches(kind))
    }
}

/// A handler about to be stored (or the new state of one being edited).
#[derive(Debug, Clone, PartialEq)]
pub struct NewHandler {
    pub name: Handle,
    pub kind: HandlerKind,
    pub target: String,
    pub status: HandlerStatus,
    pub phase: Phase,
    pub events: Vec<EventPattern>,
    pub timeout: Duration,
    pub order: i32,
    pub on_error: OnError,
    pub secret: Option<Sealed>,
    pub email: Option<EmailTemplate>,
    pub disable_after: Duration,
}

/// A gate's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum GateDecision {
    /// Go ahead, with these changes to the action's input (empty: none).
    Allow {
        data: Map<String, Value>,
    },
    Forbid {
        reason: String,
    },
}

/// Why a gate's reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GateReplyError(pub String);

/// Longest forbid reason kept; a gate's reason reaches API callers and job records.
pub const MAX_REASON_LEN: usize = 500;

impl GateDecision {
    /// Reads `{"decision": "allow"|"forbid", "reason": "…", "data": {…}}`.
    pub fn parse(reply: &Value) -> Result<Self, GateReplyError> {
        let bad = |m: &str| Err(GateReplyError(m.to_string()));
        let Some(obj) = reply.as_object() else {
            return bad("the reply is not a JSON object");
        };
        if let Some(k) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "decision" | "reason" | "data"))
        {
            return Err(GateReplyError(format!(
                "the reply has an unknown field '{k}' (allowed: decision, reason, data)"
            )));
        }
        match obj.get("decision").and_then(Value::as_str) {
            Some("allow") => {
                let data = match obj.get("data") {
                    None | Some(Value::Null) => Map::new(),
                    Some(Value::Object(m)) => m.clone(),
                    Some(_) => return bad("'data' must be an object"),
                };
                Ok(Self::Allow { data })
            }
            Some("forbid") => {
                if obj.get("data").is_some_and(|d| !d.is_null()) {
                    return bad("'data' applies only to decision 'allow'");
                }
                let reason = obj
                    .get("reason")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .unwrap_or("no reason given");
                let reason: String = reason.chars().take(MAX_REASON_LEN).collect();
                Ok(Self::Forbid { reason })
            }
            Some(other) => Err(GateReplyError(format!(
                "'decision' is '{other}'; it must be 'allow' or 'forbid'"
            ))),
            None => bad("'decision' is missing (it must be 'allow' or 'forbid')"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its time, its handler, or earlier deliveries of the same subject.
    Pending,
    Running,
    Succeeded,
    /// Every attempt of the schedule failed; redelivery puts it back.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "running" => Some(Self::Running),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One event on its way to one notify handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub handler_id: HandlerId,
    pub event_id: EventId,
    pub event_type: EventType,
    pub subject: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What one attempt of a delivery did, for the delivery log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryAttempt {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub duration_ms: i64,
    pub succeeded: bool,
    /// The HTTP status, for `http` handlers that answered.
    pub status_code: Option<i32>,
    /// The start of the response body, or what went wrong; secrets removed.
    pub detail: Option<String>,
}

/// How far apart a notify delivery's attempts are: the delay before each retry, in order.
/// When they are used up the delivery is `failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySchedule(pub Vec<Duration>);

impl Default for DeliverySchedule {
    /// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: about a day of trying, front-loaded for
    /// blips and spread out for outages.
    fn default() -> Self {
        let m = 60;
        let h = 3600;
        Self(
            [5, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h, 10 * h]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        )
    }
}

impl DeliverySchedule {
    /// The delay after failed attempt `attempt` (1-based), or `None` when none is left.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        self.0.get(attempt as usize - 1).copied()
    }

    /// Attempts in all: the first one and one per delay.
    pub fn max_attempts(&self) -> u32 {
        self.0.len() as u32 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_gate_decisions() {
        assert_eq!(
            GateDecision::parse(&json!({"decision": "allow"})).unwrap(),
            GateDecision::Allow { data: Map::new() }
        );
        let GateDecision::Allow { data } =
            GateDecision::parse(&json!({"decision": "allow", "data": {"username": "x"}})).unwrap()
        else {
            panic!("allow expected")
        };
        assert_eq!(data["username"], "x");
        assert_eq!(
            GateDecision::parse(&json!({"decision": "forbid", "reason": "VIP"})).unwrap(),
            GateDecision::Forbid {
                reason: "VIP".into()
            }
        );
        for bad in [
            json!([]),
            json!({}),
            json!({"decision": "maybe"}),
            json!({"decision": "allow", "data": 3}),
            json!({"decision": "forbid", "data": {"a": 1}}),
            json!({"decision": "allow", "extra": 1}),
        ] {
            assert!(GateDecision::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn schedule_runs_out() {
        let s = DeliverySchedule::default();
        assert_eq!(s.delay_after(1), Some(Duration::from_secs(5)));
        assert_eq!(s.delay_after(7), Some(Duration::from_secs(36000)));
        assert_eq!(s.delay_after(8), None);
        assert_eq!(s.max_attempts(), 8);
    }
}
