//! `/metrics` (the Prometheus exposition, for admin, operator and readonly keys; without a
//! key on `[http] metrics_listen`) and `/readyz` (readiness, no key, like `/healthz`).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::access::{rule, Access, READ_SETUP};
use crate::error::ApiError;
use crate::AppState;

/// Operators and monitoring read it; billing and scoped keys have no business with it.
pub(crate) const ACCESS: &[Access] = &[rule(axum::http::Method::GET, "/metrics", READ_SETUP)];

/// The exposition in Prometheus text format 0.0.4.
pub(crate) async fn metrics() -> Response {
    match provisio_engine::metrics::render() {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics-unavailable",
            "Metrics unavailable",
            "another metrics recorder was installed in this process first",
        )
        .into_response(),
    }
}

/// 200 with every loop's seconds since its last iteration, or 503 problem+json naming
/// each check that failed.
pub(crate) async fn readyz(State(app): State<AppState>) -> Response {
    let r = app.engine.readiness().await;
    let loops: serde_json::Map<String, serde_json::Value> = r
        .loops
        .iter()
        .map(|(n, s)| (n.clone(), serde_json::json!(s)))
        .collect();
    if r.ready {
        return axum::Json(
            serde_json::json!({"status": "ready", "loops_seconds_since_beat": loops}),
        )
        .into_response();
    }
    let detail = r
        .problems
        .iter()
        .map(|(check, why)| format!("{check}: {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    let mut resp = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not-ready",
        "Not ready",
        format!("not ready: {detail}"),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, "5".parse().expect("a number"));
    resp
}
