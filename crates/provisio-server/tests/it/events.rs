//! Every change is announced by a stored event, with the change, in one transaction; the
//! event log filters by type pattern, subject and time; payloads carry no secrets.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Db, TestApp};

async fn types(app: &TestApp, query: &str) -> Vec<String> {
    let (status, list) = app.get(&format!("/v1/events?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

async fn announcements(db: Db) {
    let app = spawn_app_with(db, "").await;
    let c = app
        .create(
            "/v1/clients",
            json!({"name": "Ev", "email": "ev@example.com"}),
        )
        .await;
    let cid = c["id"].as_i64().unwrap();
    let subject = format!("subject=client:{cid}");
    assert_eq!(types(&app, &subject).await, ["client.created"]);
    app.patch(
        &format!("/v1/clients/{cid}"),
        json!({"custom_fields": {"pass_key": "PK"}}),
    )
    .await;
    app.patch(&format!("/v1/clients/{cid}"), json!({"name": "Ev Ltd"}))
        .await;
    // Archiving is a change (updated) and is announced as such (archived).
    app.post(&format!("/v1/clients/{cid}/archive"), json!({}))
        .await;
    assert_eq!(
        types(&app, &subject).await,
        // created; patch of custom fields; patch of the name; archive.
        [
            "client.created",
            "client.updated",
            "client.custom_fields_updated",
            "client.updated",
            "client.updated",
            "client.archived"
        ]
    );
    let (_, list) = app
        .get(&format!(
            "/v1/events?{subject}&type=client.custom_fields_updated"
        ))
        .await;
    assert_eq!(
        list["items"][0]["payload"]["client"]["custom_fields"]["pass_key"],
        "PK"
    );

    // Actions: `.before` with the job, `.succeeded` / `.failed` with the outcome.
    let c2 = app
        .create(
            "/v1/clients",
            json!({"name": "Ev2", "email": "ev2@example.com"}),
        )
        .await;
    app.create(
        "/v1/servers",
        json!({"name": "rec", "module": "recorder", "settings": {"token": "Tok-Ev-Secret-1"}}),
    )
    .await;
    app.create(
        "/v1/products",
        json!({"name": "plan", "module": "recorder"}),
    )
    .await;
    let svc = app
        .create("/v1/services", json!({"client_id": c2["id"], "product": "plan", "username": "evu", "password": "Ev-Password-77"}))
        .await;
    let sid = svc["id"].as_i64().unwrap();
    let (_, jobs) = app.get(&format!("/v1/services/{sid}/jobs")).await;
    app.wait_job(jobs["items"][0]["id"].as_i64().unwrap()).await;
    assert_eq!(
        app.act(sid, "suspend", Some(json!({"reason": "abuse"})))
            .await["state"],
        "done"
    );
    assert_eq!(
        app.act(
            sid,
            "change-password",
            Some(json!({"password": "Ev-New-Password-88"}))
        )
        .await["state"],
        "done"
    );
    let service_subject = format!("subject=service:{sid}");
    assert_eq!(
        types(&app, &service_subject).await,
        [
            "service.create.before",
            "service.create.succeeded",
            "service.suspend.before",
            "service.suspend.succeeded",
            "service.change_password.before",
            "service.change_password.succeeded"
        ]
    );
    let (_, done) = app
        .get(&format!(
            "/v1/events?{service_subject}&type=service.suspend.succeeded"
        ))
        .await;
    let payload = &done["items"][0]["payload"];
    assert_eq!(payload["service"]["status"], "suspended");
    assert_eq!(payload["service"]["suspension"]["reason"], "abuse");
    assert_eq!(payload["job"]["state"], "done");

    // A permanent failure is announced as failed, with the error.
    let bad = app
        .create("/v1/services", json!({"client_id": c2["id"], "product": "plan", "username": "evbad", "settings": {"behaviour": "permanent"}}))
        .await;
    let (_, jobs) = app.get(&format!("/v1/services/{}/jobs", bad["id"])).await;
    app.wait_job(jobs["items"][0]["id"].as_i64().unwrap()).await;
    let (_, failed) = app
        .get(&format!(
            "/v1/events?subject=service:{}&type=service.*.failed",
            bad["id"]
        ))
        .await;
    assert_eq!(failed["items"][0]["type"], "service.create.failed");
    assert!(failed["items"][0]["payload"]["job"]["error"]
        .as_str()
        .unwrap()
        .contains("bad plan"));
    assert_eq!(failed["items"][0]["payload"]["service"]["status"], "failed");

    // Patterns and time filters.
    assert!(types(&app, "type=service.*")
        .await
        .iter()
        .all(|t| t.starts_with("service.")));
    // Two orders' creates and two requested actions.
    assert_eq!(types(&app, "type=service.*.before").await.len(), 4);
    let future = (chrono::Utc::now() + chrono::Duration::minutes(5))
        .to_rfc3339()
        .replace('+', "%2B");
    assert!(types(&app, &format!("since={future}")).await.is_empty());
    let (status, body) = app.get("/v1/events?type=Service!").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["field"], "type");

    // No secret in any payload.
    let (_, all) = app.get("/v1/events?limit=1000").await;
    let text = all.to_string();
    for secret in ["Tok-Ev-Secret-1", "Ev-Password-77", "Ev-New-Password-88"] {
        assert!(!text.contains(secret), "{secret} in an event");
    }
    assert!(all["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e: &Value| e["at"].is_string()));
    app.stop().await;
}

on_both!(announcements);
