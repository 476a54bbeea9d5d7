//! What the admin console keeps and reads beyond the records: its sign-in sessions and the
//! overview's aggregates, behind [`ConsoleStore`].

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

/// The overview's aggregates, each read by an index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsoleOverview {
    /// `(state, jobs)` of the open and failed jobs (pending, running, failed), all of them.
    pub by_state: Vec<(String, i64)>,
    /// `(state, jobs)` of the jobs finished since `chart_since` (done, failed, resolved,
    /// cancelled): counting every finished job of a long history would read it all.
    pub finished: Vec<(String, i64)>,
    /// The newest 5,000 failed jobs by `(server, error kind, first characters of the
    /// error)`, most first.
    pub failed: Vec<(ServerId, String, String, i64)>,
    pub servers: Vec<ServerActivity>,
    /// Jobs finished per minute since `chart_since`: `(minute start, jobs)`, minutes with
    /// none left out.
    pub per_minute: Vec<(DateTime<Utc>, i64)>,
    /// Deliveries not delivered whose last attempt failed: `(handler id, deliveries, an
    /// error)`.
    pub failing_deliveries: Vec<(i64, i64, String)>,
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
    /// Aggregates for the overview: failed attempts per server since `errors_since`, jobs
    /// finished per minute since `chart_since`.
    async fn console_overview(
        &self,
        errors_since: DateTime<Utc>,
        chart_since: DateTime<Utc>,
    ) -> Result<ConsoleOverview>;
}
