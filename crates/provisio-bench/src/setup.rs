//! What every bench shares: a throwaway configuration and engine, a seeded client with
//! servers and a product, bulk enqueueing, waiting for the queue to drain, and the CPU and
//! memory figures the benches print beside their times.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use provisio_core::module::Action;
use provisio_core::page::PageRequest;
use provisio_core::service::{NewService, ServiceStatus};
use provisio_core::settings::Settings;
use provisio_core::text::Username;
use provisio_core::{ClientId, ProductId, ServerId};
use provisio_engine::input::{ClientCreate, ProductCreate, ServerCreate};
use provisio_engine::Engine;
use provisio_server::Config;
use provisio_store::JobFilter;

/// Writes `bench.toml` into `dir` (fresh key, fast retries and polling, `extra` appended)
/// and loads it, so a second engine process can read the same file. The benches' remotes
/// live on loopback, which the outbound guard refuses unless it is allowed, as here.
pub fn config(dir: &Path, db: &str, extra: &str) -> anyhow::Result<Config> {
    let key =
        provisio_core::secret::Cipher::format_key(&provisio_core::secret::Cipher::generate_key());
    config_with_key(dir, db, &key, extra)
}

/// [`config`] with a given key, so a later engine on the same database (with other
/// settings) opens what the first sealed.
pub fn config_with_key(
    dir: &Path,
    db: &str,
    key: &secrecy::SecretString,
    extra: &str,
) -> anyhow::Result<Config> {
    // `PROVISIO_BENCH_STANDBY` sets `jobs.standby` (default 8) to compare runs with and
    // without jobs held ahead.
    let standby = std::env::var("PROVISIO_BENCH_STANDBY")
        .map(|v| format!("standby = {}\n", v.parse::<u32>().unwrap_or(8)))
        .unwrap_or_default();
    let text = format!(
        "database_url = {db:?}\nsecret_key = {key:?}\nsecret_key_file = {skf:?}\nadmin_key_file = {akf:?}\n\
         [outbound]\nallow = [\"127.0.0.1/32\"]\n\
         [jobs]\nretry_schedule = [\"1s\", \"1s\", \"1s\"]\nmax_in_flight = 512\npoll_interval_ms = 10\nlease_seconds = 60\n{standby}{extra}\n",
        key = secrecy::ExposeSecret::expose_secret(key),
        skf = dir.join("secret.key").display().to_string(),
        akf = dir.join("admin.key").display().to_string(),
    );
    let path = dir.join("bench.toml");
    std::fs::write(&path, text)?;
    Ok(Config::load(Some(&path), &Default::default())?)
}

/// An engine started the way `provisio serve` starts one (migrations, secret key), with the
/// built-in modules, but without the API.
pub async fn engine(cfg: &Config) -> anyhow::Result<Arc<Engine>> {
    Ok(Arc::new(
        provisio_server::prepare(
            cfg,
            provisio_modules::Registry::builtin_with(&cfg.module_options()?),
        )
        .await?,
    ))
}

/// A fresh SQLite engine in `dir` (`bench.db`), with `extra` configuration.
pub async fn sqlite_engine(dir: &Path, extra: &str) -> anyhow::Result<Arc<Engine>> {
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    engine(&config(dir, &url, extra)?).await
}

/// A client, and `servers` servers of `module` with one product, ready for services.
pub async fn seed(
    engine: &Engine,
    module: &str,
    servers: usize,
    concurrency: u32,
    settings: serde_json::Value,
) -> anyhow::Result<(ClientId, Vec<ServerId>, ProductId)> {
    let client = engine
        .create_client(ClientCreate {
            name: "Bench".into(),
            email: "bench@example.com".into(),
            currency: None,
            balance_minor: None,
            status: None,
            custom_fields: Default::default(),
            reseller_id: None,
            external_id: None,
            order_key: None,
        })
        .await?;
    let mut ids = Vec::new();
    for i in 0..servers {
        let s = engine
            .create_server(ServerCreate {
                name: format!("bench-{i}"),
                module: module.into(),
                group: None,
                settings: settings.as_object().cloned().unwrap_or_default(),
                max_concurrent: Some(concurrency),
                max_per_second: None,
                enabled: None,
            })
            .await?;
        ids.push(s.id);
    }
    let p = engine
        .create_product(ProductCreate {
            name: "bench".into(),
            module: module.into(),
            extends: None,
            server_group: None,
            settings: Settings::new(),
            auto_setup: Some(provisio_core::product::AutoSetup::Manual),
            client_fields: None,
        })
        .await?;
    Ok((client.id, ids, p.product.id))
}

/// Stores `n` services, each with its create job, from 8 tasks; returns the seconds taken.
pub async fn enqueue(
    engine: &Arc<Engine>,
    n: usize,
    client: ClientId,
    servers: &[ServerId],
    product: ProductId,
) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let sealed = engine.seal_secret(&secrecy::SecretString::from("bench-password-1"));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let (engine, servers, sealed) = (engine.clone(), servers.to_vec(), sealed.clone());
        tasks.spawn(async move {
            for i in (t..n).step_by(8) {
                let server = servers[i % servers.len()];
                let new = NewService {
                    order_key: None,
                    external_id: None,
                    client_id: client,
                    product_id: product,
                    server_id: server,
                    username: Username::parse(&format!("b{i}")).expect("valid"),
                    password: sealed.clone(),
                    status: ServiceStatus::Pending,
                    invoice: None,
                    parent_invoice: None,
                    settings: Settings::new(),
                };
                let job = provisio_core::job::NewJob {
                    server_id: server,
                    action: Action::Create,
                    params: Settings::new(),
                    idempotency_key: format!("bench-{i}"),
                    max_attempts: 3,
                    run_after: chrono::Utc::now(),
                    trace_id: provisio_core::trace::TraceId::random(),
                };
                engine
                    .store()
                    .insert_service_with_job(&new, Some(&job))
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Waits until no job is open; returns the seconds taken.
pub async fn drain(engine: &Engine, limit: Duration) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    // One state at a time: each is a short walk of `ix_jobs_state` from the state's first
    // entry, where "pending or running" in id order walks past every finished job, which on
    // PostgreSQL took milliseconds per look at 20,000 jobs, every 5 ms, beside the run it
    // measures. Pending is looked at again after running: a job that was neither pending
    // nor running when those were read, and is open now, was made pending by a job that
    // ended (a retry or a follow-up, in the transaction of that end) after the first look.
    let in_state = |state| JobFilter {
        state: Some(state),
        ..Default::default()
    };
    let (pending, running) = (
        in_state(provisio_core::job::JobState::Pending),
        in_state(provisio_core::job::JobState::Running),
    );
    loop {
        let mut open = false;
        for f in [&pending, &running, &pending] {
            if !engine
                .store()
                .list_jobs(f, PageRequest::first(1))
                .await?
                .items
                .is_empty()
            {
                open = true;
                break;
            }
        }
        if !open {
            break;
        }
        if t0.elapsed() > limit {
            bail!("jobs still open after {}s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let failed = engine
        .store()
        .list_jobs(
            &JobFilter {
                state: Some(provisio_core::job::JobState::Failed),
                ..Default::default()
            },
            PageRequest::first(1),
        )
        .await?;
    if !failed.items.is_empty() {
        bail!("some jobs failed, e.g. {:?}", failed.items[0].last_error);
    }
    Ok(elapsed)
}

/// CPU seconds this process has used (user and system), where the system tells; the
/// benches print it so a slow run can be told apart from a busy machine.
pub fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// How much CPU a phase used, as text for a bench line.
pub fn cpu_note(before: Option<f64>, secs: f64) -> String {
    match (before, cpu_secs()) {
        (Some(a), Some(b)) => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            format!(
                "process CPU {:.2}s ({:.0}% of {cores} cores)",
                b - a,
                (b - a) / secs / cores as f64 * 100.0
            )
        }
        _ => "process CPU not known here".into(),
    }
}

/// Peak resident memory of this process so far, in MiB (Linux).
pub fn peak_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
