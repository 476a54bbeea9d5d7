//! The set-up of the many-accounts benches (`usage`, `audit`): a local HTTP remote that
//! pages usage and account listings for every server (with 1% of each kind of drift
//! planted in the listing), and an engine with that many active services bulk-loaded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use provisio_engine::Engine;
use serde_json::{json, Value};

use crate::setup;

/// Which server owns global account number `i`, and its number on that server.
fn place(i: usize, servers: usize) -> (usize, usize) {
    (i % servers, i / servers)
}

/// How many of `n` accounts server `s` holds.
pub fn per_server(n: usize, servers: usize, s: usize) -> usize {
    n / servers + usize::from(s < n % servers)
}

#[derive(Clone)]
pub struct RemoteSpec {
    pub accounts: usize,
    pub servers: usize,
    pub delay: Duration,
}

/// Serves `GET /s/{server}/usage` and `/s/{server}/accounts` (`cursor` = offset, `limit`):
/// usage of `u{i}` is `i` bytes; the listing plants 1% of each kind of drift.
pub async fn remote(spec: RemoteSpec) -> anyhow::Result<String> {
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
pub async fn setup(
    dir: &std::path::Path,
    base: &str,
    accounts: usize,
    servers: usize,
    page: u32,
) -> anyhow::Result<Arc<Engine>> {
    let extra = format!(
        "[usage]\nschedule = \"\"\npage_size = {page}\nparallel_servers = {servers}\n\
         [audit]\npage_size = {page}\nparallel_servers = {servers}\n"
    );
    let engine = setup::sqlite_engine(dir, &extra).await?;
    let ok = json!({"method": "POST", "url": "/noop"});
    let (client, _, product) = setup::seed(&engine, "http", 0, 10, json!({})).await?;
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
    // Straight into the SQLite file in multi-row inserts: loading is not what is measured.
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
