//! Two engines on one PostgreSQL process 10,000 jobs with no job executed twice, and with
//! default settings share 2,000 jobs ordered through one of them.
//!
//! Both engines share one database and one `Recorder` (the remote), each through its own
//! `Tagged` wrapper that notes which engine made every call. Services are ordered on both
//! engines at once; the workers start when half are in, so the two first race for a
//! backlog, then claim while orders keep arriving.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provisio_core::module::{Action, ActionReply, ActionRequest, Module, ModuleError, ModuleInfo};
use provisio_engine::input::{ClientCreate, ProductCreate, ServerCreate, ServiceCreate};
use provisio_engine::Engine;
use provisio_modules::Registry;
use serde_json::json;
use sqlx::Row;

use crate::helpers::{config, db_url, Db, Recorder};

const SERVICES: usize = 10_000;
const INSERTERS: usize = 16;

/// Long leases: a job must never be taken over while its worker is alive, which would
/// make the test about lease timing instead of claiming.
const JOBS: &str = "[jobs]\n\
retry_schedule = [\"100ms\", \"100ms\", \"100ms\"]\n\
retry_jitter = 0.0\n\
lease_seconds = 30\n\
poll_interval_ms = 20\n\
max_in_flight = 128\n\
breaker_failures = 5\n\
breaker_open_seconds = 2\n";

/// One module call: which engine made it, for which job (key), action and account.
struct Execution {
    engine: usize,
    key: String,
    action: Action,
    username: String,
}

/// The shared recorder as one engine sees it.
struct Tagged {
    engine: usize,
    remote: Arc<Recorder>,
    ledger: Arc<Mutex<Vec<Execution>>>,
    /// How long each call takes, so that slots fill up.
    delay: Duration,
}

#[async_trait::async_trait]
impl Module for Tagged {
    fn info(&self) -> &ModuleInfo {
        self.remote.info()
    }

    async fn call(&self, req: &ActionRequest) -> Result<ActionReply, ModuleError> {
        self.ledger.lock().unwrap().push(Execution {
            engine: self.engine,
            key: req.idempotency_key.clone(),
            action: req.action.clone(),
            username: req
                .service
                .as_ref()
                .map(|s| s.username.clone())
                .unwrap_or_default(),
        });
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.remote.call(req).await
    }
}

fn input<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// Counts rows of `sql` grouped by its first column (text) into a map.
async fn grouped(pool: &sqlx::PgPool, sql: &str) -> HashMap<String, i64> {
    sqlx::query(sql)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_on_one_postgres_run_ten_thousand_jobs_once_each() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(Db::Postgres, dir.path()).await;
    let cfg = config(dir.path(), &url, JOBS);
    let remote = Arc::new(Recorder::default());
    let ledger = Arc::new(Mutex::new(Vec::new()));
    let mut engines: Vec<Arc<Engine>> = Vec::new();
    // One after the other: the first creates the secret key and admin key, the second
    // finds them.
    for n in 0..2 {
        let mut registry = Registry::builtin_with(&cfg.module_options().unwrap());
        registry.register(Arc::new(Tagged {
            engine: n,
            remote: remote.clone(),
            ledger: ledger.clone(),
            delay: Duration::ZERO,
        }));
        engines.push(Arc::new(
            provisio_server::prepare(&cfg, registry).await.unwrap(),
        ));
    }
    let client = engines[0]
        .create_client(input::<ClientCreate>(
            json!({"name": "Many", "email": "many@m.test"}),
        ))
        .await
        .unwrap();
    engines[0]
        .create_server(input::<ServerCreate>(
            json!({"name": "rec", "module": "recorder", "max_concurrent": 400}),
        ))
        .await
        .unwrap();
    engines[1]
        .create_product(input::<ProductCreate>(
            json!({"name": "plan", "module": "recorder"}),
        ))
        .await
        .unwrap();

    // Order the services on both engines at once; each order stores its create job. The
    // workers start when half are in: first both race for a backlog, then for a trickle.
    let mut workers = Vec::new();
    for (from, to) in [(0, SERVICES / 2), (SERVICES / 2, SERVICES)] {
        let mut inserters = tokio::task::JoinSet::new();
        for t in 0..INSERTERS {
            let engine = engines[t % 2].clone();
            let client_id = client.id.0;
            inserters.spawn(async move {
                for i in (from + t..to).step_by(INSERTERS) {
                    engine
                        .create_service(input::<ServiceCreate>(json!({
                            "client_id": client_id,
                            "product": "plan",
                            "username": format!("m{i:05}"),
                        })))
                        .await
                        .unwrap_or_else(|e| panic!("ordering m{i:05}: {e}"));
                }
            });
        }
        while let Some(r) = inserters.join_next().await {
            r.unwrap();
        }
        if workers.is_empty() {
            workers = engines
                .iter()
                .enumerate()
                .map(|(n, e)| provisio_engine::worker::spawn(e.clone(), format!("engine-{n}")))
                .collect();
        }
    }
    let ordered = started.elapsed();

    // Bounded wait until no job is open.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(400);
    loop {
        let open: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'running')")
                .fetch_one(&pool)
                .await
                .unwrap();
        if open == 0 {
            break;
        }
        if Instant::now() > deadline {
            let states = grouped(&pool, "SELECT state, COUNT(*) FROM jobs GROUP BY state").await;
            panic!(
                "{open} jobs still open after {:?}: {states:?}",
                started.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained = started.elapsed();
    for w in workers {
        w.shutdown().await;
    }

    // The database: every job done after exactly one attempt, every service active.
    let states = grouped(&pool, "SELECT state, COUNT(*) FROM jobs GROUP BY state").await;
    assert_eq!(
        states,
        HashMap::from([("done".to_string(), SERVICES as i64)]),
        "job states"
    );
    let attempts = grouped(
        &pool,
        "SELECT attempts::TEXT, COUNT(*) FROM jobs GROUP BY attempts",
    )
    .await;
    assert_eq!(
        attempts,
        HashMap::from([("1".to_string(), SERVICES as i64)]),
        "attempts per job"
    );
    let outcomes = grouped(
        &pool,
        "SELECT outcome, COUNT(*) FROM job_attempts GROUP BY outcome",
    )
    .await;
    assert_eq!(
        outcomes,
        HashMap::from([("ok".to_string(), SERVICES as i64)]),
        "attempt records"
    );
    let statuses = grouped(
        &pool,
        "SELECT status, COUNT(*) FROM services GROUP BY status",
    )
    .await;
    assert_eq!(
        statuses,
        HashMap::from([("active".to_string(), SERVICES as i64)]),
        "service statuses"
    );
    let keys: Vec<String> = sqlx::query_scalar("SELECT idempotency_key FROM jobs")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;

    // The modules: one call per job, on one engine or the other, never both, no lookups.
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    assert_eq!(ledger.len(), SERVICES, "module calls");
    let mut per_key: HashMap<&str, Vec<&Execution>> = HashMap::new();
    for e in &ledger {
        assert_eq!(e.action, Action::Create, "only creates ran");
        per_key.entry(e.key.as_str()).or_default().push(e);
    }
    for key in &keys {
        let runs = per_key.get(key.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(
            runs.len(),
            1,
            "job with key {key} ran {} times: {:?}",
            runs.len(),
            runs.iter()
                .map(|e| (e.engine, e.username.as_str()))
                .collect::<Vec<_>>()
        );
    }
    let per_engine = [0, 1].map(|n| ledger.iter().filter(|e| e.engine == n).count());
    for (n, count) in per_engine.iter().enumerate() {
        assert!(
            *count > SERVICES / 10,
            "engine {n} ran only {count} of {SERVICES} jobs: {per_engine:?}"
        );
    }

    // The remote: each account created by exactly one call and one applied effect.
    remote.with(|st| {
        assert_eq!(st.effects.len(), SERVICES, "effects applied");
        assert_eq!(st.accounts.len(), SERVICES, "accounts on the remote");
        assert_eq!(st.calls.len(), SERVICES, "(account, action) pairs called");
        for i in 0..SERVICES {
            let user = format!("m{i:05}");
            assert_eq!(
                st.calls.get(&(user.clone(), "create".into())).copied(),
                Some(1),
                "create calls for {user}"
            );
            assert_eq!(
                st.accounts.get(&user).map(String::as_str),
                Some("active"),
                "{user}"
            );
        }
    });
    eprintln!(
        "multi_engine: ordered in {ordered:?}, drained in {drained:?}, per engine {per_engine:?}, total {:?}",
        started.elapsed()
    );
}

/// Two engines with the default job settings, orders arriving through the first only, a
/// server with the default `max_concurrent`, calls that take a few milliseconds: each engine
/// runs a good share. (Before each worker got a share of the slots and the database's
/// notifications, the first, woken by its own orders and outcomes, refilled every freed
/// slot before the second's poll came round, and the second ran almost nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_with_default_settings_share_the_work() {
    const JOBS_N: usize = 2_000;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(Db::Postgres, dir.path()).await;
    let cfg = config(dir.path(), &url, "");
    let remote = Arc::new(Recorder::default());
    let ledger = Arc::new(Mutex::new(Vec::new()));
    let mut engines: Vec<Arc<Engine>> = Vec::new();
    for n in 0..2 {
        let mut registry = Registry::builtin_with(&cfg.module_options().unwrap());
        registry.register(Arc::new(Tagged {
            engine: n,
            remote: remote.clone(),
            ledger: ledger.clone(),
            delay: Duration::from_millis(5),
        }));
        engines.push(Arc::new(
            provisio_server::prepare(&cfg, registry).await.unwrap(),
        ));
    }
    let client = engines[0]
        .create_client(input::<ClientCreate>(
            json!({"name": "Share", "email": "share@m.test"}),
        ))
        .await
        .unwrap();
    engines[0]
        .create_server(input::<ServerCreate>(
            json!({"name": "rec", "module": "recorder"}),
        ))
        .await
        .unwrap();
    engines[0]
        .create_product(input::<ProductCreate>(
            json!({"name": "plan", "module": "recorder"}),
        ))
        .await
        .unwrap();
    let workers: Vec<_> = engines
        .iter()
        .enumerate()
        .map(|(n, e)| provisio_engine::worker::spawn(e.clone(), format!("share-{n}")))
        .collect();
    let mut inserters = tokio::task::JoinSet::new();
    for t in 0..8 {
        let engine = engines[0].clone();
        let client_id = client.id.0;
        inserters.spawn(async move {
            for i in (t..JOBS_N).step_by(8) {
                engine
                    .create_service(input::<ServiceCreate>(json!({
                        "client_id": client_id,
                        "product": "plan",
                        "username": format!("s{i:05}"),
                    })))
                    .await
                    .unwrap_or_else(|e| panic!("ordering s{i:05}: {e}"));
            }
        });
    }
    while let Some(r) = inserters.join_next().await {
        r.unwrap();
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let open: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'running')")
                .fetch_one(&pool)
                .await
                .unwrap();
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} jobs still open after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for w in workers {
        w.shutdown().await;
    }
    let states = grouped(&pool, "SELECT state, COUNT(*) FROM jobs GROUP BY state").await;
    assert_eq!(
        states,
        HashMap::from([("done".to_string(), JOBS_N as i64)]),
        "job states"
    );
    pool.close().await;
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let keys: std::collections::HashSet<&str> = ledger.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        (ledger.len(), keys.len()),
        (JOBS_N, JOBS_N),
        "one call per job"
    );
    let per_engine = [0, 1].map(|n| ledger.iter().filter(|e| e.engine == n).count());
    for (n, count) in per_engine.iter().enumerate() {
        assert!(
            *count > JOBS_N / 4,
            "engine {n} ran only {count} of {JOBS_N} jobs: {per_engine:?}"
        );
    }
    eprintln!(
        "multi_engine share: per engine {per_engine:?} in {:?}",
        started.elapsed()
    );
}
