//! Optional OTLP export of the engine's spans (`[telemetry] otlp_endpoint`): job attempts
//! and deliveries go to an OpenTelemetry collector over OTLP/HTTP (protobuf) with the trace
//! ids Provisio stores on jobs and sends in `traceparent`, so a trace backend, the job
//! record and a remote's logs name the same trace.

use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::config::{ConfigError, TelemetryConfig};

/// Ids for exported spans: a span made by `provisio_engine::trace::root_span` keeps the
/// ids the engine chose (the job's trace id, the span id sent in `traceparent`); any other
/// span gets random ones.
#[derive(Debug, Default)]
struct EngineIds(RandomIdGenerator);

impl IdGenerator for EngineIds {
    fn new_trace_id(&self) -> TraceId {
        provisio_engine::trace::take_pending_trace_id()
            .map(|t| TraceId::from_bytes(t.0))
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        provisio_engine::trace::take_pending_span_id()
            .map(|s| SpanId::from_bytes(s.0))
            .unwrap_or_else(|| self.0.new_span_id())
    }
}

/// Builds a span's OpenTelemetry side at once, while the engine's ids wait for the id
/// generator on this thread; `tracing-opentelemetry` would otherwise build it later, on
/// first entry, when they are gone.
fn build_now(span: &tracing::Span) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let _ = span.context();
}

/// A running exporter: its layer goes into the process's subscriber, and [`Exporter::shutdown`]
/// sends what is still buffered.
pub struct Exporter {
    provider: SdkTracerProvider,
}

/// `base` (a collector's OTLP/HTTP address) with the traces path, as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is read.
fn traces_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

impl Exporter {
    /// The exporter `cfg` asks for; `None` when export is off (no `otlp_endpoint`).
    pub fn start(cfg: &TelemetryConfig) -> Result<Option<Exporter>, ConfigError> {
        cfg.check()?;
        let Some(endpoint) = &cfg.otlp_endpoint else {
            return Ok(None);
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(traces_url(endpoint))
            .with_timeout(Duration::from_secs(cfg.otlp_timeout_seconds))
            .with_headers(Default::default())
            .build()
            .map_err(|e| ConfigError::Invalid(format!("telemetry.otlp_endpoint: {e}")))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_id_generator(EngineIds::default())
            .with_resource(
                Resource::builder()
                    .with_service_name(cfg.service_name.clone())
                    .build(),
            )
            .build();
        provisio_engine::trace::set_span_hook(build_now);
        Ok(Some(Exporter { provider }))
    }

    /// The layer that turns the engine's spans (job attempts, deliveries, and the events
    /// logged inside them) into exported spans. Other crates' spans (HTTP requests, SQL)
    /// stay in the logs only.
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("provisio"))
            .with_location(false)
            .with_threads(false)
            .with_filter(Targets::new().with_target("provisio_engine", tracing::Level::INFO))
    }

    /// Sends every finished span now. Blocks: call it off the async runtime.
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "flushing the OTLP span export failed");
        }
    }

    /// Sends what is buffered and stops. Blocks: call it off the async runtime.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "stopping the OTLP span export failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }

    #[test]
    fn export_is_off_by_default_and_a_bad_endpoint_is_refused_by_name() {
        assert!(Exporter::start(&TelemetryConfig::default())
            .unwrap()
            .is_none());
        let bad = TelemetryConfig {
            otlp_endpoint: Some("collector:4318".into()),
            ..Default::default()
        };
        let err = Exporter::start(&bad).err().unwrap().to_string();
        assert!(err.contains("telemetry.otlp_endpoint"), "{err}");
    }
}
