//! A rolling restart on PostgreSQL: `provisio serve` gets SIGTERM during a 6 s create while
//! its lease is 2 s, and a second node starts at once. The stopping node keeps its lease
//! through the drain and finishes the call, so the remote sees one create, not two.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A slow remote behind the `script` module: a create takes `delay_seconds`, then leaves
/// one effect line; a lookup finds an account once its create took effect.
const MODULE: &str = r#"#!/usr/bin/env python3
import json, os, sys, time
req = json.load(sys.stdin)
here = os.path.dirname(os.path.abspath(__file__))
log = os.path.join(here, "effects.jsonl")
user = (req.get("service") or {}).get("username")
def created():
    if not os.path.exists(log):
        return False
    with open(log) as f:
        return any(json.loads(l).get("username") == user for l in f if l.strip())
if req["action"] == "lookup":
    account = {"username": user, "status": "active"} if created() else None
    print(json.dumps({"ok": True, "account": account}))
    sys.exit(0)
if req["action"] == "create":
    time.sleep(float(req["server"]["settings"]["delay_seconds"]))
    with open(log, "a") as f:
        f.write(json.dumps({"action": "create", "username": user,
                            "key": req["idempotency_key"], "pid": os.getppid()}) + "\n")
print(json.dumps({"ok": True}))
"#;

fn fresh_database() -> String {
    let admin = std::env::var("PROVISIO_TEST_PG_URL").expect(
        "PROVISIO_TEST_PG_URL is not set: run scripts/test, which starts a throwaway PostgreSQL",
    );
    let name = format!(
        "rolling_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let out = Command::new("psql")
        .arg(&admin)
        .args(["-q", "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match admin.rfind('/') {
        Some(i) => format!("{}/{name}", &admin[..i]),
        None => panic!("PROVISIO_TEST_PG_URL has no database part: {admin}"),
    }
}

fn effects(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("modules").join("effects.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_long_create_never_doubles_it() {
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("modules");
    std::fs::create_dir(&modules).unwrap();
    let script = modules.join("slow.py");
    std::fs::write(&script, MODULE).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let db = fresh_database();
    std::fs::write(
        dir.path().join("provisio.toml"),
        format!(
            r#"
database_url = "{db}"
modules_dir = "modules"

[jobs]
retry_schedule = ["200ms", "500ms", "1s"]
lease_seconds = 2
drain_seconds = 30
poll_interval_ms = 50

[[servers]]
name = "slow"
module = "script"
settings = {{ executable = "slow.py", timeout_seconds = 30, delay_seconds = 6 }}

[[products]]
name = "plan"
module = "script"
"#
        ),
    )
    .unwrap();
    let (mut first, addr) = crate::spawn_serve(dir.path(), &["--config", "provisio.toml"], "a.log");
    let base = format!("http://{addr}");
    let key = std::fs::read_to_string(dir.path().join("provisio.admin-key"))
        .unwrap()
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    let client: Value = post(
        "/v1/clients",
        json!({"name": "Roll", "email": "roll@example.com"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let service: Value = post(
        "/v1/services",
        json!({"client_id": client["id"], "product": "plan", "username": "roll1"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    // Well inside the 6 s call, and past the point where the first node claimed it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let term = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let (mut second, addr2) =
        crate::spawn_serve(dir.path(), &["--config", "provisio.toml"], "b.log");

    // The first node exits by itself once its call is over.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = first.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the first node did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "the first node exited with {status}");
    let base2 = format!("http://{addr2}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s: Value = http
            .get(format!("{base2}/v1/services/{}", service["id"]))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["status"] == "active" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the service never became active: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several leases later, the second node has still not created it again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let seen = effects(dir.path());
    assert_eq!(seen.len(), 1, "the remote saw: {seen:?}");
    let jobs: Value = http
        .get(format!("{base2}/v1/services/{}/jobs", service["id"]))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = &jobs["items"][0];
    assert_eq!(job["state"], "done", "{jobs}");
    assert_eq!(job["attempts"], 1, "{jobs}");
    let _ = second.kill();
    let _ = second.wait();
}
