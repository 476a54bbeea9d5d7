//! `provisio-bench retention`: many aged finished jobs (with attempts), deliveries (with
//! attempts) and rule runs, trimmed by the worker's maintenance turn while actions run
//! through the queue with the `noop` module; beside the action rate on the same database
//! with retention off, measured in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt as _;
use provisio_core::event::{EventPattern, EventType};
use provisio_core::handler::{HandlerKind, HandlerStatus, NewHandler, OnError, Phase};
use provisio_core::module::Action;
use provisio_core::page::PageRequest;
use provisio_core::rule::{NewRule, RuleAction};
use provisio_core::text::Handle;
use provisio_core::ServiceId;
use provisio_engine::Engine;
use serde_json::json;

use crate::setup::{self, drain, enqueue, seed};

/// Every kind off: the baseline engine keeps everything.
const KEEP_ALL: &str = "[retention]\njobs = \"0\"\ndeliveries = \"0\"\nrule_runs = \"0\"\naudits = \"0\"\nusage_syncs = \"0\"\n";
/// What the trimming engine keeps: a day, against rows two days old.
const KEEP_A_DAY: &str =
    "[retention]\njobs = \"1 day\"\ndeliveries = \"1 day\"\nrule_runs = \"1 day\"\n";
/// The maintenance turn's batch (`RetentionOptions::default().batch`).
const BATCH: u32 = 500;

/// The bench's own connection to the database, for writing aged rows the way no action
/// writes them and counting what is left.
enum Db {
    Sqlite(sqlx::SqlitePool),
    Pg(sqlx::PgPool),
}

macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Pg($pool) => $body,
        }
    };
}

impl Db {
    async fn exec(&self, sql: &str, binds: &[i64]) -> anyhow::Result<u64> {
        on_db!(self, pool => {
            let mut q = sqlx::query(sql);
            for b in binds {
                q = q.bind(*b);
            }
            Ok(q.execute(pool).await.with_context(|| sql.to_string())?.rows_affected())
        })
    }

    async fn count(&self, table: &str, cond: &str) -> anyhow::Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {cond}");
        on_db!(self, pool => Ok(sqlx::query_scalar::<_, i64>(&sql).fetch_one(pool).await?))
    }

    async fn close(&self) {
        on_db!(self, pool => pool.close().await)
    }
}

const TABLES: [&str; 5] = [
    "jobs",
    "job_attempts",
    "deliveries",
    "delivery_attempts",
    "rule_runs",
];

async fn table_counts(db: &Db) -> anyhow::Result<Vec<(&'static str, i64)>> {
    let mut out = Vec::new();
    for t in TABLES {
        out.push((t, db.count(t, "1 = 1").await?));
    }
    Ok(out)
}

fn show(counts: &[(&str, i64)]) -> String {
    counts
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the trim is over. Rule runs go last in a pass, so while any is left the answer
/// is a one-row read; only then are the (scanning) counts taken, to keep the watch from
/// loading the database it measures.
async fn trim_done(db: &Db, services: usize) -> anyhow::Result<bool> {
    let sql = "SELECT COUNT(*) FROM (SELECT 1 FROM rule_runs LIMIT 1) AS one";
    let any_run: i64 = on_db!(db, pool => sqlx::query_scalar(sql).fetch_one(pool).await?);
    Ok(any_run == 0 && aged_left(db, services).await? == 0)
}

/// The aged rows still there: renews past the one each service keeps, every aged delivery
/// and rule run.
async fn aged_left(db: &Db, services: usize) -> anyhow::Result<i64> {
    let jobs = db
        .count("jobs", "idempotency_key LIKE 'aged-%'")
        .await?
        .saturating_sub(services as i64);
    let deliveries = db.count("deliveries", "subject LIKE 'aged:%'").await?;
    let runs = db.count("rule_runs", "subject LIKE 'aged:%'").await?;
    Ok(jobs + deliveries + runs)
}

pub async fn run(
    rows: usize,
    services: usize,
    baseline_secs: u64,
    pg: Option<String>,
) -> anyhow::Result<()> {
    bench("sqlite", None, rows, services, baseline_secs).await?;
    match pg {
        Some(admin) => {
            let url = crate::queue::fresh_pg(&admin).await?;
            bench("postgres", Some(url), rows, services, baseline_secs).await?;
        }
        None => println!("retention  postgres: skipped (give --pg URL)"),
    }
    Ok(())
}

async fn bench(
    label: &str,
    pg_url: Option<String>,
    rows: usize,
    services: usize,
    baseline_secs: u64,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = match &pg_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", dir.path().join("bench.db").display()),
    };
    let key =
        provisio_core::secret::Cipher::format_key(&provisio_core::secret::Cipher::generate_key());

    // Services, active, on an engine that keeps everything.
    let engine = setup::engine(&setup::config_with_key(dir.path(), &url, &key, KEEP_ALL)?).await?;
    let (client, servers, product) = seed(&engine, "noop", 1, 10_000, json!({})).await?;
    enqueue(&engine, services, client, &servers, product).await?;
    let worker = provisio_engine::worker::spawn(engine.clone(), provisio_server::worker_name());
    drain(&engine, Duration::from_secs(600)).await?;
    let ids = service_ids(&engine).await?;

    let db = match &pg_url {
        Some(u) => Db::Pg(sqlx::PgPool::connect(u).await?),
        None => Db::Sqlite(sqlx::SqlitePool::connect(&url).await?),
    };
    let written = write_aged(&engine, &db, rows).await?;
    // History that grew over months has planner statistics (autovacuum keeps them on
    // PostgreSQL); rows written in one go have none until autovacuum comes round.
    if let Db::Pg(pool) = &db {
        sqlx::query("ANALYZE").execute(pool).await?;
    }
    println!(
        "retention  {label}: wrote {rows} aged finished jobs (+attempts), {rows} deliveries (+attempts) and {rows} rule runs, two days old, in {written:.1}s{}; {} active services",
        if pg_url.is_some() { " (then ANALYZE)" } else { "" },
        ids.len()
    );

    // The action rate with that history in place and nothing trimming it, after a round
    // that warms the caches up.
    let mut suspend = true;
    round(&engine, &ids, suspend).await?;
    suspend = !suspend;
    let t0 = Instant::now();
    let mut base = Rate::default();
    while t0.elapsed() < Duration::from_secs(baseline_secs) {
        base.add(round(&engine, &ids, suspend).await?);
        suspend = !suspend;
    }
    worker.shutdown().await;
    engine.store().close().await;
    let before = table_counts(&db).await?;
    let aged_before = aged_left(&db, services).await?;

    // The same database, with an engine that keeps a day: its first maintenance turn trims.
    let engine =
        setup::engine(&setup::config_with_key(dir.path(), &url, &key, KEEP_A_DAY)?).await?;
    // Only this run's statements count.
    provisio_engine::worker::take_longest_trim_statement();
    let started = Instant::now();
    let worker = provisio_engine::worker::spawn(engine.clone(), provisio_server::worker_name());
    let trimmed_at = Arc::new(std::sync::Mutex::new(None::<Duration>));
    let watch = {
        let trimmed_at = trimmed_at.clone();
        let db = &db;
        async move {
            loop {
                if trim_done(db, services).await? {
                    *trimmed_at.lock().expect("not poisoned") = Some(started.elapsed());
                    return anyhow::Ok(());
                }
                if started.elapsed() > Duration::from_secs(1800) {
                    bail!("aged rows still there after 30 minutes");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let drive = async {
        let mut during = Rate::default();
        // At least one round, and rounds for as long as the trim lasts.
        loop {
            during.add(round(&engine, &ids, suspend).await?);
            suspend = !suspend;
            if trimmed_at.lock().expect("not poisoned").is_some() {
                return anyhow::Ok(during);
            }
        }
    };
    let (watched, during) = tokio::join!(watch, drive);
    watched?;
    let during = during?;
    // Once more with nothing left to trim, so a machine whose load changed during the run
    // shows as a difference between the two rates with no trimming.
    let t0 = Instant::now();
    let mut after_rate = Rate::default();
    while t0.elapsed() < Duration::from_secs(baseline_secs) {
        after_rate.add(round(&engine, &ids, suspend).await?);
        suspend = !suspend;
    }
    worker.shutdown().await;
    let took = trimmed_at
        .lock()
        .expect("not poisoned")
        .expect("the watch ended with the trim done");
    let after = table_counts(&db).await?;
    let longest = provisio_engine::worker::take_longest_trim_statement();
    println!("retention  {label}: rows before: {}", show(&before));
    println!("retention  {label}: rows after:  {}", show(&after));
    println!(
        "retention  {label}: {aged_before} aged rows (not counting attempts) trimmed in {:.2}s by the maintenance turn, batches of {BATCH}; longest single trim statement (writer hold) {:.1} ms",
        took.as_secs_f64(),
        longest.as_secs_f64() * 1000.0
    );
    println!(
        "retention  {label}: actions/s while trimming {:.0} ({} actions in {:.2}s) vs {:.0} with no trimming ({} actions in {:.2}s), same database, ratio {:.2}; {:.0} after the trim ({} actions in {:.2}s)",
        during.per_sec(),
        during.actions,
        during.secs,
        base.per_sec(),
        base.actions,
        base.secs,
        during.per_sec() / base.per_sec(),
        after_rate.per_sec(),
        after_rate.actions,
        after_rate.secs,
    );
    engine.store().close().await;
    db.close().await;
    Ok(())
}

#[derive(Default)]
struct Rate {
    actions: usize,
    secs: f64,
}

impl Rate {
    fn add(&mut self, (actions, secs): (usize, f64)) {
        self.actions += actions;
        self.secs += secs;
    }

    fn per_sec(&self) -> f64 {
        self.actions as f64 / self.secs.max(f64::EPSILON)
    }
}

async fn service_ids(engine: &Engine) -> anyhow::Result<Vec<ServiceId>> {
    let mut out = Vec::new();
    let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
    loop {
        let got = engine
            .store()
            .list_services(&Default::default(), page)
            .await?;
        out.extend(got.items.iter().map(|s| s.id));
        match got.next {
            Some(c) => page.after = Some(c),
            None => return Ok(out),
        }
    }
}

/// One action on every service through the normal action path (suspend or unsuspend),
/// many requests at once, until every job has finished. Returns the actions and seconds.
async fn round(
    engine: &Arc<Engine>,
    ids: &[ServiceId],
    suspend: bool,
) -> anyhow::Result<(usize, f64)> {
    let t0 = Instant::now();
    let action = if suspend {
        Action::Suspend
    } else {
        Action::Unsuspend
    };
    let jobs: Vec<_> = futures::stream::iter(ids.iter().copied())
        .map(|id| {
            let action = action.clone();
            async move {
                engine
                    .request_action(id, action, Default::default())
                    .await
                    .map(|j| j.id)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let jobs = jobs.into_iter().collect::<Result<Vec<_>, _>>()?;
    let done = engine
        .wait_for_jobs(&jobs, Duration::from_secs(300))
        .await?;
    let finished = done
        .values()
        .filter(|j| j.state == provisio_core::job::JobState::Done)
        .count();
    if finished != jobs.len() {
        bail!(
            "{} of {} actions did not finish",
            jobs.len() - finished,
            jobs.len()
        );
    }
    Ok((jobs.len(), t0.elapsed().as_secs_f64()))
}

/// Writes `rows` finished renews (spread over the services, each with an attempt), `rows`
/// delivered deliveries (each with an attempt) and `rows` finished rule runs, all two days
/// old, in a few set-based statements. Returns the seconds taken.
async fn write_aged(engine: &Engine, db: &Db, rows: usize) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let store = engine.store();
    let handler = store
        .insert_handler(&NewHandler {
            name: Handle::parse("bench-aged")?,
            kind: HandlerKind::Http,
            target: "https://hooks.example.test/in".into(),
            // Disabled: nothing new is delivered to it while the bench runs.
            status: HandlerStatus::Disabled,
            phase: Phase::Notify,
            events: vec![EventPattern::parse("service.renew.succeeded")?],
            timeout: Duration::from_secs(5),
            order: 0,
            on_error: OnError::Forbid,
            secret: None,
            email: None,
            disable_after: Duration::from_secs(86_400),
        })
        .await?;
    let rule = store
        .insert_rule(&NewRule {
            name: Handle::parse("bench-aged")?,
            on: EventType::parse("client.balance.below")?,
            action: RuleAction::SuspendServices {
                reason: "non-payment".into(),
            },
            delay: Duration::ZERO,
            enabled: false,
        })
        .await?;
    let old = (chrono::Utc::now() - chrono::Duration::days(2)).timestamp_micros();
    let n = rows as i64;
    let series = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)";
    db.exec(
        &format!(
            "{series}, sv(id, server_id, k) AS \
             (SELECT id, server_id, ROW_NUMBER() OVER (ORDER BY id) - 1 FROM services) \
             INSERT INTO jobs (service_id, server_id, action, state, params, idempotency_key, \
             attempts, max_attempts, run_after, created_at, updated_at, finished_at) \
             SELECT sv.id, sv.server_id, 'renew', 'done', '{{}}', 'aged-' || n.i, 1, 3, $2, $2, $2, $2 \
             FROM n JOIN sv ON sv.k = n.i % (SELECT COUNT(*) FROM services)"
        ),
        &[n, old],
    )
    .await?;
    db.exec(
        "INSERT INTO job_attempts (job_id, attempt, started_at, duration_ms, outcome) \
         SELECT id, 1, created_at, 3, 'ok' FROM jobs WHERE idempotency_key LIKE 'aged-%'",
        &[],
    )
    .await?;
    db.exec(
        &format!(
            "{series} INSERT INTO deliveries (handler_id, event_id, event_type, subject, state, \
             attempts, next_at, created_at, updated_at) \
             SELECT $2, n.i, 'service.renew.succeeded', 'aged:' || n.i, 'succeeded', 1, $3, $3, $3 FROM n"
        ),
        &[n, handler.id.0, old],
    )
    .await?;
    db.exec(
        "INSERT INTO delivery_attempts (delivery_id, attempt, at, duration_ms, succeeded, status_code) \
         SELECT id, 1, created_at, 12, TRUE, 200 FROM deliveries WHERE subject LIKE 'aged:%'",
        &[],
    )
    .await?;
    db.exec(
        &format!(
            "{series} INSERT INTO rule_runs (rule_id, event_id, subject, due_at, state, result, \
             created_at, updated_at) \
             SELECT $2, n.i, 'aged:' || n.i, $3, 'done', 'queued suspend', $3, $3 FROM n"
        ),
        &[n, rule.id.0, old],
    )
    .await?;
    Ok(t0.elapsed().as_secs_f64())
}
