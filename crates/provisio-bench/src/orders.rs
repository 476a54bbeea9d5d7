//! `provisio-bench orders`: orders over real HTTP (`POST /v1/services`, and batches of them
//! through `POST /v1/services/batch`) and actions (`suspend`, `unsuspend`) with many
//! connections, at several numbers of existing services filled fast through the store, so
//! it shows whether the cost of an order grows with the data.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use provisio_core::product::AutoSetup;
use provisio_core::service::{NewService, ServiceStatus};
use provisio_core::settings::Settings;
use provisio_core::text::Username;
use provisio_core::{ClientId, ProductId, ServerId, ServiceId};
use provisio_engine::input::ProductCreate;
use provisio_engine::Engine;
use serde_json::json;

use crate::setup::{self, seed};

/// What one run measures.
pub struct Options {
    /// Numbers of existing services to measure at, in any order.
    pub at: Vec<usize>,
    pub connections: usize,
    /// Single orders per measurement.
    pub orders: usize,
    /// Actions per measurement (half suspends, half unsuspends).
    pub actions: usize,
    /// Batch requests per measurement, each of `batch_size` orders.
    pub batches: usize,
    pub batch_size: usize,
    /// Servers the orders are placed on (the noop module).
    pub servers: usize,
    pub pg: Option<String>,
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    if o.batch_size == 0 || o.batch_size > 1000 {
        bail!("--batch-size must be 1 to 1000 (the API's limit per request)");
    }
    let mut at = o.at.clone();
    at.sort_unstable();
    at.dedup();
    let dir = tempfile::tempdir()?;
    let (label, url) = match &o.pg {
        Some(pg) => ("postgres", crate::queue::fresh_pg(pg).await?),
        None => (
            "sqlite",
            format!("sqlite://{}", dir.path().join("bench.db").display()),
        ),
    };
    let cfg = setup::config(dir.path(), &url, "")?;
    let engine = setup::engine(&cfg).await?;
    let key = std::fs::read_to_string(&cfg.admin_key_file)
        .context("reading the admin key the engine wrote")?
        .trim()
        .to_string();
    let (client, servers, filler) =
        seed(&engine, "noop", o.servers.max(1), 10_000, json!({})).await?;
    // Orders take a product set up on order, so each stores its create job as a real one does.
    engine
        .create_product(ProductCreate {
            name: "bench-on-order".into(),
            module: "noop".into(),
            extends: None,
            server_group: None,
            settings: Settings::new(),
            auto_setup: Some(AutoSetup::OnOrder),
            client_fields: None,
        })
        .await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = provisio_server::router(engine.clone(), &cfg)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(o.connections)
        .build()?;
    let api = Api {
        http,
        base,
        key,
        client,
    };

    println!(
        "orders {label}: {} build, {} connections over loopback HTTP, noop module on {} servers, worker off (measures accepting: each answer comes after its durable write)",
        if cfg!(debug_assertions) { "DEBUG" } else { "release" },
        o.connections,
        servers.len(),
    );
    // The targets, printed beside every rate: an order rate, and a flat one (within
    // 10% of the first level's, measured in this same run).
    let target = if label == "sqlite" { 5000.0 } else { 3000.0 };
    let mut first_rate: Option<f64> = None;
    let mut filled = 0usize;
    for level in at {
        let fill_secs = fill(
            &engine,
            level.saturating_sub(existing(&engine).await?),
            client,
            &servers,
            filler,
            &mut filled,
        )
        .await?;
        // The services the actions run on: fresh active ones, two actions on each, so no
        // service gathers a queue of open jobs that would make later actions dearer.
        let pairs = o.actions.div_ceil(2).max(1);
        let targets = insert(
            &engine,
            pairs,
            client,
            &servers,
            filler,
            ServiceStatus::Active,
            &mut filled,
        )
        .await?;
        let have = existing(&engine).await?;
        let settled = match &o.pg {
            None => format!(
                ", WAL checkpointed in {:.1}s",
                settle(&dir.path().join("bench.db")).await?
            ),
            Some(_) => String::new(),
        };
        println!(
            "orders {label} at {have:>9} existing services (filled {:.1}s{settled}):",
            fill_secs
        );
        let (n, secs) = singles(&api, o.connections, o.orders).await?;
        let rate = n as f64 / secs;
        let first = *first_rate.get_or_insert(rate);
        println!(
            "  single  POST /v1/services            {n:>7} orders  {secs:>7.2}s = {rate:>7.0} orders/s \
             (target {target:.0}/s; {:.0}% of the first level's rate in this run, target at least 90%)",
            100.0 * rate / first
        );
        let (n, secs) = batches(&api, o.connections, o.batches, o.batch_size).await?;
        println!(
            "  batch   POST /v1/services/batch x{:<4} {n:>7} orders  {secs:>7.2}s = {:>7.0} orders/s",
            o.batch_size,
            n as f64 / secs
        );
        let (n, secs) = actions(&api, o.connections, &targets).await?;
        println!(
            "  actions POST /v1/services/{{id}}/suspend|unsuspend {n:>7} actions {secs:>7.2}s = {:>7.0} actions/s",
            n as f64 / secs
        );
    }
    server.abort();
    engine.store().close().await;
    Ok(())
}

struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
    client: ClientId,
}

impl Api {
    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
        want: u16,
    ) -> anyhow::Result<serde_json::Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await?;
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
        if status != want {
            bail!("POST {path} answered {status}, not {want}: {v}");
        }
        Ok(v)
    }
}

/// Copies the fill's WAL into the database file before a level is measured, as a store
/// that has been running for a while has done long since: the fill writes a level's
/// services in seconds, and the checkpoints that follow it (copying every page it touched,
/// with their fsyncs) would otherwise run beside the level's first orders and be counted
/// as the cost of the number of services. Answers the seconds taken.
async fn settle(db: &std::path::Path) -> anyhow::Result<f64> {
    use sqlx::{ConnectOptions, Row};
    let t0 = Instant::now();
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(std::time::Duration::from_secs(30))
        .connect()
        .await?;
    let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut conn)
        .await?;
    if row.try_get::<i64, _>(0)? != 0 {
        bail!("the WAL checkpoint after the fill could not finish (a reader or writer was busy)");
    }
    sqlx::Connection::close(conn).await?;
    Ok(t0.elapsed().as_secs_f64())
}

async fn existing(engine: &Engine) -> anyhow::Result<usize> {
    Ok(engine.store().count_services(&Default::default()).await? as usize)
}

/// Stores `n` services straight through the store, in transactions of 1,000.
async fn fill(
    engine: &Arc<Engine>,
    n: usize,
    client: ClientId,
    servers: &[ServerId],
    product: ProductId,
    filled: &mut usize,
) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        insert(
            engine,
            k,
            client,
            servers,
            product,
            ServiceStatus::Active,
            filled,
        )
        .await?;
        left -= k;
    }
    Ok(t0.elapsed().as_secs_f64())
}

async fn insert(
    engine: &Arc<Engine>,
    n: usize,
    client: ClientId,
    servers: &[ServerId],
    product: ProductId,
    status: ServiceStatus,
    filled: &mut usize,
) -> anyhow::Result<Vec<ServiceId>> {
    let sealed = engine.seal_secret(&secrecy::SecretString::from("bench-password-1"));
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|_| {
                *filled += 1;
                let i = *filled;
                (
                    NewService {
                        order_key: None,
                        external_id: None,
                        client_id: client,
                        product_id: product,
                        server_id: servers[i % servers.len()],
                        username: Username::parse(&format!("f{i}")).expect("valid"),
                        password: sealed.clone(),
                        status,
                        invoice: None,
                        parent_invoice: None,
                        settings: Settings::new(),
                    },
                    None,
                )
            })
            .collect();
        let stored = engine.store().insert_services_with_jobs(&rows).await?;
        out.extend(stored.into_iter().map(|(s, _)| s.id));
    }
    Ok(out)
}

/// `n` single orders from `conns` connections; answers how many and the seconds taken.
async fn singles(api: &Api, conns: usize, n: usize) -> anyhow::Result<(usize, f64)> {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (next, http, base, key, client) = (
            next.clone(),
            api.http.clone(),
            api.base.clone(),
            api.key.clone(),
            api.client,
        );
        tasks.spawn(async move {
            let api = Api {
                http,
                base,
                key,
                client,
            };
            while next.fetch_add(1, Ordering::Relaxed) < n {
                api.post(
                    "/v1/services",
                    json!({"client_id": api.client.0, "product": "bench-on-order"}),
                    201,
                )
                .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok((n, t0.elapsed().as_secs_f64()))
}

/// `requests` batch orders of `size` each from up to `conns` connections.
async fn batches(
    api: &Api,
    conns: usize,
    requests: usize,
    size: usize,
) -> anyhow::Result<(usize, f64)> {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns.min(requests.max(1)) {
        let (next, http, base, key, client) = (
            next.clone(),
            api.http.clone(),
            api.base.clone(),
            api.key.clone(),
            api.client,
        );
        tasks.spawn(async move {
            let api = Api { http, base, key, client };
            loop {
                let r = next.fetch_add(1, Ordering::Relaxed);
                if r >= requests {
                    return anyhow::Ok(());
                }
                let orders: Vec<_> = (0..size)
                    .map(|_| json!({"order": {"client_id": api.client.0, "product": "bench-on-order"}}))
                    .collect();
                let v = api.post("/v1/services/batch", json!({ "orders": orders }), 200).await?;
                if v["created"].as_u64() != Some(size as u64) {
                    bail!("a batch created {} of {size} orders: {}", v["created"], v["results"][0]);
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok((requests * size, t0.elapsed().as_secs_f64()))
}

/// A suspend then an unsuspend on each of `targets`, from `conns` connections.
async fn actions(api: &Api, conns: usize, targets: &[ServiceId]) -> anyhow::Result<(usize, f64)> {
    let next = Arc::new(AtomicUsize::new(0));
    let targets = Arc::new(targets.to_vec());
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (next, targets, http, base, key, client) = (
            next.clone(),
            targets.clone(),
            api.http.clone(),
            api.base.clone(),
            api.key.clone(),
            api.client,
        );
        tasks.spawn(async move {
            let api = Api {
                http,
                base,
                key,
                client,
            };
            loop {
                let Some(id) = targets.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return anyhow::Ok(());
                };
                api.post(
                    &format!("/v1/services/{id}/suspend"),
                    json!({"reason": "holiday"}),
                    202,
                )
                .await?;
                api.post(&format!("/v1/services/{id}/unsuspend"), json!({}), 202)
                    .await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok((targets.len() * 2, t0.elapsed().as_secs_f64()))
}
