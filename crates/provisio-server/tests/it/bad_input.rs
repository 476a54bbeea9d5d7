//! Every write route, found in the OpenAPI document, answers malformed, oversized,
//! wrong-typed and unknown-field bodies with a 4xx problem+json, never a 5xx.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{spawn_app, Db};

async fn every_write_route_refuses_bad_bodies_with_a_problem(db: Db) {
    let app = spawn_app(db).await;
    let (client, _, _) = app.seed().await;
    let svc = app
        .create(
            "/v1/services",
            json!({"client_id": client, "product": "basic"}),
        )
        .await;
    let ids = [
        ("{id}", svc["id"].to_string()),
        ("{server}", "s1".to_string()),
        ("{product}", "basic".to_string()),
    ];

    let doc = provisio_server::openapi();
    let doc = serde_json::to_value(&doc).unwrap();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["post", "patch", "put"] {
            if item.get(method).is_some() {
                let mut concrete = path.clone();
                for (param, value) in &ids {
                    concrete = concrete.replace(param, value);
                }
                // Client routes take the client id.
                if path.starts_with("/v1/clients/") {
                    concrete = path.replace("{id}", &client.to_string());
                }
                routes.push((method.to_uppercase(), concrete));
            }
        }
    }
    assert!(routes.len() >= 9, "found the write routes: {routes:?}");

    let oversized = format!("{{\"name\": \"{}\"}}", "x".repeat(70 * 1024));
    let bodies: Vec<(&str, String)> = vec![
        ("malformed", "{\"name\": ".to_string()),
        ("not json", "name=x".to_string()),
        ("oversized", oversized),
        ("array", "[]".to_string()),
        ("null", "null".to_string()),
        ("string", "\"x\"".to_string()),
        ("wrong types", json!({"name": 12345, "email": [], "module": {}, "client_id": "x", "settings": "no", "custom_fields": 3}).to_string()),
        ("unknown field", json!({"zzz_unknown": 1}).to_string()),
        ("huge number", "{\"client_id\": 1e400}".to_string()),
        ("deep", format!("{}{}", "[".repeat(5000), "]".repeat(5000))),
        ("nulls", json!({"name": null, "settings": null, "extends": null, "group": null}).to_string()),
    ];
    let mut checked = 0;
    for (method, path) in &routes {
        for (what, body) in &bodies {
            let resp = app
                .http
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{}{path}", app.base),
                )
                .bearer_auth(&app.key)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = resp.status();
            assert!(
                !status.is_server_error(),
                "{method} {path} with {what} body: {status}"
            );
            if status.is_client_error() {
                assert_eq!(
                    resp.headers()["content-type"],
                    "application/problem+json",
                    "{method} {path} {what}"
                );
                let p: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(p["status"], status.as_u16());
                assert!(!p["detail"].as_str().unwrap().is_empty());
                checked += 1;
            }
        }
        // Wrong content type.
        let resp = app
            .http
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", app.base),
            )
            .bearer_auth(&app.key)
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert!(
            !resp.status().is_server_error(),
            "{method} {path} text/plain"
        );
    }
    assert!(
        checked > routes.len() * 8,
        "most bad bodies were refused ({checked})"
    );

    // Unknown fields name themselves.
    let (status, body) = app
        .post(
            "/v1/clients",
            json!({"name": "a", "email": "a@a.test", "nmae": "typo"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "nmae");
    assert_eq!(body["errors"][0]["rule"], "unknown_field");
    // Wrong types name their path.
    let (status, body) = app
        .post(
            "/v1/servers",
            json!({"name": "a", "module": "script", "max_concurrent": "ten"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "max_concurrent");
    // Missing required fields too.
    let (_, body) = app.post("/v1/clients", json!({"name": "a"})).await;
    assert_eq!(body["errors"][0]["field"], "email");
    assert_eq!(body["errors"][0]["rule"], "required");
    // Oversized says so.
    let resp = app
        .http
        .post(format!("{}/v1/clients", app.base))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body(format!("{{\"name\": \"{}\"}}", "x".repeat(100_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Stored records are untouched by all of it.
    let (_, c) = app.get(&format!("/v1/clients/{client}")).await;
    assert_eq!(c["name"], "Acme");
    let (_, s) = app.get("/v1/servers/s1").await;
    assert_eq!(s["settings"]["executable"], "accounts.sh");
    app.stop().await;
}

on_both!(every_write_route_refuses_bad_bodies_with_a_problem);
