//! `provisio bench`: measures the engine, and prints figures rather than judging them.
//!
//! `queue`: N create actions through the durable queue with the in-process `noop` module,
//! on SQLite and (with `--postgres-url`) on PostgreSQL with one and two engine processes.
//! `latency`: N creates against a local HTTP remote that answers after L ms, over S servers
//! limited to C concurrent actions each, beside the limit N·L/(S·C) that latency and
//! concurrency alone impose.
//! `group`: a group operation (suspend) over N services of one invoice on S servers of such
//! a remote, beside the same bound.
//! `usage` and `audit`: see `bench_usage.rs`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
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
use serde_json::json;

#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchCmd {
    /// Actions through the queue with the no-op module.
    Queue {
        #[arg(long, default_value_t = 100_000)]
        actions: usize,
        /// Also run on this PostgreSQL (a database the bench may fill), with one and two engines.
        #[arg(long, env = "PROVISIO_BENCH_PG_URL")]
        postgres_url: Option<String>,
        /// Skip SQLite.
        #[arg(long)]
        no_sqlite: bool,
    },
    /// Actions against a slow local HTTP remote through the `http` module.
    Latency {
        #[arg(long, default_value_t = 4000)]
        actions: usize,
        /// The remote's delay per request, in milliseconds.
        #[arg(long, default_value_t = 50)]
        latency_ms: u64,
        #[arg(long, default_value_t = 4)]
        servers: usize,
        /// max_concurrent of each server.
        #[arg(long, default_value_t = 10)]
        concurrency: u32,
    },
    /// A group suspend over many services of one invoice against a slow local remote.
    Group {
        #[arg(long, default_value_t = 10_000)]
        services: usize,
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
        #[arg(long, default_value_t = 4)]
        servers: usize,
        #[arg(long, default_value_t = 10)]
        concurrency: u32,
    },
    /// A usage sync of many services across many servers against a local HTTP remote that
    /// serves usage pages after a delay.
    Usage {
        #[arg(long, default_value_t = 1_000_000)]
        services: usize,
        #[arg(long, default_value_t = 100)]
        servers: usize,
        /// Accounts per page.
        #[arg(long, default_value_t = 1000)]
        page_size: u32,
        /// The remote's delay per page, in milliseconds.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
    /// An audit of many remote accounts against as many local services, 1% drift of each kind.
    Audit {
        #[arg(long, default_value_t = 1_000_000)]
        accounts: usize,
        #[arg(long, default_value_t = 100)]
        servers: usize,
        #[arg(long, default_value_t = 1000)]
        page_size: u32,
    },
}

pub(crate) fn config(dir: &Path, db: &str, extra: &str) -> anyhow::Result<Config> {
    let key =
        provisio_core::secret::Cipher::format_key(&provisio_core::secret::Cipher::generate_key());
    let text = format!(
        "database_url = {db:?}\nsecret_key = {key:?}\nsecret_key_file = {skf:?}\nadmin_key_file = {akf:?}\n\
         [jobs]\nretry_schedule = [\"1s\", \"1s\", \"1s\"]\nmax_in_flight = 512\npoll_interval_ms = 10\nlease_seconds = 60\n{extra}\n",
        key = secrecy::ExposeSecret::expose_secret(&key),
        skf = dir.join("secret.key").display().to_string(),
        akf = dir.join("admin.key").display().to_string(),
    );
    let path = dir.join("bench.toml");
    std::fs::write(&path, text)?;
    Ok(Config::load(Some(&path), &Default::default())?)
}

/// A client, and `servers` servers of `module` with one product, ready for services.
pub(crate) async fn seed(
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
async fn enqueue(
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
async fn drain(engine: &Engine, limit: Duration) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let open = JobFilter {
        open_only: true,
        ..Default::default()
    };
    while !engine
        .store()
        .list_jobs(&open, PageRequest::first(1))
        .await?
        .items
        .is_empty()
    {
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

fn second_engine(dir: &Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    Command::new(exe)
        .args(["serve", "--config", "bench.toml", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env("PROVISIO_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting a second engine process")
}

async fn queue_run(label: &str, db: &str, n: usize, engines: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = if db == "sqlite" {
        format!("sqlite://{}", dir.path().join("bench.db").display())
    } else {
        db.to_string()
    };
    let cfg = config(dir.path(), &url, "")?;
    let engine =
        Arc::new(provisio_server::prepare(&cfg, provisio_modules::Registry::builtin()).await?);
    let (client, servers, product) = seed(&engine, "noop", 1, 10_000, json!({})).await?;
    let enq = enqueue(&engine, n, client, &servers, product).await?;
    let mut child = if engines == 2 {
        Some(second_engine(dir.path())?)
    } else {
        None
    };
    let worker = provisio_engine::worker::spawn(engine.clone(), provisio_server::worker_name());
    let secs = drain(&engine, Duration::from_secs(1800)).await;
    worker.shutdown().await;
    if let Some(c) = child.as_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let secs = secs?;
    println!(
        "queue  {label:<28} {n:>7} actions: enqueue {:>6.1}s ({:>6.0}/s), run {:>6.1}s = {:>6.0} actions/s, end to end {:>6.0}/s",
        enq,
        n as f64 / enq,
        secs,
        n as f64 / secs,
        n as f64 / (enq + secs)
    );
    engine.store().close().await;
    Ok(())
}

/// CPU seconds this process has used (user and system), where the system tells; the
/// benches print it so a slow run can be told apart from a busy machine.
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// How much CPU a phase used, as text for a bench line.
fn cpu_note(before: Option<f64>, secs: f64) -> String {
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

/// A remote that answers every request after `delay`, and keeps the time it really held
/// each one: a timer sleeps a little past its deadline, and that belongs to the remote.
struct SlowRemote {
    base: String,
    held_us: Arc<std::sync::atomic::AtomicU64>,
    requests: Arc<std::sync::atomic::AtomicU64>,
}

impl SlowRemote {
    async fn start(delay: Duration) -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering::Relaxed;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let held_us = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (h, r) = (held_us.clone(), requests.clone());
        let app = axum::Router::new().fallback(move || {
            let (h, r) = (h.clone(), r.clone());
            async move {
                let t = Instant::now();
                tokio::time::sleep(delay).await;
                h.fetch_add(t.elapsed().as_micros() as u64, Relaxed);
                r.fetch_add(1, Relaxed);
                axum::Json(json!({"id": "x"}))
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base: format!("http://{addr}"),
            held_us,
            requests,
        })
    }

    /// The mean time the remote held a request, in milliseconds.
    fn mean_ms(&self) -> f64 {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.requests.load(Relaxed).max(1);
        self.held_us.load(Relaxed) as f64 / n as f64 / 1000.0
    }
}

/// A fresh SQLite engine with `servers` `http` servers of `concurrency` slots each, all
/// pointing at one [`SlowRemote`] whose `action` answers after `latency_ms`.
struct SlowBench {
    _dir: tempfile::TempDir,
    engine: Arc<Engine>,
    remote: SlowRemote,
    client: ClientId,
    servers: Vec<ServerId>,
    product: ProductId,
    latency_ms: u64,
    slots: f64,
}

impl SlowBench {
    async fn start(
        latency_ms: u64,
        servers: usize,
        concurrency: u32,
        action: &str,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let cfg = config(dir.path(), &url, "")?;
        let engine =
            Arc::new(provisio_server::prepare(&cfg, provisio_modules::Registry::builtin()).await?);
        let remote = SlowRemote::start(Duration::from_millis(latency_ms)).await?;
        let settings = json!({
            "base_url": remote.base,
            "timeout_seconds": 30,
            "actions": {action: {"method": "POST", "url": format!("/{action}"), "body": {"userName": "{{ service.username }}"}}},
        });
        let (client, ids, product) = seed(&engine, "http", servers, concurrency, settings).await?;
        Ok(Self {
            _dir: dir,
            engine,
            remote,
            client,
            servers: ids,
            product,
            latency_ms,
            slots: servers as f64 * f64::from(concurrency),
        })
    }

    /// The second line of a result: the bound again with the latency the remote really
    /// kept, and the CPU used.
    fn held_line(&self, label: &str, n: usize, secs: f64, cpu: &str) -> String {
        let held = self.remote.mean_ms();
        let bound = n as f64 * held / 1000.0 / self.slots;
        format!(
            "{label} the remote held each request {held:.2} ms on average (timer overshoot); with that L the bound is {bound:.2}s, ratio {:.3}; {cpu}",
            secs / bound
        )
    }

    /// N·L/(S·C) with the nominal latency.
    fn bound(&self, n: usize) -> f64 {
        n as f64 * self.latency_ms as f64 / 1000.0 / self.slots
    }
}

async fn latency_run(
    n: usize,
    latency_ms: u64,
    servers: usize,
    concurrency: u32,
) -> anyhow::Result<()> {
    let b = SlowBench::start(latency_ms, servers, concurrency, "create").await?;
    let engine = &b.engine;
    enqueue(engine, n, b.client, &b.servers, b.product).await?;
    let worker = provisio_engine::worker::spawn(engine.clone(), provisio_server::worker_name());
    let cpu0 = cpu_secs();
    let secs = drain(engine, Duration::from_secs(1800)).await;
    let cpu = cpu_note(cpu0, *secs.as_ref().unwrap_or(&1.0));
    worker.shutdown().await;
    let secs = secs?;
    let limit = b.bound(n);
    println!(
        "latency {n} actions, {latency_ms} ms remote, {servers} servers x {concurrency} concurrent: {secs:.2}s, limit N*L/(S*C) = {limit:.2}s, ratio {:.3}",
        secs / limit
    );
    println!("{}", b.held_line("latency", n, secs, &cpu));
    engine.store().close().await;
    Ok(())
}

async fn group_run(
    n: usize,
    latency_ms: u64,
    servers: usize,
    concurrency: u32,
) -> anyhow::Result<()> {
    let b = SlowBench::start(latency_ms, servers, concurrency, "suspend").await?;
    let (engine, client, ids, product) = (&b.engine, b.client, &b.servers, b.product);
    let invoice = "bench-invoice";
    let sealed = engine.seal_secret(&secrecy::SecretString::from("bench-password-1"));
    let t0 = Instant::now();
    for i in 0..n {
        let new = NewService {
            client_id: client,
            product_id: product,
            server_id: ids[i % ids.len()],
            username: Username::parse(&format!("g{i}")).expect("valid"),
            password: sealed.clone(),
            status: ServiceStatus::Active,
            invoice: (i == 0)
                .then(|| provisio_core::service::InvoiceRef::parse(invoice).expect("valid")),
            parent_invoice: (i > 0)
                .then(|| provisio_core::service::InvoiceRef::parse(invoice).expect("valid")),
            settings: Settings::new(),
        };
        engine.store().insert_service_with_job(&new, None).await?;
    }
    let loaded = t0.elapsed().as_secs_f64();
    let worker = provisio_engine::worker::spawn(engine.clone(), provisio_server::worker_name());
    let t0 = Instant::now();
    let cpu0 = cpu_secs();
    let result = engine
        .group_operation(
            invoice,
            provisio_engine::groups::GroupOp::Suspend,
            provisio_engine::groups::GroupRequest {
                wait: Some(300),
                ..Default::default()
            },
        )
        .await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_note(cpu0, secs);
    let queued_by = engine
        .store()
        .list_jobs(&JobFilter::default(), PageRequest::first(1))
        .await
        .ok()
        .and_then(|p| p.items.first().map(|j| j.created_at));
    if let Some(first) = queued_by {
        let last = engine
            .store()
            .list_jobs(
                &JobFilter::default(),
                PageRequest {
                    after: Some((n - 1) as i64),
                    limit: 1,
                },
            )
            .await?;
        if let Some(j) = last.items.first() {
            println!(
                "group  queueing took {:.2}s; last job finished {:.2}s after the first was queued",
                (j.created_at - first).num_milliseconds() as f64 / 1000.0,
                (j.finished_at.unwrap_or(j.updated_at) - first).num_milliseconds() as f64 / 1000.0
            );
        }
    }
    worker.shutdown().await;
    let result = result?;
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for m in &result.members {
        *outcomes.entry(m.outcome.clone()).or_default() += 1;
    }
    let bound = b.bound(n);
    println!(
        "group suspend of {n} services ({loaded:.1}s to load), {latency_ms} ms remote, {servers} servers x {concurrency} concurrent: {secs:.2}s, bound N*L/(S*C) = {bound:.2}s, ratio {:.3}; member results {outcomes:?}",
        secs / bound
    );
    println!("{}", b.held_line("group ", n, secs, &cpu));
    engine.store().close().await;
    Ok(())
}

pub async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Queue {
            actions,
            postgres_url,
            no_sqlite,
        } => {
            if !no_sqlite {
                queue_run("sqlite, 1 engine", "sqlite", actions, 1).await?;
            }
            match postgres_url {
                Some(pg) => {
                    queue_run("postgres, 1 engine", &fresh_pg(&pg).await?, actions, 1).await?;
                    queue_run(
                        "postgres, 2 engine processes",
                        &fresh_pg(&pg).await?,
                        actions,
                        2,
                    )
                    .await?;
                }
                None => println!("queue  postgres: skipped (give --postgres-url)"),
            }
        }
        BenchCmd::Latency {
            actions,
            latency_ms,
            servers,
            concurrency,
        } => {
            latency_run(actions, latency_ms, servers, concurrency).await?;
        }
        BenchCmd::Group {
            services,
            latency_ms,
            servers,
            concurrency,
        } => {
            group_run(services, latency_ms, servers, concurrency).await?;
        }
        BenchCmd::Usage {
            services,
            servers,
            page_size,
            delay_ms,
        } => {
            crate::bench_usage::usage_run(services, servers.max(1), page_size.max(1), delay_ms)
                .await?;
        }
        BenchCmd::Audit {
            accounts,
            servers,
            page_size,
        } => {
            crate::bench_usage::audit_run(accounts, servers.max(1), page_size.max(1)).await?;
        }
    }
    Ok(())
}

/// A new database next to the one `admin_url` names, so runs never see each other's jobs.
async fn fresh_pg(admin_url: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let name = format!("provisio_bench_{}_{nanos}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(admin_url);
    Ok(format!("{base}/{name}"))
}
