//! `provisio-bench chaos`: two `provisio serve` processes on one PostgreSQL database against
//! a remote that fails about a third of its calls, a driver ordering and changing thousands
//! of services, a notify receiver, and a killer that SIGKILLs or SIGTERMs one engine every
//! few seconds and starts it again. At the end it checks what must hold whatever happened:
//! every action done on the remote exactly once or failed with a reason, outputs present,
//! every event delivered, no job left open, memory bounded; and prints the figures.

pub mod driver;
pub mod engines;
pub mod receiver;
pub mod remote;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use driver::{Api, Asked, Driver, ServiceRun, PRODUCTS};
use engines::EngineProc;
use receiver::Receiver;
use remote::Remote;

/// What one run does; `provisio-bench chaos --help` documents each.
#[derive(Debug, Clone)]
pub struct Options {
    /// At least this many actions are requested (services are added until their lives
    /// hold that many steps).
    pub actions: usize,
    /// Actions the driver requests per second, over all services.
    pub rate: f64,
    /// Services whose lives run at once.
    pub concurrency: usize,
    /// Mean time between kills (each waits 0.5 to 1.5 times this).
    pub kill_every: Duration,
    /// The killer goes on after the driver is done until this many kills happened.
    pub min_kills: usize,
    /// Share of kills that are SIGKILL (the rest SIGTERM).
    pub sigkill_share: f64,
    pub seed: u64,
    /// A PostgreSQL URL whose server may get a fresh database for the run.
    pub pg_url: String,
    /// The `provisio` binary.
    pub provisio_bin: PathBuf,
    /// Peak resident memory any engine process may reach, in MiB.
    pub max_rss_mib: f64,
    /// How long the queue and the deliveries may take to drain after the last kill.
    pub drain_limit: Duration,
    /// The remote's slow answers take up to this long (the module's timeout is 2 s more).
    pub slow: Duration,
    /// Where the engines' config and logs go; a temporary directory when absent (kept only
    /// when the run fails, so its logs can be read).
    pub dir: Option<PathBuf>,
}

impl Options {
    /// The `provisio` binary next to the running executable (`target/debug/provisio`
    /// beside `target/debug/provisio-bench`).
    pub fn sibling_provisio() -> Option<PathBuf> {
        let exe = std::env::current_exe().ok()?;
        let p = exe.parent()?.join("provisio");
        p.exists().then_some(p)
    }
}

/// The figures of one run and whether its invariants held.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    /// Each invariant that did not hold, in words.
    pub failures: Vec<String>,
    /// The counts the invariants rest on, by name (`requested`, `done_once`, `doubled`,
    /// `lost`, `failed_with_reason`, `missing_outputs`, `events`, `undelivered`,
    /// `duplicates`, `open_jobs`, `kills`, `sigkills`).
    pub figures: BTreeMap<&'static str, usize>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for l in &self.lines {
            writeln!(f, "{l}")?;
        }
        if self.failures.is_empty() {
            writeln!(f, "chaos  every invariant held")
        } else {
            for e in &self.failures {
                writeln!(f, "chaos  FAILED: {e}")?;
            }
            Ok(())
        }
    }
}

#[derive(Default)]
struct Kills {
    sigkill: usize,
    sigterm: usize,
    /// SIGTERMs whose process had not stopped within the wait and was killed.
    forced: usize,
    per_engine: [usize; 2],
    /// Seconds from the signal until the engine answered again, the longest.
    longest_restart: f64,
}

fn config_text(db: &str) -> String {
    format!(
        r#"database_url = "{db}"

[outbound]
allow = ["127.0.0.1/32"]

[jobs]
retry_schedule = ["200ms", "300ms", "500ms", "500ms", "1s", "1s", "2s", "2s", "3s", "3s", "5s", "5s", "5s", "5s"]
retry_jitter = 0.2
lease_seconds = 3
poll_interval_ms = 50
breaker_failures = 100000
breaker_open_seconds = 1
drain_seconds = 10

[hooks]
retry_schedule = ["1s", "1s", "2s", "2s", "5s", "5s", "10s", "10s", "10s", "10s"]
delivery_lease = "3s"
"#
    )
}

/// A new database on the server `admin_url` names, so runs never see each other's records.
async fn fresh_pg(admin_url: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let name = format!("provisio_chaos_{}_{nanos}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .context("connecting to the PostgreSQL URL")?;
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

/// Runs the whole chaos run and returns its figures; `Err` only when the run itself could
/// not be carried out (no database, an engine that does not start).
pub async fn run(o: &Options) -> anyhow::Result<Report> {
    if !o.provisio_bin.exists() {
        bail!(
            "no provisio binary at {} (build it: cargo build -p provisio-cli, or give --provisio-bin)",
            o.provisio_bin.display()
        );
    }
    let temp = tempfile::tempdir()?;
    let dir = match &o.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let t0 = Instant::now();
    let db = fresh_pg(&o.pg_url).await?;
    std::fs::write(dir.join("chaos.toml"), config_text(&db))?;
    let remote = Remote::start(o.seed, o.slow).await?;
    let receiver = Receiver::start().await?;

    let mut a = EngineProc::new("engine-a", &o.provisio_bin, &dir)?;
    let mut b = EngineProc::new("engine-b", &o.provisio_bin, &dir)?;
    // One after the other: the first start creates the secret key and the admin key.
    a.start().await?;
    b.start().await?;
    let key = std::fs::read_to_string(dir.join("provisio.admin-key"))
        .context("reading the admin key the first start wrote")?
        .trim()
        .to_string();
    let api = Api::new(vec![a.base_url(), b.base_url()], key)?;
    let (client_id, products, heard_from) = set_up(&api, &remote, &receiver).await?;
    // Every event the handler must hear: all from its creation on.
    let heard = |all: Vec<Value>| -> Vec<Value> {
        all.into_iter()
            .filter(|e| e["id"].as_i64().is_some_and(|id| id > heard_from))
            .collect()
    };

    let engines = [Arc::new(Mutex::new(a)), Arc::new(Mutex::new(b))];
    let driver_done = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(std::sync::Mutex::new(Kills::default()));
    let sampler = {
        let engines = engines.clone();
        tokio::spawn(async move {
            loop {
                for e in &engines {
                    if let Ok(mut e) = e.try_lock() {
                        e.sample();
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let killer = tokio::spawn(kill_loop(
        engines.clone(),
        o.clone(),
        driver_done.clone(),
        kills.clone(),
    ));

    // The driver, paced.
    let t_drive = Instant::now();
    let plans = driver::plans(o.seed, o.actions);
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / o.rate.max(0.1)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let drv = Arc::new(Driver {
        api: api.clone(),
        client_id,
        pace: Mutex::new(interval),
    });
    let sem = Arc::new(tokio::sync::Semaphore::new(o.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (username, steps) in plans {
        let (drv, sem) = (drv.clone(), sem.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("open semaphore");
            drv.run_service(username, steps).await
        });
    }
    let mut runs: Vec<ServiceRun> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        runs.push(r.context("a driver task")?);
    }
    let drive_secs = t_drive.elapsed().as_secs_f64();
    driver_done.store(true, Relaxed);
    killer.await.context("the killer task")??;
    let kill_phase_secs = t_drive.elapsed().as_secs_f64();

    // Drain: no open job, no open delivery, every event received (bounded).
    let t_drain = Instant::now();
    let deadline = t_drain + o.drain_limit;
    let mut drained = false;
    while Instant::now() < deadline {
        let open_jobs = open_count(&api, "/v1/jobs?state=pending&limit=1").await?
            + open_count(&api, "/v1/jobs?state=running&limit=1").await?;
        let open_deliveries = open_count(&api, "/v1/deliveries?state=pending&limit=1").await?
            + open_count(&api, "/v1/deliveries?state=running&limit=1").await?;
        if open_jobs == 0 && open_deliveries == 0 {
            let events = heard(api.all("/v1/events").await?);
            let all_in = receiver.with(|r| {
                events.iter().all(|e| {
                    e["id"]
                        .as_i64()
                        .is_some_and(|id| r.by_id.contains_key(&format!("evt_{id}")))
                })
            });
            if all_in {
                drained = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let drain_secs = t_drain.elapsed().as_secs_f64();

    let services = api.all("/v1/services").await?;
    let jobs = api.all("/v1/jobs").await?;
    let events = heard(api.all("/v1/events").await?);
    let failed_deliveries = api.all("/v1/deliveries?state=failed").await?.len();
    sampler.abort();
    let mut peaks = Vec::new();
    for e in &engines {
        let mut e = e.lock().await;
        let _ = e.stop("TERM", Duration::from_secs(40)).await;
        peaks.push((e.name, e.peak_kib as f64 / 1024.0, e.starts));
    }

    let kills = std::mem::take(&mut *kills.lock().expect("kills"));
    let mut report = remote.with(|remote| {
        receiver.with(|received| {
            check(Checked {
                o,
                runs: &runs,
                services: &services,
                jobs: &jobs,
                events: &events,
                products: &products,
                remote,
                received,
                failed_deliveries,
                failovers: api.failovers.load(Relaxed),
                lost_answers: api.lost_answers.load(Relaxed),
                kills: &kills,
                peaks: &peaks,
            })
        })
    });
    if !drained {
        report.failures.push(format!(
            "the queue and the deliveries had not drained {} s after the last kill",
            o.drain_limit.as_secs()
        ));
    }
    report.lines.push(format!(
        "chaos  time                            driving {drive_secs:.1} s, killing until {kill_phase_secs:.1} s, drain {drain_secs:.1} s, whole run {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    if !report.failures.is_empty() && o.dir.is_none() {
        let kept = temp.keep();
        report
            .lines
            .push(format!("chaos  engine logs kept in {}", kept.display()));
    }
    Ok(report)
}

async fn open_count(api: &Api, path: &str) -> anyhow::Result<usize> {
    Ok(api.get(path).await?["items"].as_array().map_or(0, Vec::len))
}

/// The handler first (so it hears every event of the run), then the records the driver
/// uses. Returns the client's id, the products' ids by name, and the id of the event that
/// announced the handler: it hears every later one.
async fn set_up(
    api: &Api,
    remote: &Remote,
    receiver: &Receiver,
) -> anyhow::Result<(i64, HashMap<i64, &'static str>, i64)> {
    api.post(
        "/v1/handlers",
        json!({"name": "chaos-receiver", "kind": "http", "phase": "notify",
               "url": receiver.url, "events": ["*"], "timeout_ms": 5000,
               "secret": secrecy::ExposeSecret::expose_secret(&receiver.secret_text())}),
    )
    .await?;
    let announced = api.all("/v1/events?type=handler.created").await?;
    let heard_from = announced
        .last()
        .and_then(|e| e["id"].as_i64())
        .context("no handler.created event")?;
    let client = api
        .post(
            "/v1/clients",
            json!({"name": "Chaos", "email": "chaos@example.com"}),
        )
        .await?;
    api.post(
        "/v1/servers",
        json!({"name": "users-api", "module": "http", "max_concurrent": 32,
               "settings": remote.server_settings()}),
    )
    .await?;
    let mut products = HashMap::new();
    for p in PRODUCTS {
        let v = api
            .post(
                "/v1/products",
                json!({"name": p, "module": "http", "settings": {"package": p}}),
            )
            .await?;
        products.insert(v["id"].as_i64().context("product id")?, p);
    }
    Ok((
        client["id"].as_i64().context("client id")?,
        products,
        heard_from,
    ))
}

/// Every few seconds, one engine at random gets SIGKILL or SIGTERM and is started again
/// once it is gone; until the driver is done and at least `min_kills` happened.
async fn kill_loop(
    engines: [Arc<Mutex<EngineProc>>; 2],
    o: Options,
    driver_done: Arc<AtomicBool>,
    kills: Arc<std::sync::Mutex<Kills>>,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(o.seed ^ 0x6b69_6c6c);
    let mut done = 0usize;
    loop {
        let wait = o.kill_every.mul_f64(rng.gen_range(0.5..1.5));
        tokio::time::sleep(wait).await;
        if driver_done.load(Relaxed) && done >= o.min_kills {
            return Ok(());
        }
        let i = rng.gen_range(0..2);
        let sigkill = rng.gen_bool(o.sigkill_share.clamp(0.0, 1.0));
        let mut e = engines[i].lock().await;
        let t = Instant::now();
        let forced = e
            .stop(
                if sigkill { "KILL" } else { "TERM" },
                Duration::from_secs(40),
            )
            .await?;
        e.start().await?;
        done += 1;
        let mut k = kills.lock().expect("kills");
        if sigkill {
            k.sigkill += 1;
        } else {
            k.sigterm += 1;
        }
        k.forced += usize::from(forced);
        k.per_engine[i] += 1;
        k.longest_restart = k.longest_restart.max(t.elapsed().as_secs_f64());
    }
}

struct Checked<'a> {
    o: &'a Options,
    runs: &'a [ServiceRun],
    services: &'a [Value],
    jobs: &'a [Value],
    events: &'a [Value],
    products: &'a HashMap<i64, &'static str>,
    remote: &'a remote::RemoteState,
    received: &'a receiver::Received,
    failed_deliveries: usize,
    failovers: usize,
    lost_answers: usize,
    kills: &'a Kills,
    peaks: &'a [(&'static str, f64, u32)],
}

/// Compares what the driver asked for with what the engines recorded and what the remote
/// applied, and writes the figures.
fn check(c: Checked<'_>) -> Report {
    let mut r = Report::default();
    let mut line = |s: String| r.lines.push(format!("chaos  {s}"));

    // Jobs per service, in the order they were stored.
    let mut jobs_of: HashMap<i64, Vec<&Value>> = HashMap::new();
    for j in c.jobs {
        jobs_of
            .entry(j["service_id"].as_i64().unwrap_or(-1))
            .or_default()
            .push(j);
    }
    for list in jobs_of.values_mut() {
        list.sort_by_key(|j| j["id"].as_i64());
    }
    let st = c.remote;
    let (effects_per_key, refused, applied_total, effects_by_user) = {
        let mut per_key: HashMap<String, usize> = HashMap::new();
        let mut by_user: HashMap<String, Vec<&'static str>> = HashMap::new();
        for e in &st.applied {
            *per_key.entry(e.key.clone()).or_default() += 1;
            by_user.entry(e.user.clone()).or_default().push(e.action);
        }
        (per_key, st.refused.clone(), st.applied.len(), by_user)
    };

    let mut requested = 0usize;
    let mut by_kind: BTreeMap<&'static str, usize> = BTreeMap::new();
    let (mut once, mut applied_twice, mut unrequested_jobs) = (0usize, 0usize, 0usize);
    let (mut refused_by_api, mut failed_jobs, mut cancelled_jobs) = (0usize, 0usize, 0usize);
    let (mut never_finished, mut done_without_effect, mut unanswered, mut no_job) =
        (0usize, 0usize, 0usize, 0usize);
    let mut failed_applied = 0usize;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples: Vec<String> = Vec::new();
    let mut job_keys: HashMap<String, ()> = HashMap::new();
    let mut out_of_order = 0usize;
    let mut retried = 0usize;
    for run in c.runs {
        let jobs = run
            .id
            .and_then(|id| jobs_of.get(&id))
            .cloned()
            .unwrap_or_default();
        let mut next = jobs.iter();
        let mut expected_effects: Vec<&'static str> = Vec::new();
        for (step, asked) in &run.steps {
            requested += 1;
            *by_kind.entry(step.action()).or_default() += 1;
            match asked {
                Asked::Refused(why) => {
                    refused_by_api += 1;
                    *reasons.entry(short(why)).or_default() += 1;
                    continue;
                }
                Asked::Unanswered(why) => {
                    unanswered += 1;
                    examples.push(format!("{} {}: {why}", run.username, step.action()));
                    continue;
                }
                Asked::Accepted => {}
            }
            let Some(job) = next.next() else {
                no_job += 1;
                examples.push(format!(
                    "{} {}: accepted, but no job",
                    run.username,
                    step.action()
                ));
                continue;
            };
            if job["action"].as_str() != Some(step.action()) {
                no_job += 1;
                examples.push(format!(
                    "{} {}: the job in its place is {}",
                    run.username,
                    step.action(),
                    job["action"]
                ));
                continue;
            }
            let key = job["idempotency_key"].as_str().unwrap_or("").to_string();
            let applied = effects_per_key.get(&key).copied().unwrap_or(0);
            job_keys.insert(key, ());
            if job["attempts"].as_u64().unwrap_or(0) > 1 {
                retried += 1;
            }
            if applied > 1 {
                applied_twice += 1;
                examples.push(format!(
                    "{} {}: applied {applied} times (job {})",
                    run.username,
                    step.action(),
                    job["id"]
                ));
            }
            if applied > 0 {
                expected_effects.push(step.action());
            }
            match job["state"].as_str() {
                Some("done") if applied == 1 => once += 1,
                Some("done") if applied == 0 => {
                    done_without_effect += 1;
                    examples.push(format!(
                        "{} {}: done, but the remote never applied it (job {})",
                        run.username,
                        step.action(),
                        job["id"]
                    ));
                }
                Some("done") => {}
                Some(state @ ("failed" | "cancelled")) => {
                    let why = job["last_error"].as_str().unwrap_or("");
                    if why.is_empty() {
                        never_finished += 1;
                        examples.push(format!(
                            "{} {}: {state} without a reason",
                            run.username,
                            step.action()
                        ));
                    } else {
                        if state == "failed" {
                            failed_jobs += 1;
                        } else {
                            cancelled_jobs += 1;
                        }
                        failed_applied += usize::from(applied == 1);
                        *reasons
                            .entry(format!("{state}: {}", short(why)))
                            .or_default() += 1;
                    }
                }
                other => {
                    never_finished += 1;
                    examples.push(format!(
                        "{} {}: still {} (job {})",
                        run.username,
                        step.action(),
                        other.unwrap_or("?"),
                        job["id"]
                    ));
                }
            }
        }
        let extra = next.count();
        unrequested_jobs += extra;
        if extra > 0 {
            examples.push(format!("{}: {extra} job(s) nobody asked for", run.username));
        }
        let seen = effects_by_user
            .get(&run.username)
            .cloned()
            .unwrap_or_default();
        if seen != expected_effects {
            out_of_order += 1;
            examples.push(format!(
                "{}: the remote applied {seen:?}, the jobs call for {expected_effects:?}",
                run.username
            ));
        }
    }
    let stray_effects = effects_per_key
        .iter()
        .filter(|(k, _)| !job_keys.contains_key(*k))
        .map(|(_, n)| n)
        .sum::<usize>();

    // Outputs and final state, service by service.
    let by_user: HashMap<&str, &Value> = c
        .services
        .iter()
        .filter_map(|s| Some((s["username"].as_str()?, s)))
        .collect();
    let (mut created, mut missing_outputs, mut state_mismatch) = (0usize, 0usize, 0usize);
    let users = &st.users;
    for run in c.runs {
        let Some(s) = by_user.get(run.username.as_str()) else {
            continue;
        };
        let create_done = run
            .id
            .and_then(|id| jobs_of.get(&id))
            .and_then(|j| j.first())
            .is_some_and(|j| j["action"] == "create" && j["state"] == "done");
        if !create_done {
            continue;
        }
        created += 1;
        if s["outputs"]["remote_id"].as_str() != Some(&format!("id-{}", run.username)) {
            missing_outputs += 1;
            examples.push(format!("{}: outputs {}", run.username, s["outputs"]));
        }
        let remote_state = match users.get(&run.username) {
            None => "terminated".to_string(),
            Some(u) if u.suspended => format!("suspended/{}", u.plan),
            Some(u) => format!("active/{}", u.plan),
        };
        let product = s["product_id"]
            .as_i64()
            .and_then(|p| c.products.get(&p))
            .copied()
            .unwrap_or("?");
        let local = match s["status"].as_str() {
            Some("terminated") => "terminated".to_string(),
            Some(st) => format!("{st}/{product}"),
            None => "?".into(),
        };
        if local != remote_state {
            state_mismatch += 1;
            examples.push(format!(
                "{}: Provisio says {local}, the remote {remote_state}",
                run.username
            ));
        }
    }

    // Events and deliveries.
    let rx = c.received;
    let (undelivered, deliveries, duplicates, bad_signatures, distinct) = {
        let undelivered = c
            .events
            .iter()
            .filter(|e| {
                !e["id"]
                    .as_i64()
                    .is_some_and(|id| rx.by_id.contains_key(&format!("evt_{id}")))
            })
            .count();
        let deliveries: u32 = rx.by_id.values().sum();
        let dups: u32 = rx.by_id.values().map(|n| n - 1).sum();
        (
            undelivered,
            deliveries,
            dups,
            rx.bad_signatures,
            rx.by_id.len(),
        )
    };
    let open_jobs = c
        .jobs
        .iter()
        .filter(|j| matches!(j["state"].as_str(), Some("pending" | "running")))
        .count();

    let doubled = applied_twice + refused.len() + stray_effects + unrequested_jobs;
    let lost = no_job + never_finished + done_without_effect + unanswered;
    let failed_with_reason = refused_by_api + failed_jobs + cancelled_jobs;
    let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    line(format!(
        "requested actions               {requested:>6}  ({} services; {})",
        c.runs.len(),
        kinds.join(", ")
    ));
    line(format!(
        "done on the remote exactly once {once:>6}  ({retried} of all jobs needed more than one attempt)"
    ));
    line(format!(
        "doubled                         {doubled:>6}  (applied twice {applied_twice}, sent again after taking effect and refused {}, effects of no job {stray_effects}, jobs nobody asked for {unrequested_jobs})",
        refused.len()
    ));
    line(format!(
        "lost                            {lost:>6}  (accepted without a job {no_job}, never finished {never_finished}, done without an effect {done_without_effect}, requests never answered {unanswered})"
    ));
    let reason_text: Vec<String> = reasons
        .iter()
        .map(|(why, n)| format!("{n}× {why}"))
        .collect();
    line(format!(
        "failed with a reason            {failed_with_reason:>6}  (refused by the API {refused_by_api}, jobs failed {failed_jobs} of which the remote had applied {failed_applied}, cancelled {cancelled_jobs}){}",
        if reason_text.is_empty() { String::new() } else { format!(": {}", reason_text.join("; ")) }
    ));
    line(format!(
        "services missing outputs        {missing_outputs:>6}  (of {created} created; final state differing from the remote's: {state_mismatch})"
    ));
    line(format!(
        "events                          {:>6}  delivered at least once {}, undelivered {undelivered}; {deliveries} deliveries of {distinct} webhook-ids, {duplicates} duplicates removed by webhook-id; bad signatures {bad_signatures}; deliveries failed {}",
        c.events.len(),
        c.events.len() - undelivered,
        c.failed_deliveries
    ));
    line(format!(
        "jobs left open                  {open_jobs:>6}  (of {} jobs)",
        c.jobs.len()
    ));
    let k = c.kills;
    line(format!(
        "kills                           {:>6}  (SIGKILL {}, SIGTERM {} of which {} did not stop within 40 s and were killed; engine-a {}, engine-b {}; longest until answering again {:.1} s)",
        k.sigkill + k.sigterm,
        k.sigkill,
        k.sigterm,
        k.forced,
        k.per_engine[0],
        k.per_engine[1],
        k.longest_restart
    ));
    let mut mem = String::new();
    for (name, mib, starts) in c.peaks {
        let _ = write!(mem, "{name} {mib:.0} MiB over {starts} processes; ");
    }
    line(format!(
        "engine peak memory (VmHWM)      {mem}limit {:.0} MiB",
        c.o.max_rss_mib
    ));
    let (requests, lookups, faults, lookup_failures) =
        (st.requests, st.lookups, &st.faults, st.lookup_failures);
    let fault_total: u64 = faults.values().sum();
    let fault_text: Vec<String> = faults
        .iter()
        .map(|(f, n)| format!("{} {n}", f.name()))
        .collect();
    line(format!(
        "remote                          {requests:>6}  requests ({} changes, {lookups} lookups); {fault_total} changes mistreated ({:.0}%: {}), {lookup_failures} lookups failed; {applied_total} effects applied",
        requests - lookups,
        fault_total as f64 * 100.0 / (requests - lookups).max(1) as f64,
        fault_text.join(", ")
    ));
    line(format!(
        "driver                          {:>6}  requests failed over to the other engine, {} answers lost and resolved by looking",
        c.failovers, c.lost_answers
    ));
    for e in examples.iter().take(12) {
        line(format!("  e.g. {e}"));
    }
    if !refused.is_empty() {
        line(format!(
            "  refused by the remote, e.g. {:?}",
            &refused[..refused.len().min(5)]
        ));
    }

    r.figures = BTreeMap::from([
        ("requested", requested),
        ("done_once", once),
        ("doubled", doubled),
        ("lost", lost),
        ("failed_with_reason", failed_with_reason),
        ("missing_outputs", missing_outputs),
        ("events", c.events.len()),
        ("undelivered", undelivered),
        ("duplicates", duplicates as usize),
        ("open_jobs", open_jobs),
        ("kills", k.sigkill + k.sigterm),
        ("sigkills", k.sigkill),
    ]);
    let mut fail = |ok: bool, what: String| {
        if !ok {
            r.failures.push(what);
        }
    };
    fail(doubled == 0, format!("{doubled} actions doubled"));
    fail(lost == 0, format!("{lost} actions lost"));
    fail(
        missing_outputs == 0,
        format!("{missing_outputs} services missing outputs"),
    );
    fail(
        state_mismatch == 0,
        format!("{state_mismatch} services differ from the remote"),
    );
    fail(
        out_of_order == 0,
        format!("{out_of_order} services' effects differ from their jobs"),
    );
    fail(open_jobs == 0, format!("{open_jobs} jobs left open"));
    fail(
        undelivered == 0,
        format!("{undelivered} events never delivered"),
    );
    fail(
        bad_signatures == 0,
        format!("{bad_signatures} deliveries badly signed"),
    );
    fail(
        k.sigkill + k.sigterm >= c.o.min_kills,
        format!("only {} kills", k.sigkill + k.sigterm),
    );
    fail(
        requested >= c.o.actions,
        format!("only {requested} actions requested"),
    );
    for (name, mib, _) in c.peaks {
        fail(
            *mib <= c.o.max_rss_mib,
            format!("{name} reached {mib:.0} MiB (limit {:.0})", c.o.max_rss_mib),
        );
    }
    r
}

/// The gist of a reason: its first 80 characters, without ids that differ per service.
fn short(why: &str) -> String {
    let text: String = why.chars().take(80).collect();
    text.split_whitespace()
        .map(|w| {
            if w.chars().any(|c| c.is_ascii_digit()) && w.len() > 4 {
                "…"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use driver::Step;
    use remote::{Effect, RemoteState, User};

    /// One service, created and suspended, as a clean run leaves it; each test breaks one
    /// thing and expects the check to say so.
    struct World {
        runs: Vec<ServiceRun>,
        jobs: Vec<Value>,
        services: Vec<Value>,
        events: Vec<Value>,
        remote: RemoteState,
        received: receiver::Received,
    }

    fn world() -> World {
        let mut remote = RemoteState::new(0);
        remote.users.insert(
            "c00000".into(),
            User {
                suspended: true,
                plan: "basic".into(),
            },
        );
        for (key, action) in [("k1", "create"), ("k2", "suspend")] {
            remote.applied.push(Effect {
                key: key.into(),
                action,
                user: "c00000".into(),
            });
        }
        let mut received = receiver::Received::default();
        received.by_id.insert("evt_5".into(), 2);
        World {
            runs: vec![ServiceRun {
                username: "c00000".into(),
                id: Some(1),
                steps: vec![
                    (Step::Create, Asked::Accepted),
                    (Step::Suspend, Asked::Accepted),
                ],
            }],
            jobs: vec![
                json!({"id": 1, "service_id": 1, "action": "create", "state": "done", "idempotency_key": "k1", "attempts": 1}),
                json!({"id": 2, "service_id": 1, "action": "suspend", "state": "done", "idempotency_key": "k2", "attempts": 3}),
            ],
            services: vec![json!({"id": 1, "username": "c00000", "status": "suspended",
                                  "product_id": 10, "outputs": {"remote_id": "id-c00000"}})],
            events: vec![json!({"id": 5})],
            remote,
            received,
        }
    }

    /// One way of breaking a clean world.
    type Break = fn(&mut World);

    fn checked(w: &World) -> Report {
        let o = Options {
            actions: 2,
            rate: 1.0,
            concurrency: 1,
            kill_every: Duration::from_secs(1),
            min_kills: 0,
            sigkill_share: 0.5,
            seed: 0,
            pg_url: String::new(),
            provisio_bin: PathBuf::new(),
            max_rss_mib: 100.0,
            drain_limit: Duration::from_secs(1),
            slow: Duration::from_secs(1),
            dir: None,
        };
        check(Checked {
            o: &o,
            runs: &w.runs,
            services: &w.services,
            jobs: &w.jobs,
            events: &w.events,
            products: &HashMap::from([(10, "basic")]),
            remote: &w.remote,
            received: &w.received,
            failed_deliveries: 0,
            failovers: 0,
            lost_answers: 0,
            kills: &Kills::default(),
            peaks: &[("engine-a", 40.0, 1)],
        })
    }

    #[test]
    fn a_clean_run_holds_and_counts_a_duplicate_delivery() {
        let r = checked(&world());
        assert!(r.failures.is_empty(), "{r}");
        assert_eq!(r.figures["done_once"], 2);
        assert_eq!(r.figures["duplicates"], 1);
    }

    #[test]
    fn each_broken_invariant_is_reported() {
        let cases: Vec<(&str, Break)> = vec![
            ("doubled", |w| {
                w.remote.applied.push(w.remote.applied[1].clone())
            }),
            ("doubled", |w| {
                w.remote.refused.push("suspend c00000 (k2): 409".into())
            }),
            ("doubled", |w| {
                w.jobs.push(json!({"id": 3, "service_id": 1, "action": "suspend", "state": "done", "idempotency_key": "k3"}))
            }),
            ("lost", |w| w.jobs[1]["state"] = json!("running")),
            ("lost", |w| {
                w.remote.applied.pop();
                w.remote.users.get_mut("c00000").expect("user").suspended = false;
            }),
            ("lost", |w| {
                w.runs[0].steps[1].1 = Asked::Unanswered("down".into())
            }),
            ("missing_outputs", |w| w.services[0]["outputs"] = json!({})),
            ("undelivered", |w| w.received.by_id.clear()),
            ("open_jobs", |w| w.jobs[1]["state"] = json!("pending")),
        ];
        for (figure, breaks) in cases {
            let mut w = world();
            breaks(&mut w);
            let r = checked(&w);
            assert!(r.figures[figure] > 0, "{figure} not counted:\n{r}");
            assert!(!r.failures.is_empty(), "{figure} not reported:\n{r}");
        }
        // A job that failed with its error is a reason, not a loss.
        let mut w = world();
        w.jobs[1]["state"] = json!("failed");
        w.jobs[1]["last_error"] = json!("suspend: HTTP 500");
        w.remote.applied.pop();
        w.remote.users.get_mut("c00000").expect("user").suspended = false;
        w.services[0]["status"] = json!("active");
        let r = checked(&w);
        assert!(r.failures.is_empty(), "{r}");
        assert_eq!(r.figures["failed_with_reason"], 1);
    }
}
