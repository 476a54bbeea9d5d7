//! API keys guard every `/v1` route; health and the OpenAPI document are public.

use reqwest::StatusCode;

use crate::helpers::{spawn_app, Db};

async fn v1_needs_a_valid_key(db: Db) {
    let app = spawn_app(db).await;
    for (key, why) in [
        (None, "missing"),
        (Some("pvo_wrong"), "wrong"),
        (Some("Basic abc"), "garbage"),
    ] {
        let mut req = app.http.get(format!("{}/v1/clients", app.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{why} key");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["status"], 401);
        assert!(body["detail"].as_str().unwrap().contains("key"));
    }
    let (status, _) = app.get("/v1/clients").await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

async fn health_and_openapi_are_public(db: Db) {
    let app = spawn_app(db).await;
    let resp = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert!(doc["paths"]["/v1/clients"].is_object());
    app.stop().await;
}

async fn unknown_routes_and_methods_are_problems(db: Db) {
    let app = spawn_app(db).await;
    let (status, body) = app.get("/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["status"], 404);
    let (status, body) = app.call(reqwest::Method::PUT, "/v1/clients", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["status"], 405);
    app.stop().await;
}

on_both!(
    v1_needs_a_valid_key,
    health_and_openapi_are_public,
    unknown_routes_and_methods_are_problems,
);
