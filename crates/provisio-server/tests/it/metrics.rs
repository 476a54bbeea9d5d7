//! `/metrics` counts exactly what a known workload did, passes `promtool check metrics`,
//! is refused to billing keys and served without a key on `metrics_listen`; `/readyz`
//! follows the loops and the database; the documented alert rules pass promtool.

use std::sync::Arc;

use provisio_core::module::Module as _;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

on_both!(
    a_known_workload_is_counted_exactly,
    readiness_follows_the_loops_and_the_database
);

/// Fast retries, and a breaker that never opens: 60 transient failures must not hold the
/// workload back for the breaker's pauses.
const JOBS: &str = "[jobs]\nretry_schedule = [\"50ms\", \"50ms\", \"50ms\"]\nretry_jitter = 0.0\nlease_seconds = 5\npoll_interval_ms = 20\nbreaker_failures = 100000\n";

fn db_tag(db: Db) -> &'static str {
    match db {
        Db::Sqlite => "sqlite",
        Db::Postgres => "postgres",
    }
}

/// The value of the sample `name{labels}` with every given label, summed over the rest.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

async fn scrape(app: &TestApp, key: &str) -> (StatusCode, String) {
    let r = app.request_as(key, Method::GET, "/metrics", None).await;
    let status = r.status();
    (status, r.text().await.unwrap())
}

/// Runs promtool with `args` and `stdin`; `None` (with the reason printed) when promtool
/// is not installed outside CI. In CI a missing promtool fails the test.
fn promtool(args: &[&str], stdin: Option<&str>) -> Option<(bool, String)> {
    use std::io::Write as _;
    let child = std::process::Command::new("promtool")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is required in CI: {e}"
            );
            eprintln!("skipping the promtool check: promtool is not installed ({e})");
            return None;
        }
    };
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    Some((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// 200 creates on one server: 30 fail transiently twice then work, 5 fail permanently.
async fn a_known_workload_is_counted_exactly(db: Db) {
    // The module and server are named for this test alone, so its series are its own
    // although every test of the process shares the one recorder.
    let module = format!("metered_{}", db_tag(db));
    let server = format!("metered-{}", db_tag(db));
    let recorder = Arc::new(Recorder::default());
    let mut info = Recorder::default().info().clone();
    info.name = module.clone();
    recorder.info.set(info).unwrap();
    let app = spawn_app_recording(db, JOBS, recorder.clone()).await;
    let client = app
        .create("/v1/clients", json!({"name": "M", "email": "m@m.test"}))
        .await;
    app.create(
        "/v1/servers",
        json!({"name": server, "module": module, "settings": {"token": "Tok-Metrics-1"}}),
    )
    .await;
    app.create(
        "/v1/products",
        json!({"name": "plan", "module": module, "settings": {}}),
    )
    .await;
    let orders: Vec<_> = (0..200)
        .map(|i| {
            let behaviour = match i {
                0..30 => "flaky",
                30..35 => "permanent",
                _ => "ok",
            };
            json!({"order": {"client_id": client["id"], "product": "plan",
                             "username": format!("m{i}"), "settings": {"behaviour": behaviour}}})
        })
        .collect();
    let (s, answer) = app
        .post("/v1/services/batch", json!({"orders": orders}))
        .await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    assert_eq!(answer["created"], 200, "{answer}");

    let readonly = app
        .make_key(json!({"name": "prom", "role": "readonly"}))
        .await;
    let attempts = |text: &str, outcome: &str| {
        sample(
            text,
            "provisio_job_attempts_total",
            &[("server", &server), ("outcome", outcome)],
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        let (status, text) = scrape(&app, &readonly).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        // Every job has its final outcome once ok and permanent attempts reach 200.
        if attempts(&text, "ok") + attempts(&text, "permanent") >= 200.0 {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the workload did not finish: {}",
            text.lines()
                .filter(|l| l.contains(&server))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        sample(
            &text,
            "provisio_jobs_enqueued_total",
            &[("action", "create"), ("module", &module)]
        ),
        200.0
    );
    assert_eq!(attempts(&text, "ok"), 195.0);
    assert_eq!(attempts(&text, "transient"), 60.0);
    assert_eq!(attempts(&text, "permanent"), 5.0);
    for other in ["skipped", "unknown", "cancelled"] {
        assert_eq!(attempts(&text, other), 0.0, "{other}");
    }
    assert_eq!(
        sample(
            &text,
            "provisio_job_attempt_duration_seconds_count",
            &[("action", "create"), ("module", &module)]
        ),
        260.0
    );
    assert_eq!(
        sample(&text, "provisio_server_in_flight", &[("server", &server)]),
        0.0,
        "nothing runs any more"
    );
    // The remote saw the same: 195 accounts made, each once.
    assert_eq!(recorder.with(|st| st.effects.len()), 195);
    // Requests are counted by route template, never by a path with ids in it.
    assert!(
        sample(
            &text,
            "provisio_http_requests_total",
            &[
                ("route", "/v1/services/batch"),
                ("method", "POST"),
                ("status", "2xx")
            ]
        ) >= 1.0
    );
    for route in text.split("route=\"").skip(1) {
        let route = route.split('"').next().unwrap();
        assert!(
            route
                .split('/')
                .all(|seg| seg.is_empty() || seg.parse::<i64>().is_err()),
            "an id in a route label: {route}"
        );
    }
    assert!(text.contains("provisio_job_queue_wait_seconds_bucket"));
    if let Some((ok, out)) = promtool(&["check", "metrics"], Some(&text)) {
        assert!(ok, "promtool check metrics: {out}");
    }

    // Billing keys may not read it; without a key there is none to read.
    let billing = app
        .make_key(json!({"name": "whmcs", "role": "billing"}))
        .await;
    let (status, body) = scrape(&app, &billing).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let r = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The `metrics_listen` application serves it without a key.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let keyless = provisio_server::metrics_router(app.engine.clone());
    let served = tokio::spawn(async move { axum::serve(listener, keyless).await });
    let r = app
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("provisio_job_attempts_total"));
    served.abort();
    app.stop().await;
}

async fn readiness_follows_the_loops_and_the_database(db: Db) {
    let mut app = spawn_app(db).await;
    let r = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready", "{body}");
    for name in [
        "worker",
        "lease_heartbeat",
        "maintenance",
        "deliveries",
        "rules",
        "clock",
    ] {
        assert!(
            body["loops_seconds_since_beat"].get(name).is_some(),
            "{name}: {body}"
        );
    }

    // A stopped worker is not ready, and the answer says which loops.
    app.stop_worker().await;
    let r = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let problem: serde_json::Value = r.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("loop:worker: stopped"), "{problem}");
    assert!(!detail.contains("database"), "{problem}");

    // Without its database it is not ready either, and says so.
    app.engine.store().close().await;
    let r = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("database: does not answer"),
        "{problem}"
    );
    // Liveness is another matter: the process still answers.
    let r = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// The alert rules of docs/operations.md load, and each fires on the series it is for.
#[test]
fn the_documented_alert_rules_pass_promtool() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let rules = docs.join("alerts.yml");
    let tests = docs.join("alerts.test.yml");
    let Some((ok, out)) = promtool(&["check", "rules", rules.to_str().unwrap()], None) else {
        return;
    };
    assert!(ok, "promtool check rules: {out}");
    let (ok, out) = promtool(&["test", "rules", tests.to_str().unwrap()], None).unwrap();
    assert!(ok, "promtool test rules: {out}");
    // The dashboard is JSON Grafana can import: panels over our metrics.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(docs.join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 6);
    for p in panels {
        let expr = p["targets"][0]["expr"].as_str().unwrap();
        assert!(expr.contains("provisio_"), "{expr}");
    }
}
