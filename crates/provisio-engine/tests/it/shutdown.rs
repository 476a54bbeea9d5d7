//! Stopping a worker while calls run: no other node starts a job whose call may still be
//! running, and what the drain could not finish is handed back to be looked up first.

use std::time::Duration;

use provisio_core::job::{Job, JobState};
use serde_json::json;

use crate::harness::TestEngine;

async fn wait_until(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ok().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn only_job(t: &TestEngine) -> Job {
    t.engine
        .list_jobs(
            &Default::default(),
            provisio_core::page::PageRequest::first(10),
        )
        .await
        .unwrap()
        .items
        .remove(0)
}

/// A 4 s create on a worker with a 1.5 s lease: it is stopped mid-call while a second node
/// is already running. Before, the stopping worker's heartbeat ended first, the lease ran
/// out, and the second node created the account again.
#[tokio::test]
async fn a_stopping_worker_keeps_its_leases_until_its_calls_end() {
    // A lease short beside the call, but not so short that a busy machine's late heartbeat
    // loses it (1.5 s once did, with three test runs on two cores).
    let lease = |o: &mut provisio_engine::EngineOptions| {
        o.jobs.lease = Duration::from_millis(2500);
        o.jobs.drain = Duration::from_secs(20);
    };
    let t = TestEngine::with_options(lease).await;
    let s = t.order("auto", "hana", json!({"delay_ms": 6000})).await;
    let first = provisio_engine::worker::spawn(t.engine.clone(), "node-a".into());
    let job = only_job(&t).await;
    wait_until("the create to start", async || {
        t.engine.get_job(job.id).await.unwrap().job.state == JobState::Running
    })
    .await;
    let second_engine = t.another_engine(lease);
    let second = provisio_engine::worker::spawn(second_engine.clone(), "node-b".into());
    let started = std::time::Instant::now();
    first.shutdown().await;
    // The stop waited for the call rather than abandoning it.
    assert!(
        started.elapsed() >= Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
    let done = t.engine.get_job(job.id).await.unwrap().job;
    assert_eq!(done.state, JobState::Done, "{done:?}");
    // Long past the lease: the second node never took the job over.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(t.effects("create"), 1);
    let creates = t.calls().iter().filter(|c| c.0 == "create").count();
    assert_eq!(creates, 1, "{:?}", t.calls());
    assert_eq!(t.engine.get_job(job.id).await.unwrap().attempts.len(), 1);
    assert_eq!(
        t.engine.get_service(s.id).await.unwrap().status,
        provisio_core::service::ServiceStatus::Active
    );
    second.shutdown().await;
}

/// A call longer than the drain is cancelled and its job handed back at once, marked for a
/// lookup; the next node finishes it.
#[tokio::test]
async fn what_the_drain_cannot_finish_is_handed_back_for_a_lookup() {
    let short = |o: &mut provisio_engine::EngineOptions| {
        o.jobs.lease = Duration::from_secs(60);
        o.jobs.drain = Duration::from_millis(300);
    };
    let t = TestEngine::with_options(short).await;
    t.order("auto", "ivan", json!({"delay_ms": 3000})).await;
    let first = provisio_engine::worker::spawn(t.engine.clone(), "node-a".into());
    let job = only_job(&t).await;
    wait_until("the create to start", async || {
        t.engine.get_job(job.id).await.unwrap().job.state == JobState::Running
    })
    .await;
    let started = std::time::Instant::now();
    first.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let back = t.engine.get_job(job.id).await.unwrap().job;
    assert_eq!(back.state, JobState::Pending, "{back:?}");
    assert!(back.needs_lookup);
    assert_eq!(back.lease_owner, None);
    assert_eq!(t.effects("create"), 0, "the cancelled call took no effect");
    // With a 60 s lease, only the hand-back lets another node take it now.
    let second_engine = t.another_engine(short);
    let second = provisio_engine::worker::spawn(second_engine.clone(), "node-b".into());
    // Asked of the second node: the first is stopped and answers waiters at once.
    let done = second_engine
        .wait_for_job(job.id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert_eq!(t.effects("create"), 1);
    let lookups = t.calls().iter().filter(|c| c.0 == "lookup").count();
    assert_eq!(
        lookups,
        1,
        "looked up before creating again: {:?}",
        t.calls()
    );
    second.shutdown().await;
}

/// A caller waiting for an outcome is answered by the end of the drain, not after its
/// own (longer) wait.
#[tokio::test]
async fn waiting_callers_are_answered_within_the_drain() {
    let t = TestEngine::with_options(|o| o.jobs.drain = Duration::from_millis(400)).await;
    t.order("auto", "jane", json!({"delay_ms": 5000})).await;
    let worker = provisio_engine::worker::spawn(t.engine.clone(), "node-a".into());
    let job = only_job(&t).await;
    let engine = t.engine.clone();
    let waiter =
        tokio::spawn(async move { engine.wait_for_job(job.id, Duration::from_secs(60)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    worker.shutdown().await;
    let answered = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter was answered")
        .unwrap()
        .unwrap();
    assert!(!answered.state.is_final(), "{answered:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
