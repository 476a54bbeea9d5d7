//! `provisio-bench console`: the admin console's page times over a large database. Fills
//! 100,000 services and 1,000,000 jobs (with attempts for the failed ones and the last
//! tenth) by set-based inserts into a SQLite store and, with `--postgres-url`, into a fresh
//! PostgreSQL database too, signs in over HTTP as a browser would, and prints each page's
//! median and slowest time beside the bound (50 ms).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use crate::setup::{self, seed};

/// The bound on every page.
const TARGET_MS: f64 = 50.0;

/// What to fill and where.
pub struct Options {
    pub services: usize,
    pub jobs: usize,
    pub rounds: usize,
    /// Also on a fresh database next to the one this URL names.
    pub postgres_url: Option<String>,
    pub no_sqlite: bool,
    /// Keep the SQLite database here rather than in a temporary directory, so its query
    /// plans can be looked at afterwards.
    pub keep_in: Option<PathBuf>,
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    if !o.no_sqlite {
        let tmp = tempfile::tempdir()?;
        let dir = match &o.keep_in {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                d.clone()
            }
            None => tmp.path().to_path_buf(),
        };
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        bench("sqlite", &dir, &url, &o).await?;
    }
    match &o.postgres_url {
        Some(admin) => {
            let dir = tempfile::tempdir()?;
            let url = crate::queue::fresh_pg(admin).await?;
            bench("postgres", dir.path(), &url, &o).await?;
        }
        None => println!("console  postgres: skipped (give --postgres-url)"),
    }
    Ok(())
}

async fn bench(label: &str, dir: &std::path::Path, url: &str, o: &Options) -> anyhow::Result<()> {
    let (services, jobs, rounds) = (o.services, o.jobs, o.rounds);
    let cfg = setup::config(dir, url, "")?;
    let engine = setup::engine(&cfg).await?;
    let (client, servers, product) = seed(&engine, "noop", 4, 8, json!({})).await?;
    let db = Db::connect(url).await?;
    let t0 = Instant::now();
    fill(&engine, &db, services, jobs, client.0, &servers, product.0).await?;
    println!(
        "console  {label}: filled {services} services and {jobs} jobs in {:.1}s{}",
        t0.elapsed().as_secs_f64(),
        if matches!(db, Db::Pg(_)) {
            " (then VACUUM (ANALYZE))"
        } else {
            ""
        },
    );
    let (base, server) = serve(&engine, &cfg).await?;
    // The same engine without the overview's few seconds of keeping, so the line below
    // shows what reading its aggregates costs on every look.
    let mut uncached = cfg.clone();
    uncached.console.overview_cache_seconds = 0;
    let (fresh, fresh_server) = serve(&engine, &uncached).await?;
    let key = std::fs::read_to_string(&cfg.admin_key_file)?
        .trim()
        .to_string();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let cookie = sign_in(&http, &base, &key).await?;
    let mid = services as i64 / 2;
    let failed_job = db
        .one("SELECT id FROM jobs WHERE state = 'failed' ORDER BY id LIMIT 1")
        .await?;
    let pages = [
        ("overview", "/console/".to_string()),
        ("overview, read anew", format!("{fresh}/console/")),
        ("queue failed", "/console/queue?state=failed".to_string()),
        ("queue open", "/console/queue?state=open".to_string()),
        ("queue filtered", "/console/queue?state=failed&server=bench-1&action=suspend&error_kind=permanent&older_than=1h".to_string()),
        ("job", format!("/console/queue/{failed_job}")),
        ("services by username", format!("/console/services?username=u{mid}")),
        ("services suspended", "/console/services?status=suspended".to_string()),
        ("services by invoice", format!("/console/services?invoice=INV-{}", mid / 10)),
        ("service page", format!("/console/services/{mid}")),
        ("events", "/console/events".to_string()),
        ("groups collect", format!("/console/groups/collect?filters=service.parent_invoice%3DINV-{}", mid / 10)),
        ("clients", "/console/clients".to_string()),
        ("servers", "/console/servers".to_string()),
        ("products", "/console/products".to_string()),
        ("product page", format!("/console/products/{}", product.0)),
        ("usage syncs", "/console/usage".to_string()),
    ];
    let mut slow = 0;
    for (name, path) in &pages {
        let mut times = Vec::with_capacity(rounds);
        // One request first, so caches are as warm as a person's second look.
        get(&http, &base, path, &cookie).await?;
        for _ in 0..rounds {
            let t = Instant::now();
            get(&http, &base, path, &cookie).await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let median = times[times.len() / 2];
        let max = times[times.len() - 1];
        let verdict = if max < TARGET_MS { "ok" } else { "SLOW" };
        if max >= TARGET_MS {
            slow += 1;
        }
        println!(
            "console  {label} {name:<22} median {median:6.1} ms, slowest {max:6.1} ms of {rounds} (target < {TARGET_MS} ms): {verdict}"
        );
    }
    server.abort();
    fresh_server.abort();
    engine.store().close().await;
    db.close().await;
    if slow > 0 {
        println!("console  {label}: {slow} page(s) over the target");
    }
    Ok(())
}

/// The console (and API) of `engine` on a loopback port: its base URL and the server task.
async fn serve(
    engine: &std::sync::Arc<provisio_engine::Engine>,
    cfg: &provisio_server::Config,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let app = provisio_server::router(engine.clone(), cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let _ = axum::serve(listener, app).await;
    });
    Ok((base, server))
}

/// The bench's own connection to the database the store opened, for writing rows set-based
/// (a loop of single inserts would take longer than the measurement).
enum Db {
    Sqlite(sqlx::SqlitePool),
    Pg(sqlx::PgPool),
}

impl Db {
    async fn connect(url: &str) -> anyhow::Result<Db> {
        Ok(if url.starts_with("sqlite:") {
            Db::Sqlite(sqlx::SqlitePool::connect(url).await?)
        } else {
            Db::Pg(sqlx::PgPool::connect(url).await?)
        })
    }

    async fn exec(&self, sql: &str, binds: &[Bind<'_>]) -> anyhow::Result<u64> {
        macro_rules! run {
            ($pool:expr) => {{
                let mut q = sqlx::query(sql);
                for b in binds {
                    q = match b {
                        Bind::Int(i) => q.bind(*i),
                        Bind::Bytes(t) => q.bind(*t),
                    };
                }
                q.execute($pool)
                    .await
                    .with_context(|| sql.to_string())?
                    .rows_affected()
            }};
        }
        Ok(match self {
            Db::Sqlite(p) => run!(p),
            Db::Pg(p) => run!(p),
        })
    }

    async fn one(&self, sql: &str) -> anyhow::Result<i64> {
        Ok(match self {
            Db::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await?,
            Db::Pg(p) => sqlx::query_scalar(sql).fetch_one(p).await?,
        })
    }

    /// A series `n(i)` of 1 to `$1`: PostgreSQL's own function, SQLite's recursive CTE.
    fn series(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => {
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)"
            }
            Db::Pg(_) => "WITH n(i) AS (SELECT generate_series(1, $1::bigint))",
        }
    }

    async fn close(&self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Pg(p) => p.close().await,
        }
    }
}

enum Bind<'a> {
    Int(i64),
    Bytes(&'a [u8]),
}

/// Rows written set-based through the bench's connection to the store's database, the same
/// statements on both databases apart from the series.
async fn fill(
    engine: &provisio_engine::Engine,
    db: &Db,
    services: usize,
    jobs: usize,
    client: i64,
    servers: &[provisio_core::ServerId],
    product: i64,
) -> anyhow::Result<()> {
    use Bind::{Bytes, Int};
    let sealed = engine.seal_secret(&secrecy::SecretString::from("bench-password-1"));
    let now = chrono::Utc::now().timestamp_micros();
    let series = db.series();
    let first = servers.first().context("no server")?.0;
    let nservers = servers.len() as i64;
    // Every tenth service suspended; groups of ten share an invoice (a master and nine
    // children).
    db.exec(
        &format!(
            "{series} INSERT INTO services (client_id, product_id, server_id, username, password, status, \
             suspend_reason, suspended_at, invoice, parent_invoice, settings, outputs, created_at, updated_at) \
             SELECT $2, $3, $4 + (n.i % $5), 'u' || n.i, $6, \
               CASE WHEN n.i % 10 = 3 THEN 'suspended' ELSE 'active' END, \
               CASE WHEN n.i % 10 = 3 THEN 'non-payment' END, CASE WHEN n.i % 10 = 3 THEN $7 END, \
               CASE WHEN n.i % 10 = 0 THEN 'INV-' || (n.i / 10) END, \
               CASE WHEN n.i % 10 <> 0 THEN 'INV-' || (n.i / 10) END, '{{}}', '{{}}', $7, $7 FROM n"
        ),
        &[
            Int(services as i64),
            Int(client),
            Int(product),
            Int(first),
            Int(nservers),
            Bytes(&sealed.0),
            Int(now),
        ],
    )
    .await?;
    // Jobs spread over the last 30 days (a month of history); one in a hundred failed.
    db.exec(
        &format!(
            "{series}, t(i, at) AS (SELECT i, $3 - (i % 2592000) * 1000000 FROM n) \
             INSERT INTO jobs (service_id, server_id, action, state, params, idempotency_key, \
             attempts, max_attempts, run_after, last_error, error_kind, created_at, updated_at, finished_at) \
             SELECT s.id, s.server_id, CASE WHEN t.i % 3 = 0 THEN 'suspend' ELSE 'renew' END, \
               CASE WHEN t.i % 100 = 7 THEN 'failed' ELSE 'done' END, '{{}}', 'bench-' || t.i, 1, 3, t.at, \
               CASE WHEN t.i % 100 = 7 THEN 'remote refused: plan unknown' END, \
               CASE WHEN t.i % 100 = 7 THEN 'permanent' END, t.at, t.at, t.at \
             FROM t JOIN services s ON s.id = 1 + (t.i % $2)"
        ),
        &[Int(jobs as i64), Int(services as i64), Int(now)],
    )
    .await?;
    // Attempts of the failed jobs and of the last tenth by id.
    db.exec(
        "INSERT INTO job_attempts (job_id, attempt, started_at, duration_ms, outcome, message) \
         SELECT id, 1, created_at, 12, CASE WHEN state = 'failed' THEN 'permanent' ELSE 'ok' END, last_error \
         FROM jobs WHERE state = 'failed' OR id > $1",
        &[Int((jobs as i64) * 9 / 10)],
    )
    .await?;
    // A month of history has planner statistics and a visibility map (autovacuum keeps
    // both on PostgreSQL, inserted rows included); rows written in one go have neither
    // until autovacuum comes round, which it then does in the middle of the measurement:
    // index-only counts fetch every heap row until it has.
    if matches!(db, Db::Pg(_)) {
        db.exec("VACUUM (ANALYZE)", &[]).await?;
    }
    Ok(())
}

async fn sign_in(http: &reqwest::Client, base: &str, key: &str) -> anyhow::Result<String> {
    let page = http.get(format!("{base}/console/sign-in")).send().await?;
    let pre = cookie_of(&page, "provisio_console_signin")?;
    let html = page.text().await?;
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .context("no csrf field on the sign-in page")?
        .to_string();
    let r = http
        .post(format!("{base}/console/sign-in"))
        .header("cookie", format!("provisio_console_signin={pre}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("key={key}&csrf={csrf}"))
        .send()
        .await?;
    if r.status() != 303 {
        bail!("sign-in answered {}", r.status());
    }
    Ok(format!(
        "provisio_console={}",
        cookie_of(&r, "provisio_console")?
    ))
}

fn cookie_of(r: &reqwest::Response, name: &str) -> anyhow::Result<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .map(String::from)
        .with_context(|| format!("no {name} cookie"))
}

async fn get(http: &reqwest::Client, base: &str, path: &str, cookie: &str) -> anyhow::Result<()> {
    // A page of the uncached console names its own server.
    let url = if path.starts_with("http") {
        path.to_string()
    } else {
        format!("{base}{path}")
    };
    let r = http
        .get(url)
        .header("cookie", cookie)
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    if r.status() != 200 {
        bail!("{path} answered {}", r.status());
    }
    r.bytes().await?;
    Ok(())
}
