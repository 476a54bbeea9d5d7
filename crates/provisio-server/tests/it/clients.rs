//! `/v1/clients` end to end, on SQLite and PostgreSQL.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_field_error, spawn_app_with, Db};

async fn clients_crud(db: Db) {
    let app = spawn_app_with(db, "").await;
    let c = app
        .create(
            "/v1/clients",
            json!({"name": "Acme GmbH", "email": "billing@acme.test", "currency": "USD",
                   "balance_minor": -500, "custom_fields": {"pass_key": "PK"}}),
        )
        .await;
    assert_eq!(c["status"], "active");
    assert_eq!(c["currency"], "USD");
    assert_eq!(c["balance_minor"], -500);
    let id = c["id"].as_i64().unwrap();

    let (status, got) = app.get(&format!("/v1/clients/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, c);

    let (status, changed) = app
        .patch(
            &format!("/v1/clients/{id}"),
            json!({"email": "new@acme.test", "custom_fields": {"pass_key": null, "tier": "gold"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["email"], "new@acme.test");
    assert_eq!(changed["custom_fields"], json!({"tier": "gold"}));
    assert_eq!(changed["name"], "Acme GmbH");

    let (status, archived) = app
        .post(&format!("/v1/clients/{id}/archive"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(archived["status"], "archived");

    for i in 0..4 {
        app.create(
            "/v1/clients",
            json!({"name": format!("c{i}"), "email": format!("c{i}@x.test")}),
        )
        .await;
    }
    // Cursor pagination over the active ones.
    let (_, p1) = app.get("/v1/clients?status=active&limit=3").await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 3);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = app
        .get(&format!(
            "/v1/clients?status=active&limit=3&cursor={cursor}"
        ))
        .await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);
    assert!(p2["next_cursor"].is_null());
    let (_, archived) = app.get("/v1/clients?status=archived").await;
    assert_eq!(archived["items"].as_array().unwrap().len(), 1);

    let (status, _) = app.delete(&format!("/v1/clients/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.get(&format!("/v1/clients/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["detail"].as_str().unwrap().contains(&id.to_string()));
    app.stop().await;
}

async fn client_rules_name_their_fields(db: Db) {
    let app = spawn_app_with(db, "").await;
    let (status, body) = app
        .post(
            "/v1/clients",
            json!({"name": " ", "email": "nope", "currency": "euro", "custom_fields": {"Bad Key": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.request(
            reqwest::Method::POST,
            "/v1/clients",
            Some(json!({"name": "", "email": ""}))
        )
        .await
        .headers()["content-type"],
        "application/problem+json"
    );
    assert_field_error(status, &body, "name", "required");
    assert_field_error(status, &body, "email", "email");
    assert_field_error(status, &body, "currency", "pattern");
    assert_field_error(status, &body, "custom_fields.Bad Key", "pattern");
    // Nothing was stored.
    let (_, list) = app.get("/v1/clients").await;
    assert!(list["items"].as_array().unwrap().is_empty());
    let (status, body) = app.get("/v1/clients?status=bogus").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"].as_str().unwrap().contains("status")
            || body["errors"][0]["field"] == "status",
        "{body}"
    );
    let (status, body) = app.get("/v1/clients?limit=0").await;
    assert_field_error(status, &body, "limit", "range");
    let (status, body) = app.get("/v1/clients/abc").await;
    assert_field_error(status, &body, "id", "type");
    app.stop().await;
}

async fn a_client_with_services_is_not_deleted(db: Db) {
    let app = spawn_app_with(db, "").await;
    let (client, _, _) = app.seed().await;
    app.create(
        "/v1/services",
        json!({"client_id": client, "product": "basic"}),
    )
    .await;
    let (status, body) = app.delete(&format!("/v1/clients/{client}")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["detail"].as_str().unwrap().contains("service"),
        "{body}"
    );
    let (status, _) = app.get(&format!("/v1/clients/{client}")).await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

on_both!(
    clients_crud,
    client_rules_name_their_fields,
    a_client_with_services_is_not_deleted,
);
