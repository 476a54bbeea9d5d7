//! `provisio-bench usage`: a usage sync of many services across many servers against a local
//! HTTP remote that serves usage pages after a configurable delay; prints the time beside
//! the time the page delays alone need, and the peak memory.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::accounts::{per_server, remote, setup, RemoteSpec};
use crate::setup::peak_mib;

pub async fn run(services: usize, servers: usize, page: u32, delay_ms: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = remote(RemoteSpec {
        accounts: services,
        servers,
        delay: Duration::from_millis(delay_ms),
    })
    .await?;
    let engine = setup(dir.path(), &base, services, servers, page).await?;
    let targets = engine.usage_servers(None).await?;
    let run = engine
        .begin_sync(&targets, None)
        .await?
        .context("could not start a sync run")?;
    let t0 = Instant::now();
    let report = engine.run_usage_sync(run.id, targets).await;
    let secs = t0.elapsed().as_secs_f64();
    let updated: u64 = report.servers.iter().map(|s| s.services_updated).sum();
    let failed = report.servers.iter().filter(|s| s.state != "done").count();
    let pages = (0..servers)
        .map(|s| {
            per_server(services, servers, s)
                .div_ceil(page as usize)
                .max(1)
        })
        .max()
        .unwrap_or(0);
    let required = pages as f64 * delay_ms as f64 / 1000.0;
    println!(
        "usage  {services} services on {servers} servers, pages of {page}, {delay_ms} ms per page: \
         {secs:.2}s ({:.0} services/s), {updated} updated, {failed} servers failed; \
         page delays alone need {required:.2}s{}; peak memory {:.0} MiB",
        services as f64 / secs,
        if required > 0.0 {
            format!(", ratio {:.3}", secs / required)
        } else {
            String::new()
        },
        peak_mib().unwrap_or(0.0)
    );
    if let Some(s) = report.servers.iter().find(|s| !s.errors.is_empty()) {
        println!("usage  first error ({}): {}", s.server, s.errors[0]);
    }
    engine.store().close().await;
    Ok(())
}
