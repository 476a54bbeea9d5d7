//! The spans of job attempts and deliveries, and how their trace ids reach an OpenTelemetry
//! exporter: a span made by [`root_span`] leaves its trace and span id here for the
//! exporter's id generator to take, so the exported span has the job's trace id and the
//! span id the remote saw in `traceparent`.

use std::cell::Cell;
use std::sync::OnceLock;

use provisio_core::trace::{SpanId, TraceContext, TraceId};
use tracing::Span;

thread_local! {
    static PENDING_TRACE: Cell<Option<TraceId>> = const { Cell::new(None) };
    static PENDING_SPAN: Cell<Option<SpanId>> = const { Cell::new(None) };
}

/// What an exporter runs on each span [`root_span`] makes, while the ids wait.
static SPAN_HOOK: OnceLock<fn(&Span)> = OnceLock::new();

/// Installs the exporter's hook (once per process; a second call changes nothing): it must
/// make the exporter take its ids at once, since some build their side of a span lazily.
pub fn set_span_hook(hook: fn(&Span)) {
    let _ = SPAN_HOOK.set(hook);
}

/// Makes a span (with `make`, which must create exactly one root span, `parent: None`)
/// whose exported ids are those of `ctx`. Span creation runs the subscriber's layers on this
/// thread, so the ids are taken before this returns (with the exporter's hook); whatever is
/// left (no exporter, or the span was filtered out) is cleared so that it cannot leak into
/// an unrelated span.
pub fn root_span(ctx: TraceContext, make: impl FnOnce() -> Span) -> Span {
    PENDING_TRACE.set(Some(ctx.trace_id));
    PENDING_SPAN.set(Some(ctx.span_id));
    let span = make();
    if let Some(hook) = SPAN_HOOK.get() {
        hook(&span);
    }
    PENDING_TRACE.set(None);
    PENDING_SPAN.set(None);
    span
}

/// For an exporter's id generator: the trace id of the span [`root_span`] is making on
/// this thread, if it is making one.
pub fn take_pending_trace_id() -> Option<TraceId> {
    PENDING_TRACE.take()
}

/// For an exporter's id generator: the span id of the span [`root_span`] is making.
pub fn take_pending_span_id() -> Option<SpanId> {
    PENDING_SPAN.take()
}

/// The span of one job attempt. `server` is the server's id: names can change, and a trace
/// backend joins on ids.
pub(crate) fn attempt_span(job: &provisio_core::job::Job, ctx: TraceContext) -> Span {
    root_span(ctx, || {
        tracing::info_span!(
            parent: None,
            "job.attempt",
            job = job.id.0,
            service = job.service_id.0,
            server = job.server_id.0,
            action = job.action.as_str(),
            // Signed: exporters send unsigned integers as text.
            attempt = i64::from(job.attempts) + 1,
            trace_id = %ctx.trace_id,
            outcome = tracing::field::Empty,
        )
    })
}

/// The span of one delivery attempt.
pub(crate) fn delivery_span(d: &provisio_core::handler::Delivery, ctx: TraceContext) -> Span {
    root_span(ctx, || {
        tracing::info_span!(
            parent: None,
            "webhook.delivery",
            handler = d.handler_id.0,
            delivery = d.id.0,
            event = d.event_id.0,
            attempt = i64::from(d.attempts) + 1,
            trace_id = %ctx.trace_id,
            outcome = tracing::field::Empty,
        )
    })
}
