//! What the admin console keeps and reads beyond the records: its sign-in sessions, the
//! overview's aggregates and the breaker states worker nodes publish for it, behind
//! [`ConsoleStore`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use provisio_core::ServerId;

use crate::Result;

/// A signed-in console session as stored: the hash of the browser's token, never the token
/// nor the API key it was opened with.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleSession {
    pub token_hash: String,
    pub key_id: i64,
    pub csrf: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// One server's line on the overview.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerActivity {
    pub server_id: ServerId,
    pub running: i64,
    /// Attempts that failed since the overview's `errors_since`.
    pub errors: i64,
    pub last_success: Option<DateTime<Utc>>,
}

/// One node's circuit breaker for one server, as the node last published it.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerRecord {
    pub server_id: ServerId,
    /// The worker's name in job leases.
    pub node: String,
    /// `closed`, `open` or `half-open` (one probe out).
    pub state: String,
    pub since: DateTime<Utc>,
    /// When an open breaker lets its probe through.
    pub open_until: Option<DateTime<Utc>>,
    /// The node's own order of its transitions: a write never replaces a later one.
    pub seq: i64,
}

/// The overview's aggregates, each read by an index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsoleOverview {
    /// `(state, jobs)` of the open and failed jobs (pending, running, failed), each counted
    /// up to [`COUNT_CAP`] (a larger backlog shows as "at least").
    pub by_state: Vec<(String, i64)>,
    /// `(state, jobs)` of the jobs finished since `chart_since` (done, failed, resolved,
    /// cancelled): counting every finished job of a long history would read it all.
    pub finished: Vec<(String, i64)>,
    /// The newest [`FAILED_SAMPLE`] failed jobs by `(server, error kind, first characters
    /// of the error)`, most first.
    pub failed: Vec<(ServerId, String, String, i64)>,
    pub servers: Vec<ServerActivity>,
    /// Jobs finished per minute since `chart_since`: `(minute start, jobs)`, minutes with
    /// none left out.
    pub per_minute: Vec<(DateTime<Utc>, i64)>,
    /// Deliveries not delivered whose last attempt failed: `(handler id, deliveries, an
    /// error)`.
    pub failing_deliveries: Vec<(i64, i64, String)>,
    /// Breakers of nodes seen since `seen_since`, by server and node.
    pub breakers: Vec<BreakerRecord>,
    /// The newest usage sync: `(id, state, started)`.
    pub last_sync: Option<(i64, String, DateTime<Utc>)>,
    /// The newest audit: `(id, server, state, finished)`.
    pub last_audit: Option<(i64, ServerId, String, Option<DateTime<Utc>>)>,
}

/// Where the overview stops counting the jobs of one state: counting a backlog of millions
/// would read them all on every look.
pub const COUNT_CAP: i64 = 100_000;

/// How many of the newest failed jobs the overview's breakdown reads.
pub const FAILED_SAMPLE: i64 = 1_000;

/// What the overview asks for.
#[derive(Debug, Clone, Copy)]
pub struct OverviewWindow {
    /// Failed attempts per server since then.
    pub errors_since: DateTime<Utc>,
    /// Jobs finished since then, by state and per minute.
    pub chart_since: DateTime<Utc>,
    /// Breakers of nodes that marked them seen since then.
    pub seen_since: DateTime<Utc>,
}

#[async_trait]
pub trait ConsoleStore: Send + Sync {
    /// Stores a new session; sessions expired before `s.created_at` are removed first, so
    /// the table holds only live ones.
    async fn insert_console_session(&self, s: &ConsoleSession) -> Result<()>;
    /// The session whose token hashes to `token_hash`, if it has not expired at `now`.
    async fn find_console_session(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ConsoleSession>>;
    async fn delete_console_session(&self, token_hash: &str) -> Result<()>;
    /// Aggregates for the overview over `w`.
    async fn console_overview(&self, w: OverviewWindow) -> Result<ConsoleOverview>;
    /// Writes a node's breaker transition unless the row already holds a later one
    /// (`seq`); marks it seen at `now`.
    async fn record_breaker(&self, b: &BreakerRecord, now: DateTime<Utc>) -> Result<()>;
    /// Marks a running node's breaker rows seen at `now`, and removes every node's rows not
    /// seen since `forget_before` (nodes that stopped without removing theirs).
    async fn touch_breakers(
        &self,
        node: &str,
        now: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> Result<()>;
    /// Removes a stopping node's breaker rows.
    async fn drop_breakers(&self, node: &str) -> Result<()>;
    /// The newest `limit` usage syncs, newest first.
    async fn recent_sync_runs(&self, limit: u32) -> Result<Vec<crate::SyncRun>>;
    /// A service's timeline, newest first and bounded: its newest `limit` jobs (with the
    /// attempts of the newest [`TIMELINE_ATTEMPTS`] of them), events of subject
    /// `service:ID` and deliveries of that subject, each by its own index. `before` keeps
    /// to jobs, events and deliveries older than that time (the timeline's "older" link).
    async fn service_timeline(
        &self,
        service: provisio_core::ServiceId,
        before: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<ServiceTimeline>;
    /// A product and every product up its `extends` chain, in one statement: the product
    /// first, then its parent, up to the root (at most [`CHAIN_MAX`] levels; a cycle stops
    /// there).
    async fn product_chain_rows(
        &self,
        id: provisio_core::ProductId,
    ) -> Result<Vec<provisio_core::product::Product>>;
}

/// What [`ConsoleStore::service_timeline`] reads, each list newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceTimeline {
    pub jobs: Vec<provisio_core::job::Job>,
    /// The attempts of the newest jobs, by job and attempt.
    pub attempts: Vec<provisio_core::job::Attempt>,
    pub events: Vec<provisio_core::event::Event>,
    pub deliveries: Vec<provisio_core::handler::Delivery>,
}

/// How many of a timeline's newest jobs carry their attempts.
pub const TIMELINE_ATTEMPTS: usize = 20;

/// How far up an `extends` chain one read follows.
pub const CHAIN_MAX: i64 = 64;
