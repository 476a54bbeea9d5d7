//! Handlers and rules end to end: gates (script and http) allowing, forbidding, rewriting and
//! timing out; notify deliveries through an outage, in order, signed (checked by the
//! `standardwebhooks` package from PyPI); script and disabled handlers; automatic
//! disabling; balance rules; a client-created rule; and the welcome email over real SMTP.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Db, TestApp};

/// What a local HTTP receiver got and how it answers.
#[derive(Default)]
struct Inbox {
    /// Answer 503 to everything.
    down: bool,
    /// For gates: the JSON answered, after `delay`.
    reply: Value,
    delay: Duration,
    /// (webhook-id, webhook-timestamp, webhook-signature, body) of every message answered 2xx.
    got: Vec<(String, String, String, String)>,
    /// Requests answered 503.
    refused: u32,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Inbox>>);

impl Receiver {
    fn with<R>(&self, f: impl FnOnce(&mut Inbox) -> R) -> R {
        f(&mut self.0.lock().unwrap())
    }
    fn bodies(&self) -> Vec<Value> {
        self.with(|i| {
            i.got
                .iter()
                .map(|g| serde_json::from_str(&g.3).unwrap())
                .collect()
        })
    }
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: String,
) -> (AxStatus, String) {
    let (down, delay, reply) = r.with(|i| (i.down, i.delay, i.reply.clone()));
    if down {
        r.with(|i| i.refused += 1);
        return (AxStatus::SERVICE_UNAVAILABLE, "down for maintenance".into());
    }
    tokio::time::sleep(delay).await;
    let h = |n: &str| {
        headers
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    r.with(|i| {
        i.got.push((
            h("webhook-id"),
            h("webhook-timestamp"),
            h("webhook-signature"),
            body,
        ))
    });
    (AxStatus::OK, reply.to_string())
}

async fn start_receiver() -> (String, Receiver) {
    let r = Receiver::default();
    r.with(|i| i.reply = json!({"decision": "allow"}));
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, r)
}

fn write_exec(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Hooks retried fast, script handlers and modules in `dir`.
fn toml_for(dir: &Path, extra: &str) -> String {
    format!(
        "handlers_dir = {:?}\nmodules_dir = {:?}\n[hooks]\nretry_schedule = [\"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\"]\n{extra}\n",
        dir.display().to_string(),
        dir.display().to_string()
    )
}

/// A recorder server and an on-order product.
async fn recorder_catalog(app: &TestApp) {
    app.create(
        "/v1/servers",
        json!({"name": "rec", "module": "recorder", "settings": {"token": "Tok-Hooks-5521"}}),
    )
    .await;
    app.create(
        "/v1/products",
        json!({"name": "plan", "module": "recorder", "settings": {"package": "a"}}),
    )
    .await;
}

async fn client(app: &TestApp, name: &str, fields: Value) -> i64 {
    app.create(
        "/v1/clients",
        json!({"name": name, "email": format!("{}@example.test", name.to_lowercase()), "custom_fields": fields}),
    )
    .await["id"]
        .as_i64()
        .unwrap()
}

/// Orders a service and waits until it is active.
async fn active_service(app: &TestApp, client: i64) -> Value {
    let s = app
        .create(
            "/v1/services",
            json!({"client_id": client, "product": "plan"}),
        )
        .await;
    let id = s["id"].as_i64().unwrap();
    wait_for(app, &format!("/v1/services/{id}"), |v| {
        v["status"] == "active"
    })
    .await
}

/// Polls `path` until `ok` holds (at most 20 s).
async fn wait_for(app: &TestApp, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v) = app.get(path).await;
        if status == StatusCode::OK && ok(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting on {path}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const VIP_GATE: &str = r#"#!/usr/bin/env python3
import json, sys
msg = json.load(sys.stdin)
client = msg["data"].get("client") or {}
if msg["type"] == "service.suspend.before" and client.get("custom_fields", {}).get("vip") == "yes":
    print(json.dumps({"decision": "forbid", "reason": "VIP clients are never suspended"}))
else:
    print(json.dumps({"decision": "allow"}))
"#;

async fn gates_forbid_a_vip_suspension_and_rewrite_a_username(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    write_exec(dir.path(), "vip.py", VIP_GATE);
    let app = spawn_app_with(db, &toml_for(dir.path(), "")).await;
    recorder_catalog(&app).await;
    let gate = app
        .create(
            "/v1/handlers",
            json!({"name": "vip-guard", "kind": "script", "script": "vip.py", "phase": "gate",
                   "events": ["service.suspend.before"]}),
        )
        .await;
    assert_eq!(gate["on_error"], "forbid");
    assert!(
        gate.get("secret").is_none(),
        "script handlers have no secret"
    );

    let vip = client(&app, "Vip", json!({"vip": "yes"})).await;
    let plain = client(&app, "Plain", json!({})).await;
    let vs = active_service(&app, vip).await["id"].as_i64().unwrap();
    let ps = active_service(&app, plain).await["id"].as_i64().unwrap();

    let (status, problem) = app
        .post(
            &format!("/v1/services/{vs}/suspend"),
            json!({"reason": "non-payment"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["handler"], "vip-guard");
    assert_eq!(problem["reason"], "VIP clients are never suspended");
    assert!(problem["detail"].as_str().unwrap().contains("vip-guard"));
    // The refusal is in the service's job history.
    let (_, jobs) = app.get(&format!("/v1/services/{vs}/jobs")).await;
    let refused: Vec<&Value> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["action"] == "suspend")
        .collect();
    assert_eq!(refused.len(), 1, "{jobs}");
    assert_eq!(refused[0]["state"], "cancelled");
    assert!(refused[0]["last_error"]
        .as_str()
        .unwrap()
        .contains("forbidden by handler 'vip-guard': VIP clients are never suspended"));
    let (_, svc) = app.get(&format!("/v1/services/{vs}")).await;
    assert_eq!(svc["status"], "active");

    // Everyone else is suspended as usual.
    let job = app
        .act(ps, "suspend", Some(json!({"reason": "non-payment"})))
        .await;
    assert_eq!(job["state"], "done", "{job}");

    // An http gate on create rewrites the username; the order is stored and provisioned
    // under the new one.
    let (url, rx) = start_receiver().await;
    rx.with(|i| i.reply = json!({"decision": "allow", "data": {"username": "renamed-by-gate"}}));
    let created = app
        .create(
            "/v1/handlers",
            json!({"name": "namer", "kind": "http", "url": url, "phase": "gate",
                   "events": ["service.create.before"]}),
        )
        .await;
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    // Shown once: never again.
    let (_, shown) = app.get("/v1/handlers/namer").await;
    assert!(shown.get("secret").is_none(), "{shown}");
    let s = app
        .create(
            "/v1/services",
            json!({"client_id": plain, "product": "plan"}),
        )
        .await;
    assert_eq!(s["username"], "renamed-by-gate");
    let id = s["id"].as_i64().unwrap();
    wait_for(&app, &format!("/v1/services/{id}"), |v| {
        v["status"] == "active"
    })
    .await;
    assert!(app
        .recorder
        .with(|st| st.accounts.contains_key("renamed-by-gate")));
    // The gate saw the order and the client, and a signed message.
    let seen = rx.with(|i| i.got.clone());
    assert_eq!(seen.len(), 1);
    let body: Value = serde_json::from_str(&seen[0].3).unwrap();
    assert_eq!(body["type"], "service.create.before");
    assert_eq!(body["phase"], "gate");
    assert_eq!(body["data"]["client"]["id"], plain);
    assert!(seen[0].2.starts_with("v1,"));

    // A gate may change only documented fields: anything else is its failure, and this one
    // forbids on failure.
    rx.with(|i| i.reply = json!({"decision": "allow", "data": {"status": "active"}}));
    let (status, problem) = app
        .post(
            "/v1/services",
            json!({"client_id": plain, "product": "plan"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["handler"], "namer");
    assert!(
        problem["reason"].as_str().unwrap().contains("'status'"),
        "{problem}"
    );
    app.stop().await;
}

async fn a_gate_that_times_out_follows_its_policy_and_delays_only_its_own_action(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(db, &toml_for(dir.path(), "")).await;
    recorder_catalog(&app).await;
    let (url, rx) = start_receiver().await;
    rx.with(|i| i.delay = Duration::from_secs(3));
    app.create(
        "/v1/handlers",
        json!({"name": "slow", "kind": "http", "url": url, "phase": "gate",
               "events": ["service.suspend.before"], "timeout_ms": 300, "on_error": "forbid"}),
    )
    .await;
    let c = client(&app, "Slowpoke", json!({})).await;
    let s = active_service(&app, c).await["id"].as_i64().unwrap();

    let (status, problem) = app
        .post(&format!("/v1/services/{s}/suspend"), json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["handler"], "slow");
    assert!(
        problem["reason"]
            .as_str()
            .unwrap()
            .contains("no answer within 300 ms"),
        "{problem}"
    );

    let (status, h) = app
        .patch(
            "/v1/handlers/slow",
            json!({"on_error": "allow", "timeout_ms": 1500}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    // While the slow gate holds one suspend, another client's order goes straight through.
    let other = client(&app, "Other", json!({})).await;
    let suspend = {
        let app_base = app.base.clone();
        let key = app.key.clone();
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(format!("{app_base}/v1/services/{s}/suspend"))
                .bearer_auth(key)
                .json(&json!({"reason": "holiday"}))
                .send()
                .await
                .unwrap();
            (r.status(), Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = app
        .post(
            "/v1/services",
            json!({"client_id": other, "product": "plan"}),
        )
        .await;
    let ordered_at = Instant::now();
    assert_eq!(status, StatusCode::CREATED);
    let (status, suspended_at) = suspend.await.unwrap();
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "the allow policy lets the action through"
    );
    assert!(
        ordered_at < suspended_at,
        "the order did not wait for the slow gate"
    );
    wait_for(&app, &format!("/v1/services/{s}"), |v| {
        v["status"] == "suspended"
    })
    .await;
    app.stop().await;
}

/// Checks every received message's signature with the `standardwebhooks` package.
fn verify_with_standardwebhooks(secret: &str, messages: &[(String, String, String, String)]) {
    let python = std::env::var("PROVISIO_TEST_PYTHON").expect(
        "PROVISIO_TEST_PYTHON is not set: run scripts/test, which installs the Python test peers",
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let list: Vec<Value> = messages
        .iter()
        .map(|(id, ts, sig, body)| json!({"id": id, "ts": ts, "sig": sig, "body": body}))
        .collect();
    std::fs::write(file.path(), serde_json::to_vec(&list).unwrap()).unwrap();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
wh = Webhook(sys.argv[1])
msgs = json.load(open(sys.argv[2]))
for m in msgs:
    wh.verify(m["body"], {"webhook-id": m["id"], "webhook-timestamp": m["ts"], "webhook-signature": m["sig"]})
print("verified", len(msgs))
"#;
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(secret)
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "standardwebhooks refused a signature: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("verified {}", messages.len())
    );
}

const RECORD_SCRIPT: &str = r#"#!/usr/bin/env python3
import json, os, sys
msg = json.load(sys.stdin)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "script-inbox.jsonl")
with open(out, "a") as f:
    f.write(json.dumps(msg) + "\n")
"#;

async fn notify_deliveries_survive_an_outage_in_order_and_signed(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    write_exec(dir.path(), "record.py", RECORD_SCRIPT);
    let app = spawn_app_with(db, &toml_for(dir.path(), "")).await;
    recorder_catalog(&app).await;
    let (url, rx) = start_receiver().await;
    let (quiet_url, quiet) = start_receiver().await;
    rx.with(|i| i.down = true);
    let h = app
        .create(
            "/v1/handlers",
            json!({"name": "billing", "kind": "http", "url": url, "phase": "notify",
                   "events": ["service.*", "client.*"]}),
        )
        .await;
    let secret = h["secret"].as_str().unwrap().to_string();
    app.create(
        "/v1/handlers",
        json!({"name": "off", "kind": "http", "url": quiet_url, "phase": "notify",
               "events": ["*"], "status": "disabled"}),
    )
    .await;
    app.create(
        "/v1/handlers",
        json!({"name": "recorder-script", "kind": "script", "script": "record.py", "phase": "notify",
               "events": ["service.suspend.succeeded"]}),
    )
    .await;

    let a = client(&app, "Alpha", json!({})).await;
    let b = client(&app, "Beta", json!({})).await;
    let sa = active_service(&app, a).await["id"].as_i64().unwrap();
    let sb = active_service(&app, b).await["id"].as_i64().unwrap();
    for s in [sa, sb] {
        assert_eq!(
            app.act(s, "suspend", Some(json!({"reason": "holiday"})))
                .await["state"],
            "done"
        );
        assert_eq!(app.act(s, "unsuspend", None).await["state"], "done");
    }
    // Down for a while: several attempts fail and are logged.
    wait_for(&app, "/v1/deliveries?handler=billing", |v| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["attempts"].as_u64().unwrap() >= 3)
    })
    .await;
    assert!(rx.with(|i| i.refused) >= 3);
    rx.with(|i| i.down = false);

    let all = wait_for(&app, "/v1/deliveries?handler=billing&limit=500", |v| {
        let items = v["items"].as_array().unwrap();
        !items.is_empty() && items.iter().all(|d| d["state"] == "succeeded")
    })
    .await;
    let expected = all["items"].as_array().unwrap().len();
    // Every event of the two clients and their services: created, the orders, and each action.
    let (_, events) = app.get("/v1/events?limit=500").await;
    let wanted: Vec<i64> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            let t = e["type"].as_str().unwrap();
            t.starts_with("service.") || t.starts_with("client.")
        })
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(expected, wanted.len());

    let got = rx.with(|i| i.got.clone());
    // Once each.
    let mut ids: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "a message arrived twice");
    assert_eq!(got.len(), wanted.len());
    // In order per subject.
    let bodies = rx.bodies();
    for subject in [
        format!("service:{sa}"),
        format!("service:{sb}"),
        format!("client:{a}"),
    ] {
        let seq: Vec<i64> = bodies
            .iter()
            .filter(|b| b["subject"] == subject.as_str())
            .map(|b| b["id"].as_str().unwrap()[4..].parse().unwrap())
            .collect();
        assert!(
            seq.len() >= 2 || subject.starts_with("client"),
            "{subject}: {seq:?}"
        );
        assert!(
            seq.windows(2).all(|w| w[0] < w[1]),
            "{subject} out of order: {seq:?}"
        );
    }
    let kinds: Vec<&str> = bodies
        .iter()
        .filter(|b| b["subject"] == format!("service:{sa}").as_str())
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "service.create.before",
            "service.create.succeeded",
            "service.suspend.before",
            "service.suspend.succeeded",
            "service.unsuspend.before",
            "service.unsuspend.succeeded"
        ]
    );
    verify_with_standardwebhooks(&secret, &got);

    // The log of the first delivery shows the outage and the recovery.
    let first = all["items"][0]["id"].as_i64().unwrap();
    let (_, detail) = app.get(&format!("/v1/deliveries/{first}")).await;
    let log = detail["log"].as_array().unwrap();
    assert!(log.len() >= 3, "{detail}");
    assert_eq!(log[0]["succeeded"], false);
    assert_eq!(log[0]["status_code"], 503);
    assert!(log[0]["detail"]
        .as_str()
        .unwrap()
        .contains("down for maintenance"));
    assert_eq!(log.last().unwrap()["succeeded"], true);
    assert_eq!(log.last().unwrap()["status_code"], 200);

    // Redelivery sends it once more, under the same message id.
    let (status, _) = app
        .post(&format!("/v1/deliveries/{first}/redeliver"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let first_msg = format!("evt_{}", all["items"][0]["event_id"].as_i64().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.with(|i| i.got.len()) == got.len() {
        assert!(Instant::now() < deadline, "the redelivery never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rx.with(|i| i.got.iter().filter(|g| g.0 == first_msg).count()) == 2);

    // The disabled handler heard nothing; the script handler heard both suspensions.
    assert!(quiet.with(|i| i.got.is_empty() && i.refused == 0));
    let inbox = dir.path().join("script-inbox.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = std::fs::read_to_string(&inbox).unwrap_or_default();
        if lines.lines().count() == 2 {
            for l in lines.lines() {
                let m: Value = serde_json::from_str(l).unwrap();
                assert_eq!(m["type"], "service.suspend.succeeded");
            }
            break;
        }
        assert!(Instant::now() < deadline, "script handler got: {lines}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // No secret anywhere in what was delivered or logged.
    let (_, pw) = app.get(&format!("/v1/services/{sa}/password")).await;
    let password = pw["password"].as_str().unwrap().to_string();
    let (_, deliveries) = app.get("/v1/deliveries?limit=500").await;
    let mut seen = deliveries.to_string() + &detail.to_string() + &events.to_string();
    for b in &bodies {
        seen.push_str(&b.to_string());
    }
    for secret in [
        password.as_str(),
        secret.as_str(),
        &secret[6..],
        "Tok-Hooks-5521",
    ] {
        assert!(
            !seen.contains(secret),
            "a secret leaked into deliveries or events"
        );
    }
    // At rest the signing secret is sealed: not in the database files (WAL included).
    if db == Db::Sqlite {
        let key = &secret.as_bytes()[6..];
        for entry in std::fs::read_dir(app.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().contains("provisio.db") {
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    !bytes.windows(key.len()).any(|w| w == key),
                    "the signing secret is stored in clear in {}",
                    path.display()
                );
            }
        }
    }
    app.stop().await;
}

async fn a_handler_failing_too_long_is_disabled_with_an_event(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(db, &toml_for(dir.path(), "")).await;
    // Nothing listens on this port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    app.create(
        "/v1/handlers",
        json!({"name": "gone", "kind": "http", "url": format!("http://127.0.0.1:{port}/x"),
               "phase": "notify", "events": ["client.*"], "disable_after_secs": 1}),
    )
    .await;
    client(&app, "Trigger", json!({})).await;
    let h = wait_for(&app, "/v1/handlers/gone", |h| h["status"] == "disabled").await;
    assert!(h["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("failing since"));
    let (_, events) = app.get("/v1/events?type=handler.disabled").await;
    let items = events["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{events}");
    assert_eq!(items[0]["payload"]["handler"]["name"], "gone");
    // Enabling it again clears the record.
    let (_, h) = app
        .patch("/v1/handlers/gone", json!({"status": "enabled"}))
        .await;
    assert_eq!(h["status"], "enabled");
    assert!(h["failing_since"].is_null() && h["disabled_reason"].is_null());
    app.stop().await;
}

async fn balance_rules_suspend_then_unsuspend_only_non_payment(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(db, &toml_for(dir.path(), "")).await;
    recorder_catalog(&app).await;
    app.create(
        "/v1/rules",
        json!({"name": "dunning", "on": "client.balance_nonpositive", "delay_secs": 1,
               "action": {"kind": "suspend_services", "reason": "non-payment"}}),
    )
    .await;
    app.create(
        "/v1/rules",
        json!({"name": "paid", "on": "client.balance_nonnegative",
               "action": {"kind": "unsuspend_services", "only_reason": "non-payment"}}),
    )
    .await;
    let c = app
        .create(
            "/v1/clients",
            json!({"name": "Debtor", "email": "debtor@example.test", "balance_minor": 100}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let s1 = active_service(&app, c).await["id"].as_i64().unwrap();
    let s2 = active_service(&app, c).await["id"].as_i64().unwrap();
    let abused = active_service(&app, c).await["id"].as_i64().unwrap();
    assert_eq!(
        app.act(abused, "suspend", Some(json!({"reason": "abuse"})))
            .await["state"],
        "done"
    );

    let (status, _) = app
        .post(
            &format!("/v1/clients/{c}/transactions"),
            json!({"kind": "charge", "amount_minor": 500, "idempotency_key": "inv-9"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    for s in [s1, s2] {
        let v = wait_for(&app, &format!("/v1/services/{s}"), |v| {
            v["status"] == "suspended"
        })
        .await;
        assert_eq!(v["suspension"]["reason"], "non-payment");
    }
    let (_, v) = app.get(&format!("/v1/services/{abused}")).await;
    assert_eq!(v["suspension"]["reason"], "abuse");

    let (status, _) = app
        .post(
            &format!("/v1/clients/{c}/transactions"),
            json!({"kind": "payment", "amount_minor": 1000, "idempotency_key": "pay-9"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    for s in [s1, s2] {
        wait_for(&app, &format!("/v1/services/{s}"), |v| {
            v["status"] == "active"
        })
        .await;
    }
    // Give the rule time to do anything wrong, then check the abuse suspension stands.
    let (_, runs) = app.get("/v1/rule-runs?rule=paid").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut runs = runs;
    while runs["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["state"] != "done")
        || runs["items"].as_array().unwrap().is_empty()
    {
        assert!(Instant::now() < deadline, "{runs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        runs = app.get("/v1/rule-runs?rule=paid").await.1;
    }
    let (_, v) = app.get(&format!("/v1/services/{abused}")).await;
    assert_eq!(v["status"], "suspended");
    assert_eq!(v["suspension"]["reason"], "abuse");
    app.stop().await;
}

async fn a_grace_period_is_skipped_when_the_client_pays_in_time(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(db, &toml_for(dir.path(), "")).await;
    recorder_catalog(&app).await;
    app.create(
        "/v1/rules",
        json!({"name": "dunning", "on": "client.balance_nonpositive", "delay_secs": 2,
               "action": {"kind": "suspend_services", "reason": "non-payment"}}),
    )
    .await;
    let c = app
        .create(
            "/v1/clients",
            json!({"name": "Late", "email": "late@example.test", "balance_minor": 10}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let s = active_service(&app, c).await["id"].as_i64().unwrap();
    app.create(
        &format!("/v1/clients/{c}/transactions"),
        json!({"kind": "charge", "amount_minor": 50, "idempotency_key": "c1"}),
    )
    .await;
    app.create(
        &format!("/v1/clients/{c}/transactions"),
        json!({"kind": "payment", "amount_minor": 100, "idempotency_key": "p1"}),
    )
    .await;
    let runs = wait_for(&app, "/v1/rule-runs?rule=dunning", |v| {
        v["items"]
            .as_array()
            .unwrap()
            .first()
            .is_some_and(|r| r["state"] == "skipped")
    })
    .await;
    assert!(runs["items"][0]["result"]
        .as_str()
        .unwrap()
        .contains("positive again"));
    let (_, v) = app.get(&format!("/v1/services/{s}")).await;
    assert_eq!(v["status"], "active");
    app.stop().await;
}

async fn a_client_created_rule_orders_a_service(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(db, &toml_for(dir.path(), "")).await;
    recorder_catalog(&app).await;
    let (status, problem) = app
        .post(
            "/v1/rules",
            json!({"name": "bad", "on": "client.created", "action": {"kind": "create_service", "product": "nope"}}),
        )
        .await;
    crate::helpers::assert_field_error(status, &problem, "action.product", "exists");
    app.create(
        "/v1/rules",
        json!({"name": "signup-reseller", "on": "client.created",
               "action": {"kind": "create_service", "product": "plan"}}),
    )
    .await;
    let c = client(&app, "Reseller", json!({})).await;
    let services = wait_for(&app, &format!("/v1/services?client_id={c}"), |v| {
        v["items"]
            .as_array()
            .unwrap()
            .first()
            .is_some_and(|s| s["status"] == "active")
    })
    .await;
    assert_eq!(services["items"].as_array().unwrap().len(), 1);
    let (_, runs) = app.get("/v1/rule-runs?rule=signup-reseller").await;
    assert_eq!(runs["items"][0]["state"], "done");
    assert!(runs["items"][0]["result"]
        .as_str()
        .unwrap()
        .contains("ordered service"));
    app.stop().await;
}

const PASS_KEY_MODULE: &str = r#"#!/usr/bin/env python3
import json, sys
req = json.load(sys.stdin)
out = {"ok": True}
if req["action"] == "create":
    out["outputs"] = {"pass_key": "PK-" + req["service"]["username"].upper()}
print(json.dumps(out))
"#;

const SMTP_SINK: &str = r#"
import os, sys, time
from aiosmtpd.controller import Controller
port, out = int(sys.argv[1]), sys.argv[2]
class Sink:
    async def handle_DATA(self, server, session, envelope):
        n = len(os.listdir(out))
        with open(os.path.join(out, "%d.eml.tmp" % n), "wb") as f:
            f.write(envelope.content)
        os.rename(os.path.join(out, "%d.eml.tmp" % n), os.path.join(out, "%d.eml" % n))
        return "250 OK"
c = Controller(Sink(), hostname="127.0.0.1", port=port)
c.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

pub(crate) struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn start_smtp_sink(out: &Path) -> (u16, Kill) {
    use std::io::BufRead;
    let python = std::env::var("PROVISIO_TEST_PYTHON").expect(
        "PROVISIO_TEST_PYTHON is not set: run scripts/test, which installs the Python test peers",
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = std::process::Command::new(python)
        .arg("-c")
        .arg(SMTP_SINK)
        .arg(port.to_string())
        .arg(out)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the SMTP sink did not start");
    (port, Kill(child))
}

async fn the_welcome_email_arrives_with_the_pass_key(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    write_exec(dir.path(), "passkey.py", PASS_KEY_MODULE);
    let mail: PathBuf = dir.path().join("mail");
    std::fs::create_dir(&mail).unwrap();
    let (port, _sink) = start_smtp_sink(&mail);
    let smtp = format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {port}\nfrom = \"Provisio <noreply@example.test>\"\n"
    );
    let app = spawn_app_with(db, &toml_for(dir.path(), &smtp)).await;
    app.create(
        "/v1/servers",
        json!({"name": "backup", "module": "script", "settings": {"executable": "passkey.py"}}),
    )
    .await;
    app.create(
        "/v1/products",
        json!({"name": "reseller", "module": "script", "client_fields": {"pass_key": "pass_key"}}),
    )
    .await;
    app.create(
        "/v1/handlers",
        json!({"name": "welcome", "kind": "email", "phase": "notify",
               "events": ["service.create.succeeded"],
               "email": {"to": "{{ client.email }}",
                         "subject": "Welcome, {{ client.name }}",
                         "body": "Your account {{ service.username }} on {{ product.name }} is ready.\nPass key: {{ client.custom_fields.pass_key }}\n"}}),
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
    let s = app
        .create(
            "/v1/services",
            json!({"client_id": c, "product": "reseller", "username": "rita1"}),
        )
        .await;
    let id = s["id"].as_i64().unwrap();
    let (_, jobs) = app.get(&format!("/v1/services/{id}/jobs")).await;
    let job = app.wait_job(jobs["items"][0]["id"].as_i64().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    let client = wait_for(&app, &format!("/v1/clients/{c}"), |v| {
        v["custom_fields"]["pass_key"] == "PK-RITA1"
    })
    .await;
    assert_eq!(client["custom_fields"]["pass_key"], "PK-RITA1");
    let (_, ev) = app
        .get(&format!(
            "/v1/events?type=client.custom_fields_updated&subject=client:{c}"
        ))
        .await;
    assert_eq!(ev["items"].as_array().unwrap().len(), 1, "{ev}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let message = loop {
        if let Ok(m) = std::fs::read_to_string(mail.join("0.eml")) {
            break m;
        }
        assert!(Instant::now() < deadline, "no email arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(message.contains("To: rita@example.test"), "{message}");
    assert!(
        message.contains("Subject: Welcome, Rita Reseller"),
        "{message}"
    );
    assert!(message.contains("Pass key: PK-RITA1"), "{message}");
    assert!(
        message.contains("Your account rita1 on reseller is ready."),
        "{message}"
    );
    // The mail sink writes the message before the engine records the delivery.
    let deliveries = wait_for(&app, "/v1/deliveries?handler=welcome", |v| {
        v["items"][0]["state"] == "succeeded"
    })
    .await;
    assert_eq!(deliveries["items"][0]["state"], "succeeded");
    app.stop().await;
}

async fn handlers_refuse_bad_input_by_field(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(db, &toml_for(dir.path(), "")).await;
    let cases = [
        (
            json!({"name": "a", "kind": "http", "phase": "notify", "events": ["client.*"]}),
            "url",
            "required",
        ),
        (
            json!({"name": "a", "kind": "http", "url": "ftp://x", "phase": "notify", "events": ["client.*"]}),
            "url",
            "scheme",
        ),
        (
            json!({"name": "a", "kind": "script", "script": "../etc/passwd", "phase": "notify", "events": ["client.*"]}),
            "script",
            "path",
        ),
        (
            json!({"name": "a", "kind": "http", "url": "http://127.0.0.1/", "phase": "gate", "events": ["client.created"]}),
            "events[0]",
            "catalogue",
        ),
        (
            json!({"name": "a", "kind": "http", "url": "http://127.0.0.1/", "phase": "notify", "events": ["nope.*"]}),
            "events[0]",
            "catalogue",
        ),
        (
            json!({"name": "a", "kind": "http", "url": "http://127.0.0.1/", "phase": "notify", "events": ["client.*"], "timeout_ms": 0}),
            "timeout_ms",
            "range",
        ),
        (
            json!({"name": "a", "kind": "http", "url": "http://127.0.0.1/", "phase": "notify", "events": ["client.*"], "on_error": "allow"}),
            "on_error",
            "not_applicable",
        ),
        (
            json!({"name": "a", "kind": "http", "url": "http://127.0.0.1/", "phase": "notify", "events": ["client.*"], "secret": "whsec_short"}),
            "secret",
            "format",
        ),
        (
            json!({"name": "a", "kind": "email", "phase": "notify", "events": ["client.*"], "email": {"to": "x", "subject": "y", "body": "z"}}),
            "kind",
            "smtp",
        ),
    ];
    for (body, field, rule) in cases {
        let (status, problem) = app.post("/v1/handlers", body.clone()).await;
        crate::helpers::assert_field_error(status, &problem, field, rule);
        assert!(
            !problem.to_string().contains("whsec_short"),
            "the secret was echoed"
        );
    }
    app.stop().await;
}

async fn gates_run_in_order_and_each_sees_the_changes_before_it(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(db, &toml_for(dir.path(), "")).await;
    recorder_catalog(&app).await;
    let (first_url, first) = start_receiver().await;
    let (second_url, second) = start_receiver().await;
    first.with(|i| i.reply = json!({"decision": "allow", "data": {"username": "first-choice"}}));
    second.with(|i| i.reply = json!({"decision": "allow", "data": {"username": "second-choice"}}));
    // Created in the opposite order to their `order`, so the order field is what counts.
    app.create(
        "/v1/handlers",
        json!({"name": "later", "kind": "http", "url": second_url, "phase": "gate",
               "events": ["service.create.before"], "order": 20}),
    )
    .await;
    app.create(
        "/v1/handlers",
        json!({"name": "sooner", "kind": "http", "url": first_url, "phase": "gate",
               "events": ["service.*.before"], "order": 10}),
    )
    .await;
    let c = client(&app, "Ordered", json!({})).await;
    let s = app
        .create(
            "/v1/services",
            json!({"client_id": c, "product": "plan", "username": "asked-for"}),
        )
        .await;
    assert_eq!(s["username"], "second-choice");
    let saw_first = first.bodies();
    let saw_second = second.bodies();
    assert_eq!(saw_first[0]["data"]["service"]["username"], "asked-for");
    assert_eq!(saw_second[0]["data"]["service"]["username"], "first-choice");
    // A disabled gate is not asked.
    let (status, _) = app
        .patch("/v1/handlers/later", json!({"status": "disabled"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let s = app
        .create(
            "/v1/services",
            json!({"client_id": c, "product": "plan", "username": "asked-again"}),
        )
        .await;
    assert_eq!(s["username"], "first-choice");
    assert_eq!(second.bodies().len(), 1);
    app.stop().await;
}

async fn handlers_and_rules_declared_in_the_config_are_applied_by_name(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    write_exec(dir.path(), "vip.py", VIP_GATE);
    let declared = r#"
[[servers]]
name = "rec"
module = "recorder"

[[products]]
name = "plan"
module = "recorder"

[[handlers]]
name = "vip-guard"
kind = "script"
script = "vip.py"
phase = "gate"
events = ["service.suspend.before"]
timeout_ms = 2000

[[rules]]
name = "signup"
on = "client.created"
action = { kind = "create_service", product = "plan" }
"#;
    let app = spawn_app_with(db, &toml_for(dir.path(), declared)).await;
    let (_, h) = app.get("/v1/handlers/vip-guard").await;
    assert_eq!(h["timeout_ms"], 2000);
    assert_eq!(h["phase"], "gate");
    let (_, r) = app.get("/v1/rules/signup").await;
    assert_eq!(r["action"]["product"], "plan");
    let vip = client(&app, "Vip", json!({"vip": "yes"})).await;
    let svc = wait_for(&app, &format!("/v1/services?client_id={vip}"), |v| {
        v["items"]
            .as_array()
            .unwrap()
            .first()
            .is_some_and(|s| s["status"] == "active")
    })
    .await;
    let sid = svc["items"][0]["id"].as_i64().unwrap();
    let (status, problem) = app
        .post(&format!("/v1/services/{sid}/suspend"), json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["handler"], "vip-guard");
    app.stop().await;
}

async fn client_changes_pass_their_gates_first(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(db, &toml_for(dir.path(), "")).await;
    let (url, rx) = start_receiver().await;
    rx.with(|i| {
        i.reply = json!({"decision": "forbid", "reason": "clients are managed in billing"})
    });
    let keep = client(&app, "Keeper", json!({})).await;
    app.create(
        "/v1/handlers",
        json!({"name": "billing-owns-clients", "kind": "http", "url": url, "phase": "gate",
               "events": ["client.delete.before", "client.update.before"]}),
    )
    .await;
    let (status, problem) = app.delete(&format!("/v1/clients/{keep}")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["reason"], "clients are managed in billing");
    let (status, _) = app
        .patch(&format!("/v1/clients/{keep}"), json!({"name": "Renamed"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, c) = app.get(&format!("/v1/clients/{keep}")).await;
    assert_eq!(c["name"], "Keeper", "a forbidden change stores nothing");
    let bodies = rx.bodies();
    assert_eq!(bodies[0]["type"], "client.delete.before");
    assert_eq!(bodies[0]["data"]["client"]["id"], keep);
    // A gate may not change client data: allowing with data is its failure.
    rx.with(|i| i.reply = json!({"decision": "allow", "data": {"name": "Sneaky"}}));
    let (status, problem) = app
        .patch(&format!("/v1/clients/{keep}"), json!({"name": "Renamed"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(problem["reason"]
        .as_str()
        .unwrap()
        .contains("may not change client data"));
    rx.with(|i| i.reply = json!({"decision": "allow"}));
    let (status, c) = app
        .patch(&format!("/v1/clients/{keep}"), json!({"name": "Renamed"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    app.stop().await;
}

async fn after_a_rotation_messages_carry_both_signatures_for_a_while(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(db, &toml_for(dir.path(), "")).await;
    let (url, rx) = start_receiver().await;
    let h = app
        .create(
            "/v1/handlers",
            json!({"name": "crm", "kind": "http", "url": url, "phase": "notify",
                   "events": ["client.created"]}),
        )
        .await;
    let old = h["secret"].as_str().unwrap().to_string();
    let (status, rotated) = app.post("/v1/handlers/crm/rotate-secret", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(old, new);
    client(&app, "Rotated", json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.with(|i| i.got.is_empty()) {
        assert!(Instant::now() < deadline, "nothing delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = rx.with(|i| i.got.clone());
    assert_eq!(
        got[0].2.split(' ').count(),
        2,
        "two signatures: {}",
        got[0].2
    );
    // Receivers holding either secret accept the message.
    verify_with_standardwebhooks(&new, &got);
    verify_with_standardwebhooks(&old, &got);
    app.stop().await;
}

/// Without `[outbound] allow`, handlers at loopback (by address or a name resolving to
/// it), the metadata address and a private address are refused when used: a notify
/// delivery fails at its first attempt (a refusal is not retried) naming the address and
/// the setting, and a gate fails by its policy; nothing reaches the receiver.
async fn handlers_at_special_addresses_are_refused_by_default(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(db, &toml_for(dir.path(), "[outbound]\nallow = []\n")).await;
    let (url, rx) = start_receiver().await;
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/hook");
    let targets = [
        ("loop", url.clone(), "127.0.0.1"),
        (
            "named",
            format!("http://localhost:{port}/hook"),
            "127.0.0.1 (localhost)",
        ),
        ("v6", format!("http://[::1]:{port}/hook"), "::1"),
        (
            "metadata",
            "http://169.254.169.254/latest/meta-data".into(),
            "169.254.169.254",
        ),
        ("private", "http://10.0.0.1/hook".into(), "10.0.0.1"),
    ];
    for (name, target, _) in &targets {
        app.create(
            "/v1/handlers",
            json!({"name": name, "kind": "http", "url": target, "phase": "notify", "events": ["client.*"]}),
        )
        .await;
    }
    client(&app, "Trigger", json!({})).await;
    for (name, _, ip) in &targets {
        let v = wait_for(&app, &format!("/v1/deliveries?handler={name}"), |v| {
            v["items"][0]["state"] == "failed"
        })
        .await;
        let d = &v["items"][0];
        assert_eq!(d["attempts"], 1, "a refusal is not retried: {d}");
        let error = d["last_error"].as_str().unwrap();
        assert!(
            error.contains(&format!("refused to connect to {ip}: "))
                && error.contains("[outbound] allow = ["),
            "{name}: {error}"
        );
    }
    app.create(
        "/v1/handlers",
        json!({"name": "gatekeeper", "kind": "http", "url": format!("http://localhost:{port}/hook"),
               "phase": "gate", "events": ["client.update.before"], "on_error": "forbid"}),
    )
    .await;
    let keep = client(&app, "Keeper", json!({})).await;
    let (status, problem) = app
        .patch(&format!("/v1/clients/{keep}"), json!({"name": "Renamed"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(
        problem["reason"]
            .as_str()
            .unwrap()
            .contains("refused to connect to 127.0.0.1 (localhost)"),
        "{problem}"
    );
    assert!(rx.bodies().is_empty(), "nothing reached the receiver");
    app.stop().await;
}

/// Once allowed (the suite allows 127.0.0.1), a handler by name is reached; an answer
/// beyond `[outbound] max_handler_reply_bytes` is a failure, not read to the end.
async fn allowed_handlers_are_reached_and_their_answers_capped(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[outbound]\nallow = [\"127.0.0.1/32\"]\nmax_handler_reply_bytes = 1024\n";
    let app = spawn_app_with(db, &toml_for(dir.path(), extra)).await;
    let (url, rx) = start_receiver().await;
    let named = url.replace("127.0.0.1", "localhost");
    app.create(
        "/v1/handlers",
        json!({"name": "gatekeeper", "kind": "http", "url": named,
               "phase": "gate", "events": ["client.update.before"], "on_error": "forbid"}),
    )
    .await;
    let keep = client(&app, "Keeper", json!({})).await;
    let (status, c) = app
        .patch(&format!("/v1/clients/{keep}"), json!({"name": "Renamed"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(rx.bodies().len(), 1);
    rx.with(|i| i.reply = json!({"decision": "allow", "padding": "x".repeat(4096)}));
    let (status, problem) = app
        .patch(&format!("/v1/clients/{keep}"), json!({"name": "Again"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(
        problem["reason"]
            .as_str()
            .unwrap()
            .contains("the answer exceeds 1024 bytes ([outbound] max_handler_reply_bytes)"),
        "{problem}"
    );
    app.stop().await;
}

/// The SMTP relay passes the outbound guard too: a relay named `localhost` is resolved,
/// refused, and the email delivery fails at once without contacting it.
async fn an_smtp_relay_at_a_refused_address_is_not_contacted(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let smtp = format!(
        "[smtp]\nhost = \"localhost\"\nport = {port}\nfrom = \"Provisio <noreply@example.test>\"\n[outbound]\nallow = []\n"
    );
    let app = spawn_app_with(db, &toml_for(dir.path(), &smtp)).await;
    app.create(
        "/v1/handlers",
        json!({"name": "mailer", "kind": "email", "phase": "notify", "events": ["client.*"],
               "email": {"to": "{{ event.data.client.email }}", "subject": "Hello", "body": "Hi"}}),
    )
    .await;
    client(&app, "Mailable", json!({})).await;
    let v = wait_for(&app, "/v1/deliveries?handler=mailer", |v| {
        v["items"][0]["state"] == "failed"
    })
    .await;
    let d = &v["items"][0];
    assert_eq!(d["attempts"], 1, "{d}");
    assert!(
        d["last_error"].as_str().unwrap().contains(
            "the relay was not contacted: refused to connect to 127.0.0.1 (localhost): a loopback address"
        ),
        "{d}"
    );
    assert!(listener.accept().is_err(), "the relay was contacted");
    app.stop().await;
}

/// Sets a finished rule run back to pending and due, as a crash between its action and its
/// record (or an expired lease) would leave it, straight in the database.
async fn run_again(app: &TestApp, run: i64) {
    let now = chrono::Utc::now().timestamp_micros();
    let sql = "UPDATE rule_runs SET state = 'pending', result = NULL, lease_until = NULL, due_at = $1 WHERE id = $2";
    if app.db_url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(&app.db_url).await.unwrap();
        sqlx::query(sql)
            .bind(now)
            .bind(run)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::SqlitePool::connect(&app.db_url).await.unwrap();
        sqlx::query(sql)
            .bind(now)
            .bind(run)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}

/// A firing that runs twice orders one service: the order carries the firing's key.
async fn a_rule_firing_run_twice_orders_one_service(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(db, &toml_for(dir.path(), "")).await;
    recorder_catalog(&app).await;
    app.create(
        "/v1/rules",
        json!({"name": "welcome", "on": "client.created",
               "action": {"kind": "create_service", "product": "plan"}}),
    )
    .await;
    let c = app
        .create(
            "/v1/clients",
            json!({"name": "New", "email": "new@example.test"}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let runs = wait_for(&app, "/v1/rule-runs?rule=welcome", |v| {
        v["items"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["state"] == "done"))
    })
    .await;
    let run = runs["items"][0]["id"].as_i64().unwrap();
    assert!(
        runs["items"][0]["result"]
            .as_str()
            .unwrap()
            .starts_with("ordered service"),
        "{runs}"
    );
    run_again(&app, run).await;
    let runs = wait_for(&app, "/v1/rule-runs?rule=welcome", |v| {
        v["items"][0]["state"] == "done"
            && v["items"][0]["result"]
                .as_str()
                .is_some_and(|r| r.contains("already ordered"))
    })
    .await;
    assert_eq!(runs["items"].as_array().unwrap().len(), 1, "{runs}");
    let (_, services) = app.get(&format!("/v1/services?client_id={c}")).await;
    assert_eq!(services["items"].as_array().unwrap().len(), 1, "{services}");
    app.stop().await;
}

/// A rule on `service.create.succeeded` that orders a service would feed itself forever;
/// it stops at `[hooks] max_rule_depth`, and the stop is on the rule run with its reason.
async fn a_rule_that_feeds_itself_stops_at_the_depth_limit(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(db, &toml_for(dir.path(), "max_rule_depth = 2")).await;
    recorder_catalog(&app).await;
    let rule = app
        .create(
            "/v1/rules",
            json!({"name": "again", "on": "service.create.succeeded",
                   "action": {"kind": "create_service", "product": "plan"}}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let c = app
        .create(
            "/v1/clients",
            json!({"name": "Loop", "email": "loop@example.test"}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    active_service(&app, c).await;
    // Ordered by the key (depth 0), then by the rule at depths 1 and 2; the third firing
    // would be at depth 3 and is skipped.
    let runs = wait_for(&app, &format!("/v1/rule-runs?rule={rule}"), |v| {
        v["items"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["state"] == "skipped"))
    })
    .await;
    let skipped: Vec<&Value> = runs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{runs}");
    assert!(
        skipped[0]["result"]
            .as_str()
            .unwrap()
            .contains("max_rule_depth (2)"),
        "{runs}"
    );
    // Give a runaway chain time to show itself: there are exactly three services.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, services) = app.get(&format!("/v1/services?client_id={c}")).await;
    assert_eq!(services["items"].as_array().unwrap().len(), 3, "{services}");
    let (_, runs) = app.get(&format!("/v1/rule-runs?rule={rule}")).await;
    assert_eq!(runs["items"].as_array().unwrap().len(), 3, "{runs}");
    app.stop().await;
}

on_both!(
    an_smtp_relay_at_a_refused_address_is_not_contacted,
    a_rule_that_feeds_itself_stops_at_the_depth_limit,
    a_rule_firing_run_twice_orders_one_service,
    handlers_at_special_addresses_are_refused_by_default,
    allowed_handlers_are_reached_and_their_answers_capped,
    gates_forbid_a_vip_suspension_and_rewrite_a_username,
    a_gate_that_times_out_follows_its_policy_and_delays_only_its_own_action,
    notify_deliveries_survive_an_outage_in_order_and_signed,
    a_handler_failing_too_long_is_disabled_with_an_event,
    balance_rules_suspend_then_unsuspend_only_non_payment,
    a_grace_period_is_skipped_when_the_client_pays_in_time,
    a_client_created_rule_orders_a_service,
    the_welcome_email_arrives_with_the_pass_key,
    handlers_refuse_bad_input_by_field,
    gates_run_in_order_and_each_sees_the_changes_before_it,
    handlers_and_rules_declared_in_the_config_are_applied_by_name,
    client_changes_pass_their_gates_first,
    after_a_rotation_messages_carry_both_signatures_for_a_while,
);
