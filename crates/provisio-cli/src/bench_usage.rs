//! `provisio bench usage` and `provisio bench audit`: a usage sync of many services across
//! many servers against a local HTTP remote that serves usage pages after a configurable
//! delay, and an audit of many remote accounts against as many local services with 1% drift
//! of each kind. They print figures (time, the limit the page delays impose, peak memory);
//! they do not judge them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use provisio_engine::audit::AuditInput;
use provisio_engine::Engine;
use serde_json::{json, Value};

/// Which server owns global account number `i`, and its number on that server.
fn place(i: usize, servers: usize) -> (usize, usize) {
    (i % servers, i / servers)
}

fn per_server(n: usize, servers: usize, s: usize) -> usize {
    n / servers + usize::from(s < n % servers)
}

#[derive(Clone)]
struct RemoteSpec {
    accounts: usize,
    servers: usize,
    delay: Duration,
}

/// Serves `GET /s/{server}/usage` and `/s/{server}/accounts` (`cursor` = offset, `limit`):
/// usage of `u{i}` is `i` bytes; the listing plants 1% of each kind of drift.
async fn remote(spec: RemoteSpec) -> anyhow::Result<String> {
    use axum::extract::{Path, Query, State};
    type Q = Query<std::collections::HashMap<String, String>>;
    fn bounds(spec: &RemoteSpec, s: usize, q: &Q) -> (usize, usize, usize) {
        let total = per_server(spec.accounts, spec.servers, s);
        let start: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
        let limit: usize = q.get("limit").and_then(|c| c.parse().ok()).unwrap_or(1000);
        (start, limit, total)
    }
    async fn usage(
        State(spec): State<RemoteSpec>,
        Path(s): Path<usize>,
        q: Q,
    ) -> axum::Json<Value> {
        tokio::time::sleep(spec.delay).await;
        let (start, limit, total) = bounds(&spec, s, &q);
        let end = (start + limit).min(total);
        let items: Vec<Value> = (start..end)
            .map(|k| {
                let i = k * spec.servers + s;
                json!({"u": format!("u{i}"), "d": i})
            })
            .collect();
        let next = (end < total).then(|| end.to_string());
        axum::Json(json!({"items": items, "next": next}))
    }
    async fn accounts(
        State(spec): State<RemoteSpec>,
        Path(s): Path<usize>,
        q: Q,
    ) -> axum::Json<Value> {
        tokio::time::sleep(spec.delay).await;
        let (start, limit, total) = bounds(&spec, s, &q);
        // Orphans follow the real accounts: 1% more on each server.
        let orphans = total / 100;
        let end = (start + limit).min(total + orphans);
        let mut items = Vec::with_capacity(end.saturating_sub(start));
        for k in start..end {
            if k >= total {
                items.push(json!({"username": format!("orphan{s}x{k}"), "status": "active", "package": "bench"}));
                continue;
            }
            let i = k * spec.servers + s;
            match i % 100 {
                0 => continue, // missing_remote
                1 => items.push(
                    json!({"username": format!("u{i}"), "status": "suspended", "package": "bench"}),
                ),
                2 => items.push(
                    json!({"username": format!("u{i}"), "status": "active", "package": "other"}),
                ),
                _ => items.push(
                    json!({"username": format!("u{i}"), "status": "active", "package": "bench"}),
                ),
            }
        }
        let next = (end < total + orphans).then(|| end.to_string());
        axum::Json(json!({"items": items, "next": next}))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/s/{server}/usage", axum::routing::get(usage))
        .route("/s/{server}/accounts", axum::routing::get(accounts))
        .with_state(spec);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

/// An engine on a fresh SQLite file with `servers` http servers (server `k` on `/s/k`) and
/// `accounts` active services spread over them, bulk-loaded.
async fn setup(
    dir: &std::path::Path,
    base: &str,
    accounts: usize,
    servers: usize,
    page: u32,
) -> anyhow::Result<Arc<Engine>> {
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    let extra = format!(
        "[usage]\nschedule = \"\"\npage_size = {page}\nparallel_servers = {servers}\n\
         [audit]\npage_size = {page}\nparallel_servers = {servers}\n"
    );
    let cfg = crate::bench::config(dir, &url, &extra)?;
    let engine =
        Arc::new(provisio_server::prepare(&cfg, provisio_modules::Registry::builtin()).await?);
    let ok = json!({"method": "POST", "url": "/noop"});
    let (client, ids, product) = crate::bench::seed(&engine, "http", 0, 10, json!({})).await?;
    let _ = ids;
    let mut server_ids = Vec::new();
    for k in 0..servers {
        let s = engine
            .create_server(provisio_engine::input::ServerCreate {
                name: format!("remote-{k}"),
                module: "http".into(),
                group: None,
                settings: json!({
                    "base_url": format!("{base}/s/{k}"),
                    "timeout_seconds": 300,
                    "actions": {
                        "create": ok, "suspend": ok, "unsuspend": ok, "terminate": ok,
                        "usage": {"method": "GET", "url": "/usage",
                            "query": {"cursor": "{{ params.cursor | default('') }}", "limit": "{{ params.limit }}"},
                            "usage": {"pointer": "/items", "username": "/u", "metrics": {"data": {"used": "/d", "unit": "bytes"}}, "next": "/next"}},
                        "list_accounts": {"method": "GET", "url": "/accounts",
                            "query": {"cursor": "{{ params.cursor | default('') }}", "limit": "{{ params.limit }}"},
                            "accounts": {"pointer": "/items", "username": "/username", "status": "/status", "package": "/package", "next": "/next"}}
                    }
                })
                .as_object()
                .cloned()
                .unwrap_or_default(),
                max_concurrent: Some(10),
                max_per_second: None,
                enabled: None,
            })
            .await?;
        server_ids.push(s.id.0);
    }
    // The bench's product is named `bench`, which is the package the remote reports.
    let sealed = engine.seal_secret(&secrecy::SecretString::from("bench-password-1"));
    let t0 = Instant::now();
    let path = dir.join("bench.db");
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .busy_timeout(Duration::from_secs(30));
    let pool = sqlx::SqlitePool::connect_with(opts).await?;
    let now = chrono::Utc::now().timestamp_micros();
    let mut i = 0usize;
    while i < accounts {
        let end = (i + 50_000).min(accounts);
        let mut tx = pool.begin().await?;
        let mut j = i;
        while j < end {
            let chunk_end = (j + 500).min(end);
            let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO services (client_id, product_id, server_id, username, password, status, \
                 settings, outputs, created_at, updated_at) ",
            );
            qb.push_values(j..chunk_end, |mut b, n| {
                let (s, _) = place(n, servers);
                b.push_bind(client.0)
                    .push_bind(product.0)
                    .push_bind(server_ids[s])
                    .push_bind(format!("u{n}"))
                    .push_bind(sealed.0.clone())
                    .push_bind("active")
                    .push_bind("{}")
                    .push_bind("{}")
                    .push_bind(now)
                    .push_bind(now);
            });
            qb.build().execute(&mut *tx).await?;
            j = chunk_end;
        }
        tx.commit().await?;
        i = end;
    }
    pool.close().await;
    eprintln!(
        "loaded {accounts} services on {servers} servers in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    Ok(engine)
}

/// Peak resident memory of this process so far, in MiB (Linux).
fn peak_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub async fn usage_run(
    services: usize,
    servers: usize,
    page: u32,
    delay_ms: u64,
) -> anyhow::Result<()> {
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

pub async fn audit_run(accounts: usize, servers: usize, page: u32) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = remote(RemoteSpec {
        accounts,
        servers,
        delay: Duration::ZERO,
    })
    .await?;
    let engine = setup(dir.path(), &base, accounts, servers, page).await?;

    // The comparison alone, on data already in memory: what the audit adds to the listing.
    let listing: Vec<provisio_core::module::RemoteAccount> = (0..accounts)
        .filter(|i| i % 100 != 0)
        .map(|i| provisio_core::module::RemoteAccount {
            username: format!("u{i}"),
            status: Some(if i % 100 == 1 { "suspended" } else { "active" }.into()),
            package: Some(if i % 100 == 2 { "other" } else { "bench" }.into()),
        })
        .chain(
            (0..accounts / 100).map(|k| provisio_core::module::RemoteAccount {
                username: format!("orphan{k}"),
                status: Some("active".into()),
                package: Some("bench".into()),
            }),
        )
        .collect();
    let t_load = Instant::now();
    let mut local = Vec::with_capacity(accounts);
    for s in engine.usage_servers(None).await? {
        for a in engine.store().server_accounts(s.id).await? {
            local.push(provisio_core::audit::LocalAccount {
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
