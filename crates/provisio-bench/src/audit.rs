//! `provisio-bench audit`: an audit of many remote accounts against as many local services
//! with 1% drift of each kind; times the comparison alone (listing already in memory) and
//! the whole audit through the engine, and prints the peak memory.

use std::time::{Duration, Instant};

use provisio_core::audit::LocalAccount;
use provisio_core::module::RemoteAccount;
use provisio_engine::audit::AuditInput;

use crate::accounts::{remote, setup, RemoteSpec};
use crate::setup::peak_mib;

pub async fn run(accounts: usize, servers: usize, page: u32) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = remote(RemoteSpec {
        accounts,
        servers,
        delay: Duration::ZERO,
    })
    .await?;
    let engine = setup(dir.path(), &base, accounts, servers, page).await?;

    // The comparison alone, on data already in memory: what the audit adds to the listing.
    let listing: Vec<RemoteAccount> = (0..accounts)
        .filter(|i| i % 100 != 0)
        .map(|i| RemoteAccount {
            username: format!("u{i}"),
            status: Some(if i % 100 == 1 { "suspended" } else { "active" }.into()),
            package: Some(if i % 100 == 2 { "other" } else { "bench" }.into()),
        })
        .chain((0..accounts / 100).map(|k| RemoteAccount {
            username: format!("orphan{k}"),
            status: Some("active".into()),
            package: Some("bench".into()),
        }))
        .collect();
    let t_load = Instant::now();
    let mut local = Vec::with_capacity(accounts);
    for s in engine.usage_servers(None).await? {
        for a in engine.store().server_accounts(s.id).await? {
            local.push(LocalAccount {
                service_id: a.service_id,
                username: a.username,
                status: a.status,
                package: Some("bench".into()),
            });
        }
    }
    let load = t_load.elapsed().as_secs_f64();
    let t_cmp = Instant::now();
    let findings = provisio_core::audit::compare(&listing, &local);
    let cmp = t_cmp.elapsed().as_secs_f64();
    println!(
        "audit  comparison of {} remote accounts with {} local services: {cmp:.2}s \
         (+ {load:.2}s loading the local services), {} findings; peak memory {:.0} MiB",
        listing.len(),
        local.len(),
        findings.len(),
        peak_mib().unwrap_or(0.0)
    );
    drop((listing, local, findings));

    // The whole audit through the engine: listing over HTTP, comparison, report stored.
    let t0 = Instant::now();
    let audits = engine.audit_now(AuditInput::default()).await?;
    let secs = t0.elapsed().as_secs_f64();
    let mut counts = std::collections::BTreeMap::<String, i64>::new();
    for a in &audits {
        for (k, v) in &a.counts {
            *counts.entry(k.clone()).or_default() += v;
        }
    }
    let remote: i64 = audits.iter().map(|a| a.remote_accounts).sum();
    println!(
        "audit  full audit of {servers} servers ({remote} remote accounts, pages of {page}): {secs:.2}s, \
         drift {counts:?}; peak memory {:.0} MiB",
        peak_mib().unwrap_or(0.0)
    );
    engine.store().close().await;
    Ok(())
}
