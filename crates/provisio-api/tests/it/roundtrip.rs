//! Every answer type decodes the server's real answers and loses nothing: the typed answer
//! serialized again equals the raw JSON, field for field.

use std::time::Duration;

use provisio_api::requests::{ActionFields, NewService, NewTransaction, RecordRef};
use provisio_api::views::{
    ClientBatchAnswer, ClientView, JobView, KeyView, List, ModuleList, NewKeyView, ProductView,
    ServerView, ServiceBatchAnswer, ServiceView, TransactionView,
};
use provisio_api::{Client, Problem};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::app::spawn;

/// GETs `path` raw and typed and checks that the two agree.
async fn same<T: DeserializeOwned + Serialize>(c: &Client, path: &str) -> Value {
    let raw: Value = c.get(path, &[]).await.unwrap();
    let typed: T = serde_json::from_value(raw.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), raw, "{path}");
    raw
}

fn agrees<T: DeserializeOwned + Serialize>(raw: &Value) {
    let typed: T = serde_json::from_value(raw.clone()).unwrap();
    assert_eq!(&serde_json::to_value(&typed).unwrap(), raw);
}

#[tokio::test]
async fn typed_answers_equal_the_raw_answers() {
    let app = spawn().await;
    let c = app.client();
    let (client_id, product) = app.catalog(&c).await;
    let mut order = NewService::new(client_id, RecordRef::Name(product.clone()));
    order.settings.insert("quota_gb".into(), json!(5));
    order.invoice = Some("INV-1".into());
    let service = c.create_service(&order).await.unwrap();
    let create = c.service_jobs(service.id, &[]).await.unwrap().items[0].id;
    c.wait_job(create, Duration::from_secs(10)).await.unwrap();
    let job = c
        .service_action(
            service.id,
            "renew",
            &ActionFields::default(),
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    c.add_transaction(
        client_id,
        &NewTransaction {
            kind: provisio_core::client::TransactionKind::Payment,
            amount_minor: 1250,
            idempotency_key: "inv-1".into(),
            description: Some("first".into()),
        },
    )
    .await
    .unwrap();

    same::<ClientView>(&c, &format!("/v1/clients/{client_id}")).await;
    same::<List<ClientView>>(&c, "/v1/clients").await;
    same::<List<TransactionView>>(&c, &format!("/v1/clients/{client_id}/transactions")).await;
    same::<ServerView>(&c, "/v1/servers/noop-1").await;
    same::<List<ServerView>>(&c, "/v1/servers").await;
    same::<ProductView>(&c, &format!("/v1/products/{product}")).await;
    let shown = same::<ServiceView>(&c, &format!("/v1/services/{}", service.id)).await;
    assert_eq!(shown["settings"]["quota_gb"], 5);
    same::<List<ServiceView>>(&c, "/v1/services").await;
    let detail = same::<JobView>(&c, &format!("/v1/jobs/{}", job.id)).await;
    assert!(detail["history"].is_array(), "{detail}");
    let listed = same::<List<JobView>>(&c, "/v1/jobs").await;
    assert!(listed["items"][0].get("history").is_none());
    // Every built-in module, whose schemas use every kind of rule.
    let modules = same::<ModuleList>(&c, "/v1/modules").await;
    let names: Vec<&str> = modules["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"http") && names.contains(&"script"),
        "{names:?}"
    );
    for name in names {
        same::<provisio_core::module::ModuleInfo>(&c, &format!("/v1/modules/{name}")).await;
    }

    // Keys: the new one with its key, then as listed.
    let made: Value = c
        .post(
            "/v1/keys",
            &[],
            Some(&json!({"name": "billing-1", "role": "billing"})),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert!(made["key"].is_string(), "{made}");
    agrees::<NewKeyView>(&made);
    same::<Vec<KeyView>>(&c, "/v1/keys").await;

    // Batch answers, with a created item and a refused one.
    let batch: Value = c
        .post(
            "/v1/services/batch",
            &[],
            Some(&json!({"orders": [
                {"idempotency_key": "o-1", "order": {"client_id": client_id, "product": product}},
                {"order": {"client_id": client_id, "product": "no-such-product"}},
            ]})),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(batch["failed"], 1, "{batch}");
    agrees::<ServiceBatchAnswer>(&batch);
    let clients: Value = c
        .post(
            "/v1/clients/batch",
            &[],
            Some(&json!({"clients": [
                {"idempotency_key": "c-1", "client": {"name": "Bo", "email": "bo@example.com"}},
                {"client": {"name": "", "email": "x"}},
            ]})),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(clients["failed"], 1, "{clients}");
    agrees::<ClientBatchAnswer>(&clients);

    // A problem document with field errors, as it came over the wire.
    let raw: Value = reqwest::Client::new()
        .post(format!("{}/v1/clients", app.base))
        .bearer_auth(&app.key)
        .json(&json!({"name": "x", "email": "nope", "currency": "euro"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw["status"], 422);
    assert!(
        raw["errors"].as_array().is_some_and(|e| e.len() >= 2),
        "{raw}"
    );
    agrees::<Problem>(&raw);
}
