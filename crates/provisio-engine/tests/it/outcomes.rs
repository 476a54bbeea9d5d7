//! Outcome writes beside the worker's turns, on PostgreSQL: a job written back for a retry
//! and claimed again by the same worker before that write was settled keeps its lease
//! renewed, so no one takes it over while its second attempt's call is still running.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provisio_core::job::JobState;
use provisio_core::module::{ActionReply, ActionRequest, ModuleError};
use serde_json::json;
use sqlx::Connection as _;

use crate::harness::{fresh_pg_url, Script, TestEngine};

const LEASE: Duration = Duration::from_secs(2);

/// `alba`'s first create fails for a retry and its second is held until the test lets it
/// go; `cruz`'s create is held until the test lets it go.
#[derive(Default)]
struct Held {
    alba_creates: Mutex<u32>,
    release_alba: tokio::sync::Notify,
    release_cruz: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Script for Held {
    async fn call(&self, req: &ActionRequest) -> Option<Result<ActionReply, ModuleError>> {
        let user = req.service.as_ref()?.username.clone();
        if req.action.is_read_only() {
            return None;
        }
        match user.as_str() {
            "alba" => {
                let n = {
                    let mut n = self.alba_creates.lock().unwrap();
                    *n += 1;
                    *n
                };
                if n == 1 {
                    return Some(Err(ModuleError::transient("busy, try again")));
                }
                self.release_alba.notified().await;
                None
            }
            "cruz" => {
                self.release_cruz.notified().await;
                None
            }
            _ => None,
        }
    }
}

async fn wait_until(what: &str, within: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a session of the database waits on a lock while running a statement like `like`.
async fn waiting_on(conn: &mut sqlx::PgConnection, wait_event: &str, like: &str) -> bool {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND wait_event_type = 'Lock' AND wait_event = $1 AND query LIKE $2",
    )
    .bind(wait_event)
    .bind(like)
    .fetch_one(conn)
    .await
    .unwrap();
    n > 0
}

/// The ordering forced here: alba's retry outcome is being written (held inside its
/// transaction by a table lock) while cruz's outcome makes the worker claim again (held at
/// the claim's advisory lock); the write commits, then the claim runs and takes alba's job
/// again, before the worker has settled the write. The write's settling must not drop the
/// new attempt from the jobs whose leases the worker renews: if it did, the lease would
/// run out during the held call and the job would be looked up and run beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_claimed_again_before_its_retry_was_settled_keeps_its_lease() {
    let Some(url) = fresh_pg_url().await else {
        return;
    };
    let t = TestEngine::on_postgres(&url, |o| {
        o.jobs.lease = LEASE;
        o.jobs.retry = provisio_core::job::RetryPolicy {
            delays: vec![Duration::ZERO; 4],
            jitter: 0.0,
        };
    })
    .await;
    let held = Arc::new(Held::default());
    assert!(t.module.script.set(held.clone()).is_ok());
    let worker = provisio_engine::worker::spawn(t.engine.clone(), "node-a".into());
    let mut attempts_lock = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut claim_lock = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut watch = sqlx::PgConnection::connect(&url).await.unwrap();

    t.order("auto", "cruz", json!({})).await;
    wait_until(
        "cruz's create to be called",
        Duration::from_secs(10),
        async || t.calls().iter().any(|c| c.0 == "create" && c.1 == "cruz"),
    )
    .await;
    // Outcome writes insert attempt records: this holds the next one inside its transaction.
    let mut hold_writes = attempts_lock.begin().await.unwrap();
    sqlx::query("LOCK TABLE job_attempts IN EXCLUSIVE MODE")
        .execute(&mut *hold_writes)
        .await
        .unwrap();
    let alba = t.order("auto", "alba", json!({})).await;
    wait_until(
        "alba's retry outcome to be written",
        Duration::from_secs(10),
        async || waiting_on(&mut watch, "relation", "%INSERT INTO job_attempts%").await,
    )
    .await;
    // Claims take this advisory lock first (`provisio_claim_jobs`, migration 0016).
    let mut hold_claims = claim_lock.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(847001)")
        .execute(&mut *hold_claims)
        .await
        .unwrap();
    held.release_cruz.notify_one();
    wait_until(
        "a claim to wait for its turn",
        Duration::from_secs(10),
        async || waiting_on(&mut watch, "advisory", "%provisio_claim_jobs%").await,
    )
    .await;
    hold_writes.rollback().await.unwrap();
    let alba_job = {
        let page = provisio_core::page::PageRequest::first(10);
        let jobs = t
            .engine
            .list_jobs(&Default::default(), page)
            .await
            .unwrap()
            .items;
        jobs.into_iter().find(|j| j.service_id == alba.id).unwrap()
    };
    wait_until(
        "alba's retry to be committed",
        Duration::from_secs(10),
        async || {
            let j = t.engine.get_job(alba_job.id).await.unwrap().job;
            j.state == JobState::Pending && j.attempts == 1
        },
    )
    .await;
    hold_claims.rollback().await.unwrap();
    wait_until(
        "alba's second create to be called",
        Duration::from_secs(10),
        async || *held.alba_creates.lock().unwrap() == 2,
    )
    .await;
    // Three leases: without renewals the lease runs out and the job is taken over.
    tokio::time::sleep(LEASE * 3).await;
    let during: Vec<_> = t.calls().into_iter().filter(|c| c.1 == "alba").collect();
    let running = t.engine.get_job(alba_job.id).await.unwrap().job;
    held.release_alba.notify_one();
    assert_eq!(
        during.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["create", "create"],
        "alba's job was taken over while its second create ran"
    );
    assert_eq!(running.state, JobState::Running, "{running:?}");
    assert_eq!(running.lease_owner.as_deref(), Some("node-a"));
    let done = t
        .engine
        .wait_for_job(alba_job.id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert_eq!(done.attempts, 2, "{done:?}");
    assert_eq!(t.effects("create"), 2, "cruz once, alba once");
    worker.shutdown().await;
}
