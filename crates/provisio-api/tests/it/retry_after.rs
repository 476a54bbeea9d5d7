//! The client's pause on `Retry-After`, against a stand-in server that answers from a
//! script: it waits at least as long as asked before sending again, sends the same
//! `Idempotency-Key` every time, and gives up with the typed error after its retries.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use provisio_api::requests::ClientCreate;
use provisio_api::{ApiError, Client, ClientOptions};
use serde_json::json;

/// What the stand-in answers to its n-th request (the last entry for every later one).
#[derive(Clone, Copy)]
enum Answer {
    /// 409: the first attempt under this key still runs, `Retry-After: 1`.
    InProgress,
    /// 503 with `Retry-After: 1`.
    Busy,
    Created,
}

/// When a request arrived and the Idempotency-Key it carried.
type Seen = (Instant, Option<String>);

#[derive(Clone)]
struct StandIn {
    script: Arc<Vec<Answer>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn answer(State(s): State<StandIn>, headers: HeaderMap) -> Response {
    let n = {
        let mut seen = s.seen.lock().unwrap();
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        seen.push((Instant::now(), key));
        seen.len() - 1
    };
    let problem = |status: StatusCode, detail: &str, errors: serde_json::Value| {
        let body = json!({
            "type": "https://provisio.dev/problems/stand-in", "title": "stand-in",
            "status": status.as_u16(), "detail": detail, "errors": errors,
        });
        let mut r = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        r
    };
    match s.script[n.min(s.script.len() - 1)] {
        Answer::InProgress => problem(
            StatusCode::CONFLICT,
            "a request with this Idempotency-Key is still running; retry shortly",
            json!([{"field": "Idempotency-Key", "rule": "in_progress",
                    "message": "Idempotency-Key: still running"}]),
        ),
        Answer::Busy => problem(StatusCode::SERVICE_UNAVAILABLE, "draining", json!([])),
        Answer::Created => (
            StatusCode::CREATED,
            axum::Json(json!({
                "id": 7, "name": "Ada", "email": "ada@example.com", "status": "active",
                "balance_minor": 0, "currency": "EUR", "custom_fields": {},
                "reseller_id": null, "external_id": null,
                "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            })),
        )
            .into_response(),
    }
}

async fn stand_in(script: Vec<Answer>) -> (Client, StandIn) {
    let state = StandIn {
        script: Arc::new(script),
        seen: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/v1/clients", axum::routing::post(answer))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let options = ClientOptions {
        timeout: Duration::from_secs(10),
        retries: 2,
        ..Default::default()
    };
    let client = Client::with_options(&base, Some("k-test"), options).unwrap();
    (client, state)
}

fn ada() -> ClientCreate {
    ClientCreate {
        name: "Ada".into(),
        email: "ada@example.com".into(),
        ..Default::default()
    }
}

/// The gaps between the requests the stand-in saw, and the one key they all carried.
fn gaps_and_key(state: &StandIn) -> (Vec<Duration>, String) {
    let seen = state.seen.lock().unwrap();
    let gaps = seen.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let key = seen[0]
        .1
        .clone()
        .expect("a POST carries an Idempotency-Key");
    assert!(
        seen.iter().all(|(_, k)| k.as_deref() == Some(key.as_str())),
        "every attempt must reuse the key: {:?}",
        seen.iter().map(|(_, k)| k).collect::<Vec<_>>()
    );
    (gaps, key)
}

#[tokio::test]
async fn waits_as_asked_then_sends_the_same_key_again() {
    let (c, state) = stand_in(vec![Answer::InProgress, Answer::Busy, Answer::Created]).await;
    let made = c.create_client(&ada()).await.unwrap();
    assert_eq!((made.id, made.name.as_str()), (7, "Ada"));
    let (gaps, key) = gaps_and_key(&state);
    assert_eq!(gaps.len(), 2, "one request, then one retry per Retry-After");
    for gap in &gaps {
        assert!(
            *gap >= Duration::from_secs(1),
            "retried after {gap:?}, asked 1 s"
        );
        assert!(*gap < Duration::from_secs(4), "waited {gap:?} for 1 s");
    }
    assert!(key.starts_with("pc-"), "{key}");
}

#[tokio::test]
async fn gives_up_with_the_typed_error_after_its_retries() {
    let (c, state) = stand_in(vec![Answer::InProgress]).await;
    let e = c.create_client(&ada()).await.unwrap_err();
    let (gaps, _) = gaps_and_key(&state);
    assert_eq!(
        gaps.len(),
        2,
        "the first request and two retries, then no more"
    );
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_secs(1)),
        "{gaps:?}"
    );
    match &e {
        ApiError::Status {
            status: 409,
            retry_after: Some(after),
            problem: Some(p),
            ..
        } => {
            assert_eq!(*after, Duration::from_secs(1));
            assert_eq!(p.errors[0].rule, "in_progress");
        }
        other => panic!("expected the 409 with its problem, got {other:?}"),
    }
    assert_eq!(e.status(), Some(409));
}
