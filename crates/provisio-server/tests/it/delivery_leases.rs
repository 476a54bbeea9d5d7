//! Delivery leases: a delivery left claimed by a process that died is sent by another about
//! a lease later, and a delivery whose handler takes longer than the lease is sent once,
//! its lease renewed while it runs. Two engines share one database, as two nodes would.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use provisio_store::NewDelivery;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{config, registry, spawn_app_with, Db, TestApp, FAST_JOBS};

/// Short leases and fast retries, so the takeover shows within seconds.
const LEASE_SECONDS: u64 = 2;
const HOOKS: &str = "[hooks]\ndelivery_lease = \"2s\"\nretry_schedule = [\"200ms\", \"200ms\"]\n";

/// The webhook-id of every request that reached the receiver, on arrival; each answered
/// 200 after `delay`.
#[derive(Clone, Default)]
struct Receiver {
    arrived: Arc<Mutex<Vec<String>>>,
    delay: Arc<Mutex<Duration>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap) -> AxStatus {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    r.arrived.lock().unwrap().push(id);
    let delay = *r.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    AxStatus::OK
}

async fn start_receiver() -> (String, Receiver) {
    let r = Receiver::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, r)
}

/// A second node: its own engine over the app's database and key file, with its own worker.
async fn second_node(app: &TestApp) -> provisio_engine::worker::WorkerHandle {
    let cfg = config(
        app.dir.path(),
        &app.db_url,
        &format!("{HOOKS}\n{FAST_JOBS}"),
    );
    let engine = Arc::new(provisio_server::prepare(&cfg, registry()).await.unwrap());
    provisio_engine::worker::spawn(engine, "node-2".into())
}

async fn handler(app: &TestApp, url: &str, timeout_ms: u64) {
    app.create(
        "/v1/handlers",
        json!({"name": "billing", "kind": "http", "url": url, "phase": "notify",
               "events": ["client.created"], "timeout_ms": timeout_ms}),
    )
    .await;
}

async fn new_client(app: &TestApp) {
    app.create(
        "/v1/clients",
        json!({"name": "Lease Test", "email": "lease@example.test"}),
    )
    .await;
}

/// The handler's only delivery, once it has succeeded (at most `within`).
async fn delivered(app: &TestApp, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, list) = app.get("/v1/deliveries?handler=billing").await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let items = list["items"].as_array().unwrap();
        if items.len() == 1 && items[0]["state"] == "succeeded" {
            return items[0].clone();
        }
        assert!(Instant::now() < deadline, "not delivered in time: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_dead_nodes_delivery_is_sent_by_another_a_lease_later(db: Db) {
    let mut app = spawn_app_with(db, HOOKS).await;
    // This node plays the one that dies: its loops never run, its claim is never renewed.
    app.stop_worker().await;
    let (url, rx) = start_receiver().await;
    handler(&app, &url, 5000).await;
    new_client(&app).await;
    let store = app.engine.store().clone();
    let events = store.undispatched_events(100).await.unwrap();
    let h = app.engine.store().list_handlers(&Default::default()).await;
    let h = h
        .unwrap()
        .into_iter()
        .find(|h| h.name.as_str() == "billing");
    let h = h.unwrap();
    let plan: Vec<NewDelivery> = events
        .iter()
        .filter(|e| e.kind.as_str() == "client.created")
        .map(|e| NewDelivery {
            handler_id: h.id,
            event_id: e.id,
            event_type: e.kind.clone(),
            subject: e.subject.clone(),
            next_at: e.at,
        })
        .collect();
    assert_eq!(plan.len(), 1, "{events:?}");
    let ids: Vec<_> = events.iter().map(|e| e.id).collect();
    store.dispatch(&ids, &plan, &[]).await.unwrap();
    let now = app.engine.now();
    let lease = chrono::Duration::seconds(LEASE_SECONDS as i64);
    let claimed = store
        .claim_deliveries("dead-node", now, now + lease, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    let t0 = Instant::now();

    let node = second_node(&app).await;
    let d = delivered(&app, Duration::from_secs(20)).await;
    let took = t0.elapsed();
    eprintln!("the dead node's delivery was sent by node-2 {took:?} after the claim");
    // Not before the dead node's lease ran out, and within about one lease after it (the
    // requeue runs every half lease, the claim every poll).
    assert!(took >= Duration::from_millis(1800), "{took:?}");
    assert!(
        took < Duration::from_secs(LEASE_SECONDS + 4),
        "took {took:?}"
    );
    assert_eq!(d["attempts"], 1, "{d}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.arrived.lock().unwrap().len(), 1, "sent once");
    node.shutdown().await;
    app.stop().await;
}

async fn a_delivery_slower_than_its_lease_is_sent_once(db: Db) {
    // Two live nodes: the one that does not send it would take a lapsed lease over.
    let app = spawn_app_with(db, HOOKS).await;
    let node = second_node(&app).await;
    let (url, rx) = start_receiver().await;
    let slow = Duration::from_secs(LEASE_SECONDS * 5 / 2);
    *rx.delay.lock().unwrap() = slow;
    handler(&app, &url, 10_000).await;
    let t0 = Instant::now();
    new_client(&app).await;
    let d = delivered(&app, Duration::from_secs(20)).await;
    assert!(t0.elapsed() >= slow, "{:?}", t0.elapsed());
    assert_eq!(d["attempts"], 1, "{d}");
    // Past another lease and requeue: nobody took the delivery over meanwhile.
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS + 1)).await;
    let arrived = rx.arrived.lock().unwrap().clone();
    assert_eq!(arrived.len(), 1, "sent more than once: {arrived:?}");
    let (_, d) = app.get(&format!("/v1/deliveries/{}", d["id"])).await;
    assert_eq!(d["attempts"], 1, "{d}");
    node.shutdown().await;
    app.stop().await;
}

on_both!(
    a_dead_nodes_delivery_is_sent_by_another_a_lease_later,
    a_delivery_slower_than_its_lease_is_sent_once,
);
