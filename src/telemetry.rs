//! Logs, traces and error tracking, initialised once by `main` and flushed at shutdown.
//!
//! - Logs: JSON lines in dev and prod (span fields included, so lines inside a request
//!   carry its `request_id` and `trace_id`), human-readable locally. `RUST_LOG` overrides
//!   the configured level.
//! - Traces: `tracing` spans become OpenTelemetry spans; W3C trace context is extracted in
//!   the `observe` layer. Exported over OTLP/gRPC when `telemetry.otlp_endpoint` or
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set; otherwise ids are still made and logged.
//! - Error tracking: with `telemetry.sentry_dsn`, ERROR events (internal errors, panics)
//!   are sent as Sentry events with their fields (request id, trace id).

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use opentelemetry::{global, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{AppEnv, LogFormat, Settings};

/// Keeps exporters alive; `shutdown` flushes what is still buffered.
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
    sentry: Option<sentry::ClientInitGuard>,
    metrics: PrometheusHandle,
}

pub fn init(settings: &Settings) -> anyhow::Result<Telemetry> {
    let t = &settings.telemetry;
    global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer_provider = tracer_provider(settings)?;
    let tracer = tracer_provider.tracer("conduit");
    global::set_tracer_provider(tracer_provider.clone());

    let log_filter =
        EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&t.log_level))?;
    let json = match t.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => settings.app_env() != AppEnv::Local,
    };
    let logs = if json {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(log_filter)
            .boxed()
    } else {
        fmt::layer().compact().with_filter(log_filter).boxed()
    };
    // Spans are exported at INFO whatever the log level: quieter logs must not lose traces.
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(LevelFilter::INFO);

    // The error-tracking client speaks TLS through rustls without choosing a crypto
    // provider; use ring, which sqlx already links. Err means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sentry = t.sentry_dsn.as_ref().map(|dsn| {
        sentry::init((
            dsn.as_str(),
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
    })
}

fn tracer_provider(settings: &Settings) -> anyhow::Result<SdkTracerProvider> {
    let t = &settings.telemetry;
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, read by the default detectors, win.
    let mut resource = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(t.service_name.clone());
    }
    let mut provider = SdkTracerProvider::builder().with_resource(resource.build());
    let from_env = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    if t.otlp_endpoint.is_some() || from_env {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(endpoint) = &t.otlp_endpoint {
            exporter = exporter.with_endpoint(endpoint.clone());
        }
        provider =
            provider.with_batch_exporter(exporter.build().context("building the OTLP exporter")?);
    }
    Ok(provider.build())
}

impl Telemetry {
    /// What `/metrics` renders.
    pub fn metrics(&self) -> PrometheusHandle {
        self.metrics.clone()
    }

    /// Flushes buffered spans and error events; the last step of shutdown.
    pub fn shutdown(self) {
        if let Err(e) = self
            .tracer_provider
            .shutdown_with_timeout(std::time::Duration::from_secs(3))
        {
            eprintln!("conduit: flushing traces: {e}");
        }
        if let Some(sentry) = self.sentry {
            sentry.close(Some(std::time::Duration::from_secs(2)));
        }
    }
}

/// The current span's trace id (32 hex digits), if there is a valid one.
pub fn current_trace_id() -> Option<String> {
    trace_id_of(&tracing::Span::current())
}

/// `span`'s trace id (32 hex digits), if there is a valid one.
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let context = span.context();
    let otel_span = context.span();
    let ids = otel_span.span_context();
    ids.is_valid().then(|| ids.trace_id().to_string())
}
