//! `/v1/services`: placement, generated credentials, uniqueness and what may change when.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_field_error, spawn_app_with, Db};

async fn services_lifecycle_of_records(db: Db) {
    let app = spawn_app_with(db, "").await;
    let (client, server, _) = app.seed().await;
    // A second server in another group, and a product bound to that group.
    let eu = app
        .create("/v1/servers", json!({"name": "s-eu", "module": "script", "group": "eu", "settings": {"executable": "a.sh"}}))
        .await;
    app.create(
        "/v1/products",
        json!({"name": "eu-plan", "module": "script", "server_group": "eu", "auto_setup": "manual"}),
    )
    .await;

    let svc = app
        .create(
            "/v1/services",
            json!({"client_id": client, "product": "basic", "username": "joe",
                   "password": "correct horse battery", "invoice": "master-invoice-123",
                   "settings": {"domain": "joe.example"}}),
        )
        .await;
    assert_eq!(svc["status"], "pending");
    assert_eq!(svc["username"], "joe");
    assert_eq!(svc["invoice"], "master-invoice-123");
    assert!(
        svc.get("password").is_none(),
        "no password in the record: {svc}"
    );
    let id = svc["id"].as_i64().unwrap();

    let (status, pw) = app.get(&format!("/v1/services/{id}/password")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pw["password"], "correct horse battery");

    // Placement follows the product's server group.
    let placed = app
        .create(
            "/v1/services",
            json!({"client_id": client, "product": "eu-plan"}),
        )
        .await;
    assert_eq!(placed["server_id"], eu["id"]);
    let generated = placed["username"].as_str().unwrap();
    assert!(
        generated.starts_with('u') && generated.len() == 10,
        "{generated}"
    );
    let (_, pw) = app
        .get(&format!("/v1/services/{}/password", placed["id"]))
        .await;
    assert_eq!(pw["password"].as_str().unwrap().len(), 16);

    // Same username on the same server: conflict naming the field.
    let (status, body) = app
        .post("/v1/services", json!({"client_id": client, "product": "basic", "server": server["name"], "username": "joe"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["errors"][0]["field"], "username");

    let (status, changed) = app
        .patch(
            &format!("/v1/services/{id}"),
            json!({"parent_invoice": "p-1", "invoice": null, "username": "joe2"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["parent_invoice"], "p-1");
    assert!(changed["invoice"].is_null());
    assert_eq!(changed["username"], "joe2");

    let (_, by_parent) = app.get("/v1/services?parent_invoice=p-1").await;
    assert_eq!(by_parent["items"].as_array().unwrap().len(), 1);
    let (_, by_server) = app
        .get(&format!(
            "/v1/services?server_id={}&status=pending",
            eu["id"]
        ))
        .await;
    assert_eq!(by_server["items"].as_array().unwrap().len(), 1);
    let (_, by_client) = app.get(&format!("/v1/services?client_id={client}")).await;
    assert_eq!(by_client["items"].as_array().unwrap().len(), 2);

    let (status, _) = app.delete(&format!("/v1/services/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.stop().await;
}

async fn service_input_is_checked(db: Db) {
    let app = spawn_app_with(db, "").await;
    let (client, _, _) = app.seed().await;
    let (status, body) = app
        .post(
            "/v1/services",
            json!({"client_id": 999, "product": "nope", "username": "-bad", "password": "short",
                   "invoice": "has space"}),
        )
        .await;
    assert_field_error(status, &body, "client_id", "exists");
    assert_field_error(status, &body, "product", "exists");
    assert_field_error(status, &body, "username", "pattern");
    assert_field_error(status, &body, "password", "length");
    assert_field_error(status, &body, "invoice", "pattern");
    // Never echo a password, even a rejected one.
    assert!(!body.to_string().contains("short"), "{body}");

    // A product whose module has no enabled server cannot be placed.
    app.create(
        "/v1/products",
        json!({"name": "bk", "module": "backup", "settings": {"protocol": "http", "action": "signup_reseller"}}),
    )
    .await;
    let (status, body) = app
        .post(
            "/v1/services",
            json!({"client_id": client, "product": "bk"}),
        )
        .await;
    assert_field_error(status, &body, "server", "placement");
    // Service settings follow the module's service schema.
    app.create(
        "/v1/servers",
        json!({"name": "b1", "module": "backup",
        "settings": {"hostname": "h", "username": "u", "password": "pw-123456"}}),
    )
    .await;
    let (status, body) = app
        .post(
            "/v1/services",
            json!({"client_id": client, "product": "bk", "settings": {"domain": 5}}),
        )
        .await;
    assert_field_error(status, &body, "settings.domain", "type");
    // A server of another module is refused.
    let (status, body) = app
        .post(
            "/v1/services",
            json!({"client_id": client, "product": "basic", "server": "b1"}),
        )
        .await;
    assert_field_error(status, &body, "server", "module");
    // An archived client orders nothing.
    app.post(&format!("/v1/clients/{client}/archive"), json!({}))
        .await;
    let (status, body) = app
        .post(
            "/v1/services",
            json!({"client_id": client, "product": "basic"}),
        )
        .await;
    assert_field_error(status, &body, "client_id", "status");
    app.stop().await;
}

/// Orders that arrive together are spread over the least-loaded servers, not all placed on
/// the one that was least loaded when they asked: they share a read of the counts, and
/// each sees the places the others of that read took.
async fn orders_arriving_together_are_spread_over_the_servers(db: Db) {
    let app = spawn_app_with(db, "").await;
    let (client, _, _) = app.seed().await;
    for name in ["s2", "s3", "s4"] {
        app.create(
            "/v1/servers",
            json!({"name": name, "module": "script", "settings": {"executable": "accounts.sh"}}),
        )
        .await;
    }
    let orders = 160;
    let placed = futures::future::join_all((0..orders).map(|_| {
        app.create(
            "/v1/services",
            json!({"client_id": client, "product": "basic"}),
        )
    }))
    .await;
    let mut per_server: std::collections::BTreeMap<i64, usize> = Default::default();
    for s in &placed {
        *per_server
            .entry(s["server_id"].as_i64().unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        per_server.len(),
        4,
        "not every server took orders: {per_server:?}"
    );
    // An even share is 40 each; orders of a read see the places each other took, but not
    // those of earlier reads still being written, so some unevenness is expected.
    let most = *per_server.values().max().unwrap();
    assert!(
        most <= orders / 2,
        "{most} of {orders} orders on one of 4 empty servers: {per_server:?}"
    );
}

on_both!(
    services_lifecycle_of_records,
    service_input_is_checked,
    orders_arriving_together_are_spread_over_the_servers
);
