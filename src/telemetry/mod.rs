//! Logs, traces and error tracking, initialised once by `main` and flushed at shutdown.
//!
//! - Logs: JSON lines in dev and prod (`json_lines`: lines inside a request carry its
//!   `request_id` and `trace_id`), human-readable locally. `RUST_LOG` overrides
//!   the configured level.
//! - Traces: with an exporter (`telemetry.otlp_endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`),
//!   `tracing` spans become OpenTelemetry spans, sampled parent-based at
//!   `telemetry.trace_sample_ratio` and exported over OTLP/gRPC; W3C trace context is
//!   extracted in the `observe` layer. Without one, no OpenTelemetry work is done per
//!   request: the caller's `traceparent` trace id (or a fresh one) is still logged.
//! - Logs go through a batched writer (`log_writer`: a dedicated thread does the writes,
//!   so a slow stdout never stalls a request); colour only when stdout is a terminal.
//! - Error tracking: with `telemetry.sentry_dsn`, ERROR events (internal errors, panics)
//!   are sent as Sentry events with their fields (request id, trace id).

mod json_lines;
mod log_writer;

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use std::{
    io::IsTerminal,
    sync::atomic::{AtomicBool, Ordering},
};

use opentelemetry::{global, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracerProvider},
};
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{AppEnv, LogFormat, Settings};

/// Keeps exporters and the log writer alive; `shutdown` flushes what is still buffered.
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    sentry: Option<sentry::ClientInitGuard>,
    metrics: PrometheusHandle,
    logs: log_writer::Flush,
}

/// Whether spans are exported: set once by `init`. When not, `observe` skips
/// OpenTelemetry context work and makes trace ids itself.
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Whether logs are human-readable text, which shows a request's ids through its span.
static TEXT_LOGS: AtomicBool = AtomicBool::new(false);

pub fn text_logs() -> bool {
    TEXT_LOGS.load(Ordering::Relaxed)
}

pub fn init(settings: &Settings) -> anyhow::Result<Telemetry> {
    let t = &settings.telemetry;
    global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer_provider = tracer_provider(settings)?;
    if let Some(provider) = &tracer_provider {
        global::set_tracer_provider(provider.clone());
        EXPORTING.store(true, Ordering::Relaxed);
    }

    let log_filter =
        EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&t.log_level))?;
    let json = match t.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => settings.app_env() != AppEnv::Local,
    };
    TEXT_LOGS.store(!json, Ordering::Relaxed);
    let (writer, logs_guard) =
        log_writer::batched(std::io::stdout()).context("starting the log writer thread")?;
    let logs = if json {
        json_lines::JsonLines::new(writer)
            .with_filter(log_filter)
            .boxed()
    } else {
        fmt::layer()
            .compact()
            .with_ansi(std::io::stdout().is_terminal())
            .with_writer(writer)
            .with_filter(log_filter)
            .boxed()
    };
    // Spans are exported at INFO whatever the log level: quieter logs must not lose traces.
    let traces = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("conduit"))
            .with_filter(LevelFilter::INFO)
    });

    // The error-tracking client speaks TLS through rustls without choosing a crypto
    // provider; use ring, which sqlx already links. Err means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sentry = t.sentry_dsn.as_ref().map(|dsn| {
        sentry::init((
            dsn.expose(),
            sentry::ClientOptions::new()
                .release(env!("CARGO_PKG_VERSION"))
                .environment(settings.app_env().as_str()),
        ))
    });
    // ERROR events only: internal errors and panics, each with its request and trace id.
    let errors = sentry.as_ref().map(|_| {
        sentry::integrations::tracing::ErrorLayer::new()
            .enable_span_attributes()
            .with_filter(LevelFilter::ERROR)
    });

    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .with(errors)
        .try_init()
        .context("installing the tracing subscriber")?;
    let metrics = crate::metrics::install()?;
    Ok(Telemetry {
        tracer_provider,
        sentry,
        metrics,
        logs: logs_guard,
    })
}

/// The exporting tracer provider, or `None` when no collector is configured.
fn tracer_provider(settings: &Settings) -> anyhow::Result<Option<SdkTracerProvider>> {
    let t = &settings.telemetry;
    let from_env = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    if t.otlp_endpoint.is_none() && !from_env {
        return Ok(None);
    }
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, read by the default detectors, win.
    let mut resource = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(t.service_name.clone());
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(endpoint) = &t.otlp_endpoint {
        exporter = exporter.with_endpoint(endpoint.clone());
    }
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(t.trace_sample_ratio)));
    Ok(Some(
        SdkTracerProvider::builder()
            .with_resource(resource.build())
            .with_sampler(sampler)
            .with_batch_exporter(exporter.build().context("building the OTLP exporter")?)
            .build(),
    ))
}

impl Telemetry {
    /// What `/metrics` renders.
    pub fn metrics(&self) -> PrometheusHandle {
        self.metrics.clone()
    }

    /// Flushes buffered spans, error events and log lines; the last step of shutdown.
    pub fn shutdown(self) {
        if let Some(provider) = &self.tracer_provider
            && let Err(e) = provider.shutdown_with_timeout(std::time::Duration::from_secs(3))
        {
            eprintln!("conduit: flushing traces: {e}");
        }
        if let Some(sentry) = self.sentry {
            sentry.close(Some(std::time::Duration::from_secs(2)));
        }
        drop(self.logs);
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), if valid: how
/// a request continues its caller's trace when spans are not exported.
pub fn trace_id_from_traceparent(value: &str) -> Option<&str> {
    let mut parts = value.split('-');
    let (version, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(span, 16)
        && trace.bytes().any(|b| b != b'0')
        && parts.next().is_some_and(|flags| hex(flags, 2));
    valid.then_some(trace)
}

/// A fresh trace id (32 lower-case hex digits, never all zero).
pub fn new_trace_id() -> String {
    // Encoded in place: `to_string` would go through the formatting machinery.
    let mut text = [0u8; uuid::fmt::Simple::LENGTH];
    uuid::Uuid::new_v4()
        .simple()
        .encode_lower(&mut text)
        .to_owned()
}

/// `span`'s trace id (32 hex digits), if there is a valid one.
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let context = span.context();
    let otel_span = context.span();
    let ids = otel_span.span_context();
    ids.is_valid().then(|| ids.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_trace_ids() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            trace_id_from_traceparent(&format!("00-{id}-00f067aa0ba902b7-01")),
            Some(id)
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            assert_eq!(trace_id_from_traceparent(bad), None, "{bad}");
        }
        assert_eq!(new_trace_id().len(), 32);
    }
}
