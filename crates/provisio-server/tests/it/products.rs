//! `/v1/products`: inheritance through `extends`, and seed 002's rules through the API.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_field_error, spawn_app, Db};

async fn products_inherit_and_refuse_cycles(db: Db) {
    let app = spawn_app(db).await;
    let base = app
        .create(
            "/v1/products",
            json!({"name": "reseller", "module": "backup",
                   "settings": {"protocol": "https", "action": "signup_reseller", "storage_allotted": "10 GB"}}),
        )
        .await;
    assert_eq!(base["effective_settings"]["storage_allotted"], 10u64 << 30);
    assert_eq!(base["effective_settings"]["throttle_mode"], "always");
    // A child overrides one setting and inherits the rest.
    let child = app
        .create(
            "/v1/products",
            json!({"name": "customer", "module": "backup", "extends": "reseller",
                   "settings": {"action": "signup_customer", "reseller_name": "acme"}}),
        )
        .await;
    assert_eq!(child["extends"], "reseller");
    assert_eq!(
        child["settings"],
        json!({"action": "signup_customer", "reseller_name": "acme"})
    );
    assert_eq!(child["effective_settings"]["protocol"], "https");
    assert_eq!(child["effective_settings"]["storage_allotted"], 10u64 << 30);

    // reseller -> customer -> reseller would be a cycle.
    let (status, body) = app
        .patch("/v1/products/reseller", json!({"extends": "customer"}))
        .await;
    assert_field_error(status, &body, "extends", "extends");
    assert!(body["detail"].as_str().unwrap().contains("cycle"), "{body}");
    let (status, body) = app
        .patch("/v1/products/customer", json!({"extends": "customer"}))
        .await;
    assert_field_error(status, &body, "extends", "extends");

    // Changing the parent may not make a child invalid.
    let (status, body) = app
        .patch(
            "/v1/products/reseller",
            json!({"settings": {"throttle_mode": "specified_time"}}),
        )
        .await;
    assert_field_error(status, &body, "settings.throttle_from", "required_when");
    // A parent of another module is refused.
    let (status, body) = app
        .post(
            "/v1/products",
            json!({"name": "odd", "module": "script", "extends": "reseller"}),
        )
        .await;
    assert_field_error(status, &body, "extends", "extends");
    // The parent cannot go while the child extends it.
    let (status, _) = app.delete("/v1/products/reseller").await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Dropping an override brings the parent's value back.
    let (status, c) = app
        .patch(
            "/v1/products/customer",
            json!({"settings": {"action": null, "reseller_name": null}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["effective_settings"]["action"], "signup_reseller");
    let (_, children) = app.get("/v1/products?extends=reseller").await;
    assert_eq!(children["items"].as_array().unwrap().len(), 1);
    app.stop().await;
}

async fn seed_002_rules_are_enforced_through_the_api(db: Db) {
    let app = spawn_app(db).await;
    let valid = json!({
        "protocol": "https", "action": "signup_customer", "reseller_name": "acme",
        "storage_allotted": "9999 GB", "report_email": "a@example.com, b@example.com",
        "throttle_enabled": true, "throttle_mode": "specified_time",
        "throttle_from": "0130", "throttle_till": "1740", "restricted_rate": "1024",
    });
    let p = app
        .create(
            "/v1/products",
            json!({"name": "full", "module": "backup", "settings": valid}),
        )
        .await;
    assert_eq!(
        p["effective_settings"]["report_email"],
        json!(["a@example.com", "b@example.com"])
    );
    assert_eq!(p["effective_settings"]["restricted_rate"], 1024);

    let cases = [
        (json!({"protocol": "ftp"}), "settings.protocol", "enum"),
        (
            json!({"throttle_from": "2460"}),
            "settings.throttle_from",
            "time_of_day",
        ),
        (
            json!({"restricted_rate": "1000"}),
            "settings.restricted_rate",
            "min",
        ),
        (
            json!({"restricted_rate": "10000 GB"}),
            "settings.restricted_rate",
            "max",
        ),
        (
            json!({"report_email": "a@example.com, not-an-email"}),
            "settings.report_email",
            "email",
        ),
        (
            json!({"throttle_from": null}),
            "settings.throttle_from",
            "required_when",
        ),
        (
            json!({"action": "signup_reseller"}),
            "settings.reseller_name",
            "not_applicable",
        ),
        (json!({"colour": "red"}), "settings.colour", "unknown_field"),
    ];
    for (i, (change, field, rule)) in cases.into_iter().enumerate() {
        let mut settings = valid.as_object().unwrap().clone();
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                settings.remove(k);
            } else {
                settings.insert(k.clone(), v.clone());
            }
        }
        let (status, body) = app
            .post(
                "/v1/products",
                json!({"name": format!("bad{i}"), "module": "backup", "settings": settings}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "case {i}: {body}");
        assert_field_error(status, &body, field, rule);
    }
    let (_, list) = app.get("/v1/products").await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "no invalid product was stored"
    );
    app.stop().await;
}

on_both!(
    products_inherit_and_refuse_cycles,
    seed_002_rules_are_enforced_through_the_api,
);
