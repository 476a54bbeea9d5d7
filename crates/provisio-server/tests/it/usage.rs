//! Usage end to end: a real `script` executable and a real local HTTP remote report usage in
//! pages; the sync puts it on the right services (recurring against the product's limit,
//! top-ups drawn only beyond it), announces exceeding once, and a product policy suspends.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_field_error, spawn_app_with, Db, TestApp};

pub fn python() -> String {
    std::env::var("PROVISIO_TEST_PYTHON").expect(
        "PROVISIO_TEST_PYTHON is not set: run scripts/test, which installs the Python test peers",
    )
}

/// Writes the test remote into `dir` as `remote.py`.
pub fn write_remote(dir: &Path) {
    let p = dir.join("remote.py");
    let body = format!("#!{}\n{}", python(), include_str!("usage_remote.py"));
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Replaces the remote's file in one step, so a script running meanwhile reads either the
/// old or the new state, never half of one.
pub fn write_atomic(file: &Path, text: String) {
    let tmp = file.with_extension("test.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

pub fn write_accounts(file: &Path, accounts: Value) {
    write_atomic(file, json!({ "accounts": accounts }).to_string());
}

/// The lock `usage_remote.py` holds while it reads and rewrites the accounts file, held by a
/// helper process until dropped (std's `File::lock` is newer than the workspace's MSRV).
pub struct RemoteLock(std::process::Child);

impl RemoteLock {
    pub fn take(file: &Path) -> RemoteLock {
        use std::io::BufRead;
        let mut child = std::process::Command::new(python())
            .arg("-c")
            .arg("import fcntl, sys\nl = open(sys.argv[1], 'w')\nfcntl.flock(l, fcntl.LOCK_EX)\nprint('locked', flush=True)\nsys.stdin.read()")
            .arg(format!("{}.lock", file.display()))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked", "the remote's lock was not taken");
        RemoteLock(child)
    }
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        // Closing its stdin ends the helper, which releases the lock.
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// Sets one account's use of `data` on the remote, keeping what the remote changed itself.
/// Under the remote's lock: an action running meanwhile (the suspend a usage policy queued)
/// reads and rewrites the file too, and would otherwise write the old use back over this.
fn set_data(file: &Path, user: &str, used: u64) {
    let _lock = RemoteLock::take(file);
    let mut st = read_state(file);
    st["accounts"][user]["usage"]["data"] = json!(used);
    write_atomic(file, st.to_string());
}

pub fn read_state(file: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

/// An app with `modules_dir` holding the script remote, small pages, and its accounts file.
pub async fn app_with_remote(db: Db, extra: &str) -> (TestApp, tempfile::TempDir, PathBuf) {
    let modules = tempfile::tempdir().unwrap();
    write_remote(modules.path());
    let file = modules.path().join("accounts.json");
    write_accounts(&file, json!({}));
    let toml = format!(
        "modules_dir = {:?}\n[usage]\nschedule = \"\"\npage_size = 2\n[audit]\npage_size = 2\n{extra}",
        modules.path().display().to_string()
    );
    let app = spawn_app_with(db, &toml).await;
    app.create(
        "/v1/servers",
        json!({"name": "scr", "module": "script",
               "settings": {"executable": "remote.py", "accounts_file": file.display().to_string()}}),
    )
    .await;
    (app, modules, file)
}

pub async fn client(app: &TestApp) -> i64 {
    app.create(
        "/v1/clients",
        json!({"name": "Acme", "email": "ops@acme.test"}),
    )
    .await["id"]
        .as_i64()
        .unwrap()
}

/// Orders a service and waits until create ran.
pub async fn active(app: &TestApp, client: i64, product: &str, username: &str) -> i64 {
    let s = app
        .create(
            "/v1/services",
            json!({"client_id": client, "product": product, "username": username}),
        )
        .await;
    let id = s["id"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, s) = app.get(&format!("/v1/services/{id}")).await;
        if s["status"] == "active" {
            return id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "service {id} never became active: {s}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Starts a sync and polls it to its end.
pub async fn sync(app: &TestApp, body: Value) -> Value {
    let (status, run) = app.post("/v1/usage/syncs", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let id = run["id"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, r) = app.get(&format!("/v1/usage/syncs/{id}")).await;
        if r["state"] != "running" {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sync never ended: {r}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn usage_of(app: &TestApp, id: i64) -> Value {
    let (status, u) = app.get(&format!("/v1/services/{id}/usage")).await;
    assert_eq!(status, StatusCode::OK, "{u}");
    u
}

fn metric<'a>(u: &'a Value, name: &str) -> &'a Value {
    u["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == name)
        .unwrap_or_else(|| panic!("no metric {name} in {u}"))
}

async fn events(app: &TestApp, kind: &str, service: i64) -> usize {
    let (_, e) = app
        .get(&format!(
            "/v1/events?type={kind}&subject=service:{service}&limit=1000"
        ))
        .await;
    e["items"].as_array().unwrap().len()
}

async fn usage_from_the_script_module_lands_in_place(db: Db) {
    let (app, _modules, file) = app_with_remote(db, "").await;
    app.create(
        "/v1/products",
        json!({"name": "gold", "module": "script", "settings": {"package": "gold", "data_limit": 100}}),
    )
    .await;
    let c = client(&app).await;
    let u1 = active(&app, c, "gold", "alice").await;
    let u2 = active(&app, c, "gold", "bob").await;
    let u3 = active(&app, c, "gold", "carol").await;
    let mut accounts = read_state(&file)["accounts"].clone();
    accounts["alice"]["usage"] = json!({"data": 80, "disk": 5});
    accounts["bob"]["usage"] = json!({"data": 20});
    accounts["carol"]["usage"] = json!({"data": 0});
    accounts["ghost"] = json!({"status": "active", "package": "gold", "usage": {"data": 1}});
    accounts["zed"] = json!({"status": "active", "package": "gold", "usage": {"data": 2}});
    write_accounts(&file, accounts);

    let r = sync(&app, json!({})).await;
    assert_eq!(r["state"], "done", "{r}");
    let s = &r["servers"][0];
    assert_eq!(s["server"], "scr");
    assert_eq!(s["pages"], 3, "5 accounts in pages of 2: {s}");
    assert_eq!(s["reported"], 5);
    assert_eq!(s["services_updated"], 3);
    assert_eq!(s["unknown_usernames"], 2);
    assert_eq!(s["unknown_sample"], json!(["ghost", "zed"]));
    assert_eq!(s["errors"], json!([]));
    // The module was told where the period starts.
    let since = read_state(&file)["since"].as_str().unwrap().to_string();
    assert!(since.contains("-01T00:00:00"), "{since}");

    // Recurring use against the product's `data_limit`; a metric without a limit has none.
    let u = usage_of(&app, u1).await;
    assert_eq!(metric(&u, "data")["used"], 80.0);
    assert_eq!(metric(&u, "data")["limit"], 100.0);
    assert_eq!(metric(&u, "data")["unit"], "bytes");
    assert_eq!(metric(&u, "disk")["limit"], Value::Null);
    assert_eq!(metric(&usage_of(&app, u2).await, "data")["used"], 20.0);
    assert_eq!(metric(&usage_of(&app, u3).await, "data")["used"], 0.0);

    // A top-up: used only beyond the recurring quota.
    let (status, t) = app
        .post(
            &format!("/v1/services/{u1}/topups"),
            json!({"metric": "data", "amount": 50, "idempotency_key": "order-77"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let (status, again) = app
        .post(
            &format!("/v1/services/{u1}/topups"),
            json!({"metric": "data", "amount": 50, "idempotency_key": "order-77"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"], t["id"]);
    let (status, bad) = app
        .post(
            &format!("/v1/services/{u1}/topups"),
            json!({"metric": "Data!", "amount": -1}),
        )
        .await;
    assert_field_error(status, &bad, "metric", "pattern");
    assert_field_error(status, &bad, "amount", "range");

    let u = usage_of(&app, u1).await;
    assert_eq!(metric(&u, "data")["topup_left"], 50.0);
    assert_eq!(metric(&u, "data")["quota"], 150.0);

    set_data(&file, "alice", 130);
    let r = sync(&app, json!({"server": "scr"})).await;
    assert_eq!(
        r["servers"][0]["services_updated"], 1,
        "only alice changed: {r}"
    );
    let u = usage_of(&app, u1).await;
    let d = metric(&u, "data");
    assert_eq!(d["used"], 130.0);
    assert_eq!(d["topup_used"], 30.0);
    assert_eq!(d["topup_left"], 20.0);
    assert_eq!(d["exceeded"], false);
    assert_eq!(u["topups"][0]["consumed"], 30.0);
    assert_eq!(events(&app, "service.usage_exceeded", u1).await, 0);

    // A policy: exceeding suspends with reason `usage`.
    let (status, p) = app
        .call(
            reqwest::Method::PUT,
            "/v1/products/gold/usage-policy",
            Some(json!({"on_exceed": {"action": "suspend"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    let (status, p) = app
        .call(
            reqwest::Method::PUT,
            "/v1/products/gold/usage-policy",
            Some(json!({"on_exceed": {"action": "change_package", "product": "nope"}})),
        )
        .await;
    assert_field_error(status, &p, "on_exceed.product", "exists");

    set_data(&file, "alice", 160);
    let r = sync(&app, json!({})).await;
    assert_eq!(r["servers"][0]["exceeded"], 1, "{r}");
    let d = metric(&usage_of(&app, u1).await, "data").clone();
    assert_eq!(d["exceeded"], true);
    assert_eq!(d["topup_left"], 0.0);
    assert_eq!(events(&app, "service.usage_exceeded", u1).await, 1);
    // Over the quota again in the same period: not announced again.
    set_data(&file, "alice", 170);
    sync(&app, json!({})).await;
    assert_eq!(events(&app, "service.usage_exceeded", u1).await, 1);
    assert!(events(&app, "service.usage_updated", u1).await >= 3);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, s) = app.get(&format!("/v1/services/{u1}")).await;
        if s["status"] == "suspended" {
            assert_eq!(s["suspension"]["reason"], "usage");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never suspended: {s}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        read_state(&file)["accounts"]["alice"]["status"],
        "suspended"
    );

    let (_, h) = app
        .get(&format!("/v1/services/{u1}/usage/history?metric=data"))
        .await;
    let used: Vec<f64> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["used"].as_f64().unwrap())
        .collect();
    assert_eq!(used, vec![80.0, 130.0, 160.0, 170.0]);

    // A failing remote is reported per server, not as a failed request.
    let mut st = read_state(&file);
    st["fail"] = json!(true);
    write_atomic(&file, st.to_string());
    let r = sync(&app, json!({})).await;
    assert_eq!(r["state"], "partial");
    assert_eq!(r["servers"][0]["state"], "failed");
    assert!(r["servers"][0]["errors"][0]
        .as_str()
        .unwrap()
        .contains("remote unavailable"));

    let (status, p) = app.post("/v1/usage/syncs", json!({"server": "nope"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{p}");
    app.stop().await;
}

/// The accounts (username, bytes used) and how many pages were asked for.
type Accounts = (Vec<(String, f64)>, u32);

/// A local REST remote: `GET /usage?cursor=N&limit=M` pages with `next`.
#[derive(Clone, Default)]
struct Remote(Arc<Mutex<Accounts>>);

async fn usage_page(
    axum::extract::State(r): axum::extract::State<Remote>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> axum::Json<Value> {
    let mut g = r.0.lock().unwrap();
    g.1 += 1;
    let start: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = q.get("limit").and_then(|c| c.parse().ok()).unwrap_or(100);
    let items: Vec<Value> =
        g.0.iter()
            .skip(start)
            .take(limit)
            .map(|(u, d)| json!({"user": u, "traffic": {"bytes": d.to_string(), "cap": 1000}}))
            .collect();
    let next = (start + limit < g.0.len()).then(|| (start + limit).to_string());
    axum::Json(json!({"data": items, "paging": {"next": next}}))
}

async fn usage_from_the_http_module_in_pages(db: Db) {
    let remote = Remote::default();
    let router = axum::Router::new()
        .route("/api/usage", axum::routing::get(usage_page))
        .with_state(remote.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let app = spawn_app_with(db, "[usage]\nschedule = \"\"\npage_size = 3\n").await;
    let ok = json!({"method": "POST", "url": "/noop"});
    app.create(
        "/v1/servers",
        json!({"name": "rest", "module": "http", "settings": {
            "base_url": base,
            "actions": {
                "create": ok, "suspend": ok, "unsuspend": ok, "terminate": ok,
                "usage": {
                    "method": "GET", "url": "/usage",
                    "query": {"cursor": "{{ params.cursor | default('') }}", "limit": "{{ params.limit }}"},
                    "usage": {"pointer": "/data", "username": "/user",
                              "metrics": {"data": {"used": "/traffic/bytes", "limit": "/traffic/cap", "unit": "bytes"}},
                              "next": "/paging/next"}
                }
            }
        }}),
    )
    .await;
    app.create(
        "/v1/products",
        json!({"name": "web", "module": "http", "auto_setup": "manual", "settings": {}}),
    )
    .await;
    let c = client(&app).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let s = app
            .create(
                "/v1/services",
                json!({"client_id": c, "product": "web", "username": format!("web{i}")}),
            )
            .await;
        ids.push(s["id"].as_i64().unwrap());
    }
    {
        let mut g = remote.0.lock().unwrap();
        g.0 = (0..7)
            .map(|i| (format!("web{i}"), 100.0 * f64::from(i)))
            .collect();
        g.0.push(("stranger".into(), 1.0));
    }
    let r = sync(&app, json!({"server": "rest"})).await;
    let s = &r["servers"][0];
    assert_eq!(r["state"], "done", "{r}");
    assert_eq!(s["pages"], 3, "8 accounts in pages of 3: {s}");
    assert_eq!(remote.0.lock().unwrap().1, 3);
    assert_eq!(s["services_updated"], 7);
    assert_eq!(s["unknown_usernames"], 1);
    for (i, id) in ids.iter().enumerate() {
        let u = usage_of(&app, *id).await;
        let d = metric(&u, "data");
        assert_eq!(d["used"], 100.0 * i as f64);
        // No product setting names a limit: the remote's `cap` is used.
        assert_eq!(d["limit"], 1000.0);
    }
    app.stop().await;
}

on_both!(
    usage_from_the_script_module_lands_in_place,
    usage_from_the_http_module_in_pages,
);
