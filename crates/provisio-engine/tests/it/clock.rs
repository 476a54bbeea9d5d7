//! Leases on one clock: two engines share a PostgreSQL database while one node's clock is
//! 90 s off. Each reads leases and due times on the database's clock, so neither takes the
//! other's live job, and a job one queues is due at once for the other. A test runs the
//! same nodes with the correction turned off, to show that the first ones can fail. Day-scale
//! filters (`since`, the clean-up) cut on the same clock as the times they compare.

use std::sync::Arc;
use std::time::Duration;

use provisio_core::job::{Job, JobState};
use provisio_engine::{Engine, EngineOptions};
use provisio_store::Clock;
use serde_json::json;

use crate::harness::{fresh_pg_url, TestEngine};

/// How far off the odd node's clock is: far more than any lease here.
const SKEW: chrono::Duration = chrono::Duration::seconds(90);

/// A lease short beside the 5 s create, renewed every second: a busy machine's late
/// heartbeat does not lose it.
fn lease(o: &mut EngineOptions) {
    o.jobs.lease = Duration::from_secs(3);
}

const CREATE_MS: u64 = 5000;

/// Node A on the system clock (the harness's engine), node B over its own connections
/// with `clock`; `None` when there is no PostgreSQL to run on.
async fn two_nodes(clock: Clock) -> Option<(TestEngine, Arc<Engine>)> {
    let url = fresh_pg_url().await?;
    let a = TestEngine::on_postgres(&url, lease).await;
    let store = provisio_store::open_with_clock(&url, clock).await.unwrap();
    let b = a.another_engine_on(store, lease);
    Some((a, b))
}

async fn wait_until(what: &str, within: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !ok().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn job(engine: &Engine, id: provisio_core::job::JobId) -> Job {
    engine.get_job(id).await.unwrap().job
}

async fn only_job(engine: &Engine) -> Job {
    let page = provisio_core::page::PageRequest::first(10);
    let mut jobs = engine
        .list_jobs(&Default::default(), page)
        .await
        .unwrap()
        .items;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    jobs.remove(0)
}

/// `queuer` orders a service whose create takes 5 s; `runner`'s worker must claim it
/// at once (its due time is on the one clock) and `observer`'s worker, started once the
/// call runs, must leave it alone: one create on the remote, one attempt, no lookup.
async fn one_create_despite_the_skew(
    t: &TestEngine,
    queuer: &Arc<Engine>,
    runner: &Arc<Engine>,
    observer: &Arc<Engine>,
) {
    let ordered = std::time::Instant::now();
    let service = queuer
        .create_service(provisio_engine::input::ServiceCreate {
            order_key: None,
            external_id: None,
            client_id: t.client,
            product: provisio_engine::input::RecordRef::Name("auto".into()),
            server: None,
            username: Some("kato".into()),
            password: Some("client-password-5b1d".to_string().into()),
            invoice: None,
            parent_invoice: None,
            settings: crate::harness::settings(json!({ "delay_ms": CREATE_MS })),
        })
        .await
        .unwrap();
    let id = only_job(runner).await.id;
    let first = provisio_engine::worker::spawn(runner.clone(), "runner".into());
    // On a clock 90 s apart the job would not be due for 90 s.
    wait_until(
        "the runner to claim the create",
        Duration::from_secs(4),
        async || job(runner, id).await.state == JobState::Running,
    )
    .await;
    let claimed = ordered.elapsed();
    let held = job(runner, id).await;
    assert_eq!(held.lease_owner.as_deref(), Some("runner"));
    let second = provisio_engine::worker::spawn(observer.clone(), "observer".into());
    wait_until(
        "the create to finish",
        Duration::from_secs(20),
        async || job(runner, id).await.state.is_final(),
    )
    .await;
    let done = job(observer, id).await;
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert_eq!(done.attempts, 1, "the job ran more than once: {done:?}");
    let calls: Vec<String> = t.calls().into_iter().map(|(a, _, _)| a).collect();
    assert_eq!(calls, ["create"], "the observer took over a live lease");
    assert_eq!(t.effects("create"), 1);
    let s = runner.get_service(service.id).await.unwrap();
    assert_eq!(s.status, provisio_core::service::ServiceStatus::Active);
    eprintln!("claimed {claimed:?} after the order; finished with one create");
    second.shutdown().await;
    first.shutdown().await;
}

/// Node B runs 90 s ahead: uncorrected, it would read node A's leases as long expired and
/// take the job over mid-call. B queues the job too, so its due time comes from B's clock.
#[tokio::test]
async fn a_node_whose_clock_runs_ahead_takes_over_no_live_lease() {
    let Some((a, b)) = two_nodes(Clock::skewed(SKEW)).await else {
        return;
    };
    // The correction measured at connect undoes the skew, to well within a second.
    let off = b.clock().offset() + SKEW;
    assert!(off.abs() < chrono::Duration::milliseconds(500), "{off}");
    eprintln!(
        "B's measured offset {}; its error {off}",
        b.clock().offset()
    );
    assert!((b.now() - a.engine.now()).abs() < chrono::Duration::milliseconds(500));
    let engine_a = a.engine.clone();
    one_create_despite_the_skew(&a, &b, &engine_a, &b).await;
}

/// Node B runs 90 s behind and runs the job: uncorrected, its leases would end 87 s in the
/// past for node A, and A would take over at once; and the job A queued would not be due
/// for B for another 90 s.
#[tokio::test]
async fn a_node_whose_clock_runs_behind_keeps_its_leases() {
    let Some((a, b)) = two_nodes(Clock::skewed(-SKEW)).await else {
        return;
    };
    let off = b.clock().offset() - SKEW;
    assert!(off.abs() < chrono::Duration::milliseconds(500), "{off}");
    eprintln!(
        "B's measured offset {}; its error {off}",
        b.clock().offset()
    );
    let engine_a = a.engine.clone();
    one_create_despite_the_skew(&a, &engine_a, &b, &engine_a).await;
}

/// The same two nodes with B's correction off: B reads A's renewed lease as expired and
/// takes the job over (a lookup) while A's create is still running. This is what the tests
/// above would see if the engine compared leases on each node's own clock.
#[tokio::test]
async fn without_the_correction_a_node_ahead_takes_over_a_live_lease() {
    let Some((a, b)) = two_nodes(Clock::skewed(SKEW).uncorrected()).await else {
        return;
    };
    assert_eq!(b.clock().offset(), chrono::Duration::zero());
    a.order("auto", "kato", json!({ "delay_ms": CREATE_MS }))
        .await;
    let id = only_job(&a.engine).await.id;
    let first = provisio_engine::worker::spawn(a.engine.clone(), "runner".into());
    wait_until(
        "A to claim the create",
        Duration::from_secs(4),
        async || job(&a.engine, id).await.state == JobState::Running,
    )
    .await;
    let second = provisio_engine::worker::spawn(b.clone(), "observer".into());
    wait_until(
        "B to take the job over",
        Duration::from_secs(10),
        async || a.calls().iter().any(|(action, _, _)| action == "lookup"),
    )
    .await;
    // A's create had not ended: B took a lease that was still being renewed.
    assert_eq!(a.effects("create"), 0);
    second.shutdown().await;
    first.shutdown().await;
}

/// The clean-up's and `since` filters' cut is read from the store's clock, the one that
/// stamped the suspension. Node B's store clock reads two days behind the machine's (left
/// uncorrected on SQLite, standing in for a database clock the node's own disagrees with):
/// a service it suspended a moment ago has been suspended for no day on that clock, though
/// the machine's clock would say two.
#[tokio::test]
async fn day_scale_cutoffs_are_read_from_the_stores_clock() {
    let t = crate::harness::TestEngine::new().await;
    let url = format!("sqlite://{}", t.db_path().display());
    let behind = Clock::skewed(-chrono::Duration::days(2)).uncorrected();
    let store = provisio_store::open_with_clock(&url, behind).await.unwrap();
    let b = t.another_engine_on(store, |_| {});
    // Ordered by B, so that the create is due on B's clock.
    let service = b
        .create_service(provisio_engine::input::ServiceCreate {
            order_key: None,
            external_id: None,
            client_id: t.client,
            product: provisio_engine::input::RecordRef::Name("auto".into()),
            server: None,
            username: Some("dana".into()),
            password: None,
            invoice: None,
            parent_invoice: None,
            settings: Default::default(),
        })
        .await
        .unwrap();
    let worker = provisio_engine::worker::spawn(b.clone(), "behind".into());
    let create = only_job(&b).await.id;
    b.wait_for_jobs(&[create], Duration::from_secs(20))
        .await
        .unwrap();
    let suspend = b
        .request_action(
            service.id,
            provisio_core::action::Action::Suspend,
            Default::default(),
        )
        .await
        .unwrap();
    let done = b
        .wait_for_jobs(&[suspend.id], Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(done[&suspend.id].state, JobState::Done, "{done:?}");
    worker.shutdown().await;
    let since = b
        .get_service(service.id)
        .await
        .unwrap()
        .suspension
        .unwrap()
        .since;
    assert!(
        chrono::Utc::now() - since > chrono::Duration::days(1),
        "{since}"
    );
    let day = Duration::from_secs(86_400);
    let found = b.cleanup_candidates(day).await.unwrap();
    assert!(found.is_empty(), "suspended a moment ago: {found:?}");
    // The same filter with no wait finds it, so the one above could have.
    let found = b.cleanup_candidates(Duration::ZERO).await.unwrap();
    assert_eq!(found.iter().map(|s| s.id).collect::<Vec<_>>(), [service.id]);
}
