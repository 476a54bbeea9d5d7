//! Row shapes of handlers, deliveries, rules and rule runs, and their conversion to domain
//! records.

use std::time::Duration;

use provisio_core::event::{EventId, EventPattern, EventType};
use provisio_core::handler::{
    Delivery, DeliveryAttempt, DeliveryState, EmailTemplate, Handler, HandlerKind, HandlerStatus,
    OnError, Phase,
};
use provisio_core::rule::{Rule, RuleAction, RuleRun, RuleRunState};
use provisio_core::secret::Sealed;
use provisio_core::text::Handle;
use provisio_core::{DeliveryId, HandlerId, RuleId};
use sqlx::types::Json;

use crate::rows::from_ts;
use crate::StoreError;

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn secs(v: i64) -> Duration {
    Duration::from_secs(u64::try_from(v).unwrap_or(0))
}

#[derive(sqlx::FromRow)]
pub(crate) struct HandlerRow {
    id: i64,
    name: String,
    kind: String,
    target: String,
    status: String,
    phase: String,
    events: Json<Vec<String>>,
    timeout_ms: i64,
    ord: i64,
    on_error: String,
    secret: Option<Vec<u8>>,
    previous_secret: Option<Vec<u8>>,
    previous_secret_until: Option<i64>,
    email: Option<Json<EmailTemplate>>,
    disable_after_secs: i64,
    failing_since: Option<i64>,
    disabled_reason: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<HandlerRow> for Handler {
    type Error = StoreError;
    fn try_from(r: HandlerRow) -> Result<Self, StoreError> {
        Ok(Handler {
            id: HandlerId(r.id),
            name: Handle::parse(&r.name).map_err(|e| corrupt("handler name", e))?,
            kind: HandlerKind::parse(&r.kind).ok_or_else(|| corrupt("handler kind", &r.kind))?,
            target: r.target,
            status: HandlerStatus::parse(&r.status)
                .ok_or_else(|| corrupt("handler status", &r.status))?,
            phase: Phase::parse(&r.phase).ok_or_else(|| corrupt("handler phase", &r.phase))?,
            events: r
                .events
                .0
                .iter()
                .map(|p| EventPattern::parse(p))
                .collect::<Result<_, _>>()
                .map_err(|e| corrupt("handler events", e))?,
            timeout: Duration::from_millis(u64::try_from(r.timeout_ms).unwrap_or(0)),
            order: i32::try_from(r.ord).map_err(|e| corrupt("handler order", e))?,
            on_error: OnError::parse(&r.on_error)
                .ok_or_else(|| corrupt("handler on_error", &r.on_error))?,
            secret: r.secret.map(Sealed),
            previous_secret: r.previous_secret.map(Sealed),
            previous_secret_until: r.previous_secret_until.map(from_ts).transpose()?,
            email: r.email.map(|j| j.0),
            disable_after: secs(r.disable_after_secs),
            failing_since: r.failing_since.map(from_ts).transpose()?,
            disabled_reason: r.disabled_reason,
            created_at: from_ts(r.created_at)?,
            updated_at: from_ts(r.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    id: i64,
    handler_id: i64,
    event_id: i64,
    event_type: String,
    subject: String,
    state: String,
    attempts: i64,
    next_at: i64,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;
    fn try_from(r: DeliveryRow) -> Result<Self, StoreError> {
        Ok(Delivery {
            id: DeliveryId(r.id),
            handler_id: HandlerId(r.handler_id),
            event_id: EventId(r.event_id),
            event_type: EventType::parse(&r.event_type).map_err(|e| corrupt("event type", e))?,
            subject: r.subject,
            state: DeliveryState::parse(&r.state)
                .ok_or_else(|| corrupt("delivery state", &r.state))?,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            next_at: from_ts(r.next_at)?,
            last_error: r.last_error,
            created_at: from_ts(r.created_at)?,
            updated_at: from_ts(r.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryAttemptRow {
    attempt: i64,
    at: i64,
    duration_ms: i64,
    succeeded: bool,
    status_code: Option<i64>,
    detail: Option<String>,
}

impl TryFrom<DeliveryAttemptRow> for DeliveryAttempt {
    type Error = StoreError;
    fn try_from(r: DeliveryAttemptRow) -> Result<Self, StoreError> {
        Ok(DeliveryAttempt {
            attempt: u32::try_from(r.attempt).unwrap_or(0),
            at: from_ts(r.at)?,
            duration_ms: r.duration_ms,
            succeeded: r.succeeded,
            status_code: r.status_code.and_then(|c| i32::try_from(c).ok()),
            detail: r.detail,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct RuleRow {
    id: i64,
    name: String,
    on_event: String,
    action: Json<RuleAction>,
    delay_secs: i64,
    enabled: bool,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<RuleRow> for Rule {
    type Error = StoreError;
    fn try_from(r: RuleRow) -> Result<Self, StoreError> {
        Ok(Rule {
            id: RuleId(r.id),
            name: Handle::parse(&r.name).map_err(|e| corrupt("rule name", e))?,
            on: EventType::parse(&r.on_event).map_err(|e| corrupt("rule event", e))?,
            action: r.action.0,
            delay: secs(r.delay_secs),
            enabled: r.enabled,
            created_at: from_ts(r.created_at)?,
            updated_at: from_ts(r.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct RuleRunRow {
    id: i64,
    rule_id: i64,
    event_id: i64,
    subject: String,
    due_at: i64,
    state: String,
    result: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<RuleRunRow> for RuleRun {
    type Error = StoreError;
    fn try_from(r: RuleRunRow) -> Result<Self, StoreError> {
        Ok(RuleRun {
            id: r.id,
            rule_id: RuleId(r.rule_id),
            event_id: EventId(r.event_id),
            subject: r.subject,
            due_at: from_ts(r.due_at)?,
            state: RuleRunState::parse(&r.state)
                .ok_or_else(|| corrupt("rule run state", &r.state))?,
            result: r.result,
            created_at: from_ts(r.created_at)?,
            updated_at: from_ts(r.updated_at)?,
        })
    }
}
