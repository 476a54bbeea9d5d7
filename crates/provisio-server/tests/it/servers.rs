//! `/v1/servers`: module settings validated, secrets hidden, names unique.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_field_error, spawn_app, Db};

async fn servers_validate_settings_and_hide_secrets(db: Db) {
    let app = spawn_app(db).await;
    let s = app
        .create(
            "/v1/servers",
            json!({"name": "backup-eu", "module": "backup", "group": "eu",
                   "settings": {"hostname": "b1.example", "username": "admin", "password": "Sup3r-Secret"},
                   "max_concurrent": 4, "max_per_second": 20}),
        )
        .await;
    assert_eq!(
        s["settings"],
        json!({"hostname": "b1.example", "port": 6061, "username": "admin"})
    );
    assert_eq!(s["secrets"], json!(["password"]));
    assert_eq!(s["group"], "eu");
    assert_eq!(s["max_concurrent"], 4);

    // By name, too; a patch merges settings and keeps the secret.
    let (status, s2) = app
        .patch(
            "/v1/servers/backup-eu",
            json!({"settings": {"port": "6062"}, "max_per_second": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{s2}");
    assert_eq!(s2["settings"]["port"], 6062);
    assert_eq!(s2["secrets"], json!(["password"]));
    assert!(s2["max_per_second"].is_null());

    let (status, body) = app
        .patch(
            "/v1/servers/backup-eu",
            json!({"settings": {"port": 70000, "hostname": null}}),
        )
        .await;
    assert_field_error(status, &body, "settings.port", "max");
    assert_field_error(status, &body, "settings.hostname", "required");
    let (_, unchanged) = app.get("/v1/servers/backup-eu").await;
    assert_eq!(unchanged["settings"]["port"], 6062);

    let (status, body) = app
        .post(
            "/v1/servers",
            json!({"name": "backup-eu", "module": "backup",
              "settings": {"hostname": "h", "username": "u", "password": "p"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["errors"][0]["field"], "name");

    let (status, body) = app
        .post("/v1/servers", json!({"name": "x", "module": "nope"}))
        .await;
    assert_field_error(status, &body, "module", "unknown");
    let (status, body) = app
        .post(
            "/v1/servers",
            json!({"name": "bad name", "module": "script", "max_concurrent": 0, "settings": {}}),
        )
        .await;
    assert_field_error(status, &body, "name", "pattern");
    assert_field_error(status, &body, "max_concurrent", "range");
    let (status, body) = app
        .post("/v1/servers", json!({"name": "x", "module": "script", "settings": {"executable": "/etc/../x", "timeout_seconds": 0}}))
        .await;
    assert_field_error(status, &body, "settings.executable", "pattern");
    assert_field_error(status, &body, "settings.timeout_seconds", "min");
    // Ciphertext cannot be planted through the API.
    let (status, body) = app
        .post("/v1/servers", json!({"name": "x", "module": "script", "settings": {"executable": "a", "api_secret": {"$sealed": "AAAA"}}}))
        .await;
    assert_field_error(status, &body, "settings.api_secret", "type");

    let (_, list) = app.get("/v1/servers?module=backup&group=eu").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (status, _) = app.delete("/v1/servers/backup-eu").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get("/v1/servers/backup-eu").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

async fn modules_list_their_schemas(db: Db) {
    let app = spawn_app(db).await;
    let (status, list) = app.get("/v1/modules").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"script"), "{names:?}");
    let (_, script) = app.get("/v1/modules/script").await;
    assert!(script["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("create")));
    let exe = &script["server_schema"]["fields"][0];
    assert_eq!(exe["name"], "executable");
    assert_eq!(exe["type"], "string");
    assert_eq!(exe["required"], true);
    let (_, backup) = app.get("/v1/modules/backup").await;
    let fields = backup["product_schema"]["fields"].as_array().unwrap();
    let from = fields
        .iter()
        .find(|f| f["name"] == "throttle_from")
        .unwrap();
    assert_eq!(from["type"], "time_of_day");
    assert_eq!(
        from["required_when"],
        json!({"field": "throttle_mode", "equals": "specified_time"})
    );
    let (status, _) = app.get("/v1/modules/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

on_both!(
    servers_validate_settings_and_hide_secrets,
    modules_list_their_schemas,
);
