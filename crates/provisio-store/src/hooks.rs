//! Storage for what reacts to events: handlers, their deliveries and attempt log, automation
//! rules and their runs, and handing new events out to them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use provisio_core::event::{Event, EventId, EventType};
use provisio_core::handler::{
    Delivery, DeliveryAttempt, DeliveryState, Handler, HandlerStatus, NewHandler, Phase,
};
use provisio_core::page::{Page, PageRequest};
use provisio_core::rule::{NewRule, Rule, RuleRun, RuleRunState};
use provisio_core::secret::Sealed;
use provisio_core::{DeliveryId, HandlerId, RuleId};

use crate::Result;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HandlerFilter {
    pub phase: Option<Phase>,
    pub status: Option<HandlerStatus>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryFilter {
    pub handler_id: Option<HandlerId>,
    pub state: Option<DeliveryState>,
    pub event_id: Option<EventId>,
}

/// A delivery the dispatcher plans for an event.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub handler_id: HandlerId,
    pub event_id: EventId,
    pub event_type: EventType,
    pub subject: String,
    pub next_at: DateTime<Utc>,
}

/// A rule firing the dispatcher plans for an event.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRuleRun {
    pub rule_id: RuleId,
    pub event_id: EventId,
    pub subject: String,
    pub due_at: DateTime<Utc>,
}

/// How one delivery attempt ended, written with its log entry and the handler's health in
/// one transaction, only while the worker still holds the delivery's lease.
#[derive(Debug, Clone)]
pub struct DeliveryUpdate {
    pub id: DeliveryId,
    pub owner: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub attempt: DeliveryAttempt,
}

/// What finishing a delivery did to its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerHealth {
    /// The lease had passed to someone else: nothing was written.
    LeaseLost,
    Fine,
    /// This failure made the handler fail for longer than its `disable_after`: it is now
    /// disabled and `handler.disabled` was announced.
    Disabled,
}

#[async_trait]
pub trait HookStore: Send + Sync {
    async fn insert_handler(&self, new: &NewHandler) -> Result<Handler>;
    async fn get_handler(&self, id: HandlerId) -> Result<Option<Handler>>;
    async fn get_handler_by_name(&self, name: &str) -> Result<Option<Handler>>;
    /// Writes every field of `new` (the secret only when `Some`). Enabling a handler clears
    /// its failure record.
    async fn update_handler(&self, id: HandlerId, new: &NewHandler) -> Result<Handler>;
    /// Sets a new signing secret, keeping the current one as the previous until `keep_until`.
    async fn rotate_handler_secret(
        &self,
        id: HandlerId,
        secret: &Sealed,
        keep_until: DateTime<Utc>,
    ) -> Result<Handler>;
    async fn delete_handler(&self, id: HandlerId) -> Result<bool>;
    /// Handlers by (`order`, name); there are few, so no paging.
    async fn list_handlers(&self, filter: &HandlerFilter) -> Result<Vec<Handler>>;

    async fn get_event(&self, id: EventId) -> Result<Option<Event>>;
    /// The oldest events not yet handed out, at most `limit`.
    async fn undispatched_events(&self, limit: u32) -> Result<Vec<Event>>;
    /// Stores the planned deliveries and rule runs (ignoring ones that exist already, so a
    /// second dispatcher repeating the work is harmless) and marks the events handed out.
    async fn dispatch(
        &self,
        events: &[EventId],
        deliveries: &[NewDelivery],
        runs: &[NewRuleRun],
    ) -> Result<()>;

    /// Leases due deliveries of enabled handlers, never one whose handler has an earlier
    /// delivery of the same subject still open (order per subject).
    async fn claim_deliveries(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Delivery>>;
    async fn finish_delivery(&self, update: &DeliveryUpdate) -> Result<HandlerHealth>;
    /// Extends the leases `owner` still holds among `ids` to `lease_until` (the heartbeat of
    /// deliveries being sent); returns how many it still held.
    async fn renew_deliveries(
        &self,
        owner: &str,
        ids: &[provisio_core::DeliveryId],
        lease_until: DateTime<Utc>,
    ) -> Result<u64>;
    /// Running deliveries whose lease ran out go back to pending.
    async fn requeue_expired_deliveries(&self, now: DateTime<Utc>) -> Result<u64>;
    async fn get_delivery(&self, id: DeliveryId) -> Result<Option<Delivery>>;
    async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        page: PageRequest,
    ) -> Result<Page<Delivery>>;
    async fn delivery_attempts(&self, id: DeliveryId) -> Result<Vec<DeliveryAttempt>>;
    /// A finished delivery back to pending, due `now`; `None` if it is still open or missing.
    async fn redeliver(&self, id: DeliveryId, now: DateTime<Utc>) -> Result<Option<Delivery>>;

    async fn insert_rule(&self, new: &NewRule) -> Result<Rule>;
    async fn get_rule(&self, id: RuleId) -> Result<Option<Rule>>;
    async fn get_rule_by_name(&self, name: &str) -> Result<Option<Rule>>;
    async fn update_rule(&self, id: RuleId, new: &NewRule) -> Result<Rule>;
    async fn delete_rule(&self, id: RuleId) -> Result<bool>;
    async fn list_rules(&self) -> Result<Vec<Rule>>;
    /// Leases due pending rule runs.
    async fn claim_rule_runs(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<RuleRun>>;
    async fn finish_rule_run(&self, id: i64, state: RuleRunState, result: &str) -> Result<()>;
    /// Running rule runs whose lease ran out go back to pending.
    async fn requeue_expired_rule_runs(&self, now: DateTime<Utc>) -> Result<u64>;
    /// Removes at most `batch` delivered or given-up deliveries (never pending or running)
    /// last changed before `before`, with their attempts. Returns how many.
    async fn trim_deliveries(&self, before: DateTime<Utc>, batch: u32) -> Result<u64>;
    /// Removes at most `batch` finished rule runs (never pending or running) last changed
    /// before `before`. Returns how many.
    async fn trim_rule_runs(&self, before: DateTime<Utc>, batch: u32) -> Result<u64>;
    async fn list_rule_runs(
        &self,
        rule: Option<RuleId>,
        page: PageRequest,
    ) -> Result<Page<RuleRun>>;
}
