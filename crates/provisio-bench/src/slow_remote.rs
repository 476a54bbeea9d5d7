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
/// each one: a sleep still ends a little past its deadline, and that belongs to the remote.
pub struct SlowRemote {
    base: String,
    held_us: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    /// When each request came in and was answered.
    calls: Arc<std::sync::Mutex<Vec<(Instant, Instant)>>>,
}

impl SlowRemote {
    async fn start(delay: Duration) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let held_us = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (h, r, c) = (held_us.clone(), requests.clone(), calls.clone());
        let app = axum::Router::new().fallback(move || {
            let (h, r, c) = (h.clone(), r.clone(), c.clone());
            async move {
                let t = Instant::now();
                // tokio's timers fire on whole milliseconds, late by up to one and more
                // under load (0.8-1.7 ms past 20 ms here, 4-8% of the bound): the figure
                // would measure the timer, not the queue. A blocking thread's sleep ends
                // within tens of microseconds of its deadline, as a remote with a steady
                // answer time would. Slots are at most a few dozen, so are the threads.
                let _ = tokio::task::spawn_blocking(move || {
                    std::thread::sleep(delay.saturating_sub(t.elapsed()));
                })
                .await;
                h.fetch_add(t.elapsed().as_micros() as u64, Relaxed);
                r.fetch_add(1, Relaxed);
                c.lock().unwrap().push((t, Instant::now()));
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
            calls,
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

    /// The third line: where the time past the bound went, from the remote's own record of
    /// each call: before the first call (start-up and first claim), after the last answer
    /// (the last outcomes written, the bench's look for the end), and the slots left idle
    /// in between, per call.
    pub fn gaps_line(&self, label: &str, start: Instant, secs: f64) -> String {
        let calls = self.remote.calls.lock().unwrap();
        let (Some(first), Some(last)) = (
            calls.iter().map(|c| c.0).min(),
            calls.iter().map(|c| c.1).max(),
        ) else {
            return format!("{label} no call reached the remote");
        };
        let span = last.duration_since(first).as_secs_f64();
        let busy: f64 = calls
            .iter()
            .map(|c| c.1.duration_since(c.0).as_secs_f64())
            .sum();
        let idle_ms = (span * self.slots - busy).max(0.0) / calls.len() as f64 * 1000.0;
        let after = (secs - last.duration_since(start).as_secs_f64()).max(0.0);
        format!(
            "{label} the first call came {:.1} ms after the start, the last answer {:.1} ms before the end; between them the slots were busy {:.1}% of the time, {idle_ms:.2} ms idle per call",
            first.duration_since(start).as_secs_f64() * 1000.0,
            after * 1000.0,
            100.0 * busy / (span * self.slots).max(f64::MIN_POSITIVE),
        )
    }

    /// N·L/(S·C) with the nominal latency.
    pub fn bound(&self, n: usize) -> f64 {
        n as f64 * self.latency_ms as f64 / 1000.0 / self.slots
    }
}
