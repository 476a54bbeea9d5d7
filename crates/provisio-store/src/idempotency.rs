//! Requests made safe to retry: the [`IdempotencyStore`] trait, which keeps the first answer
//! given under each (API key, `Idempotency-Key`) pair for a retry to receive again.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use provisio_core::secret::Sealed;

use crate::Result;

/// Where an idempotency key stands when a request arrives with it.
#[derive(Debug, Clone, PartialEq)]
pub enum IdempotencyClaim {
    /// The key is this request's now: run it, then keep or drop its answer.
    Claimed,
    /// Another request with the key runs (or ran on a node that died before
    /// `locked_until`); `fingerprint` says whether it was the same request.
    Running {
        fingerprint: String,
        locked_until: DateTime<Utc>,
    },
    /// The key was used and its answer kept, sealed.
    Done {
        fingerprint: String,
        status: u16,
        response: Sealed,
    },
}

#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `key` for `api_key_id` until `locked_until`, unless a live use of it exists.
    /// A use older than `expired_before` is forgotten first, so the key may serve again;
    /// a running use past its `locked_until` (its node died) is taken over when the same
    /// request (`fingerprint`) comes again. Concurrent claims of one key: one wins.
    async fn claim_idempotency_key(
        &self,
        api_key_id: i64,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        locked_until: DateTime<Utc>,
        expired_before: DateTime<Utc>,
    ) -> Result<IdempotencyClaim>;

    /// Keeps the answer of a claimed key, ending its run.
    async fn finish_idempotency_key(
        &self,
        api_key_id: i64,
        key: &str,
        status: u16,
        response: &Sealed,
    ) -> Result<()>;

    /// Drops a claimed key whose request kept no answer (it was refused before it acted, or
    /// failed), so a retry runs afresh.
    async fn release_idempotency_key(&self, api_key_id: i64, key: &str) -> Result<()>;

    /// Removes at most `batch` keys first used before `before`; see the `trim_*` of
    /// [`crate::Store`].
    async fn trim_idempotency_keys(&self, before: DateTime<Utc>, batch: u32) -> Result<u64>;
}
