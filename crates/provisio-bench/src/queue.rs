//! `provisio-bench queue`: N create actions through the durable queue with the in-process
//! `noop` module, on SQLite and (with `--postgres-url`) on PostgreSQL with one and two engine
//! processes; and the hidden `engine` subcommand that is that second process.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::setup::{self, drain, enqueue, seed};

pub async fn run(
    actions: usize,
    postgres_url: Option<String>,
    no_sqlite: bool,
    metrics: &str,
) -> anyhow::Result<()> {
    if metrics == "both" {
        return metrics_cost(actions).await;
    }
    if metrics == "on" {
        provisio_engine::metrics::install().context("another recorder is installed")?;
    }
    if !no_sqlite {
        queue_run("sqlite, 1 engine", "sqlite", actions, 1, UNBOUNDED).await?;
    }
    match postgres_url {
        Some(pg) => {
            queue_run(
                "postgres, 1 engine",
                &fresh_pg(&pg).await?,
                actions,
                1,
                UNBOUNDED,
            )
            .await?;
            queue_run(
                "postgres, 2 engine processes",
                &fresh_pg(&pg).await?,
                actions,
                2,
                UNBOUNDED,
            )
            .await?;
        }
        None => println!("queue  postgres: skipped (give --postgres-url)"),
    }
    Ok(())
}

/// The cost of metrics: the recorder installed, runs alternately without and with
/// recording (three of each, after a warm-up), so the shared machine's noise falls on both
/// alike; the medians are compared.
async fn metrics_cost(n: usize) -> anyhow::Result<()> {
    provisio_engine::metrics::install().context("another recorder is installed")?;
    provisio_engine::metrics::set_recording(false);
    queue_run("sqlite, warm-up", "sqlite", (n / 10).max(100), 1, UNBOUNDED).await?;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for round in 1..=3 {
        provisio_engine::metrics::set_recording(false);
        without.push(
            queue_run(
                &format!("sqlite, without metrics #{round}"),
                "sqlite",
                n,
                1,
                UNBOUNDED,
            )
            .await?,
        );
        provisio_engine::metrics::set_recording(true);
        with.push(
            queue_run(
                &format!("sqlite, with metrics #{round}"),
                "sqlite",
                n,
                1,
                UNBOUNDED,
            )
            .await?,
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (without, with) = (median(&mut without), median(&mut with));
    let series = provisio_engine::metrics::render()
        .map(|t| t.lines().filter(|l| !l.starts_with('#')).count())
        .unwrap_or(0);
    println!(
        "queue  metrics cost (median run rate of 3 each): {without:.0} actions/s without, {with:.0} actions/s with ({series} series exposed): {:+.1}% slower with (bound 3%)",
        (without - with) / without * 100.0
    );
    Ok(())
}

/// Runs as `provisio serve --config PATH --listen 127.0.0.1:0` would, until killed.
pub async fn serve_engine(config: &Path) -> anyhow::Result<()> {
    let cfg = provisio_server::Config::load(Some(config), &Default::default())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    provisio_server::run(cfg, listener, std::future::pending()).await?;
    Ok(())
}

fn second_engine(dir: &Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    Command::new(exe)
        .args(["engine", "--config", "bench.toml"])
        .current_dir(dir)
        .env("PROVISIO_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting a second engine process")
}

/// The server's `max_concurrent` when the queue alone should be the limit.
const UNBOUNDED: u32 = 10_000;

/// Returns the run's rate (actions per second, enqueue excluded). `concurrency` is the one
/// server's `max_concurrent`, shared by all engines.
pub(crate) async fn queue_run(
    label: &str,
    db: &str,
    n: usize,
    engines: usize,
    concurrency: u32,
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let url = if db == "sqlite" {
        format!("sqlite://{}", dir.path().join("bench.db").display())
    } else {
        db.to_string()
    };
    let cfg = setup::config(dir.path(), &url, "")?;
    let engine = setup::engine(&cfg).await?;
    let (client, servers, product) = seed(&engine, "noop", 1, concurrency, json!({})).await?;
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
    Ok(n as f64 / secs)
}

/// A new database next to the one `admin_url` names, so runs never see each other's jobs.
pub(crate) async fn fresh_pg(admin_url: &str) -> anyhow::Result<String> {
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
