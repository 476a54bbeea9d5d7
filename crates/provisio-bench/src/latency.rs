//! `provisio-bench latency`: N creates through the `http` module against a local remote that
//! answers after L ms, over S servers limited to C concurrent actions each, beside the limit
//! N·L/(S·C) that latency and concurrency alone impose.

use std::time::Duration;

use crate::setup::{cpu_note, cpu_secs, drain, enqueue};
use crate::slow_remote::SlowBench;

pub async fn run(
    n: usize,
    latency_ms: u64,
    servers: usize,
    concurrency: u32,
) -> anyhow::Result<()> {
    measure(n, latency_ms, servers, concurrency, None).await?;
    Ok(())
}

/// One latency-bound run on SQLite or on the PostgreSQL database `db`; prints its lines and
/// returns the seconds taken and the limit.
pub(crate) async fn measure(
    n: usize,
    latency_ms: u64,
    servers: usize,
    concurrency: u32,
    db: Option<&str>,
) -> anyhow::Result<(f64, f64)> {
    let b = SlowBench::start(latency_ms, servers, concurrency, "create", db).await?;
    let engine = &b.engine;
    enqueue(engine, n, b.client, &b.servers, b.product).await?;
    let start = std::time::Instant::now();
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
    println!("{}", b.gaps_line("latency", start, secs));
    engine.store().close().await;
    Ok((secs, limit))
}
