//! The set-up of the latency-bound benches (`latency`, `group`): a local HTTP remote that
//! answers after a fixed delay, an engine whose `http` servers all point at it, and the
//! bound N·L/(S·C) that latency and concurrency alone impose, reported beside each result.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provisio_core::{ClientId, ProductId, ServerId};
use provisio_engine::Engine;
use serde_json::json;

use crate::setup;

/// A remote that answers every request after `delay`, and keeps the time it really held
/// each one: a timer sleeps a little past its deadline, and that belongs to the remote.
pub struct SlowRemote {
    base: String,
    held_us: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

impl SlowRemote {
    async fn start(delay: Duration) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let held_us = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let (h, r) = (held_us.clone(), requests.clone());
        let app = axum::Router::new().fallback(move || {
            let (h, r) = (h.clone(), r.clone());
            async move {
                let t = Instant::now();
                tokio::time::sleep(delay).await;
                h.fetch_add(t.elapsed().as_micros() as u64, Relaxed);
                r.fetch_add(1, Relaxed);
                axum::Json(json!({"id": "x"}))
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base: format!("http://{addr}"),
            held_us,
            requests,
        })
    }

    /// The mean time the remote held a request, in milliseconds.
    fn mean_ms(&self) -> f64 {
        let n = self.requests.load(Relaxed).max(1);
        self.held_us.load(Relaxed) as f64 / n as f64 / 1000.0
    }
}

/// A fresh engine (SQLite, or the PostgreSQL database `db` names) with `servers` `http` servers of `concurrency` slots each, all
/// pointing at one [`SlowRemote`] whose `action` answers after `latency_ms`.
pub struct SlowBench {
    _dir: tempfile::TempDir,
    pub engine: Arc<Engine>,
    remote: SlowRemote,
    pub client: ClientId,
    pub servers: Vec<ServerId>,
    pub product: ProductId,
    latency_ms: u64,
    slots: f64,
}

impl SlowBench {
    pub async fn start(
        latency_ms: u64,
        servers: usize,
        concurrency: u32,
        action: &str,
        db: Option<&str>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let engine = match db {
            Some(url) => setup::engine(&setup::config(dir.path(), url, "")?).await?,
            None => setup::sqlite_engine(dir.path(), "").await?,
        };
        let remote = SlowRemote::start(Duration::from_millis(latency_ms)).await?;
        let settings = json!({
            "base_url": remote.base,
            "timeout_seconds": 30,
            "actions": {action: {"method": "POST", "url": format!("/{action}"), "body": {"userName": "{{ service.username }}"}}},
        });
        let (client, ids, product) =
            setup::seed(&engine, "http", servers, concurrency, settings).await?;
        Ok(Self {
            _dir: dir,
            engine,
            remote,
            client,
            servers: ids,
            product,
            latency_ms,
            slots: servers as f64 * f64::from(concurrency),
        })
    }

    /// The second line of a result: the bound again with the latency the remote really
    /// kept, and the CPU used.
    pub fn held_line(&self, label: &str, n: usize, secs: f64, cpu: &str) -> String {
        let held = self.remote.mean_ms();
        let bound = n as f64 * held / 1000.0 / self.slots;
        format!(
            "{label} the remote held each request {held:.2} ms on average (timer overshoot); with that L the bound is {bound:.2}s, ratio {:.3}; {cpu}",
            secs / bound
        )
    }

    /// N·L/(S·C) with the nominal latency.
    pub fn bound(&self, n: usize) -> f64 {
        n as f64 * self.latency_ms as f64 / 1000.0 / self.slots
    }
}
