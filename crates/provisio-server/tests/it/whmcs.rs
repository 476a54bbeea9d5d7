//! A WHMCS server module, unchanged, through Provisio: `whmcs_modules/servers/demo/demo.php`
//! (from the modules crate's tests) drives a REST remote started here through the whole
//! lifecycle, an audit, a custom button and a login link, with seed 002's pass key going
//! into a client custom field and the welcome email, and its `logModuleCall` entries in
//! Provisio's log without a secret.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode as AxStatus};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{captured_log, spawn_app_with, Db, TestApp};
use crate::hooks::start_smtp_sink;

const DEMO: &str =
    include_str!("../../../provisio-modules/tests/whmcs_modules/servers/demo/demo.php");
const SERVER_USER: &str = "backup-admin";
const SERVER_PASSWORD: &str = "Srv-Pass-WHMCS-6620";
const ACCESS_HASH: &str = "AccessHash-WHMCS-40913";
const PRODUCT_KEY: &str = "ProdKey-WHMCS-3107";
const NEW_PASSWORD: &str = "Changed-Pw-WHMCS-882";

#[derive(Debug, Clone)]
struct Account {
    body: Value,
    password: String,
    package: String,
    suspended: Option<String>,
    resets: u32,
}

#[derive(Default)]
struct Remote {
    accounts: BTreeMap<String, Account>,
    /// Method and path of every request that passed the credentials check.
    seen: Vec<String>,
    refused: usize,
}

type Shared = Arc<Mutex<Remote>>;

/// The credentials the server record holds, or 401.
fn authorised(st: &Shared, headers: &HeaderMap) -> Result<(), (AxStatus, Json<Value>)> {
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{SERVER_USER}:{SERVER_PASSWORD}"))
    );
    let ok = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(basic.as_str())
        && headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(ACCESS_HASH);
    if ok {
        Ok(())
    } else {
        st.lock().unwrap().refused += 1;
        Err((
            AxStatus::UNAUTHORIZED,
            Json(json!({"error": "bad credentials"})),
        ))
    }
}

type Answer = (AxStatus, Json<Value>);

fn note(st: &Shared, what: String) {
    st.lock().unwrap().seen.push(what);
}

async fn start_remote() -> (u16, Shared) {
    let state: Shared = Arc::default();
    let app = Router::new()
        .route("/health", get(|State(st): State<Shared>, h: HeaderMap| async move {
            authorised(&st, &h)?;
            Ok::<Answer, Answer>((AxStatus::OK, Json(json!({"ok": true}))))
        }))
        .route(
            "/accounts",
            get(|State(st): State<Shared>, h: HeaderMap| async move {
                authorised(&st, &h)?;
                let st = st.lock().unwrap();
                let list: Vec<Value> = st.accounts.iter().map(|(u, a)| json!({
                    "username": u, "email": a.body["email"], "domain": a.body["domain"],
                    "package": a.package, "created": "2026-12-01", "suspended": a.suspended.is_some()
                })).collect();
                Ok::<Answer, Answer>((AxStatus::OK, Json(json!({"accounts": list}))))
            })
            .post(|State(st): State<Shared>, h: HeaderMap, Json(body): Json<Value>| async move {
                authorised(&st, &h)?;
                if body["product_key"] != PRODUCT_KEY {
                    return Err((AxStatus::FORBIDDEN, Json(json!({"error": "wrong product key"}))));
                }
                let user = body["username"].as_str().unwrap_or_default().to_string();
                note(&st, format!("create {user}"));
                {
                    let mut st = st.lock().unwrap();
                    if st.accounts.contains_key(&user) {
                        return Err((AxStatus::CONFLICT, Json(json!({"error": format!("account {user} exists")}))));
                    }
                    st.accounts.insert(user.clone(), Account {
                        password: body["password"].as_str().unwrap_or_default().into(),
                        package: body["package"].as_str().unwrap_or_default().into(),
                        body,
                        suspended: None,
                        resets: 0,
                    });
                }
                // A remote that acts and then answers too late.
                if user.starts_with("slow") {
                    tokio::time::sleep(Duration::from_secs(4)).await;
                }
                Ok((AxStatus::CREATED, Json(json!({"username": user, "pass_key": format!("PK-{}", user.to_uppercase())}))))
            }),
        )
        .route("/accounts/{user}", axum::routing::delete(|State(st): State<Shared>, h: HeaderMap, UrlPath(user): UrlPath<String>| async move {
            authorised(&st, &h)?;
            note(&st, format!("terminate {user}"));
            match st.lock().unwrap().accounts.remove(&user) {
                Some(_) => Ok::<Answer, Answer>((AxStatus::OK, Json(json!({})))),
                None => Err((AxStatus::NOT_FOUND, Json(json!({"error": "no such account"})))),
            }
        }))
        .route("/accounts/{user}/{verb}", post(|State(st): State<Shared>, h: HeaderMap, UrlPath((user, verb)): UrlPath<(String, String)>, body: axum::body::Bytes| async move {
            authorised(&st, &h)?;
            note(&st, format!("{verb} {user}"));
            let mut st = st.lock().unwrap();
            let Some(a) = st.accounts.get_mut(&user) else {
                return Err((AxStatus::NOT_FOUND, Json(json!({"error": "no such account"}))));
            };
            match verb.as_str() {
                "suspend" => {
                    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
                    a.suspended = Some(body["reason"].as_str().unwrap_or_default().to_string());
                }
                "unsuspend" => a.suspended = None,
                "reset-quota" => a.resets += 1,
                _ => return Err((AxStatus::NOT_FOUND, Json(json!({"error": "no such verb"})))),
            }
            Ok::<Answer, Answer>((AxStatus::OK, Json(json!({}))))
        })
        .put(|State(st): State<Shared>, h: HeaderMap, UrlPath((user, what)): UrlPath<(String, String)>, Json(body): Json<Value>| async move {
            authorised(&st, &h)?;
            note(&st, format!("{what} {user}"));
            let mut st = st.lock().unwrap();
            let Some(a) = st.accounts.get_mut(&user) else {
                return Err((AxStatus::NOT_FOUND, Json(json!({"error": "no such account"}))));
            };
            match what.as_str() {
                "password" => a.password = body["password"].as_str().unwrap_or_default().into(),
                "package" => a.package = body["package"].as_str().unwrap_or_default().into(),
                _ => return Err((AxStatus::NOT_FOUND, Json(json!({"error": "no such field"})))),
            }
            Ok::<Answer, Answer>((AxStatus::OK, Json(json!({}))))
        }))
        .route("/sso/{user}", post(|State(st): State<Shared>, h: HeaderMap, UrlPath(user): UrlPath<String>| async move {
            authorised(&st, &h)?;
            Ok::<Answer, Answer>((AxStatus::OK, Json(json!({"url": format!("https://backup.example.test/sso/{user}?t=once")}))))
        }))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, state)
}

fn account(remote: &Shared, user: &str) -> Option<Account> {
    remote.lock().unwrap().accounts.get(user).cloned()
}

async fn wait_for(app: &TestApp, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = app.get(path).await;
        if ok(&v) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn created_job(app: &TestApp, service: i64) -> Value {
    let (_, jobs) = app.get(&format!("/v1/services/{service}/jobs")).await;
    app.wait_job(jobs["items"][0]["id"].as_i64().unwrap()).await
}

fn modules_dir(dir: &Path) {
    let demo = dir.join("servers/demo");
    std::fs::create_dir_all(&demo).unwrap();
    std::fs::write(demo.join("demo.php"), DEMO).unwrap();
}

async fn a_whmcs_module_runs_unchanged_through_the_lifecycle_an_audit_and_a_button(db: Db) {
    let started = Instant::now();
    let (port, remote) = start_remote().await;
    let dir = tempfile::tempdir().unwrap();
    modules_dir(dir.path());
    let mail = dir.path().join("mail");
    std::fs::create_dir(&mail).unwrap();
    let (smtp_port, _sink) = start_smtp_sink(&mail);
    let toml = format!(
        "modules_dir = {:?}\n[smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\nfrom = \"Provisio <noreply@example.test>\"\n",
        dir.path().display().to_string()
    );
    let app = spawn_app_with(db, &toml).await;

    // _ConfigOptions became the product schema, in order and by type.
    let (status, m) = app.get("/v1/modules/whmcs-demo").await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let fields: Vec<(String, String)> = m["product_schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().into(),
                f["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        ("package_name", "string"),
        ("product_key", "secret"),
        ("send_mail", "boolean"),
        ("account_type", "enum"),
        ("region", "enum"),
        ("welcome_note", "string"),
        ("retrieve_customer_pass_key", "boolean"),
    ];
    assert_eq!(
        fields,
        want.map(|(a, b)| (a.to_string(), b.to_string())).to_vec(),
        "{m}"
    );
    assert_eq!(m["custom_actions"], json!(["reset_quota"]));
    for c in [
        "create",
        "list_accounts",
        "lookup",
        "login_url",
        "test_connection",
        "change_package",
    ] {
        assert!(
            m["capabilities"].as_array().unwrap().contains(&json!(c)),
            "{c}: {m}"
        );
    }
    assert!(
        !m["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("renew")),
        "{m}"
    );

    app.create(
        "/v1/servers",
        json!({"name": "backup", "module": "whmcs-demo", "settings": {
            "hostname": "127.0.0.1", "port": port, "secure": false,
            "username": SERVER_USER, "password": SERVER_PASSWORD, "access_hash": ACCESS_HASH}}),
    )
    .await;
    let (status, r) = app.post("/v1/servers/backup/test", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["ok"], true, "{r}");

    // A value outside a dropdown's options is refused by field and rule.
    let (status, problem) = app
        .post(
            "/v1/products",
            json!({"name": "bad", "module": "whmcs-demo", "settings": {"region": "asia"}}),
        )
        .await;
    crate::helpers::assert_field_error(status, &problem, "settings.region", "enum");

    let product = |name: &str, package: &str| {
        json!({"name": name, "module": "whmcs-demo", "client_fields": {"pass_key": "pass_key"},
               "settings": {"package_name": package, "product_key": PRODUCT_KEY, "send_mail": true,
                            "account_type": "Signup Customer", "region": "us",
                            "welcome_note": "Welcome\naboard"}})
    };
    // Named as the remote's packages: `_ListAccounts` reports an account's `product` as
    // the remote calls it, and the audit compares it with the Provisio product's name.
    app.create("/v1/products", product("basic", "basic")).await;
    app.create("/v1/products", product("gold", "gold")).await;
    app.create(
        "/v1/handlers",
        json!({"name": "welcome", "kind": "email", "phase": "notify",
               "events": ["service.create.succeeded"],
               "email": {"to": "{{ client.email }}", "subject": "Welcome, {{ client.name }}",
                         "body": "Your account {{ service.username }} is ready.\nYour Customer PassKey : {{ client.custom_fields.pass_key }}\n"}}),
    )
    .await;
    let c = app
        .create(
            "/v1/clients",
            json!({"name": "Rita Reseller", "email": "rita@example.test"}),
        )
        .await["id"]
        .as_i64()
        .unwrap();

    // Create: the remote has the account with every option as the product set it.
    let s = app
        .create(
            "/v1/services",
            json!({"client_id": c, "product": "basic", "username": "rita1",
                   "settings": {"domain": "rita.example.test"}}),
        )
        .await;
    let id = s["id"].as_i64().unwrap();
    let job = created_job(&app, id).await;
    assert_eq!(job["state"], "done", "{job}");
    let a = account(&remote, "rita1").expect("the remote has rita1");
    assert_eq!(a.package, "basic");
    assert_eq!(a.body["send_mail"], true);
    assert_eq!(a.body["type"], "Signup Customer");
    assert_eq!(a.body["region"], "us");
    assert_eq!(a.body["note"], "Welcome\naboard");
    assert_eq!(a.body["email"], "rita@example.test");
    assert_eq!(a.body["name"], "Rita Reseller");
    assert_eq!(a.body["domain"], "rita.example.test");
    let first_password = a.password.clone();
    assert!(first_password.len() >= 8, "{first_password}");

    // Seed 002's pass key: into the client's custom field, and from there the email.
    let client = wait_for(&app, &format!("/v1/clients/{c}"), |v| {
        v["custom_fields"]["pass_key"] == "PK-RITA1"
    })
    .await;
    assert_eq!(client["custom_fields"]["pass_key"], "PK-RITA1", "{client}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let message = loop {
        if let Ok(m) = std::fs::read_to_string(mail.join("0.eml")) {
            break m;
        }
        assert!(Instant::now() < deadline, "no welcome email arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(message.contains("To: rita@example.test"), "{message}");
    assert!(
        message.contains("Your Customer PassKey : PK-RITA1"),
        "{message}"
    );

    // Suspend with WHMCS's suspension reason, unsuspend, a new password, a new package.
    let job = app
        .act(id, "suspend", Some(json!({"reason": "non-payment"})))
        .await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(
        account(&remote, "rita1").unwrap().suspended.as_deref(),
        Some("non-payment")
    );
    let job = app.act(id, "unsuspend", None).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(account(&remote, "rita1").unwrap().suspended, None);
    let job = app
        .act(
            id,
            "change-password",
            Some(json!({"password": NEW_PASSWORD})),
        )
        .await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(account(&remote, "rita1").unwrap().password, NEW_PASSWORD);
    let job = app
        .act(id, "change-package", Some(json!({"product": "gold"})))
        .await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(account(&remote, "rita1").unwrap().package, "gold");

    // The custom button, and the login link.
    let job = app.act(id, "reset_quota", None).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(account(&remote, "rita1").unwrap().resets, 1);
    let (status, link) = app
        .post(&format!("/v1/services/{id}/login-url"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{link}");
    assert_eq!(link["url"], "https://backup.example.test/sso/rita1?t=once");

    // A remote refusal is the module's error string: a permanent failure, shown as is.
    remote.lock().unwrap().accounts.insert(
        "taken".into(),
        Account {
            body: json!({}),
            password: String::new(),
            package: "basic".into(),
            suspended: None,
            resets: 0,
        },
    );
    let s2 = app
        .create(
            "/v1/services",
            json!({"client_id": c, "product": "basic", "username": "taken"}),
        )
        .await;
    let job = created_job(&app, s2["id"].as_i64().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job}");
    let (_, detail) = app.get(&format!("/v1/jobs/{}", job["id"])).await;
    let last = detail["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["outcome"], "permanent", "{detail}");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("Backup server refused (409): account taken exists"),
        "{detail}"
    );

    // The audit reads _ListAccounts: an account made behind Provisio's back is an orphan,
    // one removed behind its back is missing, and rita1 (on gold, active) matches.
    let s3 = app
        .create(
            "/v1/services",
            json!({"client_id": c, "product": "basic", "username": "gone1"}),
        )
        .await;
    assert_eq!(
        created_job(&app, s3["id"].as_i64().unwrap()).await["state"],
        "done"
    );
    remote.lock().unwrap().accounts.remove("gone1");
    remote.lock().unwrap().accounts.insert(
        "ghost".into(),
        Account {
            body: json!({}),
            password: String::new(),
            package: "basic".into(),
            suspended: None,
            resets: 0,
        },
    );
    let (status, started_audit) = app.post("/v1/audits", json!({"server": "backup"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started_audit}");
    let audit_id = started_audit[0]["id"].as_i64().unwrap();
    let a = wait_for(&app, &format!("/v1/audits/{audit_id}"), |v| {
        v["state"] != "running"
    })
    .await;
    assert_eq!(a["state"], "done", "{a}");
    let (_, findings) = app.get(&format!("/v1/audits/{audit_id}/findings")).await;
    let mut kinds: Vec<(String, String)> = findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().into(),
                f["username"].as_str().unwrap().into(),
            )
        })
        .collect();
    kinds.sort();
    // `taken` is known: its service failed to be created, so it is no orphan.
    assert_eq!(
        kinds,
        [
            ("missing_remote".to_string(), "gone1".to_string()),
            ("orphan_remote".into(), "ghost".into())
        ],
        "{findings}"
    );

    // Terminate.
    let job = app.act(id, "terminate", None).await;
    assert_eq!(job["state"], "done", "{job}");
    assert!(account(&remote, "rita1").is_none());
    let (_, svc) = app.get(&format!("/v1/services/{id}")).await;
    assert_eq!(svc["status"], "terminated");
    assert_eq!(
        remote.lock().unwrap().refused,
        0,
        "every call carried the server's credentials"
    );

    // The module's logModuleCall entries reach Provisio's log, and no secret does.
    let log = captured_log();
    assert!(
        log.contains("logModuleCall") && log.contains("POST /accounts/rita1/reset-quota"),
        "no logModuleCall entry of the demo module in the log"
    );
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{SERVER_USER}:{SERVER_PASSWORD}"));
    for secret in [
        SERVER_PASSWORD,
        ACCESS_HASH,
        PRODUCT_KEY,
        NEW_PASSWORD,
        &first_password,
        &basic,
    ] {
        assert!(!log.contains(secret), "a secret reached the log");
        let (_, events) = app.get("/v1/events?limit=1000").await;
        assert!(
            !events.to_string().contains(secret),
            "a secret reached an event"
        );
        assert!(
            !detail.to_string().contains(secret),
            "a secret reached a job record"
        );
    }
    // Each action reached the remote once, in the order asked for.
    let seen = remote.lock().unwrap().seen.clone();
    assert_eq!(
        seen,
        [
            "create rita1",
            "suspend rita1",
            "unsuspend rita1",
            "password rita1",
            "package rita1",
            "reset-quota rita1",
            "create taken",
            "create gone1",
            "terminate rita1",
        ],
    );

    // A module killed at the timeout after the remote acted: an unknown outcome, which
    // the engine looks up through _ListAccounts instead of creating the account twice.
    app.create(
        "/v1/servers",
        json!({"name": "backup-slow", "module": "whmcs-demo", "group": "slow", "settings": {
            "hostname": "127.0.0.1", "port": port, "secure": false, "timeout_seconds": 1,
            "username": SERVER_USER, "password": SERVER_PASSWORD, "access_hash": ACCESS_HASH}}),
    )
    .await;
    let mut slow = product("basic-slow", "basic");
    slow["server_group"] = json!("slow");
    app.create("/v1/products", slow).await;
    let s4 = app
        .create(
            "/v1/services",
            json!({"client_id": c, "product": "basic-slow", "username": "slow1"}),
        )
        .await;
    let job = created_job(&app, s4["id"].as_i64().unwrap()).await;
    let (_, detail) = app.get(&format!("/v1/jobs/{}", job["id"])).await;
    let outcomes: Vec<&str> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["unknown", "skipped"], "{detail}");
    assert!(
        detail["history"][0]["message"]
            .as_str()
            .unwrap()
            .contains("timed out after 1s"),
        "{detail}"
    );
    assert_eq!(
        remote
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| *s == "create slow1")
            .count(),
        1,
        "one remote create"
    );
    eprintln!(
        "whmcs lifecycle on {db:?}: {} remote changes, {:.1} s",
        remote.lock().unwrap().seen.len(),
        started.elapsed().as_secs_f64()
    );
    app.stop().await;
}

on_both!(a_whmcs_module_runs_unchanged_through_the_lifecycle_an_audit_and_a_button);
