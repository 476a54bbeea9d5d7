//! Actions through the queue: lifecycle, retries, unknown outcomes, ordering, limits, the
//! breaker, and the module queue's retry and resolve.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Db, TestApp};

async fn recorder_setup(app: &TestApp, server_extra: Value) -> i64 {
    let client = app
        .create("/v1/clients", json!({"name": "A", "email": "a@a.test"}))
        .await;
    let mut server =
        json!({"name": "rec", "module": "recorder", "settings": {"token": "Tok-Secret-991"}});
    for (k, v) in server_extra.as_object().unwrap() {
        server[k] = v.clone();
    }
    app.create("/v1/servers", server).await;
    app.create(
        "/v1/products",
        json!({"name": "plan", "module": "recorder", "settings": {"package": "a"}}),
    )
    .await;
    app.create(
        "/v1/products",
        json!({"name": "manual", "module": "recorder", "auto_setup": "manual"}),
    )
    .await;
    app.create(
        "/v1/products",
        json!({"name": "plan-b", "module": "recorder", "settings": {"package": "b"}}),
    )
    .await;
    client["id"].as_i64().unwrap()
}

async fn order(
    app: &TestApp,
    client: i64,
    product: &str,
    username: &str,
    settings: Value,
) -> Value {
    app.create(
        "/v1/services",
        json!({"client_id": client, "product": product, "username": username, "settings": settings}),
    )
    .await
}

async fn first_job(app: &TestApp, service: i64) -> Value {
    let (_, jobs) = app.get(&format!("/v1/services/{service}/jobs")).await;
    jobs["items"][0].clone()
}

async fn lifecycle(db: Db) {
    let app = spawn_app_with(db, "").await;
    let client = recorder_setup(&app, json!({})).await;
    // on_order: the create job is stored with the service and runs by itself.
    let svc = order(&app, client, "plan", "alice", json!({})).await;
    let id = svc["id"].as_i64().unwrap();
    let create = app
        .wait_job(first_job(&app, id).await["id"].as_i64().unwrap())
        .await;
    assert_eq!(create["state"], "done", "{create}");
    let (_, s) = app.get(&format!("/v1/services/{id}")).await;
    assert_eq!(s["status"], "active");
    assert_eq!(s["outputs"]["pass_key"], "PK-alice");

    // Impossible transitions are refused with the reason.
    let (status, body) = app
        .post(&format!("/v1/services/{id}/unsuspend"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["detail"].as_str().unwrap().contains("not suspended"),
        "{body}"
    );

    let until = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let job = app
        .act(
            id,
            "suspend",
            Some(json!({"reason": "holiday", "until": until})),
        )
        .await;
    assert_eq!(job["state"], "done", "{job}");
    let (_, s) = app.get(&format!("/v1/services/{id}")).await;
    assert_eq!(s["status"], "suspended");
    assert_eq!(s["suspension"]["reason"], "holiday");
    assert!(s["suspension"]["until"].is_string());
    let (status, _) = app
        .post(&format!("/v1/services/{id}/suspend"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    assert_eq!(app.act(id, "unsuspend", None).await["state"], "done");
    let (_, s) = app.get(&format!("/v1/services/{id}")).await;
    assert_eq!(s["status"], "active");
    assert!(s["suspension"].is_null());

    // change-password: the new password is stored only after the remote took it.
    let job = app
        .act(
            id,
            "change-password",
            Some(json!({"password": "New-Pass-7788"})),
        )
        .await;
    assert_eq!(job["state"], "done");
    assert!(
        !job.to_string().contains("New-Pass-7788"),
        "job shows no password: {job}"
    );
    let (_, pw) = app.get(&format!("/v1/services/{id}/password")).await;
    assert_eq!(pw["password"], "New-Pass-7788");

    let job = app
        .act(id, "change-package", Some(json!({"product": "plan-b"})))
        .await;
    assert_eq!(job["state"], "done", "{job}");
    let (_, s) = app.get(&format!("/v1/services/{id}")).await;
    let (_, b) = app.get("/v1/products/plan-b").await;
    assert_eq!(s["product_id"], b["id"]);
    assert_eq!(app.act(id, "renew", None).await["state"], "done");

    // Fields that do not belong to an action are refused.
    let (status, body) = app
        .post(&format!("/v1/services/{id}/renew"), json!({"reason": "x"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = app
        .post(&format!("/v1/services/{id}/explode"), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["detail"].as_str().unwrap().contains("reboot"),
        "names the custom actions there are: {body}"
    );
    // A custom action the module offers runs like any other, status unchanged.
    let job = app.act(id, "reboot", None).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["action"], "reboot");
    let (status, _) = app
        .post(&format!("/v1/services/{id}/lookup"), json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "internal actions are not service actions"
    );

    assert_eq!(app.act(id, "terminate", None).await["state"], "done");
    let (_, s) = app.get(&format!("/v1/services/{id}")).await;
    assert_eq!(s["status"], "terminated");
    let (status, body) = app
        .post(&format!("/v1/services/{id}/suspend"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body["detail"].as_str().unwrap().contains("terminated"));

    // The history lists every job with its attempts.
    let (_, jobs) = app.get(&format!("/v1/services/{id}/jobs")).await;
    let actions: Vec<&str> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "create",
            "suspend",
            "unsuspend",
            "change_password",
            "change_package",
            "renew",
            "reboot",
            "terminate"
        ]
    );
    let (_, detail) = app
        .get(&format!("/v1/jobs/{}", jobs["items"][0]["id"]))
        .await;
    assert_eq!(detail["history"][0]["outcome"], "ok");
    // Every effect happened once on the remote.
    let effects = app
        .recorder
        .with(|s| s.effects.iter().filter(|(_, _, u)| u == "alice").count());
    assert_eq!(effects, 8);
    app.stop().await;
}

async fn a_suspend_never_overtakes_the_create(db: Db) {
    let app = spawn_app_with(db, "").await;
    let client = recorder_setup(&app, json!({})).await;
    let svc = order(&app, client, "plan", "bob", json!({"delay_ms": 300})).await;
    let id = svc["id"].as_i64().unwrap();
    // Queued behind the create, which is still running: allowed, and runs after it.
    let (status, job) = app
        .post(
            &format!("/v1/services/{id}/suspend"),
            json!({"reason": "abuse"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job = app.wait_job(job["id"].as_i64().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    let order: Vec<String> = app.recorder.with(|s| {
        s.effects
            .iter()
            .filter(|e| e.2 == "bob")
            .map(|e| e.1.clone())
            .collect()
    });
    assert_eq!(order, ["create", "suspend"]);
    let (_, s) = app.get(&format!("/v1/services/{id}")).await;
    assert_eq!(s["status"], "suspended");
    assert_eq!(s["suspension"]["reason"], "abuse");
    app.stop().await;
}

async fn transient_failures_are_retried_and_permanent_ones_parked(db: Db) {
    let app = spawn_app_with(db, "").await;
    let client = recorder_setup(&app, json!({})).await;
    let flaky = order(&app, client, "plan", "flaky", json!({"behaviour": "flaky"})).await;
    let job = app
        .wait_job(
            first_job(&app, flaky["id"].as_i64().unwrap()).await["id"]
                .as_i64()
                .unwrap(),
        )
        .await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["attempts"], 3);
    let (_, detail) = app.get(&format!("/v1/jobs/{}", job["id"])).await;
    let outcomes: Vec<&str> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["transient", "transient", "ok"]);
    assert!(detail["history"][0]["message"]
        .as_str()
        .unwrap()
        .contains("503"));

    let bad = order(
        &app,
        client,
        "plan",
        "badplan",
        json!({"behaviour": "permanent"}),
    )
    .await;
    let bad_id = bad["id"].as_i64().unwrap();
    let job = app
        .wait_job(first_job(&app, bad_id).await["id"].as_i64().unwrap())
        .await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["attempts"], 1, "no retry after a permanent error");
    assert_eq!(job["error_kind"], "permanent");
    let (_, pw) = app.get(&format!("/v1/services/{bad_id}/password")).await;
    let password = pw["password"].as_str().unwrap();
    assert!(
        !job["last_error"].as_str().unwrap().contains(password),
        "module message redacted: {job}"
    );
    let (_, s) = app.get(&format!("/v1/services/{bad_id}")).await;
    assert_eq!(s["status"], "failed");

    // Retries exhausted: parked as failed.
    let down = order(&app, client, "plan", "down", json!({"behaviour": "down"})).await;
    let job = app
        .wait_job(
            first_job(&app, down["id"].as_i64().unwrap()).await["id"]
                .as_i64()
                .unwrap(),
        )
        .await;
    assert_eq!(job["state"], "failed");
    assert_eq!(
        job["attempts"], 4,
        "the first try and one per scheduled retry"
    );
    assert_eq!(job["error_kind"], "transient");

    // The queue lists failed jobs; a person resolves one and retries the other.
    let (_, failed) = app.get("/v1/jobs?state=failed").await;
    assert_eq!(failed["items"].as_array().unwrap().len(), 2);
    let (status, resolved) = app
        .post(
            &format!("/v1/jobs/{}/resolve", job["id"]),
            json!({"note": "remote replaced"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resolved}");
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["note"], "remote replaced");
    let (status, _) = app
        .post(&format!("/v1/jobs/{}/retry", job["id"]), json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "resolved jobs are not retried"
    );
    // After fixing the plan, retry the failed create: the service becomes active.
    let (status, _) = app
        .patch(
            &format!("/v1/services/{bad_id}"),
            json!({"settings": {"behaviour": "ok"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, retried) = app
        .call(
            reqwest::Method::POST,
            "/v1/jobs/retry",
            Some(json!({"server": "rec"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["retried"], 1);
    let job = app
        .wait_job(first_job(&app, bad_id).await["id"].as_i64().unwrap())
        .await;
    assert_eq!(job["state"], "done", "{job}");
    let (_, s) = app.get(&format!("/v1/services/{bad_id}")).await;
    assert_eq!(s["status"], "active");
    app.stop().await;
}

async fn an_unknown_outcome_is_looked_up_not_repeated(db: Db) {
    let app = spawn_app_with(db, "").await;
    let client = recorder_setup(&app, json!({})).await;
    let svc = order(
        &app,
        client,
        "plan",
        "carol",
        json!({"behaviour": "lost_reply"}),
    )
    .await;
    let job = app
        .wait_job(
            first_job(&app, svc["id"].as_i64().unwrap()).await["id"]
                .as_i64()
                .unwrap(),
        )
        .await;
    assert_eq!(job["state"], "done", "{job}");
    let (_, detail) = app.get(&format!("/v1/jobs/{}", job["id"])).await;
    let outcomes: Vec<&str> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["unknown", "skipped"]);
    let (creates, lookups) = app.recorder.with(|s| {
        (
            s.calls
                .get(&("carol".into(), "create".into()))
                .copied()
                .unwrap_or(0),
            s.calls
                .get(&("carol".into(), "lookup".into()))
                .copied()
                .unwrap_or(0),
        )
    });
    assert_eq!(creates, 1, "create was not sent twice");
    assert_eq!(lookups, 1);
    let (_, s) = app.get(&format!("/v1/services/{}", svc["id"])).await;
    assert_eq!(s["status"], "active");
    app.stop().await;
}

async fn per_server_concurrency_and_rate_hold(db: Db) {
    let app = spawn_app_with(db, "").await;
    let client = recorder_setup(&app, json!({"max_concurrent": 3, "max_per_second": 20})).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let s = order(
            &app,
            client,
            "plan",
            &format!("c{i}"),
            json!({"delay_ms": 40}),
        )
        .await;
        ids.push(s["id"].as_i64().unwrap());
    }
    for id in ids {
        let job = app
            .wait_job(first_job(&app, id).await["id"].as_i64().unwrap())
            .await;
        assert_eq!(job["state"], "done");
    }
    let (max_running, starts) = app.recorder.with(|s| (s.max_running, s.starts.clone()));
    assert!(max_running <= 3, "at most 3 at once, saw {max_running}");
    assert!(max_running >= 2, "it does run in parallel ({max_running})");
    // No one-second window holds more starts than the rate plus its one-second burst.
    for (i, t) in starts.iter().enumerate() {
        let in_window = starts[i..]
            .iter()
            .take_while(|s| s.duration_since(*t).as_secs_f64() < 1.0)
            .count();
        assert!(in_window <= 40, "{in_window} starts within one second");
    }
    app.stop().await;
}

async fn the_breaker_stops_calls_to_a_failing_server(db: Db) {
    // Open for 5 s, so the 1 s without calls checked below lies well inside it even on a
    // loaded machine.
    let jobs =
        crate::helpers::FAST_JOBS.replace("breaker_open_seconds = 2", "breaker_open_seconds = 5");
    let app = spawn_app_with(db, &jobs).await;
    let client = recorder_setup(&app, json!({"max_concurrent": 1})).await;
    for i in 0..8 {
        order(
            &app,
            client,
            "plan",
            &format!("d{i}"),
            json!({"behaviour": "down"}),
        )
        .await;
    }
    // Five failures open the breaker for 5 s; in the first second after that no call is made.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let total = || {
        app.recorder.with(|s| {
            s.calls
                .iter()
                .filter(|((_, a), _)| a == "create")
                .map(|(_, n)| *n)
                .sum::<u32>()
        })
    };
    while total() < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "failures did not come"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let at_open = total();
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert_eq!(total(), at_open, "no calls while the breaker is open");
    // Then it probes again (bounded wait: a loaded machine may be slow to get there).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while total() == at_open {
        assert!(
            std::time::Instant::now() < deadline,
            "no probe after the open period"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.stop().await;
}

async fn manual_products_wait_and_suspensions_end_by_themselves(db: Db) {
    let app = spawn_app_with(db, "").await;
    let client = recorder_setup(&app, json!({})).await;
    let svc = order(&app, client, "manual", "dave", json!({})).await;
    let id = svc["id"].as_i64().unwrap();
    let (_, jobs) = app.get(&format!("/v1/services/{id}/jobs")).await;
    assert!(
        jobs["items"].as_array().unwrap().is_empty(),
        "manual: no create yet"
    );
    let (status, body) = app
        .post(&format!("/v1/services/{id}/suspend"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(app.act(id, "create", None).await["state"], "done");
    let until = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    assert_eq!(
        app.act(
            id,
            "suspend",
            Some(json!({"reason": "holiday", "until": until}))
        )
        .await["state"],
        "done"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (_, s) = app.get(&format!("/v1/services/{id}")).await;
        if s["status"] == "active" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not unsuspended: {s}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, jobs) = app.get(&format!("/v1/services/{id}/jobs")).await;
    assert_eq!(jobs["items"][2]["action"], "unsuspend");
    app.stop().await;
}

async fn server_test_runs_the_module_check(db: Db) {
    let app = spawn_app_with(db, "").await;
    recorder_setup(&app, json!({})).await;
    let (status, r) = app.post("/v1/servers/rec/test", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r["ok"], true);
    app.create(
        "/v1/servers",
        json!({"name": "rec2", "module": "recorder", "settings": {"healthy": false}}),
    )
    .await;
    let (_, r) = app.post("/v1/servers/rec2/test", json!({})).await;
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("cannot log in"));
    app.stop().await;
}

async fn on_accept_products_wait_for_acceptance(db: Db) {
    let app = spawn_app_with(db, "").await;
    let client = recorder_setup(&app, json!({})).await;
    app.create(
        "/v1/products",
        json!({"name": "accepted", "module": "recorder", "auto_setup": "on_accept"}),
    )
    .await;
    let svc = order(&app, client, "accepted", "erin", json!({})).await;
    let id = svc["id"].as_i64().unwrap();
    let (_, jobs) = app.get(&format!("/v1/services/{id}/jobs")).await;
    assert!(
        jobs["items"].as_array().unwrap().is_empty(),
        "waits in pending"
    );
    let (status, body) = app
        .post(&format!("/v1/services/{id}/accept"), json!({"reason": "x"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let job = app.act(id, "accept", None).await;
    assert_eq!(job["action"], "create");
    assert_eq!(job["state"], "done", "{job}");
    let (_, s) = app.get(&format!("/v1/services/{id}")).await;
    assert_eq!(s["status"], "active");
    let (status, body) = app
        .post(&format!("/v1/services/{id}/accept"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("pending"),
        "{body}"
    );
    // Accept applies only to products set up on acceptance.
    let other = order(&app, client, "manual", "frank", json!({})).await;
    let (status, body) = app
        .post(&format!("/v1/services/{}/accept", other["id"]), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("run create instead"),
        "{body}"
    );
    let created = app
        .recorder
        .with(|s| s.effects.iter().filter(|e| e.2 == "erin").count());
    assert_eq!(created, 1);
    app.stop().await;
}

/// Requests are bounded: beyond `max_concurrent_requests` one is answered 503 with
/// `Retry-After` at once (liveness checks still pass), and one that runs past
/// `request_timeout_seconds` (here a `?wait=` on a slow create) is answered 503 then.
async fn requests_are_bounded_in_number_and_time(db: Db) {
    let app = spawn_app_with(
        db,
        "[http]\nmax_concurrent_requests = 2\nrequest_timeout_seconds = 2\n",
    )
    .await;
    let client = recorder_setup(&app, json!({})).await;
    // Two slow services, each with a suspend queued behind its create and waited for.
    let mut ids = Vec::new();
    for name in ["kim", "lou"] {
        let svc = order(&app, client, "plan", name, json!({"delay_ms": 6000})).await;
        ids.push(svc["id"].as_i64().unwrap());
    }
    let started = std::time::Instant::now();
    let held = |id: i64| {
        let http = app.http.clone();
        let url = format!("{}/v1/services/{id}/suspend?wait=5", app.base);
        let key = app.key.clone();
        tokio::spawn(async move {
            let r = http.post(url).bearer_auth(key).send().await.unwrap();
            let retry = r.headers().get("retry-after").cloned();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            (status, retry, body)
        })
    };
    let first = held(ids[0]);
    let second = held(ids[1]);
    // Both have reached the server well before their 2 s are up.
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    assert!(
        !first.is_finished() && !second.is_finished(),
        "both requests are still held: {:?}",
        if first.is_finished() {
            Some(first.await.unwrap())
        } else {
            None
        }
    );
    let refused = app.request(reqwest::Method::GET, "/v1/clients", None).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "liveness is never refused");
    for waiting in [first, second] {
        let (status, retry, body) = waiting.await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(retry.is_some());
        assert!(
            body["detail"].as_str().unwrap().contains("longer than 2 s"),
            "{body}"
        );
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let (status, _) = app.get("/v1/clients").await;
    assert_eq!(status, StatusCode::OK, "slots are free again");
    app.stop().await;
}

on_both!(
    lifecycle,
    a_suspend_never_overtakes_the_create,
    transient_failures_are_retried_and_permanent_ones_parked,
    an_unknown_outcome_is_looked_up_not_repeated,
    per_server_concurrency_and_rate_hold,
    the_breaker_stops_calls_to_a_failing_server,
    manual_products_wait_and_suspensions_end_by_themselves,
    server_test_runs_the_module_check,
    on_accept_products_wait_for_acceptance,
    requests_are_bounded_in_number_and_time,
);
