//! The console's forms in a real headless Chromium (the harness of `console.rs`), on both
//! databases: redelivering a failed delivery, an audit's fixes shown as a dry run and then
//! applied, a balance transaction (and a bad amount refused next to its field), and a
//! server's settings edited with its secret left blank and kept, then a product's settings,
//! set-up and client fields (a bad client field name refused next to its field). Each test
//! saves a screenshot under `target/console-screenshots/`.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::Locator;
use provisio_engine::input::RecordRef;
use serde_json::{json, Value};

use super::{available, world, Browser, BROWSERS};
use crate::helpers::{spawn_app_with, Db, TestApp};

impl Browser {
    async fn choose(&self, css: &str, value: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .select_by_value(value)
            .await
            .unwrap();
    }
}

/// Polls `path` until `done` holds (20 s at most).
async fn wait_api(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = app.get(path).await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{path} never got there: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A webhook endpoint that answers 503 while `down`, and counts what it accepted.
async fn receiver(down: Arc<AtomicBool>, got: Arc<AtomicU32>) -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let (down, got) = (down.clone(), got.clone());
            async move {
                if down.load(Ordering::SeqCst) {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "down for maintenance",
                    )
                } else {
                    got.fetch_add(1, Ordering::SeqCst);
                    (axum::http::StatusCode::OK, "ok")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn redeliver_a_failed_delivery(db: Db) {
    if !available() {
        return;
    }
    let _one = BROWSERS.lock().await;
    // One retry, then the delivery is failed.
    let app = spawn_app_with(db, "[hooks]\nretry_schedule = [\"100ms\"]\n").await;
    let w = world(&app).await;
    let (down, got) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU32::new(0)));
    let url = receiver(down.clone(), got.clone()).await;
    app.create(
        "/v1/handlers",
        json!({"name": "billing", "kind": "http", "url": url, "phase": "notify",
               "events": ["service.suspend.succeeded"]}),
    )
    .await;
    app.act(w.service_a, "suspend", Some(json!({"reason": "abuse"})))
        .await;
    let list = wait_api(&app, "/v1/deliveries?handler=billing", |v| {
        v["items"][0]["state"] == "failed"
    })
    .await;
    let id = list["items"][0]["id"].as_i64().unwrap();
    down.store(false, Ordering::SeqCst);

    let b = Browser::start(&app).await;
    b.sign_in(&app.key).await;
    b.goto("/console/handlers").await;
    b.click("#handlers a[href$='/handlers/1']").await;
    let row = b.wait_text(&format!("#delivery-{id}"), "failed").await;
    assert!(row.contains("503"), "{row}");
    b.click(&format!("#delivery-{id} a.redeliver")).await;
    b.wait_text("h1", "Redeliver").await;
    b.click("#confirm").await;
    b.wait_text("#delivery-state", "succeeded").await;
    b.wait_text("#delivery-attempts", "succeeded").await;
    b.screenshot(&format!("redeliver-{db:?}")).await;
    let (_, d) = app.get(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(d["state"], "succeeded", "{d}");
    assert_eq!(got.load(Ordering::SeqCst), 1);
    b.stop().await;
    app.stop().await;
}

async fn audit_fixes_show_the_dry_run_then_apply(db: Db) {
    if !available() {
        return;
    }
    let _one = BROWSERS.lock().await;
    let (app, _modules, file) = crate::usage::app_with_remote(db, "").await;
    app.create(
        "/v1/products",
        json!({"name": "gold", "module": "script", "settings": {"package": "gold"}}),
    )
    .await;
    let c = crate::usage::client(&app).await;
    crate::usage::active(&app, c, "gold", "alice").await;
    let bob = crate::usage::active(&app, c, "gold", "bob").await;
    // bob is suspended on the remote only.
    let mut accounts = crate::usage::read_state(&file)["accounts"].clone();
    accounts["bob"]["status"] = json!("suspended");
    crate::usage::write_accounts(&file, accounts);
    let remote_bob = || crate::usage::read_state(&file)["accounts"]["bob"]["status"].clone();

    let b = Browser::start(&app).await;
    b.sign_in(&app.key).await;
    b.goto("/console/audits").await;
    b.fill("#a-server", "scr").await;
    b.choose("#a-fix", "remote").await;
    b.click("#start-audit").await;
    b.wait_text("#audit-state", "done").await;
    b.wait_text("#dry-run-notice", "Nothing has changed").await;
    let findings = b.text("#findings").await;
    assert!(
        findings.contains("status_mismatch") && findings.contains("bob"),
        "{findings}"
    );
    assert!(!findings.contains("alice"), "{findings}");
    b.screenshot(&format!("audit-dry-run-{db:?}")).await;
    // The dry run changed nothing, here or on the remote.
    assert_eq!(remote_bob(), "suspended");
    let (_, jobs) = app.get(&format!("/v1/services/{bob}/jobs")).await;
    let actions: Vec<&str> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["create"], "{jobs}");

    b.click("#apply-fixes").await;
    b.wait_text("h1", "Apply the fixes").await;
    b.click("#confirm").await;
    b.wait_text("#audit-fix", "applied").await;
    b.wait_text("#audit-state", "done").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while remote_bob() != "active" {
        assert!(
            Instant::now() < deadline,
            "the fix never reached the remote"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.stop().await;
    app.stop().await;
}

async fn a_balance_transaction_and_a_bad_amount(db: Db) {
    if !available() {
        return;
    }
    let _one = BROWSERS.lock().await;
    let app = spawn_app_with(db, "").await;
    let w = world(&app).await;
    let b = Browser::start(&app).await;
    b.sign_in(&app.key).await;
    b.goto(&format!("/console/clients/{}", w.client_a)).await;
    b.wait_text("#client-services", "alice01").await;
    // A negative amount is refused by the engine, its message next to the field.
    b.choose("#t-kind", "payment").await;
    b.fill("#t-amount", "-5").await;
    b.click("#add-transaction").await;
    b.wait_text("#amount_minor-error", "must be a positive integer")
        .await;
    let (_, c) = app.get(&format!("/v1/clients/{}", w.client_a)).await;
    assert_eq!(c["balance_minor"], 0, "{c}");
    // A good one is recorded once and shown.
    b.choose("#t-kind", "payment").await;
    b.fill("#t-amount", "1250").await;
    b.fill("#t-description", "Bank transfer 0042").await;
    b.click("#add-transaction").await;
    b.wait_text("#notice", "Recorded transaction").await;
    assert!(b.text("#balance").await.contains("1250"));
    let tx = b.text("#transactions").await;
    assert!(
        tx.contains("Bank transfer 0042") && tx.contains("payment"),
        "{tx}"
    );
    b.screenshot(&format!("transaction-{db:?}")).await;
    let (_, c) = app.get(&format!("/v1/clients/{}", w.client_a)).await;
    assert_eq!(c["balance_minor"], 1250, "{c}");
    let (_, list) = app
        .get(&format!("/v1/clients/{}/transactions", w.client_a))
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    // The client's and a service's edit forms: the engine's field message, then a save.
    b.click("#edit-client").await;
    b.fill("#f-email", "not-an-email").await;
    b.click("#save").await;
    b.wait_text("#f-email-error", "email").await;
    b.fill("#f-email", "alice@wonder.test").await;
    b.fill("#f-external_id", "crm-77").await;
    b.click("#save").await;
    b.wait_text("#client", "crm-77").await;
    let (_, c) = app.get(&format!("/v1/clients/{}", w.client_a)).await;
    assert_eq!(
        (c["email"].as_str(), c["external_id"].as_str()),
        (Some("alice@wonder.test"), Some("crm-77")),
        "{c}"
    );
    b.goto(&format!("/console/services/{}/edit", w.service_a))
        .await;
    b.fill("#f-invoice", "INV-200").await;
    b.click("#save").await;
    b.wait_text("#service-facts", "INV-200").await;
    let (_, sv) = app.get(&format!("/v1/services/{}", w.service_a)).await;
    assert_eq!(sv["invoice"], "INV-200", "{sv}");
    b.stop().await;
    app.stop().await;
}

async fn a_server_edited_with_its_secret_left_blank_keeps_it(db: Db) {
    if !available() {
        return;
    }
    let _one = BROWSERS.lock().await;
    let app = spawn_app_with(db, "").await;
    world(&app).await;
    let b = Browser::start(&app).await;
    b.sign_in(&app.key).await;
    b.goto("/console/servers").await;
    b.click("#servers a[href$='/edit']").await;
    b.wait_text("h1", "Edit server rec").await;
    assert!(b.text("label[for=f-settings-token]").await.contains("set"));
    // A bad value is refused by the engine next to its field; nothing changes.
    b.fill("#f-max_concurrent", "0").await;
    b.click("#save").await;
    b.wait_text("#f-max_concurrent-error", "must be between 1 and")
        .await;
    b.screenshot(&format!("server-edit-{db:?}")).await;
    assert!(!b
        .client
        .source()
        .await
        .unwrap()
        .contains("Tok-Console-5521"));
    b.fill("#f-max_concurrent", "7").await;
    b.fill("#f-new-key", "region").await;
    b.fill("#f-new-value", "eu-west").await;
    b.click("#save").await;
    b.wait_text("#servers", "region=eu-west").await;
    let page = b.client.source().await.unwrap();
    assert!(!page.contains("Tok-Console-5521"), "a secret in the page");
    // A product's own settings, through its edit form.
    b.goto("/console/products").await;
    b.click("#products a[href$='/edit']").await;
    b.wait_text("h1", "Edit product plan").await;
    b.fill("#f-settings-package", "c").await;
    b.click("#save").await;
    b.wait_text("#products", "package=c").await;
    let (_, p) = app.get("/v1/products/plan").await;
    assert_eq!(p["settings"]["package"], "c", "{p}");
    // Its set-up and client fields: a bad client field name is refused next to its field,
    // with the REST route's message, and nothing changes.
    b.click("#products a[href$='/edit']").await;
    b.wait_text("h1", "Edit product plan").await;
    b.choose("#f-auto_setup", "manual").await;
    b.fill("#f-client_fields", "Pass Key=pass_key").await;
    b.click("#save").await;
    b.wait_text(
        "#f-client_fields-error",
        "custom field key 'Pass Key' must be 1 to 64 of a-z",
    )
    .await;
    let (_, p) = app.get("/v1/products/plan").await;
    assert_eq!(p["auto_setup"], "on_order", "{p}");
    assert_eq!(p["client_fields"], json!({}), "{p}");
    // A set-up no select offers is refused with its own message.
    let csrf = b.csrf().await;
    assert_eq!(
        b.post_from_page(
            "/console/products/plan/edit",
            &format!("csrf={csrf}&auto_setup=sometimes")
        )
        .await,
        422
    );
    b.fill("#f-client_fields", "pass_key=pass_key").await;
    b.click("#save").await;
    b.wait_text("#products", "package=c").await;
    let (_, p) = app.get("/v1/products/plan").await;
    assert_eq!(p["auto_setup"], "manual", "{p}");
    assert_eq!(p["client_fields"], json!({"pass_key": "pass_key"}), "{p}");
    // A readonly key is shown no edit link, and its forged form is refused.
    let readonly = app
        .make_key(json!({"name": "look", "role": "readonly"}))
        .await;
    b.click("header.top button[type=submit]").await;
    b.sign_in(&readonly).await;
    b.goto("/console/servers").await;
    b.wait_text("#servers", "rec").await;
    assert!(!b.exists("#servers a[href$='/edit']").await);
    let csrf = b.csrf().await;
    let forged = format!("csrf={csrf}&settings.token=stolen&max_concurrent=9");
    assert_eq!(
        b.post_from_page("/console/servers/rec/edit", &forged).await,
        403
    );
    let (_, s) = app.get("/v1/servers/rec").await;
    assert_eq!(s["max_concurrent"], 7, "{s}");
    assert_eq!(s["settings"]["region"], "eu-west", "{s}");
    assert!(!s.to_string().contains("Tok-Console-5521"));
    // The secret is the one it was, as the module is handed it.
    let server = app
        .engine
        .find_server(&RecordRef::from_segment("rec"))
        .await
        .unwrap();
    let open = app.engine.cipher().open_settings(&server.settings).unwrap();
    assert_eq!(open["token"], "Tok-Console-5521");
    b.stop().await;
    app.stop().await;
}

on_both!(
    redeliver_a_failed_delivery,
    audit_fixes_show_the_dry_run_then_apply,
    a_balance_transaction_and_a_bad_amount,
    a_server_edited_with_its_secret_left_blank_keeps_it,
);
