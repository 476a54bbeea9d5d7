//! `provisio-bench memory`: the resident memory of an idle `provisio serve` (the real
//! binary, a child process) over a SQLite database holding many services and as many
//! finished jobs, printed beside the limit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use provisio_core::job::NewJob;
use provisio_core::module::Action;
use provisio_core::service::{NewService, ServiceStatus};
use provisio_core::settings::Settings;
use provisio_core::text::Username;
use serde_json::json;

use crate::setup::{self, seed};

/// The limit for `serve` at rest with a million services and finished jobs.
const LIMIT_MIB: f64 = 200.0;

pub async fn run(services: usize, provisio: PathBuf, settle_secs: u64) -> anyhow::Result<()> {
    if !provisio.exists() {
        bail!(
            "no provisio binary at {} (build it with `cargo build -p provisio-cli`, or give --provisio-bin)",
            provisio.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let db_path = dir.path().join("bench.db");
    let url = format!("sqlite://{}", db_path.display());
    let cfg = setup::config(dir.path(), &url, "")?;
    let fill_secs = fill(&cfg, services).await?;
    let db_mib = file_mib(&db_path) + file_mib(&dir.path().join("bench.db-wal"));
    println!(
        "memory  {} build: {services} services, each with a finished create job and its attempt, written in {fill_secs:.1}s (database {db_mib:.0} MiB)",
        if cfg!(debug_assertions) { "DEBUG" } else { "release" },
    );

    let port = free_port()?;
    let mut child = Serve(
        Command::new(&provisio)
            .args(["serve", "--config", "bench.toml", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .current_dir(dir.path())
            .env_remove("PROVISIO_DATABASE_URL")
            .env("PROVISIO_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", provisio.display()))?,
    );
    let pid = child.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let t0 = Instant::now();
    wait_healthy(&http, &base, &mut child.0).await?;
    let up_secs = t0.elapsed().as_secs_f64();
    let started = status_mib(pid, "VmRSS")?;

    // A few reads a billing system's sync would make, so the figure is of a server that
    // has answered, not one that only started.
    let key = std::fs::read_to_string(&cfg.admin_key_file)?
        .trim()
        .to_string();
    for path in [
        "/v1/services?limit=100",
        "/v1/jobs?limit=100",
        "/v1/events?limit=100",
        "/v1/services/1",
        "/metrics",
    ] {
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth(&key)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("GET {path} answered {}", r.status());
        }
        r.bytes().await?;
    }

    // Idle: the resident size has moved by less than 1 MiB over the last `settle_secs`.
    let mut samples: Vec<f64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(settle_secs * 6 + 30);
    let rss = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(status) = child.0.try_wait()? {
            bail!("provisio serve exited with {status} while idle");
        }
        samples.push(status_mib(pid, "VmRSS")?);
        let window = &samples[samples.len().saturating_sub(settle_secs as usize + 1)..];
        let (lo, hi) = window
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        if window.len() > settle_secs as usize && hi - lo < 1.0 {
            break *window.last().expect("not empty");
        }
        if Instant::now() > deadline {
            println!("memory  the resident size did not settle; the last sample is given");
            break *samples.last().expect("sampled");
        }
    };
    let peak = status_mib(pid, "VmHWM")?;
    println!(
        "memory  provisio serve up in {up_secs:.1}s (VmRSS {started:.1} MiB then); idle after {:.0}s: VmRSS {rss:.1} MiB beside the limit of {LIMIT_MIB:.0} MiB ({}), peak VmHWM {peak:.1} MiB",
        t0.elapsed().as_secs_f64(),
        if rss <= LIMIT_MIB { "within" } else { "OVER" },
    );
    Ok(())
}

/// Kills the child when the bench ends, however it ends.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Services through the store, 1,000 a transaction each with its create job, as orders
/// store them; then every job is marked finished with one attempt, in two set-based
/// statements (running a million no-op jobs through the worker would only take longer to
/// reach the same rows).
async fn fill(cfg: &provisio_server::Config, n: usize) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let engine = setup::engine(cfg).await?;
    let (client, servers, product) = seed(&engine, "noop", 4, 10, json!({})).await?;
    let sealed = engine.seal_secret(&secrecy::SecretString::from("bench-password-1"));
    let store = engine.store();
    let mut done = 0;
    while done < n {
        let k = (n - done).min(1000);
        let rows: Vec<_> = (done..done + k)
            .map(|i| {
                let server = servers[i % servers.len()];
                (
                    NewService {
                        order_key: None,
                        external_id: None,
                        client_id: client,
                        product_id: product,
                        server_id: server,
                        username: Username::parse(&format!("m{i}")).expect("valid"),
                        password: sealed.clone(),
                        status: ServiceStatus::Active,
                        invoice: None,
                        parent_invoice: None,
                        settings: Settings::new(),
                    },
                    Some(NewJob {
                        server_id: server,
                        action: Action::Create,
                        params: Settings::new(),
                        idempotency_key: format!("mem-{i}"),
                        max_attempts: 3,
                        run_after: chrono::Utc::now(),
                        trace_id: provisio_core::trace::TraceId::random(),
                    }),
                )
            })
            .collect();
        store.insert_services_with_jobs(&rows).await?;
        done += k;
    }
    store.close().await;
    let pool = sqlx::SqlitePool::connect(&cfg.database_url).await?;
    let now = chrono::Utc::now().timestamp_micros();
    sqlx::query(
        "UPDATE jobs SET state = 'done', attempts = 1, updated_at = $1, finished_at = $1 \
         WHERE state = 'pending'",
    )
    .bind(now)
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO job_attempts (job_id, attempt, started_at, duration_ms, outcome) \
         SELECT id, 1, created_at, 3, 'ok' FROM jobs",
    )
    .execute(&pool)
    .await?;
    // Leave the database as a stopped `serve` would: the WAL folded into the file.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(t0.elapsed().as_secs_f64())
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

async fn wait_healthy(http: &reqwest::Client, base: &str, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!("provisio serve exited with {status} while starting");
        }
        if Instant::now() > deadline {
            bail!("provisio serve did not answer /healthz within 300s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `/proc/PID/status` figure (`VmRSS`, `VmHWM`) in MiB.
fn status_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (Linux only)"))?;
    let line = s
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .context("a number of kB")?
        .parse()?;
    Ok(kb / 1024.0)
}

fn file_mib(p: &Path) -> f64 {
    std::fs::metadata(p).map_or(0.0, |m| m.len() as f64 / 1_048_576.0)
}
