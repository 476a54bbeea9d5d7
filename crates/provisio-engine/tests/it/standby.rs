//! Jobs held on standby: begun in the places finished calls free, never past a server's
//! `max_concurrent` across nodes, and each action called once.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use provisio_core::job::JobState;
use provisio_core::module::{ActionReply, ActionRequest, ModuleError};
use serde_json::json;

use crate::harness::{fresh_pg_url, Script, TestEngine};

const JOBS: usize = 240;

/// Holds every create for `hold`, counting how many are in a call at once.
struct Counted {
    hold: Duration,
    now: AtomicUsize,
    peak: AtomicUsize,
}

#[async_trait::async_trait]
impl Script for Counted {
    async fn call(&self, req: &ActionRequest) -> Option<Result<ActionReply, ModuleError>> {
        if req.action.is_read_only() {
            return None;
        }
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(n, SeqCst);
        tokio::time::sleep(self.hold).await;
        self.now.fetch_sub(1, SeqCst);
        Some(Ok(ActionReply::default()))
    }
}

/// Two nodes on one database, a server of 3 places, 240 calls of 6 ms (long enough for
/// jobs to be held ahead, short enough for claims, handings over and outcome writes to
/// cross often): never more than 3 calls at once, every create called once, all done.
async fn two_nodes_keep_the_cap(t: TestEngine) {
    t.engine
        .update_server(
            &provisio_engine::input::RecordRef::Name("edge-1".into()),
            provisio_engine::input::ServerPatch {
                max_concurrent: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let counted = Arc::new(Counted {
        hold: Duration::from_millis(6),
        now: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
    });
    assert!(t.module.script.set(counted.clone()).is_ok());
    let mut services = Vec::new();
    for i in 0..JOBS {
        services.push(t.order("auto", &format!("sb{i}"), json!({})).await);
    }
    let second = t.another_engine(|o| o.jobs.standby = 8);
    let a = provisio_engine::worker::spawn(t.engine.clone(), "node-a".into());
    let b = provisio_engine::worker::spawn(second, "node-b".into());
    // Jobs held ahead are leased (`running`) without a place: more running than places
    // shows they were held.
    let most = Arc::new(AtomicUsize::new(0));
    let watching = {
        let (engine, most) = (t.engine.clone(), most.clone());
        tokio::spawn(async move {
            let running = provisio_store::JobFilter {
                state: Some(JobState::Running),
                ..Default::default()
            };
            loop {
                if let Ok(page) = engine
                    .list_jobs(&running, provisio_core::page::PageRequest::first(100))
                    .await
                {
                    most.fetch_max(page.items.len(), SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let jobs = t
        .engine
        .list_jobs(
            &Default::default(),
            provisio_core::page::PageRequest::first(500),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(jobs.len(), JOBS);
    for j in &jobs {
        let done = t
            .engine
            .wait_for_job(j.id, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(done.state, JobState::Done, "{done:?}");
    }
    a.shutdown().await;
    b.shutdown().await;
    watching.abort();
    assert!(
        most.load(SeqCst) > 3,
        "no job was ever held ahead: at most {} running",
        most.load(SeqCst)
    );
    assert!(
        counted.peak.load(SeqCst) <= 3,
        "{} calls at once on a server of 3 places",
        counted.peak.load(SeqCst)
    );
    let calls = t.calls();
    for s in &services {
        let n = calls
            .iter()
            .filter(|c| c.0 == "create" && c.1 == s.username.as_str())
            .count();
        assert_eq!(n, 1, "{}'s create called {n} times", s.username.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_keeps_the_cap_and_calls_once_on_sqlite() {
    two_nodes_keep_the_cap(TestEngine::with_options(|o| o.jobs.standby = 8).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_keeps_the_cap_and_calls_once_on_postgres() {
    let Some(url) = fresh_pg_url().await else {
        return;
    };
    two_nodes_keep_the_cap(TestEngine::on_postgres(&url, |o| o.jobs.standby = 8).await).await;
}
