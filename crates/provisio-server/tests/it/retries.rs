//! What makes retries and imports safe, the part of the API contract a billing system leans
//! on most: `Idempotency-Key` on every POST (a retry
//! answers the first answer; another request or one still running under the key is a
//! 409), the billing system's own ids (`external_id`) on clients and services, and batch
//! orders of up to 1,000 services or clients.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_field_error, spawn_app_with, Db, TestApp};

/// A recorder server and an on-order product: every order queues its create.
async fn catalog(app: &TestApp) -> i64 {
    app.create(
        "/v1/servers",
        json!({"name": "rec", "module": "recorder", "settings": {"token": "Tok-Contract-7731"}}),
    )
    .await;
    app.create(
        "/v1/products",
        json!({"name": "plan", "module": "recorder", "settings": {"package": "a"}}),
    )
    .await;
    app.create(
        "/v1/clients",
        json!({"name": "Acme", "email": "ops@acme.test"}),
    )
    .await["id"]
        .as_i64()
        .unwrap()
}

/// A POST with an idempotency key: status, `Idempotent-Replayed`, headers and JSON body.
async fn post_keyed(
    app: &TestApp,
    key: &str,
    path: &str,
    body: &Value,
) -> (StatusCode, bool, reqwest::header::HeaderMap, Value) {
    post_keyed_as(app, &app.key, key, path, body).await
}

async fn post_keyed_as(
    app: &TestApp,
    api_key: &str,
    key: &str,
    path: &str,
    body: &Value,
) -> (StatusCode, bool, reqwest::header::HeaderMap, Value) {
    let resp = app
        .http
        .post(format!("{}{path}", app.base))
        .bearer_auth(api_key)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let replayed = headers.get("idempotent-replayed").is_some();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, replayed, headers, json)
}

async fn count(app: &TestApp, path: &str) -> usize {
    let (status, page) = app.get(path).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().len()
}

async fn a_retried_request_answers_the_first_answer(db: Db) {
    let app = spawn_app_with(db, "").await;
    let client = catalog(&app).await;
    let order = json!({"client_id": client, "product": "plan", "username": "idem-user"});

    let (s1, r1, h1, first) = post_keyed(&app, "order-1042", "/v1/services", &order).await;
    assert_eq!(s1, StatusCode::CREATED, "{first}");
    assert!(!r1, "a first answer is not a replay");
    let (s2, r2, h2, again) = post_keyed(&app, "order-1042", "/v1/services", &order).await;
    assert_eq!(s2, StatusCode::CREATED, "the original status: {again}");
    assert!(r2, "marked Idempotent-Replayed");
    assert_eq!(again, first, "the original body");
    assert_eq!(h2.get("content-type"), h1.get("content-type"));
    assert_eq!(count(&app, "/v1/services").await, 1);
    let id = first["id"].as_i64().unwrap();
    let (_, jobs) = app.get(&format!("/v1/services/{id}/jobs")).await;
    assert_eq!(jobs["items"].as_array().unwrap().len(), 1, "one create job");

    // The same key with another body is refused, naming the key; nothing is made.
    let other = json!({"client_id": client, "product": "plan", "username": "other-user"});
    let (s, _, _, problem) = post_keyed(&app, "order-1042", "/v1/services", &other).await;
    assert_eq!(s, StatusCode::CONFLICT, "{problem}");
    assert_field_error(s, &problem, "Idempotency-Key", "reused");
    assert!(
        problem["detail"].as_str().unwrap().contains("order-1042"),
        "{problem}"
    );
    // ... and so is the same key on another operation.
    let (s, _, _, _) = post_keyed(
        &app,
        "order-1042",
        "/v1/clients",
        &json!({"name": "B", "email": "b@b.test"}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(count(&app, "/v1/services").await, 1);
    assert_eq!(count(&app, "/v1/clients").await, 1);

    // Keys belong to the API key that sent them: another key's same key is its own.
    let billing = app
        .make_key(json!({"name": "billing-1", "role": "billing"}))
        .await;
    let (s, r, _, theirs) =
        post_keyed_as(&app, &billing, "order-1042", "/v1/services", &other).await;
    assert_eq!(s, StatusCode::CREATED, "{theirs}");
    assert!(!r);
    assert_eq!(theirs["username"], "other-user");

    // A refused request keeps nothing: fixed and sent again under its key, it runs.
    let bad = json!({"client_id": client, "product": "no-such-plan"});
    let (s, _, _, p) = post_keyed(&app, "order-2000", "/v1/services", &bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    let (s, _, _, p) = post_keyed(&app, "order-2000", "/v1/services", &bad).await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "run again, not a 409: {p}"
    );

    // An action request too: one job, given again.
    let (s, _, _, job) = post_keyed(
        &app,
        "suspend-1042",
        &format!("/v1/services/{id}/suspend"),
        &json!({"reason": "non-payment"}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let (s, r, _, again) = post_keyed(
        &app,
        "suspend-1042",
        &format!("/v1/services/{id}/suspend"),
        &json!({"reason": "non-payment"}),
    )
    .await;
    assert_eq!((s, r), (StatusCode::ACCEPTED, true));
    assert_eq!(again["id"], job["id"]);

    // A malformed key is a 400 naming the header.
    let resp = app
        .http
        .post(format!("{}/v1/clients", app.base))
        .bearer_auth(&app.key)
        .header("Idempotency-Key", "has spaces")
        .json(&json!({"name": "C", "email": "c@c.test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let p: Value = resp.json().await.unwrap();
    assert_field_error(StatusCode::BAD_REQUEST, &p, "Idempotency-Key", "pattern");
    app.stop().await;
}

/// A gate that holds each create for `delay`, so a caller can give up while it runs.
async fn slow_gate(delay: Duration) -> String {
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move || async move {
            tokio::time::sleep(delay).await;
            axum::Json(json!({"decision": "allow"}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/")
}

async fn a_create_retried_after_a_timeout_returns_the_first_service(db: Db) {
    let app = spawn_app_with(db, "").await;
    let client = catalog(&app).await;
    let url = slow_gate(Duration::from_millis(1500)).await;
    app.create(
        "/v1/handlers",
        json!({"name": "slow", "kind": "http", "url": url, "phase": "gate",
               "events": ["service.create.before"], "timeout_ms": 10000}),
    )
    .await;
    let order = json!({"client_id": client, "product": "plan", "username": "timeout-user"});
    // The billing system gives up after 300 ms, as a client timeout would.
    let gave_up = app
        .http
        .post(format!("{}/v1/services", app.base))
        .bearer_auth(&app.key)
        .header("Idempotency-Key", "whmcs-service-77")
        .json(&order)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()));
    // Retried at once, the first is still running: 409 with Retry-After.
    let (s, _, headers, p) = post_keyed(&app, "whmcs-service-77", "/v1/services", &order).await;
    assert_eq!(s, StatusCode::CONFLICT, "{p}");
    assert_field_error(s, &p, "Idempotency-Key", "in_progress");
    assert!(headers.get("retry-after").is_some());
    // The first ran to its end although its caller left; a later retry gets its service.
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        let (s, replayed, _, body) =
            post_keyed(&app, "whmcs-service-77", "/v1/services", &order).await;
        if s == StatusCode::CREATED {
            assert!(replayed, "the first one's answer: {body}");
            break body;
        }
        assert_eq!(s, StatusCode::CONFLICT, "{body}");
        assert!(
            Instant::now() < deadline,
            "the first request never finished: {body}\n{}",
            crate::helpers::captured_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(first["username"], "timeout-user");
    assert_eq!(count(&app, "/v1/services").await, 1);
    app.stop().await;
}

async fn concurrent_duplicates_make_one_service_and_one_job(db: Db) {
    let app = spawn_app_with(db, "").await;
    let client = catalog(&app).await;
    let order = json!({"client_id": client, "product": "plan", "username": "crowd"});
    let sends = (0..200).map(|_| post_keyed(&app, "the-same-order", "/v1/services", &order));
    let answers = futures::future::join_all(sends).await;
    let mut created = Vec::new();
    for (status, _, headers, body) in &answers {
        match *status {
            StatusCode::CREATED => created.push(body["id"].as_i64().unwrap()),
            StatusCode::CONFLICT => {
                assert!(headers.get("retry-after").is_some(), "{body}");
                assert_eq!(body["errors"][0]["rule"], "in_progress", "{body}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(!created.is_empty());
    created.dedup();
    assert_eq!(created.len(), 1, "every 201 names the one service");
    assert_eq!(count(&app, "/v1/services").await, 1);
    let (_, jobs) = app.get("/v1/jobs?limit=1000").await;
    assert_eq!(jobs["items"].as_array().unwrap().len(), 1, "{jobs}");
    app.stop().await;
}

async fn external_ids_find_and_filter_records(db: Db) {
    let app = spawn_app_with(db, "").await;
    catalog(&app).await;
    let c = app
        .create(
            "/v1/clients",
            json!({"name": "Whmcs User", "email": "u@w.test", "external_id": "1042"}),
        )
        .await;
    assert_eq!(c["external_id"], "1042");
    let cid = c["id"].as_i64().unwrap();
    let (s, got) = app.get("/v1/clients/by-external-id/1042").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["id"], cid);
    let (_, page) = app.get("/v1/clients?external_id=1042").await;
    assert_eq!(page["items"][0]["id"], cid);
    let (s, _) = app.get("/v1/clients/by-external-id/9999").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Unique per kind, and checked.
    let (s, p) = app
        .post(
            "/v1/clients",
            json!({"name": "Dup", "email": "d@w.test", "external_id": "1042"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{p}");
    assert_field_error(s, &p, "external_id", "unique");
    let (s, p) = app
        .post(
            "/v1/clients",
            json!({"name": "Bad", "email": "b@w.test", "external_id": "a/b"}),
        )
        .await;
    assert_field_error(s, &p, "external_id", "pattern");

    let svc = app
        .create(
            "/v1/services",
            json!({"client_id": cid, "product": "plan", "external_id": "svc-77"}),
        )
        .await;
    assert_eq!(svc["external_id"], "svc-77");
    let sid = svc["id"].as_i64().unwrap();
    let (_, got) = app.get("/v1/services/by-external-id/svc-77").await;
    assert_eq!(got["id"], sid);
    let (_, page) = app.get("/v1/services?external_id=svc-77").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    // The same id on a client and a service is fine: unique per kind.
    let (s, _) = app
        .post(
            "/v1/services",
            json!({"client_id": cid, "product": "plan", "external_id": "1042"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // Changed and cleared by PATCH.
    let (s, changed) = app
        .patch(
            &format!("/v1/services/{sid}"),
            json!({"external_id": "svc-78"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{changed}");
    assert_eq!(changed["external_id"], "svc-78");
    let (_, cleared) = app
        .patch(&format!("/v1/clients/{cid}"), json!({"external_id": null}))
        .await;
    assert!(cleared["external_id"].is_null(), "{cleared}");
    // In events and collect.
    let (_, events) = app.get("/v1/events?type=service.updated").await;
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["payload"]["service"]["external_id"] == "svc-78"),
        "{events}"
    );
    let (s, collected) = app
        .post(
            "/v1/collect",
            json!({"fields": ["service.external_id", "service.username"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{collected}");
    assert!(
        collected["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["values"]["service"]["external_id"] == "svc-78"),
        "{collected}"
    );
    // A client key sees only its own client's records by external id.
    let key = app
        .make_key(json!({"name": "ck", "role": "client", "client_id": cid}))
        .await;
    let other = app
        .create(
            "/v1/clients",
            json!({"name": "O", "email": "o@w.test", "external_id": "5"}),
        )
        .await;
    assert!(other["id"].is_i64());
    let (s, _) = app
        .call_as(&key, Method::GET, "/v1/clients/by-external-id/5", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .call_as(
            &key,
            Method::GET,
            "/v1/services/by-external-id/svc-78",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    app.stop().await;
}

async fn a_batch_of_1000_orders_with_10_invalid_creates_990(db: Db) {
    let app = spawn_app_with(db, "").await;
    let client = catalog(&app).await;
    let orders: Vec<Value> = (0..1000)
        .map(|i| {
            let order = if i % 100 == 7 {
                // Ten orders break a rule each way a billing system might.
                match (i / 100) % 3 {
                    0 => json!({"client_id": client, "product": "nope"}),
                    1 => json!({"client_id": client, "product": "plan", "username": "-bad"}),
                    _ => json!({"client_id": client, "product": "plan", "colour": "red"}),
                }
            } else {
                json!({"client_id": client, "product": "plan", "username": format!("b{i}"),
                       "external_id": format!("ws-{i}")})
            };
            json!({"idempotency_key": format!("import-{i}"), "order": order})
        })
        .collect();
    let body = json!({"orders": orders});
    let (s, answer) = app.post("/v1/services/batch", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    assert_eq!(answer["created"], 990, "{}", answer["failed"]);
    assert_eq!(answer["failed"], 10);
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i, "in order");
        if i % 100 == 7 {
            assert_eq!(r["status"], 422, "{r}");
            let field = r["problem"]["errors"][0]["field"].as_str().unwrap();
            let expected = match (i / 100) % 3 {
                0 => "product",
                1 => "username",
                _ => "order.colour",
            };
            assert_eq!(field, expected, "{r}");
        } else {
            assert_eq!(r["status"], 201, "{r}");
            assert_eq!(r["service"]["username"], format!("b{i}"));
            assert_eq!(r["job"]["action"], "create", "with its job: {r}");
        }
    }
    let (_, all) = app.get("/v1/services?limit=1000").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 990);
    // Sent again, every item finds what it placed: nothing new.
    let (s, again) = app.post("/v1/services/batch", body).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["created"], 0);
    assert_eq!(again["replayed"], 990);
    assert_eq!(
        again["results"][1]["service"]["id"],
        results[1]["service"]["id"]
    );
    let (_, all) = app.get("/v1/services?limit=1000").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 990);
    // Within one batch: a repeated key and a taken external id fail alone.
    let (s, mixed) = app
        .post(
            "/v1/services/batch",
            json!({"orders": [
                {"idempotency_key": "k1", "order": {"client_id": client, "product": "plan"}},
                {"idempotency_key": "k1", "order": {"client_id": client, "product": "plan"}},
                {"order": {"client_id": client, "product": "plan", "external_id": "ws-1"}},
                {"order": {"client_id": client, "product": "plan", "external_id": "new-1"}},
            ]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{mixed}");
    let st: Vec<i64> = mixed["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(st, [201, 422, 409, 201], "{mixed}");
    // Bounds.
    let (s, p) = app.post("/v1/services/batch", json!({"orders": []})).await;
    assert_field_error(s, &p, "orders", "length");
    app.stop().await;
}

async fn a_batch_of_clients(db: Db) {
    let app = spawn_app_with(db, "").await;
    let (s, answer) = app
        .post(
            "/v1/clients/batch",
            json!({"clients": [
                {"idempotency_key": "u1", "client": {"name": "One", "email": "1@x.test", "external_id": "1"}},
                {"client": {"name": "Two", "email": "not-an-email"}},
                {"idempotency_key": "u3", "client": {"name": "Three", "email": "3@x.test"}},
            ]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    assert_eq!(
        (answer["created"].as_i64(), answer["failed"].as_i64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        answer["results"][1]["problem"]["errors"][0]["field"],
        "email"
    );
    assert_eq!(answer["results"][0]["client"]["external_id"], "1");
    let (_, again) = app
        .post(
            "/v1/clients/batch",
            json!({"clients": [
                {"idempotency_key": "u1", "client": {"name": "One", "email": "1@x.test", "external_id": "1"}},
            ]}),
        )
        .await;
    assert_eq!(again["results"][0]["status"], 200, "{again}");
    assert_eq!(
        again["results"][0]["client"]["id"],
        answer["results"][0]["client"]["id"]
    );
    assert_eq!(count(&app, "/v1/clients").await, 2);
    app.stop().await;
}

async fn idempotent_answers_are_sealed_at_rest(db: Db) {
    let app = spawn_app_with(db, "").await;
    // A new key's secret is in its answer: the kept answer must not hold it in the clear.
    let (s, _, _, made) = post_keyed(
        &app,
        "key-create-1",
        "/v1/keys",
        &json!({"name": "ops-2", "role": "operator"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let secret = made["key"].as_str().unwrap().to_string();
    let (_, replayed, _, again) = post_keyed(
        &app,
        "key-create-1",
        "/v1/keys",
        &json!({"name": "ops-2", "role": "operator"}),
    )
    .await;
    assert!(replayed);
    assert_eq!(again["key"], secret.as_str());
    let kept = kept_answers(&app).await;
    assert_eq!(kept.len(), 1, "one answer kept");
    let needle = secret.as_bytes();
    assert!(
        !kept[0].windows(needle.len()).any(|w| w == needle),
        "the kept answer is sealed"
    );
    app.stop().await;
}

/// Every kept answer, as stored.
async fn kept_answers(app: &TestApp) -> Vec<Vec<u8>> {
    let sql = "SELECT response FROM idempotency_keys WHERE response IS NOT NULL";
    if app.db_url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(&app.db_url).await.unwrap();
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
        rows.into_iter().map(|r| r.0).collect()
    } else {
        let pool = sqlx::SqlitePool::connect(&app.db_url).await.unwrap();
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
        rows.into_iter().map(|r| r.0).collect()
    }
}

on_both!(
    a_retried_request_answers_the_first_answer,
    a_create_retried_after_a_timeout_returns_the_first_service,
    concurrent_duplicates_make_one_service_and_one_job,
    external_ids_find_and_filter_records,
    a_batch_of_1000_orders_with_10_invalid_creates_990,
    a_batch_of_clients,
    idempotent_answers_are_sealed_at_rest,
);
