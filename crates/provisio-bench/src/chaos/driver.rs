//! The chaos run's driver: a REST client that talks to whichever engine is up, and the
//! billing-system side of the run, which orders services and asks for suspends,
//! unsuspends, package changes and terminates in valid sequences, paced over the run.
//!
//! A request whose answer was lost (the engine died after reading it) may or may not have
//! been stored; the driver never sends it blindly again, but first looks whether it was
//! (the service by username, or one job more on the service than it knows of), as a
//! billing system that must not order twice would.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// One step of a service's life, as the driver asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Create,
    Suspend,
    Unsuspend,
    ChangePackage(&'static str),
    Terminate,
}

impl Step {
    /// The job's action name.
    pub fn action(self) -> &'static str {
        match self {
            Step::Create => "create",
            Step::Suspend => "suspend",
            Step::Unsuspend => "unsuspend",
            Step::ChangePackage(_) => "change_package",
            Step::Terminate => "terminate",
        }
    }
}

pub const PRODUCTS: [&str; 2] = ["basic", "pro"];

/// A valid life for one service: create, then a random walk of suspends, unsuspends and
/// package changes, and a terminate at the end for about half of them.
pub fn plan(rng: &mut StdRng) -> Vec<Step> {
    let mut steps = vec![Step::Create];
    let (mut suspended, mut product) = (false, 0usize);
    for _ in 0..rng.gen_range(2..=6) {
        let change = rng.gen_bool(0.35);
        if change {
            product = 1 - product;
            steps.push(Step::ChangePackage(PRODUCTS[product]));
        } else if suspended {
            suspended = false;
            steps.push(Step::Unsuspend);
        } else {
            suspended = true;
            steps.push(Step::Suspend);
        }
    }
    if rng.gen_bool(0.5) {
        steps.push(Step::Terminate);
    }
    steps
}

/// What became of one requested step.
#[derive(Clone, Debug)]
pub enum Asked {
    /// Stored: a job exists for it.
    Accepted,
    /// Refused by the API, with its answer.
    Refused(String),
    /// The driver could not get an answer at all (every engine down for too long).
    Unanswered(String),
}

#[derive(Clone, Debug)]
pub struct ServiceRun {
    pub username: String,
    pub id: Option<i64>,
    pub steps: Vec<(Step, Asked)>,
}

/// Failures of a request the driver cannot resolve by itself.
#[derive(Debug)]
enum SendError {
    /// Possibly stored: the request went out and no answer came back.
    Lost(String),
    /// No engine took the connection for too long.
    Down(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Lost(e) => write!(f, "sent, but the answer was lost: {e}"),
            SendError::Down(e) => f.write_str(e),
        }
    }
}

/// REST calls to whichever engine answers.
#[derive(Clone)]
pub struct Api {
    bases: Arc<Vec<String>>,
    key: String,
    http: reqwest::Client,
    next: Arc<AtomicUsize>,
    /// Requests answered after another engine refused the connection.
    pub failovers: Arc<AtomicUsize>,
    /// Requests whose answer was lost, resolved by looking.
    pub lost_answers: Arc<AtomicUsize>,
}

impl Api {
    pub fn new(bases: Vec<String>, key: String) -> anyhow::Result<Self> {
        Ok(Self {
            bases: Arc::new(bases),
            key,
            // Longer than the server's own request bound, so an answer is never given up
            // while the engine may still store the request.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .pool_max_idle_per_host(8)
                .build()?,
            next: Arc::default(),
            failovers: Arc::default(),
            lost_answers: Arc::default(),
        })
    }

    /// One request to the first engine that takes the connection, trying each in turn
    /// for up to two minutes. 503 (the engine is busy or stopping) counts as not taken.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), SendError> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut tried = 0usize;
        loop {
            let i = self.next.fetch_add(1, Relaxed) % self.bases.len();
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.bases[i]))
                .bearer_auth(&self.key);
            if let Some(b) = body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match resp.text().await {
                        // 503: beyond the server's request bounds, or stopping; not stored.
                        Ok(text) if status != 503 => {
                            if tried > 0 {
                                self.failovers.fetch_add(1, Relaxed);
                            }
                            let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
                            return Ok((status, v));
                        }
                        Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        Err(e) if method != reqwest::Method::GET => {
                            return Err(SendError::Lost(format!("the answer was cut: {e}")))
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                // Nothing was sent: another engine may take it.
                Err(e) if e.is_connect() => {
                    tried += 1;
                    if tried.is_multiple_of(self.bases.len()) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                // A read is safe to repeat.
                Err(_) if method == reqwest::Method::GET => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(SendError::Lost(format!("no answer: {e}"))),
            }
            if Instant::now() > deadline {
                return Err(SendError::Down(format!(
                    "no engine answered {method} {path} within 120 s"
                )));
            }
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        match self.send(reqwest::Method::GET, path, None).await {
            Ok((200, v)) => Ok(v),
            Ok((status, v)) => bail!("GET {path}: {status} {v}"),
            Err(e) => bail!("GET {path}: {e}"),
        }
    }

    /// A write whose answer must arrive; for set-up, before any engine is killed.
    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        match self.send(reqwest::Method::POST, path, Some(&body)).await {
            Ok((200..=299, v)) => Ok(v),
            Ok((status, v)) => bail!("POST {path}: {status} {v}"),
            Err(e) => bail!("POST {path}: {e}"),
        }
    }

    /// Every item of a listing, following `next_cursor`.
    pub async fn all(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("{path}{sep}limit=1000&cursor={c}"),
                None => format!("{path}{sep}limit=1000"),
            };
            let page = self.get(&url).await?;
            let items = page["items"]
                .as_array()
                .ok_or_else(|| anyhow!("{url}: no items in {page}"))?;
            out.extend(items.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return Ok(out),
            }
        }
    }
}

/// What the driver shares with its tasks.
pub struct Driver {
    pub api: Api,
    pub client_id: i64,
    /// One permit per action, handed out at the run's pace.
    pub pace: tokio::sync::Mutex<tokio::time::Interval>,
}

impl Driver {
    /// Runs one service's life; never fails, every problem is recorded on its steps.
    pub async fn run_service(&self, username: String, steps: Vec<Step>) -> ServiceRun {
        let mut run = ServiceRun {
            username,
            id: None,
            steps: Vec::new(),
        };
        // Jobs stored for this service so far, to tell whether a lost request was stored.
        let mut jobs = 0usize;
        for step in steps {
            self.pace.lock().await.tick().await;
            let asked = match (step, run.id) {
                (Step::Create, _) => match self.order(&run.username).await {
                    Ok(id) => {
                        run.id = Some(id);
                        Asked::Accepted
                    }
                    Err(e) => e,
                },
                (_, None) => Asked::Refused("the order was not placed".into()),
                (step, Some(id)) => self.act(id, step, jobs).await,
            };
            if matches!(asked, Asked::Accepted) {
                jobs += 1;
                if let (Step::ChangePackage(_), Some(id)) = (step, run.id) {
                    // The API checks a package change against the service's product, not
                    // the one a queued change will give it; so, like a billing system
                    // would, wait for one change before asking for the next.
                    self.settle(id).await;
                }
            }
            run.steps.push((step, asked));
        }
        run
    }

    /// Waits (bounded) until the service has no open job.
    async fn settle(&self, id: i64) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            match self.api.all(&format!("/v1/services/{id}/jobs")).await {
                Ok(jobs)
                    if !jobs
                        .iter()
                        .any(|j| matches!(j["state"].as_str(), Some("pending" | "running"))) =>
                {
                    return
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    async fn order(&self, username: &str) -> Result<i64, Asked> {
        let body =
            json!({"client_id": self.client_id, "product": PRODUCTS[0], "username": username});
        loop {
            match self
                .api
                .send(reqwest::Method::POST, "/v1/services", Some(&body))
                .await
            {
                Ok((201, v)) => return v["id"].as_i64().ok_or(Asked::Refused(v.to_string())),
                Ok((status, v)) => return Err(Asked::Refused(problem_text(status, &v))),
                Err(SendError::Down(e)) => return Err(Asked::Unanswered(e)),
                Err(SendError::Lost(_)) => {
                    self.api.lost_answers.fetch_add(1, Relaxed);
                    let found = self
                        .api
                        .get(&format!("/v1/services?username={username}"))
                        .await
                        .map_err(|e| Asked::Unanswered(e.to_string()))?;
                    if let Some(id) = found["items"]
                        .as_array()
                        .and_then(|a| a.first())
                        .and_then(|s| s["id"].as_i64())
                    {
                        return Ok(id);
                    }
                }
            }
        }
    }

    async fn act(&self, id: i64, step: Step, known_jobs: usize) -> Asked {
        let (path, body) = match step {
            Step::Create => unreachable!("orders go through order()"),
            Step::Suspend => ("suspend", json!({})),
            Step::Unsuspend => ("unsuspend", json!({})),
            Step::ChangePackage(p) => ("change-package", json!({"product": p})),
            Step::Terminate => ("terminate", json!({})),
        };
        let path = format!("/v1/services/{id}/{path}");
        loop {
            match self
                .api
                .send(reqwest::Method::POST, &path, Some(&body))
                .await
            {
                Ok((200..=299, _)) => return Asked::Accepted,
                Ok((status, v)) => return Asked::Refused(problem_text(status, &v)),
                Err(SendError::Down(e)) => return Asked::Unanswered(e),
                Err(SendError::Lost(_)) => {
                    self.api.lost_answers.fetch_add(1, Relaxed);
                    match self.api.all(&format!("/v1/services/{id}/jobs")).await {
                        Ok(jobs) if jobs.len() > known_jobs => return Asked::Accepted,
                        Ok(_) => {}
                        Err(e) => return Asked::Unanswered(e.to_string()),
                    }
                }
            }
        }
    }
}

/// Every service's life, from the seed, until they hold at least `actions` steps.
pub fn plans(seed: u64, actions: usize) -> Vec<(String, Vec<Step>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut total = 0;
    while total < actions {
        let steps = plan(&mut rng);
        total += steps.len();
        out.push((format!("c{:05}", out.len()), steps));
    }
    out
}

/// A refusal in a few words: the status and the problem's detail (or its body).
fn problem_text(status: u16, v: &Value) -> String {
    match v["detail"].as_str() {
        Some(d) => format!("{status}: {d}"),
        None => format!("{status}: {v}"),
    }
}
