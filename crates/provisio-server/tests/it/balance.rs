//! `/v1/clients/{id}/transactions`: balance changes through the API, idempotent replays,
//! conflicts, field errors and zero-crossing events, on SQLite and PostgreSQL.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_field_error, spawn_app_with, Db, TestApp};

async fn pay(app: &TestApp, client: i64, body: Value) -> (StatusCode, Value) {
    app.post(&format!("/v1/clients/{client}/transactions"), body)
        .await
}

async fn balance(app: &TestApp, client: i64) -> i64 {
    let (_, c) = app.get(&format!("/v1/clients/{client}")).await;
    c["balance_minor"].as_i64().unwrap()
}

async fn balance_transactions(db: Db) {
    let app = spawn_app_with(db, "").await;
    let c = app
        .create(
            "/v1/clients",
            json!({"name": "Payer", "email": "payer@example.com", "balance_minor": -1000}),
        )
        .await;
    let id = c["id"].as_i64().unwrap();

    let payment = json!({"kind": "payment", "amount_minor": 1500, "idempotency_key": "inv-1",
                         "description": "Invoice 1"});
    let (status, t) = pay(&app, id, payment.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    assert_eq!(t["client_id"], id);
    assert_eq!(t["kind"], "payment");
    assert_eq!(t["amount_minor"], 1500);
    assert_eq!(t["balance_after"], 500);
    assert_eq!(t["idempotency_key"], "inv-1");
    assert_eq!(t["description"], "Invoice 1");
    let mut keys: Vec<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "actor",
            "amount_minor",
            "balance_after",
            "client_id",
            "created_at",
            "description",
            "id",
            "idempotency_key",
            "kind"
        ]
    );
    assert_eq!(t["actor"]["kind"], "key", "{t}");
    assert_eq!(balance(&app, id).await, 500);

    // The same request again: the original, 200, nothing changed.
    let (status, again) = pay(&app, id, payment).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, t);
    assert_eq!(balance(&app, id).await, 500);

    // The same key for something else: 409 naming the key, nothing changed.
    let (status, body) = pay(
        &app,
        id,
        json!({"kind": "payment", "amount_minor": 1, "idempotency_key": "inv-1"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["errors"][0]["field"], "idempotency_key");
    assert_eq!(balance(&app, id).await, 500);

    // Charges and refunds take from the balance, credits add to it. An archived client
    // still pays.
    app.post(&format!("/v1/clients/{id}/archive"), json!({}))
        .await;
    for (kind, amount, key, after) in [
        ("charge", 800, "ch-1", -300),
        ("credit", 300, "cr-1", 0),
        ("refund", 200, "rf-1", -200),
        ("payment", 200, "inv-2", 0),
    ] {
        let (status, t) = pay(
            &app,
            id,
            json!({"kind": kind, "amount_minor": amount, "idempotency_key": key}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {t}");
        assert_eq!(t["balance_after"], after, "{kind}");
        assert!(t["description"].is_null());
    }
    assert_eq!(balance(&app, id).await, 0);

    // Crossings only: -1000 → 500 (nonnegative), 500 → -300 (nonpositive), -300 → 0
    // (nonnegative), 0 → -200 (none: zero is nonpositive already), -200 → 0 (nonnegative).
    let (status, events) = app
        .get(&format!(
            "/v1/events?type=client.balance_nonnegative,client.balance_nonpositive&subject=client:{id}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let seen: Vec<(String, i64, i64)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let p = &e["payload"];
            assert_eq!(p["client"]["id"], id);
            assert_eq!(p["client"]["balance_minor"], p["balance_after"]);
            assert_eq!(p["transaction"]["balance_after"], p["balance_after"]);
            (
                e["type"].as_str().unwrap().to_string(),
                p["balance_before"].as_i64().unwrap(),
                p["balance_after"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("client.balance_nonnegative".to_string(), -1000, 500),
            ("client.balance_nonpositive".to_string(), 500, -300),
            ("client.balance_nonnegative".to_string(), -300, 0),
            ("client.balance_nonnegative".to_string(), -200, 0),
        ]
    );

    // Listed oldest first, with cursor pagination.
    let path = format!("/v1/clients/{id}/transactions");
    let (status, p1) = app.get(&format!("{path}?limit=3")).await;
    assert_eq!(status, StatusCode::OK, "{p1}");
    let keys = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["idempotency_key"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(keys(&p1), ["inv-1", "ch-1", "cr-1"]);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = app.get(&format!("{path}?limit=3&cursor={cursor}")).await;
    assert_eq!(keys(&p2), ["rf-1", "inv-2"]);
    assert!(p2["next_cursor"].is_null());

    // The money trail stays: a client with transactions is archived, not deleted.
    let (status, body) = app.delete(&format!("/v1/clients/{id}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    app.stop().await;
}

async fn transaction_rules_name_their_fields(db: Db) {
    let app = spawn_app_with(db, "").await;
    let (id, _, _) = app.seed().await;
    let (status, body) = pay(
        &app,
        id,
        json!({"kind": "payment", "amount_minor": 0, "idempotency_key": "",
               "description": "x".repeat(501)}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_field_error(status, &body, "amount_minor", "min");
    assert_field_error(status, &body, "idempotency_key", "required");
    assert_field_error(status, &body, "description", "max_length");
    let (status, body) = pay(
        &app,
        id,
        json!({"kind": "charge", "amount_minor": -5, "idempotency_key": "k".repeat(101)}),
    )
    .await;
    assert_field_error(status, &body, "amount_minor", "min");
    assert_field_error(status, &body, "idempotency_key", "max_length");
    let (status, body) = pay(
        &app,
        id,
        json!({"kind": "gift", "amount_minor": 5, "idempotency_key": "k"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_field_error(status, &body, "kind", "type");
    let (status, body) = pay(&app, id, json!({"kind": "payment", "amount_minor": 5})).await;
    assert_field_error(status, &body, "idempotency_key", "required");
    let (status, body) = pay(
        &app,
        id,
        json!({"kind": "payment", "amount_minor": 1.5, "idempotency_key": "k"}),
    )
    .await;
    assert_field_error(status, &body, "amount_minor", "type");
    let (status, body) = pay(
        &app,
        id,
        json!({"kind": "payment", "amount_minor": 5, "idempotency_key": "k", "currency": "EUR"}),
    )
    .await;
    assert_field_error(status, &body, "currency", "unknown_field");
    // Nothing was stored.
    assert_eq!(balance(&app, id).await, 0);
    let (_, list) = app.get(&format!("/v1/clients/{id}/transactions")).await;
    assert!(list["items"].as_array().unwrap().is_empty());

    // A missing client: 404, for both.
    let (status, body) = pay(
        &app,
        999_999,
        json!({"kind": "payment", "amount_minor": 5, "idempotency_key": "k"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = app.get("/v1/clients/999999/transactions").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app.get("/v1/clients/abc/transactions").await;
    assert_field_error(status, &body, "id", "type");
    let (status, body) = app
        .get(&format!("/v1/clients/{id}/transactions?limit=0"))
        .await;
    assert_field_error(status, &body, "limit", "range");

    // A balance that would overflow is refused, naming the amount.
    let rich = app
        .create(
            "/v1/clients",
            json!({"name": "Rich", "email": "rich@example.com", "balance_minor": i64::MAX}),
        )
        .await;
    let (status, body) = pay(
        &app,
        rich["id"].as_i64().unwrap(),
        json!({"kind": "credit", "amount_minor": 1, "idempotency_key": "k"}),
    )
    .await;
    assert_field_error(status, &body, "amount_minor", "range");
    app.stop().await;
}

async fn concurrent_payments_through_the_api_add_up(db: Db) {
    let app = spawn_app_with(db, "").await;
    let (id, _, _) = app.seed().await;
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            pay(
                &app,
                id,
                json!({"kind": "payment", "amount_minor": 1, "idempotency_key": format!("k{i}")}),
            )
            .await
            .0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::CREATED);
    }
    assert_eq!(balance(&app, id).await, 20);
    std::sync::Arc::into_inner(app).unwrap().stop().await;
}

on_both!(
    balance_transactions,
    transaction_rules_name_their_fields,
    concurrent_payments_through_the_api_add_up,
);
