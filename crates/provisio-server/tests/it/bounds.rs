//! Bounded work against hostile remotes and templates: template bombs (an action's, an
//! email's) and remotes whose cursors repeat, cycle or never end are stopped with clear
//! errors, while `/healthz` keeps
//! answering within 100 ms. The test runtime is single-threaded, so anything that held it
//! (a render on an async worker, an endless listing) would show in the latency.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Db, TestApp};

const BOMB: &str =
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";

/// Pages of one account each; the next cursor depends on the remote's kind.
async fn page(
    State(calls): State<Arc<AtomicU32>>,
    Path(kind): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> axum::Json<Value> {
    let n = calls.fetch_add(1, Ordering::SeqCst);
    let cursor = q.get("cursor").map(String::as_str).unwrap_or("");
    let next = match (kind.as_str(), cursor) {
        ("same", _) => "again".to_string(),
        ("cycle", "A") => "B".into(),
        ("cycle", _) => "A".into(),
        // A fresh cursor every time: only the page cap ends it.
        _ => format!("p{n}"),
    };
    axum::Json(json!({"items": [{"name": format!("{kind}-{n}")}], "next": next}))
}

async fn wait_audit(app: &TestApp, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, a) = app.get(&format!("/v1/audits/{id}")).await;
        if a["state"] != "running" {
            return a;
        }
        assert!(Instant::now() < deadline, "audit never ended: {a}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bombs_and_endless_cursors_are_stopped_while_healthz_answers(db: Db) {
    let calls = Arc::new(AtomicU32::new(0));
    let router = axum::Router::new()
        .route("/api/{kind}", axum::routing::get(page))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    // Fuel for a few hundred milliseconds of rendering: held on the test's one thread, it
    // would stall /healthz well past the bound.
    // A relay that is never reached: the email's template fails before any connection.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let smtp_port = unused.local_addr().unwrap().port();
    drop(unused);
    let app = spawn_app_with(
        db,
        &format!(
            "[templates]\nfuel = 3000000\nmax_output_bytes = 16777216\n\
             [audit]\nmax_pages = 50\npage_size = 1\n\
             [smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\nfrom = \"Provisio <noreply@example.test>\"\n"
        ),
    )
    .await;

    let ok = json!({"method": "POST", "url": "/noop"});
    let list = |kind: &str| {
        json!({"method": "GET", "url": format!("/{kind}"),
               "query": {"cursor": "{{ params.cursor | default('') }}"},
               "accounts": {"pointer": "/items", "username": "/name", "next": "/next"}})
    };
    for kind in ["same", "cycle", "endless"] {
        app.create(
            "/v1/servers",
            json!({"name": kind, "module": "http", "settings": {"base_url": base, "actions": {
                "create": ok, "suspend": ok, "unsuspend": ok, "terminate": ok,
                "list_accounts": list(kind),
                "usage": {"method": "GET", "url": format!("/{kind}"),
                          "query": {"cursor": "{{ params.cursor | default('') }}"},
                          "usage": {"pointer": "/items", "username": "/name",
                                    "metrics": {"disk": "/disk"}, "next": "/next"}},
            }}}),
        )
        .await;
    }
    app.create(
        "/v1/servers",
        json!({"name": "bomb", "module": "http", "group": "bombs", "settings": {"base_url": base, "actions": {
            "create": {"method": "POST", "url": "/users", "body": {"name": BOMB}},
            "suspend": ok, "unsuspend": ok, "terminate": ok,
        }}}),
    )
    .await;
    app.create(
        "/v1/products",
        json!({"name": "bombed", "module": "http", "server_group": "bombs", "settings": {}}),
    )
    .await;
    app.create(
        "/v1/handlers",
        json!({"name": "bomb-mail", "kind": "email", "phase": "notify", "events": ["client.created"],
               "email": {"to": "{{ client.email }}", "subject": "Hi", "body": BOMB}}),
    )
    .await;
    let client = app
        .create(
            "/v1/clients",
            json!({"name": "Acme", "email": "ops@acme.test"}),
        )
        .await["id"]
        .as_i64()
        .unwrap();

    // /healthz, polled throughout from a thread of its own, like an outside client: a
    // stall of the server's thread shows as the latency of the request waiting on it.
    let polling = Arc::new(AtomicBool::new(true));
    let poller = {
        let polling = polling.clone();
        let url = format!("{}/healthz", app.base);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let http = reqwest::Client::new();
                let mut latencies = Vec::new();
                while polling.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let r = http.get(&url).send().await.unwrap();
                    assert_eq!(r.status(), StatusCode::OK);
                    latencies.push(at.elapsed());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                latencies
            })
        })
    };

    let started = Instant::now();
    let mut audits = Vec::new();
    for kind in ["same", "cycle", "endless"] {
        let (status, a) = app.post("/v1/audits", json!({"server": kind})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{a}");
        audits.push((kind, a[0]["id"].as_i64().unwrap()));
    }
    let service = app
        .create(
            "/v1/services",
            json!({"client_id": client, "product": "bombed", "username": "boom"}),
        )
        .await;
    let (_, jobs) = app
        .get(&format!("/v1/services/{}/jobs", service["id"]))
        .await;
    let job = app.wait_job(jobs["items"][0]["id"].as_i64().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["error_kind"], "permanent", "{job}");
    assert_eq!(
        job["last_error"],
        "create: template actions.create.body.name: the template ran out of fuel: it does \
         too much work (limit 3000000)",
        "{job}"
    );
    let (_, detail) = app.get(&format!("/v1/jobs/{}", job["id"])).await;
    let history = detail["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "not retried: {detail}");
    let bomb_ms = history[0]["duration_ms"].as_i64().unwrap();
    let bombs_done = started.elapsed();
    let mut notes = Vec::new();
    for (kind, id) in &audits {
        let a = wait_audit(&app, *id).await;
        assert_eq!(a["state"], "failed", "{kind}: {a}");
        notes.push((
            kind.to_string(),
            a["note"].as_str().unwrap_or("").to_string(),
        ));
    }
    let usage = crate::usage::sync(&app, json!({"server": "cycle"})).await;
    let usage_errors = usage["servers"][0]["errors"].to_string();
    let mail = loop {
        let (_, d) = app.get("/v1/deliveries?handler=bomb-mail").await;
        let d = d["items"][0].clone();
        if d["state"] == "failed" || started.elapsed() > Duration::from_secs(20) {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let all_done = started.elapsed();
    polling.store(false, Ordering::Relaxed);
    // Joined off this thread: the poller may be waiting for an answer that only this
    // thread's runtime, where the server runs, can give (a blocking join here deadlocked).
    let latencies = tokio::task::spawn_blocking(move || poller.join().unwrap())
        .await
        .unwrap();
    let worst = latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "the bomb failed, its attempt in {bomb_ms} ms; done {bombs_done:?} and \
         audits {all_done:?} after the start; /healthz polled {} times, slowest {worst:?}",
        latencies.len()
    );

    let note = |kind: &str| notes.iter().find(|(k, _)| k == kind).unwrap().1.clone();
    assert!(
        note("same").contains("page 2 returned the same next cursor as page 1"),
        "{}",
        note("same")
    );
    assert!(
        note("cycle").contains("page 3 returned the next cursor of page 1 again")
            && note("cycle").contains("cycle"),
        "{}",
        note("cycle")
    );
    assert!(
        note("endless").contains("stopped after 50 pages, the most audit.max_pages allows"),
        "{}",
        note("endless")
    );
    assert!(
        usage_errors.contains("page 3 returned the next cursor of page 1 again"),
        "{usage}"
    );
    // Audits: 2 pages + 3 pages + 50 pages; the usage sync 3.
    assert_eq!(calls.load(Ordering::SeqCst), 58);
    // The email's bomb fails the delivery for good on its first attempt.
    assert_eq!(mail["state"], "failed", "{mail}");
    assert_eq!(mail["attempts"], 1, "{mail}");
    assert_eq!(
        mail["last_error"],
        "rendering the body failed: the template ran out of fuel: it does too much work \
         (limit 3000000)",
        "{mail}"
    );
    // Unbounded, the bomb's 10^10 iterations would take hours; its fuel stops it within a
    // second on a quiet machine, a few on a loaded one.
    assert!(bomb_ms < 5000, "the bomb's attempt took {bomb_ms} ms");
    assert!(latencies.len() >= 5, "too few polls: {}", latencies.len());
    // Rendered on the server's thread, the bomb would hold /healthz for its whole attempt;
    // off it, a poll waits at most a scheduling slice, which grows with the machine's load
    // as the attempt does.
    let stall = Duration::from_millis(250).max(Duration::from_millis(bomb_ms as u64 / 2));
    assert!(
        worst < stall,
        "/healthz took {worst:?}, the bomb's attempt {bomb_ms} ms"
    );
    app.stop().await;
}

on_both!(bombs_and_endless_cursors_are_stopped_while_healthz_answers);
