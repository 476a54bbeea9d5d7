//! The WHMCS server module (`bridges/whmcs`) run by its PHP harness, which stands in for
//! WHMCS, against this server driving the `http` module against a local REST remote (which
//! also holds an account Provisio lacks, for the audit that ListAccounts reports).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::Json;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Db};

/// How many services Provisio holds when the harness runs the usage update: one page.
const SERVICES: usize = 1000;

#[derive(Default)]
struct Remote {
    accounts: BTreeMap<String, Value>,
    /// Every create request that reached the remote, by username, whatever it answered.
    create_requests: BTreeMap<String, u32>,
    effects: Vec<String>,
    /// The next create waits this long before it answers (a slow remote for one call).
    slow_next_create_ms: u64,
    /// Usage of accounts the remote bills but Provisio ordered without a create.
    extra_usage: Vec<Value>,
    serial: u64,
}

type Shared = Arc<Mutex<Remote>>;

/// What the remote saw, copied out of its lock.
struct Record {
    create_requests: BTreeMap<String, u32>,
    effects: Vec<String>,
}

impl Remote {
    fn clone_record(&self) -> Record {
        Record {
            create_requests: self.create_requests.clone(),
            effects: self.effects.clone(),
        }
    }
}

fn err(status: StatusCode, msg: &str) -> (StatusCode, Json<Value>) {
    (status, Json(json!({"error": msg})))
}

async fn create(State(r): State<Shared>, Json(b): Json<Value>) -> (StatusCode, Json<Value>) {
    let user = b["username"].as_str().unwrap_or_default().to_string();
    let delay = {
        let mut g = r.lock().unwrap();
        *g.create_requests.entry(user.clone()).or_default() += 1;
        std::mem::take(&mut g.slow_next_create_ms)
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut g = r.lock().unwrap();
    if g.accounts.contains_key(&user) {
        return err(StatusCode::CONFLICT, "account exists");
    }
    g.serial += 1;
    let account = json!({
        "id": g.serial, "username": user, "password": b["password"], "package": b["package"],
        "status": "active", "reason": null, "renewals": 0,
        "passkey": format!("PK-{}-{:08x}", g.serial, rand_u32()),
        "disk_mb": 250, "disk_quota_mb": 1000, "bw_bytes": 3 * 1048576,
    });
    g.effects.push(format!("create {user}"));
    g.accounts.insert(user, account.clone());
    (StatusCode::CREATED, Json(account))
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .elapsed()
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish() as u32
}

/// Applies `f` to an existing account and records the effect.
fn change(
    r: &Shared,
    user: &str,
    effect: String,
    f: impl FnOnce(&mut Value),
) -> (StatusCode, Json<Value>) {
    let mut g = r.lock().unwrap();
    let Some(a) = g.accounts.get_mut(user) else {
        return err(StatusCode::NOT_FOUND, "no such account");
    };
    f(a);
    let a = a.clone();
    g.effects.push(effect);
    (StatusCode::OK, Json(a))
}

async fn lookup(State(r): State<Shared>, Path(u): Path<String>) -> (StatusCode, Json<Value>) {
    match r.lock().unwrap().accounts.get(&u) {
        Some(a) => (StatusCode::OK, Json(a.clone())),
        None => err(StatusCode::NOT_FOUND, "no such account"),
    }
}

async fn terminate(State(r): State<Shared>, Path(u): Path<String>) -> (StatusCode, Json<Value>) {
    let mut g = r.lock().unwrap();
    if g.accounts.remove(&u).is_none() {
        return err(StatusCode::NOT_FOUND, "no such account");
    }
    g.effects.push(format!("terminate {u}"));
    (StatusCode::OK, Json(json!({"deleted": u})))
}

async fn act(
    State(r): State<Shared>,
    Path((u, what)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> (StatusCode, Json<Value>) {
    let b = body.map(|Json(b)| b).unwrap_or(Value::Null);
    match what.as_str() {
        "suspend" => {
            let reason = b["reason"].as_str().unwrap_or_default().to_string();
            change(&r, &u, format!("suspend {u} {reason}"), |a| {
                a["status"] = json!("suspended");
                a["reason"] = json!(reason);
            })
        }
        "unsuspend" => change(&r, &u, format!("unsuspend {u}"), |a| {
            a["status"] = json!("active");
            a["reason"] = Value::Null;
        }),
        "renew" => change(&r, &u, format!("renew {u}"), |a| {
            a["renewals"] = json!(a["renewals"].as_u64().unwrap_or(0) + 1);
        }),
        "reset-quota" => change(&r, &u, format!("reset_quota {u}"), |a| {
            a["disk_mb"] = json!(0);
        }),
        "login" => {
            let (s, Json(a)) = lookup(State(r), Path(u.clone())).await;
            if s != StatusCode::OK {
                return (s, Json(a));
            }
            (
                StatusCode::OK,
                Json(json!({"url": format!("https://panel.remote.test/sso/{u}/{}", a["id"])})),
            )
        }
        _ => err(StatusCode::NOT_FOUND, "no such operation"),
    }
}

async fn set(
    State(r): State<Shared>,
    Path((u, what)): Path<(String, String)>,
    Json(b): Json<Value>,
) -> (StatusCode, Json<Value>) {
    match what.as_str() {
        "password" => {
            let pw = b["password"].clone();
            change(&r, &u, format!("change_password {u}"), |a| {
                a["password"] = pw;
            })
        }
        "package" => {
            let p = b["package"].clone();
            change(
                &r,
                &u,
                format!("change_package {u} {}", p.as_str().unwrap_or("")),
                |a| {
                    a["package"] = p;
                },
            )
        }
        _ => err(StatusCode::NOT_FOUND, "no such field"),
    }
}

async fn list(State(r): State<Shared>) -> Json<Value> {
    let g = r.lock().unwrap();
    Json(json!({"accounts": g.accounts.values().collect::<Vec<_>>()}))
}

async fn usage(State(r): State<Shared>) -> Json<Value> {
    let g = r.lock().unwrap();
    let mut data: Vec<Value> = g
        .accounts
        .values()
        .map(|a| json!({"user": a["username"], "disk_mb": a["disk_mb"], "disk_quota_mb": a["disk_quota_mb"], "bw_bytes": a["bw_bytes"]}))
        .collect();
    data.extend(g.extra_usage.iter().cloned());
    Json(json!({"data": data}))
}

/// What the harness reads to check the remote's effects.
async fn state(State(r): State<Shared>) -> Json<Value> {
    let g = r.lock().unwrap();
    Json(json!({
        "accounts": g.accounts, "create_requests": g.create_requests, "effects": g.effects,
    }))
}

/// Changes an account behind Provisio's back (drift for an audit to find), recording no effect.
async fn tamper(
    State(r): State<Shared>,
    Path(u): Path<String>,
    Json(b): Json<Value>,
) -> StatusCode {
    let mut g = r.lock().unwrap();
    let Some(a) = g.accounts.get_mut(&u) else {
        return StatusCode::NOT_FOUND;
    };
    for (k, v) in b.as_object().into_iter().flatten() {
        a[k] = v.clone();
    }
    StatusCode::NO_CONTENT
}

async fn slow(State(r): State<Shared>, Json(b): Json<Value>) -> StatusCode {
    r.lock().unwrap().slow_next_create_ms = b["ms"].as_u64().unwrap_or(0);
    StatusCode::NO_CONTENT
}

async fn start_remote(remote: Shared) -> String {
    let router = axum::Router::new()
        .route("/api/accounts", post(create).get(list))
        .route("/api/accounts/{u}", get(lookup).delete(terminate))
        .route("/api/accounts/{u}/{what}", post(act).put(set))
        .route("/api/usage", get(usage))
        .route("/_state", get(state))
        .route("/_slow", put(slow))
        .route("/_account/{u}", put(tamper))
        .with_state(remote);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

/// The `http` server's action specs for the remote above.
fn actions() -> Value {
    let account = |method: &str, what: &str| json!({"method": method, "url": format!("/accounts/{{{{ service.username }}}}/{what}")});
    json!({
        "create": {"method": "POST", "url": "/accounts",
                   "body": {"username": "{{ service.username }}", "password": "{{ service.password }}",
                            "package": "{{ product.settings.package }}"},
                   "outputs": {"passkey": "/passkey", "remote_id": "/id"}},
        "lookup": {"method": "GET", "url": "/accounts/{{ service.username }}",
                   "account": {"username": "/username", "status": "/status", "package": "/package"},
                   "outputs": {"passkey": "/passkey", "remote_id": "/id"}},
        "suspend": {"method": "POST", "url": "/accounts/{{ service.username }}/suspend",
                    "body": {"reason": "{{ params.reason }}"}},
        "unsuspend": account("POST", "unsuspend"),
        "terminate": {"method": "DELETE", "url": "/accounts/{{ service.username }}"},
        "change_password": {"method": "PUT", "url": "/accounts/{{ service.username }}/password",
                            "body": {"password": "{{ params.new_password }}"}},
        "change_package": {"method": "PUT", "url": "/accounts/{{ service.username }}/package",
                           "body": {"package": "{{ params.new_product.package }}"}},
        "renew": account("POST", "renew"),
        "reset_quota": account("POST", "reset-quota"),
        "login_url": {"method": "POST", "url": "/accounts/{{ service.username }}/login", "login_url": "/url"},
        "list_accounts": {"method": "GET", "url": "/accounts",
                          "accounts": {"pointer": "/accounts", "username": "/username", "status": "/status", "package": "/package"}},
        "usage": {"method": "GET", "url": "/usage",
                  "usage": {"pointer": "/data", "username": "/user",
                            "metrics": {"disk": {"used": "/disk_mb", "limit": "/disk_quota_mb", "unit": "MB"},
                                        "bandwidth": {"used": "/bw_bytes", "unit": "bytes"}}}},
        "test_connection": {"method": "GET", "url": "/accounts"},
    })
}

fn php() -> String {
    let php = std::env::var("PROVISIO_TEST_PHP").unwrap_or_else(|_| "php".into());
    let ok = std::process::Command::new(&php)
        .args(["-r", "exit(function_exists('curl_init') ? 0 : 3);"])
        .status();
    match ok {
        Ok(s) if s.success() => php,
        Ok(_) => {
            panic!("{php} has no curl extension: run scripts/test, which installs php8.2-curl")
        }
        Err(e) => panic!("{php} cannot run ({e}): run scripts/test, which installs php8.2-cli"),
    }
}

async fn whmcs_module_lifecycle_through_the_harness(db: Db) {
    let php = php();
    let remote: Shared = Arc::default();
    let remote_url = start_remote(remote.clone()).await;
    let app = spawn_app_with(db, "").await;
    app.create(
        "/v1/servers",
        json!({"name": "rest", "module": "http",
               "settings": {"base_url": format!("{remote_url}/api"), "actions": actions()}}),
    )
    .await;
    for (name, package, setup) in [
        ("web", "small", "on_order"),
        ("web-big", "big", "on_order"),
        ("bulk", "small", "manual"),
    ] {
        app.create(
            "/v1/products",
            json!({"name": name, "module": "http", "auto_setup": setup, "settings": {"package": package}}),
        )
        .await;
    }
    // Services WHMCS ordered long ago: with the harness's one they make a page of 1,000.
    let holder = app
        .create(
            "/v1/clients",
            json!({"name": "Bulk", "email": "bulk@example.test", "external_id": "900"}),
        )
        .await;
    let orders: Vec<Value> = (0..SERVICES - 1)
        .map(|i| {
            json!({"order": {"client_id": holder["id"], "product": "bulk",
                             "username": format!("bulk{i}"), "external_id": (5000 + i).to_string()}})
        })
        .collect();
    let (status, made) = app
        .post("/v1/services/batch", json!({"orders": orders}))
        .await;
    assert_eq!(status, StatusCode::OK, "{made}");
    assert_eq!(made["created"], SERVICES - 1, "{}", made["failed"]);
    remote.lock().unwrap().extra_usage = (0..SERVICES - 1)
        .map(|i| json!({"user": format!("bulk{i}"), "disk_mb": i, "disk_quota_mb": 2000, "bw_bytes": i * 1048576}))
        .collect();
    // An account on the remote that Provisio has no record of: the audit's orphan.
    remote.lock().unwrap().accounts.insert(
        "stray7".into(),
        json!({"id": 9000, "username": "stray7", "package": "legacy", "status": "suspended",
               "disk_mb": 1, "disk_quota_mb": 10, "bw_bytes": 0}),
    );
    let billing = app
        .make_key(json!({"name": "whmcs", "role": "billing"}))
        .await;

    let harness = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../bridges/whmcs/tests/harness.php"
    );
    let out = tokio::process::Command::new(&php)
        .arg(harness)
        .env("PROVISIO_URL", &app.base)
        .env("PROVISIO_BILLING_KEY", &billing)
        .env("PROVISIO_ADMIN_KEY", &app.key)
        .env("REMOTE_URL", &remote_url)
        .env("BULK_SERVICES", (SERVICES - 1).to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("the harness took over 2 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "harness failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("ALL CHECKS PASSED"), "{stdout}");

    // The remote's own record, independent of what the harness concluded.
    let g = remote.lock().unwrap().clone_record();
    assert_eq!(
        g.create_requests.get("whmcs101"),
        Some(&1),
        "{:?}",
        g.create_requests
    );
    let mine: Vec<&String> = g
        .effects
        .iter()
        .filter(|e| e.ends_with("whmcs101") || e.contains("whmcs101 "))
        .collect();
    assert_eq!(
        mine,
        [
            "create whmcs101",
            "suspend whmcs101 non-payment",
            "unsuspend whmcs101",
            "suspend whmcs101 Customer asked for a break",
            "unsuspend whmcs101",
            "change_password whmcs101",
            "change_package whmcs101 big",
            "renew whmcs101",
            "reset_quota whmcs101",
            "terminate whmcs101",
        ],
        "{:?}",
        g.effects
    );
    app.stop().await;
}

/// What the bridge added to the API: a job's outcome waited for, a server's custom actions
/// per service, and the usage of many services a page at a time.
async fn bridge_endpoints_answer_as_documented(db: Db) {
    let remote: Shared = Arc::default();
    let remote_url = start_remote(remote.clone()).await;
    let app = spawn_app_with(db, "").await;
    app.create(
        "/v1/servers",
        json!({"name": "rest", "module": "http",
               "settings": {"base_url": format!("{remote_url}/api"), "actions": actions()}}),
    )
    .await;
    app.create(
        "/v1/products",
        json!({"name": "web", "module": "http", "settings": {"package": "small"}}),
    )
    .await;
    let c = app
        .create(
            "/v1/clients",
            json!({"name": "A", "email": "a@example.test"}),
        )
        .await;
    let billing = app
        .make_key(json!({"name": "whmcs", "role": "billing"}))
        .await;
    let job_of = |s: i64| {
        let app = &app;
        async move {
            let (_, jobs) = app.get(&format!("/v1/services/{s}/jobs")).await;
            jobs["items"][0]["id"].as_i64().unwrap()
        }
    };

    // A slow create: the wait ends at its time limit with the job still open, then at the outcome.
    remote.lock().unwrap().slow_next_create_ms = 1500;
    let slow = app
        .create(
            "/v1/services",
            json!({"client_id": c["id"], "product": "web", "username": "slow1"}),
        )
        .await;
    let job = job_of(slow["id"].as_i64().unwrap()).await;
    let t = std::time::Instant::now();
    let (status, j) = app
        .call_as(
            &billing,
            reqwest::Method::GET,
            &format!("/v1/jobs/{job}?wait=1"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{j}");
    assert!(
        matches!(j["state"].as_str(), Some("pending" | "running")),
        "{j}"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    let (_, j) = app
        .call_as(
            &billing,
            reqwest::Method::GET,
            &format!("/v1/jobs/{job}?wait=20"),
            None,
        )
        .await;
    assert_eq!(j["state"], "done", "{j}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(remote.lock().unwrap().accounts.contains_key("slow1"));
    let (status, p) = app.get(&format!("/v1/jobs/{job}?wait=301")).await;
    crate::helpers::assert_field_error(status, &p, "wait", "range");

    let (status, a) = app
        .call_as(
            &billing,
            reqwest::Method::GET,
            &format!("/v1/services/{}/actions", slow["id"]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(a, json!({"custom": ["reset_quota"]}));

    for i in 0..2 {
        let s = app
            .create(
                "/v1/services",
                json!({"client_id": c["id"], "product": "web", "username": format!("fast{i}"), "external_id": format!("77{i}")}),
            )
            .await;
        let j = app.wait_job(job_of(s["id"].as_i64().unwrap()).await).await;
        assert_eq!(j["state"], "done", "{j}");
    }
    let (status, sync) = app.post("/v1/usage/syncs", json!({"server": "rest"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{sync}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, s) = app.get(&format!("/v1/usage/syncs/{}", sync["id"])).await;
        if s["state"] == "done" || std::time::Instant::now() > deadline {
            assert_eq!(s["state"], "done", "{s}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, first) = app
        .call_as(
            &billing,
            reqwest::Method::GET,
            "/v1/usage/services?limit=2",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["items"].as_array().unwrap().len(), 2, "{first}");
    assert_eq!(first["items"][0]["username"], "slow1");
    assert_eq!(first["items"][0]["external_id"], Value::Null);
    let disk = first["items"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "disk")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (disk["used"].clone(), disk["limit"].clone()),
        (json!(250.0), json!(1000.0)),
        "{first}"
    );
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_string();
    let (_, second) = app
        .call_as(
            &billing,
            reqwest::Method::GET,
            &format!("/v1/usage/services?limit=2&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["items"][0]["external_id"], "771");
    assert_eq!(second["next_cursor"], Value::Null);
    let (status, p) = app.get("/v1/usage/services?limit=1001").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    app.stop().await;
}

on_both!(
    whmcs_module_lifecycle_through_the_harness,
    bridge_endpoints_answer_as_documented,
);
