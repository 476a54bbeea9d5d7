//! Retention at the engine: many aged jobs go in small batches while new actions run.

use std::time::{Duration, Instant};

use provisio_core::module::Action;
use serde_json::json;

use crate::harness::TestEngine;

/// 20,000 finished renews two days old on one service, written straight into the file
/// (the store only writes jobs the way actions make them), trimmed by the first
/// maintenance turn while new actions run; the latest renew and an open job stay.
#[tokio::test]
async fn aged_jobs_go_in_batches_while_new_actions_run() {
    const AGED: i64 = 20_000;
    let t = TestEngine::with_options(|o| {
        o.retention.jobs = Some(Duration::from_secs(86_400));
        o.retention.batch = 500;
    })
    .await;
    let busy = t.order("auto", "busy", json!({})).await;
    let other = t.order("auto", "other", json!({})).await;
    let idle = t.order("basic", "idle", json!({})).await;
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", t.db_path().display()))
        .await
        .unwrap();
    let old = (chrono::Utc::now() - chrono::Duration::days(2)).timestamp_micros();
    let far = (chrono::Utc::now() + chrono::Duration::days(30)).timestamp_micros();
    let written = Instant::now();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         INSERT INTO jobs (service_id, server_id, action, state, params, idempotency_key, \
         attempts, max_attempts, run_after, created_at, updated_at, finished_at) \
         SELECT $2, s.server_id, 'renew', 'done', '{}', 'aged-' || n.i, 1, 3, $3, $3, $3, $3 \
         FROM n, services s WHERE s.id = $2",
    )
    .bind(AGED)
    .bind(busy.id.0)
    .bind(old)
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO job_attempts (job_id, attempt, started_at, duration_ms, outcome) \
         SELECT id, 1, created_at, 3, 'ok' FROM jobs WHERE action = 'renew'",
    )
    .execute(&db)
    .await
    .unwrap();
    // An old open job, due only in a month: no worker takes it, and retention must not.
    sqlx::query(
        "INSERT INTO jobs (service_id, server_id, action, state, params, idempotency_key, \
         attempts, max_attempts, run_after, created_at, updated_at) \
         SELECT id, server_id, 'renew', 'pending', '{}', 'open-1', 0, 3, $2, $3, $3 \
         FROM services WHERE id = $1",
    )
    .bind(idle.id.0)
    .bind(far)
    .bind(old)
    .execute(&db)
    .await
    .unwrap();
    let written = written.elapsed();
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    let latest: i64 =
        count("SELECT MAX(id) FROM jobs WHERE action = 'renew' AND state = 'done'").await;
    assert_eq!(count("SELECT COUNT(*) FROM job_attempts").await, AGED);

    let started = Instant::now();
    let worker = provisio_engine::worker::spawn(t.engine.clone(), "retention-test".into());
    // New actions while the trim runs: every one of them finishes.
    let mut ids = Vec::new();
    for s in [&busy, &other] {
        for action in [Action::Suspend, Action::Unsuspend] {
            ids.push(
                t.engine
                    .request_action(s.id, action, Default::default())
                    .await
                    .unwrap()
                    .id,
            );
        }
    }
    let done = t
        .engine
        .wait_for_jobs(&ids, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(done.len(), ids.len());
    assert!(done.values().all(|j| j.state.is_final()), "{done:?}");
    let ran = started.elapsed();
    loop {
        let left =
            count("SELECT COUNT(*) FROM jobs WHERE action = 'renew' AND state = 'done'").await;
        if left == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "{left} aged jobs still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let trimmed = started.elapsed();
    eprintln!(
        "{AGED} aged jobs written in {written:?}, trimmed within {trimmed:?}; \
         new actions done after {ran:?}"
    );
    worker.shutdown().await;
    // The latest renew of the service stays, with its attempt; the open job stays.
    assert_eq!(
        count("SELECT MAX(id) FROM jobs WHERE action = 'renew' AND state = 'done'").await,
        latest
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM job_attempts a JOIN jobs j ON j.id = a.job_id WHERE j.action = 'renew'").await,
        1
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM jobs WHERE state = 'pending' AND idempotency_key = 'open-1'")
            .await,
        1
    );
    // Every service keeps its latest job of each action: the creates, suspends, unsuspends.
    assert_eq!(
        count("SELECT COUNT(*) FROM jobs WHERE action <> 'renew'").await,
        6
    );
}
