//! Nothing lost, nothing doubled: `provisio serve` is killed with SIGKILL in the middle of
//! 2,000 create actions run through the `script` module (the example module, which logs
//! every remote effect with its idempotency key), restarted, and every service ends active
//! with exactly one remote create.

use std::collections::HashMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const SERVICES: usize = 2000;

fn start(dir: &Path, log: &str) -> (Child, String) {
    crate::spawn_serve(dir, &["--config", "provisio.toml"], log)
}

fn effects(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn get_json(http: &reqwest::Client, url: &str, key: &str) -> Value {
    http.get(url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn all_services(http: &reqwest::Client, base: &str, key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = get_json(
            http,
            &format!("{base}/v1/services?limit=1000&cursor={cursor}"),
            key,
        )
        .await;
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_loses_nothing_and_doubles_nothing() {
    let dir = crate::dir_with_example_module();
    std::fs::write(
        dir.path().join("provisio.toml"),
        r#"
database_url = "sqlite://provisio.db"
modules_dir = "modules"

[jobs]
retry_schedule = ["200ms", "500ms", "1s", "2s", "5s"]
lease_seconds = 3
max_in_flight = 16
poll_interval_ms = 50

[[servers]]
name = "box"
module = "script"
max_concurrent = 16
settings = { executable = "example-accounts.py", timeout_seconds = 30 }

[[products]]
name = "plan"
module = "script"
settings = { package = "plan" }
"#,
    )
    .unwrap();
    let (mut first, addr) = start(dir.path(), "serve-1.log");
    let base = format!("http://{addr}");
    let key = std::fs::read_to_string(dir.path().join("provisio.admin-key"))
        .unwrap()
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    let client: Value = http
        .post(format!("{base}/v1/clients"))
        .bearer_auth(&key)
        .json(&json!({"name": "Crash Test", "email": "crash@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // Order 2,000 services (each one's create job is stored with it) from 8 tasks at once.
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let (http, base, key, cid) = (
            http.clone(),
            base.clone(),
            key.clone(),
            client["id"].clone(),
        );
        tasks.spawn(async move {
            for i in (t..SERVICES).step_by(8) {
                let r = http
                    .post(format!("{base}/v1/services"))
                    .bearer_auth(&key)
                    .json(&json!({"client_id": cid, "product": "plan", "username": format!("crash{i:04}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }

    // Kill it hard once a good part of the creates reached the remote, none of them all.
    let effects_file = dir.path().join("modules").join("example-effects.jsonl");
    let deadline = Instant::now() + Duration::from_secs(300);
    while effects(&effects_file).len() < SERVICES / 4 {
        assert!(Instant::now() < deadline, "creates did not progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let at_kill = effects(&effects_file).len();
    assert!(at_kill < SERVICES, "killed before the end ({at_kill})");

    // Restart on the same database: the dead process's leases expire, its jobs are looked
    // up, and the rest run.
    let (mut second, addr) = start(dir.path(), "serve-2.log");
    let base = format!("http://{addr}");
    // Generous: a loaded CI machine runs the Python module slowly; the test still ends by itself.
    let deadline = Instant::now() + Duration::from_secs(900);
    let services = loop {
        let s = all_services(&http, &base, &key).await;
        if s.iter().all(|x| x["status"] == "active") {
            break s;
        }
        let left = s.iter().filter(|x| x["status"] != "active").count();
        assert!(
            Instant::now() < deadline,
            "{left} services still not active"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(services.len(), SERVICES, "none lost");

    // Exactly one remote create per service.
    let mut creates: HashMap<String, usize> = HashMap::new();
    for e in effects(&effects_file) {
        assert_eq!(e["action"], "create");
        *creates
            .entry(e["username"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(creates.len(), SERVICES);
    let doubled: Vec<_> = creates.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "created twice: {doubled:?}");

    // Every create job is done; jobs the killed process held were looked up, not re-sent.
    for state in ["failed", "pending", "running"] {
        let jobs = get_json(&http, &format!("{base}/v1/jobs?state={state}"), &key).await;
        assert!(
            jobs["items"].as_array().unwrap().is_empty(),
            "{state}: {jobs}"
        );
    }
    eprintln!("killed after {at_kill} of {SERVICES} remote creates; all {SERVICES} active after restart, each created once");
    second.kill().unwrap();
    second.wait().unwrap();
}
