//! `provisio-bench peers`: Provisio's PostgreSQL queue beside graphile-worker on the same
//! cluster, with the same job count and concurrency: no-op jobs (graphile-worker plain and
//! batched, Provisio with one and two engines), the latency-bound runs against their limit,
//! and the ratios. `scripts/bench-peers` starts the cluster and installs graphile-worker.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::queue::{fresh_pg, queue_run};

/// The graphile-worker driver, written next to the `node_modules` it imports from.
const DRIVER: &str = include_str!("peer_worker.mjs");

pub struct Options {
    /// An admin URL of the cluster; every run gets a fresh database on it.
    pub pg: String,
    /// The npm prefix graphile-worker is installed in.
    pub graphile_dir: PathBuf,
    pub jobs: usize,
    pub concurrency: u32,
    /// Skip the latency-bound runs.
    pub no_latency: bool,
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let driver = o.graphile_dir.join("peer_worker.mjs");
    if !o.graphile_dir.join("node_modules/graphile-worker").is_dir() {
        bail!(
            "graphile-worker is not installed in {} (scripts/bench-peers installs it: npm install --prefix DIR graphile-worker)",
            o.graphile_dir.display()
        );
    }
    std::fs::write(&driver, DRIVER).context("writing the graphile-worker driver")?;
    let version = peer_version(&o.graphile_dir).unwrap_or_else(|| "(version unknown)".into());
    let (n, c) = (o.jobs, o.concurrency);
    println!(
        "peers  {n} no-op jobs, concurrency {c}, one PostgreSQL cluster, graphile-worker {version}"
    );

    let plain = graphile(&o, &driver, "plain", n, 0, c).await?;
    println!(
        "peers  graphile-worker plain:            {:>6.2}s = {:>6.0} jobs/s",
        plain,
        n as f64 / plain
    );
    let batched = graphile(&o, &driver, "batched", n, 0, c).await?;
    println!(
        "peers  graphile-worker batched:          {:>6.2}s = {:>6.0} jobs/s",
        batched,
        n as f64 / batched
    );
    let one = queue_run("postgres, 1 engine", &fresh_pg(&o.pg).await?, n, 1, c).await?;
    let two = queue_run(
        "postgres, 2 engine processes",
        &fresh_pg(&o.pg).await?,
        n,
        2,
        c,
    )
    .await?;
    println!(
        "peers  provisio 1 engine {one:.0}/s = {:.2}x graphile batched ({:.0}/s), {:.2}x plain ({:.0}/s); 2 engines {two:.0}/s = {:.2}x batched, {:.2}x one engine",
        one * batched / n as f64,
        n as f64 / batched,
        one * plain / n as f64,
        n as f64 / plain,
        two * batched / n as f64,
        two / one,
    );
    if o.no_latency {
        return Ok(());
    }

    // The latency-bound cases; graphile-worker beside the one-server case, whose
    // single pool of 32 slots it can express.
    let (ln, lms, lc) = (4000, 50, 32);
    let limit = ln as f64 * lms as f64 / 1000.0 / f64::from(lc);
    let gp = graphile(&o, &driver, "plain", ln, lms, lc).await?;
    let gb = graphile(&o, &driver, "batched", ln, lms, lc).await?;
    let (ps, _) = crate::latency::measure(ln, lms, 1, lc, Some(&fresh_pg(&o.pg).await?)).await?;
    println!(
        "peers  latency {ln} x {lms} ms, 1 server x {lc}: provisio {ps:.2}s against {limit:.2}s: {:.3}x; graphile-worker batched {gb:.2}s: {:.3}x, plain {gp:.2}s: {:.3}x",
        ps / limit,
        gb / limit,
        gp / limit,
    );
    let (ps, limit) =
        crate::latency::measure(10_000, 20, 4, 10, Some(&fresh_pg(&o.pg).await?)).await?;
    println!(
        "peers  latency 10000 x 20 ms, 4 servers x 10: provisio {ps:.2}s against {limit:.2}s: {:.3}x",
        ps / limit
    );
    Ok(())
}

/// One graphile-worker run on a fresh database: its run seconds (adding the jobs excluded,
/// as Provisio's enqueue is).
async fn graphile(
    o: &Options,
    driver: &Path,
    mode: &str,
    jobs: usize,
    sleep_ms: u64,
    concurrency: u32,
) -> anyhow::Result<f64> {
    let db = fresh_pg(&o.pg).await?;
    let out = Command::new("node")
        .arg(driver)
        .args([
            db.as_str(),
            mode,
            &jobs.to_string(),
            &sleep_ms.to_string(),
            &concurrency.to_string(),
        ])
        .current_dir(&o.graphile_dir)
        .output()
        .context("running node (is Node.js installed?)")?;
    if !out.status.success() {
        bail!(
            "graphile-worker {mode} run failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("graphile-worker printed no result line")?;
    let r: serde_json::Value =
        serde_json::from_str(line).context("reading graphile-worker's result")?;
    r.get("run_s")
        .and_then(serde_json::Value::as_f64)
        .context("graphile-worker's result has no run_s")
}

/// The installed graphile-worker's version, from its package.json.
fn peer_version(dir: &Path) -> Option<String> {
    let text =
        std::fs::read_to_string(dir.join("node_modules/graphile-worker/package.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("version")?.as_str().map(str::to_string)
}
