//! Every answer type decodes the server's real answers and loses nothing: the typed answer
//! serialized again equals the raw JSON, field for field.

use std::time::Duration;

use provisio_api::requests::{ActionInput, RecordRef, ServiceCreate, TransactionCreate};
use provisio_api::views::{
    Audit, ClientBatchAnswer, ClientView, Collected, DeliveryDetailView, DeliveryView, EventView,
    Finding, GroupMembers, GroupResult, HandlerView, JobView, KeyView, List, MemberResult,
    ModuleList, NewKeyView, ProductView, ResellerView, RuleRun, RuleView, ServerView,
    ServiceBatchAnswer, ServiceUsage, ServiceUsageLine, ServiceView, SyncReport, Topup,
    TransactionView, UsagePolicy, UsageReading,
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
    let mut order = ServiceCreate::new(
        provisio_core::ClientId(client_id),
        RecordRef::Name(product.clone()),
    );
    order.settings.insert("quota_gb".into(), json!(5));
    order.invoice = Some("INV-1".into());
    let service = c.create_service(&order).await.unwrap();
    let create = c.service_jobs(service.id, &[]).await.unwrap().items[0].id;
    c.wait_job(create, Duration::from_secs(10)).await.unwrap();
    let job = c
        .service_action(
            service.id,
            "renew",
            &ActionInput::default(),
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    c.add_transaction(
        client_id,
        &TransactionCreate {
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

    hooks_and_rules(&c, &product).await;
    groups_and_collect(&c, client_id, &product).await;
    usage_and_audits(&c, client_id).await;
    same::<List<EventView>>(&c, "/v1/events?limit=1000").await;
}

async fn post(c: &Client, path: &str, body: Value) -> Value {
    c.post(path, &[], Some(&body), Duration::ZERO)
        .await
        .unwrap()
}

/// GETs `path` until `done` holds for the answer (bounded), for records the background
/// loops fill in.
async fn poll(c: &Client, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let until = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v: Value = c.get(path, &[]).await.unwrap();
        if done(&v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < until,
            "{path} never got there: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn hooks_and_rules(c: &Client, product: &str) {
    // Loopback is outside the default outbound policy, so each delivery fails with a
    // logged attempt and stays pending for its retry.
    let made = post(
        c,
        "/v1/handlers",
        json!({"name": "hook-1", "kind": "http", "phase": "notify", "events": ["client.*"],
               "url": "http://127.0.0.1:9/hook"}),
    )
    .await;
    assert!(made["secret"].is_string(), "{made}");
    agrees::<HandlerView>(&made);
    let gate = post(
        c,
        "/v1/handlers",
        json!({"name": "gate-1", "kind": "http", "phase": "gate", "events": ["service.create.before"],
               "url": "http://127.0.0.1:9/gate", "status": "disabled", "on_error": "forbid"}),
    )
    .await;
    agrees::<HandlerView>(&gate);
    agrees::<HandlerView>(&post(c, "/v1/handlers/hook-1/rotate-secret", json!({})).await);
    let shown = same::<HandlerView>(c, "/v1/handlers/hook-1").await;
    assert!(shown.get("secret").is_none(), "{shown}");
    assert!(shown["previous_secret_until"].is_string(), "{shown}");
    same::<List<HandlerView>>(c, "/v1/handlers").await;

    let rule = post(
        c,
        "/v1/rules",
        json!({"name": "welcome", "on": "client.created", "delay_secs": 3600,
               "action": {"kind": "create_service", "product": product}}),
    )
    .await;
    agrees::<RuleView>(&rule);
    same::<RuleView>(c, "/v1/rules/welcome").await;
    same::<List<RuleView>>(c, "/v1/rules").await;

    // An event both react to: the rule's firing waits out its hour, the delivery fails.
    post(
        c,
        "/v1/clients",
        json!({"name": "Cy", "email": "cy@example.com"}),
    )
    .await;
    let runs = poll(c, "/v1/rule-runs", |v| {
        v["items"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await;
    agrees::<List<RuleRun>>(&runs);
    let deliveries = poll(c, "/v1/deliveries?handler=hook-1", |v| {
        v["items"]
            .as_array()
            .is_some_and(|i| i.iter().any(|d| d["attempts"].as_u64() > Some(0)))
    })
    .await;
    agrees::<List<DeliveryView>>(&deliveries);
    let tried = deliveries["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["attempts"].as_u64() > Some(0))
        .unwrap()["id"]
        .clone();
    let detail = same::<DeliveryDetailView>(c, &format!("/v1/deliveries/{tried}")).await;
    assert!(
        detail["log"].as_array().is_some_and(|l| !l.is_empty()),
        "{detail}"
    );

    let reseller = post(c, "/v1/resellers", json!({"name": "Resell Co"})).await;
    agrees::<ResellerView>(&reseller);
    same::<ResellerView>(c, &format!("/v1/resellers/{}", reseller["id"])).await;
    same::<List<ResellerView>>(c, "/v1/resellers").await;
}

async fn groups_and_collect(c: &Client, client_id: i64, product: &str) {
    // A child of INV-1, suspended, so the group has both roles and the clean-up has a
    // candidate.
    let child = post(
        c,
        "/v1/services",
        json!({"client_id": client_id, "product": product, "parent_invoice": "INV-1"}),
    )
    .await;
    let id = child["id"].as_i64().unwrap();
    poll(c, &format!("/v1/services/{id}"), |s| {
        s["status"] == "active"
    })
    .await;
    let suspended: Value = c
        .post(
            &format!("/v1/services/{id}/suspend?wait=10"),
            &[],
            Some(&json!({"reason": "overdue"})),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(suspended["state"], "done", "{suspended}");

    let members = same::<GroupMembers>(c, "/v1/groups/INV-1").await;
    assert_eq!(members["members"].as_array().unwrap().len(), 2, "{members}");
    let planned = post(c, "/v1/groups/INV-1/suspend", json!({"dry_run": true})).await;
    assert!(planned["members"][0]["outcome"].is_string(), "{planned}");
    agrees::<GroupResult>(&planned);
    let cleanup = post(c, "/v1/cleanup", json!({"dry_run": true, "after": "now"})).await;
    assert!(
        cleanup.as_array().is_some_and(|m| !m.is_empty()),
        "{cleanup}"
    );
    agrees::<Vec<MemberResult>>(&cleanup);

    let summary: Value = c
        .post(
            "/v1/collect",
            &[("limit", "100".to_string())],
            Some(&json!({})),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert!(summary["items"][0]["values"].is_object(), "{summary}");
    agrees::<List<Collected>>(&summary);
    let chosen = post(
        c,
        "/v1/collect",
        json!({"fields": ["service.username", "client.email", "product.name"],
               "filters": {"service.parent_invoice": "INV-1"}}),
    )
    .await;
    agrees::<List<Collected>>(&chosen);
}

async fn usage_and_audits(c: &Client, client_id: i64) {
    post(
        c,
        "/v1/servers",
        json!({"name": "meter-1", "module": "meter"}),
    )
    .await;
    post(
        c,
        "/v1/products",
        json!({"name": "metered", "module": "meter"}),
    )
    .await;
    let service = post(
        c,
        "/v1/services",
        json!({"client_id": client_id, "product": "metered", "username": "ada1"}),
    )
    .await;
    let id = service["id"].as_i64().unwrap();
    poll(c, &format!("/v1/services/{id}"), |s| {
        s["status"] == "active"
    })
    .await;

    let started = post(c, "/v1/usage/syncs", json!({})).await;
    agrees::<SyncReport>(&started);
    let path = format!("/v1/usage/syncs/{}", started["id"]);
    let ended = poll(c, &path, |r| r["state"] != "running").await;
    assert_eq!(ended["state"], "done", "{ended}");
    agrees::<SyncReport>(&ended);
    same::<List<SyncReport>>(c, "/v1/usage/syncs").await;

    let topup = post(
        c,
        &format!("/v1/services/{id}/topups"),
        json!({"metric": "data", "amount": 5, "note": "bonus", "idempotency_key": "t-1"}),
    )
    .await;
    agrees::<Topup>(&topup);
    same::<Vec<Topup>>(c, &format!("/v1/services/{id}/topups")).await;
    let usage = same::<ServiceUsage>(c, &format!("/v1/services/{id}/usage")).await;
    assert_eq!(usage["metrics"][0]["used"], 3.5, "{usage}");
    same::<List<ServiceUsageLine>>(c, "/v1/usage/services").await;
    same::<List<UsageReading>>(c, &format!("/v1/services/{id}/usage/history")).await;
    let policy: Value = c
        .put(
            "/v1/products/metered/usage-policy",
            &json!({"limits": {"data": "data_limit"}, "metrics": ["data"]}),
        )
        .await
        .unwrap();
    agrees::<UsagePolicy>(&policy);
    same::<UsagePolicy>(c, "/v1/products/metered/usage-policy").await;

    let audits = post(c, "/v1/audits", json!({"server": "meter-1"})).await;
    agrees::<Vec<Audit>>(&audits);
    let path = format!("/v1/audits/{}", audits[0]["id"]);
    let ended = poll(c, &path, |a| a["state"] != "running").await;
    assert_eq!(ended["state"], "done", "{ended}");
    agrees::<Audit>(&ended);
    same::<List<Audit>>(c, "/v1/audits").await;
    let findings = same::<Vec<Finding>>(c, &format!("{path}/findings")).await;
    assert_eq!(findings[0]["username"], "orphan-1", "{findings}");
}
