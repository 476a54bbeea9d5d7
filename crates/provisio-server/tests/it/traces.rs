//! Trace context end to end: the W3C `traceparent` a job's `http` module calls, its gate
//! calls and the deliveries of its outcome carry, checked against the trace id the job
//! record shows; and the OTLP export of attempt spans to a local OTLP/HTTP receiver.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Db, TestApp};

/// One request a local remote got: which route, and its `traceparent` (empty if none).
#[derive(Clone, Debug)]
struct Seen {
    route: &'static str,
    traceparent: String,
}

#[derive(Clone, Default)]
struct Remote(Arc<Mutex<Vec<Seen>>>);

impl Remote {
    fn seen(&self, route: &str) -> Vec<Seen> {
        let got = self.0.lock().unwrap();
        got.iter().filter(|s| s.route == route).cloned().collect()
    }

    fn record(&self, route: &'static str, headers: &HeaderMap) {
        let traceparent = headers
            .get("traceparent")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        self.0.lock().unwrap().push(Seen { route, traceparent });
    }
}

/// A remote for the `http` module (users), a gate and a notify receiver, on one port.
async fn start_remote() -> (String, Remote) {
    let r = Remote::default();
    let app = axum::Router::new()
        .route(
            "/users",
            axum::routing::post(|State(r): State<Remote>, h: HeaderMap| async move {
                r.record("create", &h);
                (AxStatus::CREATED, r#"{"id":"u1"}"#)
            }),
        )
        .route(
            "/users/{name}",
            axum::routing::patch(|State(r): State<Remote>, h: HeaderMap| async move {
                r.record("suspend", &h);
                (AxStatus::OK, "{}")
            }),
        )
        .route(
            "/gate",
            axum::routing::post(|State(r): State<Remote>, h: HeaderMap| async move {
                r.record("gate", &h);
                (AxStatus::OK, r#"{"decision":"allow"}"#)
            }),
        )
        .route(
            "/notify",
            axum::routing::post(|State(r): State<Remote>, h: HeaderMap| async move {
                r.record("notify", &h);
                (AxStatus::OK, "")
            }),
        )
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, r)
}

/// The trace id of a version-00 `traceparent`, after checking its shape: 2, 32 and 16
/// lowercase hex digits and the flags, ids not all zero.
fn trace_of(traceparent: &str) -> String {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {traceparent:?}");
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            && s.bytes().any(|c| c != b'0')
    };
    assert_eq!(parts[0], "00", "version of {traceparent}");
    assert!(hex(parts[1], 32), "trace id of {traceparent}");
    assert!(hex(parts[2], 16), "parent id of {traceparent}");
    assert_eq!(parts[3], "01", "flags of {traceparent}");
    parts[1].to_string()
}

fn server_settings(base: &str) -> Value {
    json!({
        "base_url": base,
        "timeout_seconds": 3,
        "actions": {
            "create": {"method": "POST", "url": "/users", "body": {"userName": "{{ service.username }}"},
                       "success": {"status": [201]}},
            "suspend": {"method": "PATCH", "url": "/users/{{ service.username }}", "body": {"active": false}},
        },
    })
}

/// An `http` server and product against `base`, and a client.
async fn catalog(app: &TestApp, base: &str) -> i64 {
    app.create(
        "/v1/servers",
        json!({"name": "users-api", "module": "http", "settings": server_settings(base)}),
    )
    .await;
    app.create("/v1/products", json!({"name": "saas", "module": "http"}))
        .await;
    app.create("/v1/clients", json!({"name": "T", "email": "t@t.test"}))
        .await["id"]
        .as_i64()
        .unwrap()
}

/// Waits (at most 20 s) until `remote` has seen `n` requests on `route`.
async fn wait_seen(remote: &Remote, route: &str, n: usize) -> Vec<Seen> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = remote.seen(route);
        if seen.len() >= n {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{route}: {} of {n} requests after 20 s",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn traceparent_follows_a_job_to_its_remote_gates_and_deliveries(db: Db) {
    let app = spawn_app_with(db, "").await;
    let (base, remote) = start_remote().await;
    let client = catalog(&app, &base).await;
    app.create(
        "/v1/handlers",
        json!({"name": "gate", "kind": "http", "url": format!("{base}/gate"), "phase": "gate",
               "events": ["service.*.before"]}),
    )
    .await;
    app.create(
        "/v1/handlers",
        json!({"name": "billing", "kind": "http", "url": format!("{base}/notify"), "phase": "notify",
               "events": ["service.*.succeeded"]}),
    )
    .await;

    let svc = app
        .create(
            "/v1/services",
            json!({"client_id": client, "product": "saas", "username": "traced"}),
        )
        .await;
    let id = svc["id"].as_i64().unwrap();
    let (_, jobs) = app.get(&format!("/v1/services/{id}/jobs")).await;
    let create = app.wait_job(jobs["items"][0]["id"].as_i64().unwrap()).await;
    assert_eq!(create["state"], "done", "{create}");
    let create_trace = create["trace_id"]
        .as_str()
        .expect("the job shows its trace id");
    let suspend = app.act(id, "suspend", None).await;
    assert_eq!(suspend["state"], "done", "{suspend}");
    let suspend_trace = suspend["trace_id"].as_str().unwrap();
    assert_ne!(
        create_trace, suspend_trace,
        "each job has a trace of its own"
    );

    // The module's calls, the gates asked before each action and the deliveries of each
    // outcome all carry the trace of their job.
    for (route, traces) in [
        ("create", vec![create_trace]),
        ("suspend", vec![suspend_trace]),
        ("gate", vec![create_trace, suspend_trace]),
        ("notify", vec![create_trace, suspend_trace]),
    ] {
        let seen = wait_seen(&remote, route, traces.len()).await;
        let mut got: Vec<String> = seen.iter().map(|s| trace_of(&s.traceparent)).collect();
        let mut want: Vec<String> = traces.iter().map(|t| t.to_string()).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{route}: {seen:?}");
    }
    // The module call's parent is the attempt's span, not the gate's: they are different
    // pieces of work in one trace.
    let parent = |s: &Seen| s.traceparent.split('-').nth(2).unwrap().to_string();
    let create_call = &remote.seen("create")[0];
    assert!(remote
        .seen("gate")
        .iter()
        .all(|g| parent(g) != parent(create_call)));
    app.stop().await;
}

/// A local OTLP/HTTP receiver: every span of every `POST /v1/traces`, decoded.
async fn start_collector() -> (String, Arc<Mutex<Vec<Span>>>) {
    use prost::Message as _;
    let got: Arc<Mutex<Vec<Span>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(
                |State(got): State<Arc<Mutex<Vec<Span>>>>,
                 h: HeaderMap,
                 body: axum::body::Bytes| async move {
                    assert_eq!(h["content-type"], "application/x-protobuf");
                    let req =
                        ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                    let spans = req
                        .resource_spans
                        .into_iter()
                        .flat_map(|r| r.scope_spans)
                        .flat_map(|s| s.spans);
                    got.lock().unwrap().extend(spans);
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, got)
}

fn attribute(span: &Span, key: &str) -> Option<any_value::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
        .and_then(|v| v.value)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// With `[telemetry] otlp_endpoint` set, a job's attempt arrives at the collector as a span
/// whose trace id is the job's and whose span id is the parent id the remote saw.
async fn attempt_spans_are_exported_over_otlp_with_the_jobs_trace_id(db: Db) {
    use tracing_subscriber::layer::SubscriberExt as _;
    let (collector, got) = start_collector().await;
    let extra = format!("[telemetry]\notlp_endpoint = \"{collector}\"\n");
    let app = spawn_app_with(db, &extra).await;
    // The telemetry section of the same configuration starts the exporter, as `serve` does.
    let cfg = crate::helpers::config(app.dir.path(), &app.db_url, &extra);
    assert_eq!(
        cfg.telemetry.otlp_endpoint.as_deref(),
        Some(collector.as_str())
    );
    let exporter = provisio_server::telemetry::Exporter::start(&cfg.telemetry)
        .unwrap()
        .expect("export is on");
    // The test's runtime runs on this thread only, so the app's worker and delivery tasks
    // report to this subscriber (other tests' spans do not).
    let subscriber = tracing_subscriber::registry().with(exporter.layer());
    let _guard = tracing::subscriber::set_default(subscriber);

    let (base, remote) = start_remote().await;
    let client = catalog(&app, &base).await;
    let svc = app
        .create(
            "/v1/services",
            json!({"client_id": client, "product": "saas", "username": "exported"}),
        )
        .await;
    let id = svc["id"].as_i64().unwrap();
    let (_, jobs) = app.get(&format!("/v1/services/{id}/jobs")).await;
    let job = app.wait_job(jobs["items"][0]["id"].as_i64().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    let trace_id = job["trace_id"].as_str().unwrap().to_string();
    let parent_seen = remote.seen("create")[0]
        .traceparent
        .split('-')
        .nth(2)
        .unwrap()
        .to_string();

    let exporter = Arc::new(exporter);
    let deadline = Instant::now() + Duration::from_secs(20);
    let span = loop {
        let flushing = exporter.clone();
        tokio::task::spawn_blocking(move || flushing.flush())
            .await
            .unwrap();
        let found = got
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.name == "job.attempt" && hex(&s.trace_id) == trace_id)
            .cloned();
        if let Some(s) = found {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no job.attempt span of trace {trace_id} after 20 s; got {:?}",
            got.lock()
                .unwrap()
                .iter()
                .map(|s| &s.name)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        hex(&span.span_id),
        parent_seen,
        "the remote's parent is the attempt"
    );
    assert!(span.parent_span_id.is_empty(), "an attempt is a root span");
    let int = |k: &str| match attribute(&span, k) {
        Some(any_value::Value::IntValue(i)) => i,
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(int("job"), job["id"].as_i64().unwrap());
    assert_eq!(int("server"), job["server_id"].as_i64().unwrap());
    assert_eq!(int("service"), id);
    assert_eq!(int("attempt"), 1);
    assert_eq!(
        attribute(&span, "action"),
        Some(any_value::Value::StringValue("create".into()))
    );
    assert_eq!(
        attribute(&span, "outcome"),
        Some(any_value::Value::StringValue("ok".into()))
    );
    app.stop().await;
    if let Ok(e) = Arc::try_unwrap(exporter) {
        tokio::task::spawn_blocking(move || e.shutdown())
            .await
            .unwrap();
    }
}

on_both!(
    traceparent_follows_a_job_to_its_remote_gates_and_deliveries,
    attempt_spans_are_exported_over_otlp_with_the_jobs_trace_id,
);
