//! Prometheus metrics. Names follow OpenTelemetry semantic conventions in Prometheus form
//! (`http.server.request.duration` → `http_server_request_duration_seconds`). Every
//! protocol is an HTTP request here, so gRPC, gRPC-Web and REST share the two RED series,
//! told apart by `protocol`, with `outcome` = HTTP status (REST) or gRPC code (gRPC).
//! Here: the recorder, and what the process itself reports (build, job runs). Every other
//! metric is named and described by the module that records it (`describe_metrics` in
//! `middleware::observe`, `middleware::shed`, `cache`, `auth::attempts`, `auth::password`,
//! `metrics::scrape`), when it is set up.

pub mod handles;
pub mod scrape;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const JOB_RUNS: &str = "conduit_job_runs_total";
pub const BUILD_INFO: &str = "conduit_build_info";

/// Seconds; tuned for an API whose calls take milliseconds, with room for slow ones.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide recorder. Histograms get buckets (without them the exporter
/// renders summaries, which cannot be aggregated across replicas).
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .install_recorder()?;
    // `job_name`, not `job`: Prometheus owns `job` (the scrape job) and would rename ours.
    metrics::describe_counter!(
        JOB_RUNS,
        "Background job runs, by job_name and outcome (ok, skipped, error)"
    );
    metrics::describe_gauge!(BUILD_INFO, "Always 1; labels name the build");
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "git_sha" => env!("CONDUIT_GIT_SHA")).set(1.0);
    Ok(handle)
}

pub fn job_run(job: &'static str, ok: bool) {
    metrics::counter!(JOB_RUNS, "job_name" => job, "outcome" => if ok { "ok" } else { "error" })
        .increment(1);
}
