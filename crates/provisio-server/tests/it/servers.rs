//! `/v1/servers`: module settings validated, secrets hidden, names unique.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_field_error, spawn_app, spawn_app_with, Db};

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

/// A remote that answers `GET /v1/health` with `status` and a body only it could know, and
/// counts what it was sent.
async fn health_remote(status: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let app = axum::Router::new().fallback(move || {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                "{\"internal\": \"metadata-token-7731\"}",
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, hits)
}

fn http_server(name: &str, base: &str) -> serde_json::Value {
    json!({"name": name, "module": "http", "settings": {
        "base_url": base, "timeout_seconds": 2,
        "actions": {"test_connection": {"method": "GET", "url": "/health"}}}})
}

/// `server test` on a target the outbound guard refuses says so, naming the address and
/// the setting, and nothing is sent; a test never quotes what a remote answered.
async fn server_tests_pass_the_outbound_guard(db: Db) {
    let (port, hits) = health_remote(500).await;
    let app = spawn_app_with(db, "[outbound]\nallow = []\n").await;
    for (name, base, ip) in [
        ("loop", format!("http://127.0.0.1:{port}/v1"), "127.0.0.1"),
        (
            "named",
            format!("http://localhost:{port}/v1"),
            "127.0.0.1 (localhost)",
        ),
        ("v6", format!("http://[::1]:{port}/v1"), "::1"),
        (
            "metadata",
            "http://169.254.169.254/latest".into(),
            "169.254.169.254",
        ),
        ("private", "http://10.0.0.1/v1".into(), "10.0.0.1"),
    ] {
        app.create("/v1/servers", http_server(name, &base)).await;
        let (status, r) = app
            .post(&format!("/v1/servers/{name}/test"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(r["ok"], false, "{name}: {r}");
        let error = r["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("refused to connect to {ip}: ")),
            "{name}: {error}"
        );
        assert!(
            error.contains("allow it with [outbound] allow = ["),
            "{name}: {error}"
        );
    }
    app.create(
        "/v1/servers",
        json!({"name": "scim", "module": "scim", "settings": {
        "base_url": format!("http://localhost:{port}/scim/v2"), "token": "t"}}),
    )
    .await;
    let (_, r) = app.post("/v1/servers/scim/test", json!({})).await;
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("refused to connect to 127.0.0.1 (localhost)"),
        "{r}"
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the remote"
    );
    app.stop().await;

    // Allowed (the suite's instances allow 127.0.0.1), the remote is reached, and its
    // answer is reported by status only.
    let app = spawn_app(db).await;
    for (name, base) in [
        ("loop", format!("http://127.0.0.1:{port}/v1")),
        ("named", format!("http://localhost:{port}/v1")),
    ] {
        app.create("/v1/servers", http_server(name, &base)).await;
        let (_, r) = app
            .post(&format!("/v1/servers/{name}/test"), json!({}))
            .await;
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(
            r["error"], "transient error: test_connection: HTTP 500 from GET /v1/health",
            "{name}"
        );
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    let (ok_port, _) = health_remote(200).await;
    app.create(
        "/v1/servers",
        http_server("up", &format!("http://localhost:{ok_port}/v1")),
    )
    .await;
    let (_, r) = app.post("/v1/servers/up/test", json!({})).await;
    assert_eq!(r["ok"], true, "{r}");
    app.stop().await;
}

on_both!(
    servers_validate_settings_and_hide_secrets,
    modules_list_their_schemas,
    server_tests_pass_the_outbound_guard,
);
