//! Console pages read over plain HTTP with a signed-in session (no browser): the breaker
//! state each worker node publishes on the overview, a product's `extends` chain with the
//! effective settings, a usage sync's progress while it runs and after, and a long
//! timeline's newest part with its "Older" link.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{spawn_app_with, Db, TestApp};

/// Jobs that fail once and stay failed, a breaker that opens after three failures and
/// probes after a second, and an overview read anew on every look.
const BREAKER_JOBS: &str = "[jobs]\nretry_schedule = []\nretry_jitter = 0.0\nlease_seconds = 2\npoll_interval_ms = 20\nbreaker_failures = 3\nbreaker_open_seconds = 1\n[console]\noverview_cache_seconds = 0\n";

/// A console session over HTTP, signed in with `key` the way the sign-in form does it.
struct Console {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

fn cookie(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no {name} cookie"))
        .to_string()
}

impl Console {
    async fn sign_in(app: &TestApp) -> Console {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let page = http
            .get(format!("{}/console/sign-in", app.base))
            .send()
            .await
            .unwrap();
        let pre = cookie(&page, "provisio_console_signin");
        let html = page.text().await.unwrap();
        let csrf = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("a csrf field on the sign-in page")
            .to_string();
        let r = http
            .post(format!("{}/console/sign-in", app.base))
            .header("cookie", format!("provisio_console_signin={pre}"))
            .form(&[("key", app.key.as_str()), ("csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "signed in");
        Console {
            cookie: format!("provisio_console={}", cookie(&r, "provisio_console")),
            http,
            base: app.base.clone(),
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The page's text inside the element with this id (up to the element's first closing
    /// tag of its kind), tags removed.
    async fn part(&self, path: &str, id: &str, tag: &str) -> String {
        let (status, html) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {html}");
        part_of(&html, id, tag)
    }

    /// Polls `path` until the element's text satisfies `ok`, for at most 20 s.
    async fn wait_part(
        &self,
        path: &str,
        id: &str,
        tag: &str,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.part(path, id, tag).await;
            if ok(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{path} #{id} never matched: {text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn part_of(html: &str, id: &str, tag: &str) -> String {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    // The element's content starts after the end of its opening tag.
    let open_end = html[at..].find('>').map_or(at, |e| at + e + 1);
    let rest = &html[open_end..];
    let end = rest.find(&format!("</{tag}>")).unwrap_or(rest.len());
    let mut text = String::new();
    let mut in_tag = false;
    for c in rest[..end].chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

async fn breaker_opens_and_closes_on_the_overview(db: Db) {
    let app = spawn_app_with(db, BREAKER_JOBS).await;
    let server = app
        .create(
            "/v1/servers",
            json!({"name": "wobbly", "module": "recorder", "settings": {"token": "Tok-Breaker-7"}}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    app.create(
        "/v1/products",
        json!({"name": "plan", "module": "recorder", "settings": {"package": "a"}}),
    )
    .await;
    let client = app
        .create("/v1/clients", json!({"name": "A", "email": "a@a.test"}))
        .await["id"]
        .as_i64()
        .unwrap();
    let console = Console::sign_in(&app).await;
    let cell = format!("breaker-{server}");
    let before = console.part("/console/", &cell, "td").await;
    assert_eq!(before.trim(), "closed", "no node has opened one yet");
    // Three remotes that refuse the connection: three transient failures open the breaker.
    for i in 0..3 {
        app.create(
            "/v1/services",
            json!({"client_id": client, "product": "plan", "username": format!("down{i}"),
                   "settings": {"behaviour": "down"}}),
        )
        .await;
    }
    let open = console
        .wait_part("/console/", &cell, "td", |t| t.contains("open"))
        .await;
    assert!(
        open.contains("probe at") && open.contains(" on "),
        "open, with its probe time and the node: {open}"
    );
    let (_, html) = console.get("/console/").await;
    assert!(
        !html.contains("Tok-Breaker-7"),
        "no server secret on the page"
    );
    // A healthy service's create is the probe once the breaker's second is over; its success
    // closes the breaker, and the node says so.
    let ok = app
        .create(
            "/v1/services",
            json!({"client_id": client, "product": "plan", "username": "fine1"}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let (_, jobs) = app.get(&format!("/v1/services/{ok}/jobs")).await;
    let job = app.wait_job(jobs["items"][0]["id"].as_i64().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    let closed = console
        .wait_part("/console/", &cell, "td", |t| t.contains("closed"))
        .await;
    assert!(
        closed.contains("since") && closed.contains(" on "),
        "closed by a node's transition, not the default: {closed}"
    );
    app.stop().await;
}

async fn product_page_shows_the_chain_and_effective_settings(db: Db) {
    let app = spawn_app_with(db, "").await;
    app.create(
        "/v1/products",
        json!({"name": "base", "module": "recorder",
               "settings": {"package": "a", "region": "eu", "speed": 5, "api_password": "Hunter2-Chain-Secret"}}),
    )
    .await;
    app.create(
        "/v1/products",
        json!({"name": "mid", "module": "recorder", "extends": "base",
               "settings": {"region": "us", "speed": 10}}),
    )
    .await;
    let top = app
        .create(
            "/v1/products",
            json!({"name": "top", "module": "recorder", "extends": "mid",
                   "settings": {"package": "c", "speed": null}}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let console = Console::sign_in(&app).await;
    let (status, html) = console.get(&format!("/console/products/{top}")).await;
    assert_eq!(status, 200, "{html}");
    assert!(!html.contains("Hunter2-Chain-Secret"), "{html}");
    let chain = part_of(&html, "chain", "table");
    let (b, m, t) = (
        chain.find("base").unwrap(),
        chain.find("mid").unwrap(),
        chain.find("top").unwrap(),
    );
    assert!(b < m && m < t, "root first: {chain}");
    assert!(chain.contains("region") && chain.contains("eu") && chain.contains("us"));
    assert!(
        chain.contains("(secret)"),
        "masked where it is set: {chain}"
    );
    let effective = part_of(&html, "effective", "table");
    // The same merge as the engine's: the REST view's effective settings, key by key.
    let (_, view) = app.get(&format!("/v1/products/{top}")).await;
    let eff = view["effective_settings"]
        .as_object()
        .expect("effective settings");
    for (k, v) in eff {
        assert!(effective.contains(k.as_str()), "{k} missing: {effective}");
        if let Some(s) = v.as_str() {
            assert!(effective.contains(s), "{k}={s} missing: {effective}");
        }
    }
    assert!(effective.contains("package") && effective.contains('c'));
    assert!(
        effective.contains("region") && effective.contains("us") && !effective.contains("eu"),
        "{effective}"
    );
    assert!(
        !effective.contains("speed"),
        "a null override removes it: {effective}"
    );
    assert!(
        effective.contains("api_password") && effective.contains("(secret)"),
        "inherited secret, masked: {effective}"
    );
    // The listing links each product to its page and shows the chain.
    let list = console.part("/console/products", "products", "table").await;
    assert!(list.contains("top → mid → base"), "{list}");
    let (status, _) = console.get("/console/products/nope").await;
    assert_eq!(status, 404);
    app.stop().await;
}

async fn usage_sync_page_shows_progress(db: Db) {
    use crate::usage::{active, app_with_remote, client, RemoteLock};
    let (app, _modules, file) = app_with_remote(db, "").await;
    app.create(
        "/v1/products",
        json!({"name": "gold", "module": "script", "settings": {"package": "gold"}}),
    )
    .await;
    let c = client(&app).await;
    active(&app, c, "gold", "alice").await;
    active(&app, c, "gold", "bob").await;
    let console = Console::sign_in(&app).await;
    // While the remote is held, the sync stays at its first page.
    let lock = RemoteLock::take(&file);
    let (status, run) = app.post("/v1/usage/syncs", json!({})).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{run}");
    let id = run["id"].as_i64().unwrap();
    let page = format!("/console/usage/{id}");
    let running = console
        .wait_part(&page, "sync-progress", "dd", |t| t.contains("1 pending"))
        .await;
    assert_eq!(running, "0 done, 1 pending, 0 failed of 1");
    assert_eq!(console.part(&page, "sync-state", "span").await, "running");
    let (_, html) = console.get(&page).await;
    assert!(
        html.contains("every 2s"),
        "a running sync's page follows it"
    );
    let list = console.part("/console/usage", "syncs", "table").await;
    assert!(
        list.contains(&id.to_string()) && list.contains("running"),
        "{list}"
    );
    drop(lock);
    let done = console
        .wait_part(&page, "sync-progress", "dd", |t| t.contains("1 done"))
        .await;
    assert_eq!(done, "1 done, 0 pending, 0 failed of 1");
    let servers = console.part(&page, "sync-servers", "table").await;
    assert!(
        servers.contains("scr") && servers.contains("2 / 2"),
        "{servers}"
    );
    let (_, html) = console.get(&page).await;
    assert!(
        !html.contains("every 2s"),
        "a finished sync's page stops polling"
    );
    app.stop().await;
}

/// A service with more jobs than one look reads: its page shows the newest part of the
/// timeline and an "Older" link to the rest, whose page no longer refreshes itself.
async fn a_long_timeline_shows_the_newest_and_links_older(db: Db) {
    let app = spawn_app_with(db, "").await;
    let w = super::world(&app).await;
    let service = provisio_core::ServiceId(w.service_a);
    let server = app.engine.get_service(service).await.unwrap().server_id;
    // Refused jobs (as a gate's refusal stores them) need no worker, so 60 are quick.
    let mut ids = Vec::new();
    for i in 0..60 {
        let j = app
            .engine
            .store()
            .insert_refused_job(
                service,
                &provisio_core::job::NewJob {
                    server_id: server,
                    action: provisio_core::module::Action::Suspend,
                    params: Default::default(),
                    idempotency_key: format!("timeline-{i}"),
                    max_attempts: 1,
                    run_after: app.engine.now(),
                    trace_id: provisio_core::trace::TraceId::random(),
                },
                &format!("refused {i}"),
            )
            .await
            .unwrap();
        ids.push(j.id.0);
    }
    let console = Console::sign_in(&app).await;
    let page = format!("/console/services/{}", w.service_a);
    let (status, html) = console.get(&page).await;
    assert_eq!(status, 200, "{html}");
    let newest = part_of(&html, "timeline", "table");
    assert!(
        newest.contains(&format!("job {} suspend", ids[59])),
        "{newest}"
    );
    assert!(
        !newest.contains(&format!("job {} suspend", ids[0])),
        "{newest}"
    );
    assert!(
        html.contains("hx-select=\"#timeline\""),
        "the newest part refreshes"
    );
    let older = html
        .split("href=\"")
        .find_map(|r| {
            let link = r.split('"').next()?;
            (r.contains("id=\"timeline-older\"") && link.contains("before="))
                .then(|| link.replace("&amp;", "&"))
        })
        .expect("an older link");
    let (status, html) = console.get(&older).await;
    assert_eq!(status, 200, "{html}");
    let rest = part_of(&html, "timeline", "table");
    assert!(rest.contains(&format!("job {} suspend", ids[0])), "{rest}");
    assert!(
        !rest.contains(&format!("job {} suspend", ids[59])),
        "{rest}"
    );
    assert!(
        !html.contains("hx-select=\"#timeline\""),
        "an older part stays as it is"
    );
    // Every job is on one of the two parts.
    for id in &ids {
        let line = format!("job {id} suspend");
        assert!(newest.contains(&line) || rest.contains(&line), "{line}");
    }
    let (status, _) = console.get(&format!("{page}?before=soon")).await;
    assert_eq!(status, 400);
    app.stop().await;
}

on_both!(
    a_long_timeline_shows_the_newest_and_links_older,
    breaker_opens_and_closes_on_the_overview,
    product_page_shows_the_chain_and_effective_settings,
    usage_sync_page_shows_progress,
);
