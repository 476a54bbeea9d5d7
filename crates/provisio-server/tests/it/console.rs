//! The admin console in a real headless Chromium, driven over WebDriver (`fantoccini`):
//! the flows on a fresh server, on both databases. Each test saves a screenshot
//! under `target/console-screenshots/`.
//!
//! chromedriver is `/usr/bin/chromedriver` (Debian's `chromium-driver`, which `scripts/test`
//! installs). Without it the tests say so and pass, unless `CI` is set: then they fail.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Db, TestApp};

/// The forms' flows, in a file of their own: `console::forms::…`.
#[path = "console_forms.rs"]
mod forms;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// One browser at a time: two cores run the whole suite.
pub(crate) static BROWSERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A chromedriver and its headless Chromium, stopped when dropped.
pub(crate) struct Browser {
    pub(crate) client: Client,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
    base: String,
}

pub(crate) fn available() -> bool {
    if std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {CHROMEDRIVER} or {CHROMIUM} is missing: scripts/test installs chromium and chromium-driver"
    );
    eprintln!("skipped: {CHROMEDRIVER} or {CHROMIUM} is not installed (apt-get install chromium chromium-driver)");
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    pub(crate) async fn start(app: &TestApp) -> Browser {
        let port = free_port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }))
        .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        // chromedriver needs a moment before it listens.
        for _ in 0..100 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Browser {
                        client,
                        driver,
                        _profile: profile,
                        base: app.base.clone(),
                    }
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no WebDriver session: {last:?}");
    }

    pub(crate) async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    pub(crate) async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    pub(crate) async fn exists(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    /// `css`, once it is in the page (within 10 s).
    async fn element(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    /// Clicks `css` once it is there. An htmx swap between finding the element and clicking
    /// it leaves a stale reference and no click: the element is then found anew, as a
    /// person would click the redrawn one.
    pub(crate) async fn click(&self, css: &str) {
        for tries_left in (0..5).rev() {
            match self.element(css).await.click().await {
                Ok(()) => return,
                Err(err) if err.is_stale_element_reference() && tries_left > 0 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("clicking {css}: {err}"),
            }
        }
    }

    pub(crate) async fn fill(&self, css: &str, value: &str) {
        let e = self.element(css).await;
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }

    /// Waits up to 20 s for `css` to hold `want`.
    pub(crate) async fn wait_text(&self, css: &str, want: &str) -> String {
        let mut seen = String::new();
        for _ in 0..200 {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                if let Ok(t) = e.text().await {
                    if t.contains(want) {
                        return t;
                    }
                    seen = t;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} never showed {want:?}; last: {seen:?}");
    }

    /// Waits up to 20 s for `css` to no longer hold `gone` (htmx swaps in the answer).
    pub(crate) async fn wait_gone(&self, css: &str, gone: &str) {
        for _ in 0..200 {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                if e.text().await.is_ok_and(|t| !t.contains(gone)) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} still shows {gone:?}");
    }

    pub(crate) async fn sign_in(&self, key: &str) {
        self.goto("/console/sign-in").await;
        self.fill("#key", key).await;
        self.click("button[type=submit]").await;
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("header.top"))
            .await
            .expect("signed in");
    }

    /// Sends a POST from the page, as a forged form would, and answers its status.
    pub(crate) async fn post_from_page(&self, path: &str, body: &str) -> u16 {
        let r = self
            .client
            .execute_async(
                "const [path, body, done] = arguments; \
                 fetch(path, {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body}) \
                   .then(r => done(r.status), e => done(String(e)));",
                vec![json!(path), json!(body)],
            )
            .await
            .unwrap();
        r.as_u64().unwrap_or_else(|| panic!("fetch failed: {r}")) as u16
    }

    /// The session's CSRF token, as its pages' forms carry it.
    pub(crate) async fn csrf(&self) -> String {
        self.client
            .find(Locator::Css("input[name=csrf]"))
            .await
            .unwrap()
            .attr("value")
            .await
            .unwrap()
            .unwrap()
    }

    pub(crate) async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
    }
}

/// A recorder server, a product, and one client's active service.
pub(crate) struct World {
    pub(crate) client_a: i64,
    pub(crate) client_b: i64,
    pub(crate) service_a: i64,
    pub(crate) service_b: i64,
}

pub(crate) async fn world(app: &TestApp) -> World {
    app.create(
        "/v1/servers",
        json!({"name": "rec", "module": "recorder", "settings": {"token": "Tok-Console-5521"}}),
    )
    .await;
    app.create(
        "/v1/products",
        json!({"name": "plan", "module": "recorder", "settings": {"package": "a"}}),
    )
    .await;
    app.create(
        "/v1/products",
        json!({"name": "bigger", "module": "recorder", "settings": {"package": "b"}}),
    )
    .await;
    let a = app
        .create(
            "/v1/clients",
            json!({"name": "Alice", "email": "alice@example.test"}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let b = app
        .create(
            "/v1/clients",
            json!({"name": "Bob", "email": "bob@example.test"}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let order = |client: i64, user: &str, invoice: Value, parent: Value| json!({"client_id": client, "product": "plan", "username": user, "invoice": invoice, "parent_invoice": parent});
    let sa = app
        .create(
            "/v1/services",
            order(a, "alice01", json!("INV-100"), Value::Null),
        )
        .await;
    let sb = app
        .create(
            "/v1/services",
            order(b, "bobby01", Value::Null, Value::Null),
        )
        .await;
    app.create(
        "/v1/services",
        order(a, "alice02", Value::Null, json!("INV-100")),
    )
    .await;
    for id in [sa["id"].as_i64().unwrap(), sb["id"].as_i64().unwrap()] {
        let (_, jobs) = app.get(&format!("/v1/services/{id}/jobs")).await;
        app.wait_job(jobs["items"][0]["id"].as_i64().unwrap()).await;
    }
    World {
        client_a: a,
        client_b: b,
        service_a: sa["id"].as_i64().unwrap(),
        service_b: sb["id"].as_i64().unwrap(),
    }
}

async fn suspend_from_the_service_page(db: Db) {
    if !available() {
        return;
    }
    let _one = BROWSERS.lock().await;
    let app = spawn_app(db).await;
    let w = world(&app).await;
    let b = Browser::start(&app).await;
    b.sign_in(&app.key).await;
    b.wait_text("#jobs-finished", "done").await;
    b.screenshot(&format!("overview-{db:?}")).await;
    // Find the service by its username.
    b.goto("/console/services").await;
    b.fill("#s-username", "alice01").await;
    b.click("#search").await;
    b.wait_gone("#services", "bobby01").await;
    assert!(b.text("#services").await.contains("alice01"));
    b.click("#services a.service-link").await;
    b.wait_text("#service-status", "active").await;
    // The settings of its server stay masked wherever the console shows them.
    b.goto("/console/servers").await;
    let servers = b.text("#servers").await;
    assert!(!servers.contains("Tok-Console-5521"), "{servers}");
    // Suspend with a reason, then watch the timeline show the job and its success.
    b.goto(&format!("/console/services/{}", w.service_a)).await;
    b.click("#act-suspend").await;
    b.fill("#reason", "non-payment").await;
    b.click("#run-action").await;
    b.wait_text("#timeline", "suspend").await;
    b.wait_text("#service-status", "suspended").await;
    let timeline = b.wait_text("#timeline", "service.suspend.succeeded").await;
    assert!(timeline.contains("done"), "{timeline}");
    assert!(b.text("#suspension").await.contains("non-payment"));
    b.screenshot(&format!("service-{db:?}")).await;
    let (_, s) = app.get(&format!("/v1/services/{}", w.service_a)).await;
    assert_eq!(s["status"], "suspended");
    assert_eq!(s["suspension"]["reason"], "non-payment");
    // A wrong terminate confirmation is refused next to its field and changes nothing.
    b.goto(&format!("/console/services/{}/act/terminate", w.service_a))
        .await;
    b.fill("#confirm", "someone-else").await;
    b.click("#run-action").await;
    b.wait_text("#confirm-error", "alice01").await;
    let (_, s) = app.get(&format!("/v1/services/{}", w.service_a)).await;
    assert_eq!(s["status"], "suspended");
    b.stop().await;
    app.stop().await;
}

async fn retry_a_failed_job(db: Db) {
    if !available() {
        return;
    }
    let _one = BROWSERS.lock().await;
    let app = spawn_app(db).await;
    world(&app).await;
    app.create(
        "/v1/servers",
        json!({"name": "full", "module": "recorder", "settings": {"refuse_creates": true}}),
    )
    .await;
    let s = app
        .create(
            "/v1/services",
            json!({"client_id": 1, "product": "plan", "server": "full", "username": "carol01"}),
        )
        .await;
    let (_, jobs) = app.get(&format!("/v1/services/{}/jobs", s["id"])).await;
    let job = jobs["items"][0]["id"].as_i64().unwrap();
    assert_eq!(app.wait_job(job).await["state"], "failed");
    let (st, _) = app
        .patch(
            "/v1/servers/full",
            json!({"settings": {"refuse_creates": false}}),
        )
        .await;
    assert!(st.is_success(), "{st}");
    // A worker keeps a server's record for up to 2 s (CACHE_TTL in jobs/worker.rs): past
    // that, the retry sees the server take new accounts again.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let b = Browser::start(&app).await;
    b.sign_in(&app.key).await;
    b.goto("/console/queue?state=failed").await;
    b.wait_text(&format!("#job-{job}"), "takes no new accounts")
        .await;
    b.click(&format!("#job-{job} a[href$='/retry']")).await;
    b.click("#confirm").await;
    b.wait_text("#job-state", "done").await;
    b.wait_text("#attempts", "permanent").await;
    // A finished job's page stops polling (the done render that replaced the polling
    // region carries no trigger), so no swap lands under a click on its links.
    assert!(
        !b.exists("[hx-trigger]").await,
        "a done job's page still polls"
    );
    b.screenshot(&format!("retry-{db:?}")).await;
    assert_eq!(app.wait_job(job).await["state"], "done");
    b.stop().await;
    app.stop().await;
}

async fn group_suspend_shows_the_dry_run_first(db: Db) {
    if !available() {
        return;
    }
    let _one = BROWSERS.lock().await;
    let app = spawn_app(db).await;
    world(&app).await;
    let b = Browser::start(&app).await;
    b.sign_in(&app.key).await;
    b.goto("/console/groups").await;
    b.fill("#g-invoice", "INV-100").await;
    b.fill("#g-reason", "abuse").await;
    b.click("#dry-run").await;
    b.wait_text("#dry-run-notice", "Nothing has changed").await;
    let members = b.text("#members").await;
    assert!(
        members.contains("alice01") && members.contains("alice02"),
        "{members}"
    );
    assert!(members.contains("planned"), "{members}");
    // The dry run changed nothing.
    let (_, list) = app.get("/v1/services?status=suspended").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    b.screenshot(&format!("group-dry-run-{db:?}")).await;
    b.click("#run-group").await;
    b.wait_text("#members", "queued").await;
    for _ in 0..100 {
        let (_, list) = app.get("/v1/services?status=suspended").await;
        if list["items"].as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, list) = app.get("/v1/services?status=suspended").await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice01", "alice02"]);
    b.stop().await;
    app.stop().await;
}

async fn roles_and_forms_are_enforced(db: Db) {
    if !available() {
        return;
    }
    let _one = BROWSERS.lock().await;
    let app = spawn_app(db).await;
    let w = world(&app).await;
    let readonly = app
        .make_key(json!({"name": "look", "role": "readonly"}))
        .await;
    let alice = app
        .make_key(json!({"name": "alice", "role": "client", "client_id": w.client_a}))
        .await;
    let b = Browser::start(&app).await;

    // A form sent without its CSRF token is refused, even from a signed-in admin.
    b.sign_in(&app.key).await;
    let path = format!("/console/services/{}/act/suspend", w.service_b);
    assert_eq!(b.post_from_page(&path, "reason=admin").await, 403);
    assert_eq!(
        b.post_from_page(&path, "reason=admin&csrf=not-the-token")
            .await,
        403
    );
    let (_, s) = app.get(&format!("/v1/services/{}", w.service_b)).await;
    assert_eq!(s["status"], "active", "nothing was suspended");
    b.goto("/console/sign-in").await;

    // A readonly key sees the service but no action button, and its forged POST (with the
    // session's own token) is refused.
    b.sign_in(&readonly).await;
    b.goto(&format!("/console/services/{}", w.service_b)).await;
    b.wait_text("#service-status", "active").await;
    assert!(b.exists("#no-actions").await);
    assert!(!b.exists("a.action").await);
    assert!(!b.exists("#login-url").await);
    let csrf = b.csrf().await;
    assert_eq!(
        b.post_from_page(&path, &format!("reason=admin&csrf={csrf}"))
            .await,
        403
    );
    assert_eq!(
        b.post_from_page("/console/queue/1/retry", &format!("csrf={csrf}"))
            .await,
        403
    );
    b.goto("/console/queue?state=done").await;
    assert!(!b.text("#jobs").await.contains("Retry"));
    b.screenshot(&format!("readonly-{db:?}")).await;
    let (_, s) = app.get(&format!("/v1/services/{}", w.service_b)).await;
    assert_eq!(s["status"], "active");
    // Signing out ends the session: its cookie no longer opens a page.
    b.click("header.top button[type=submit]").await;
    b.wait_text("h1", "Provisio console").await;
    b.goto("/console/queue").await;
    b.wait_text("h2", "Sign in").await;

    // A client key sees only its own services, and another client's is not found.
    b.sign_in(&alice).await;
    b.goto("/console/services").await;
    let list = b.wait_text("#services", "alice01").await;
    assert!(!list.contains("bobby01"), "{list}");
    b.goto(&format!("/console/services/{}", w.service_b)).await;
    b.wait_text("#problem", "not found").await;
    assert!(!b.client.source().await.unwrap().contains("bobby01"));
    b.screenshot(&format!("client-other-{db:?}")).await;
    b.goto(&format!("/console/clients/{}", w.client_b)).await;
    b.wait_text("#problem", "not found").await;
    // Its own service opens, with the actions a client key runs.
    b.goto(&format!("/console/services/{}", w.service_a)).await;
    b.wait_text("#service-status", "active").await;
    b.stop().await;
    app.stop().await;
}

on_both!(
    suspend_from_the_service_page,
    retry_a_failed_job,
    group_suspend_shows_the_dry_run_first,
    roles_and_forms_are_enforced,
);

/// The pages checked over plain HTTP, without a browser.
#[path = "console_pages.rs"]
mod pages;
