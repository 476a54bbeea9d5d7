//! The trace context of the task making remote calls: the engine sets it around a job
//! attempt, a delivery or a gate call, and every HTTP request a module or handler sends in
//! that task carries it as a W3C `traceparent` header.

use std::future::Future;

use provisio_core::trace::TraceContext;
use reqwest::header::{HeaderMap, HeaderValue};

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// Runs `fut` with `ctx` as its trace context.
pub async fn scope<F: Future>(ctx: TraceContext, fut: F) -> F::Output {
    CURRENT.scope(ctx, fut).await
}

/// The trace context of the running task, if the engine set one.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

/// The `traceparent` header value for a request sent now, if there is a trace.
pub fn traceparent() -> Option<HeaderValue> {
    current().and_then(|c| HeaderValue::from_str(&c.traceparent()).ok())
}

/// Sets `traceparent` on `headers`, replacing one a template may have set: a fixed value
/// would join unrelated calls into one trace.
pub fn propagate(headers: &mut HeaderMap) {
    if let Some(v) = traceparent() {
        headers.insert("traceparent", v);
    }
}
