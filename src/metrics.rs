//! Prometheus metrics. Names follow OpenTelemetry semantic conventions in Prometheus form
//! (`http.server.request.duration` → `http_server_request_duration_seconds`). Every
//! protocol is an HTTP request here, so gRPC, gRPC-Web and REST share the two RED series,
//! told apart by `protocol`, with `outcome` = HTTP status (REST) or gRPC code (gRPC).

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sea_orm::DatabaseConnection;

pub const REQUESTS: &str = "http_server_requests_total";
pub const DURATION: &str = "http_server_request_duration_seconds";
pub const ACTIVE: &str = "http_server_active_requests";
pub const DB_CONNECTIONS: &str = "db_client_connections_usage";
pub const DB_CONNECTIONS_MAX: &str = "db_client_connections_max";
pub const JOB_RUNS: &str = "conduit_job_runs_total";
pub const BUILD_INFO: &str = "conduit_build_info";
pub const HASHING_REFUSED: &str = "conduit_password_hashing_refused_total";
pub const RATE_LIMITED: &str = "conduit_rate_limited_total";
pub const READY: &str = "conduit_ready";
pub const NOT_READY_BECAUSE: &str = "conduit_not_ready_because";

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
    metrics::describe_counter!(
        REQUESTS,
        "Requests served, by protocol, operation and outcome"
    );
    metrics::describe_histogram!(
        DURATION,
        metrics::Unit::Seconds,
        "Request latency until the response body ends"
    );
    metrics::describe_gauge!(ACTIVE, "Requests in flight");
    metrics::describe_gauge!(
        DB_CONNECTIONS,
        "Database pool connections by state (idle, used)"
    );
    metrics::describe_gauge!(DB_CONNECTIONS_MAX, "Database pool size limit");
    // `job_name`, not `job`: Prometheus owns `job` (the scrape job) and would rename ours.
    metrics::describe_counter!(
        JOB_RUNS,
        "Background job runs, by job_name and outcome (ok, skipped, error)"
    );
    metrics::describe_gauge!(BUILD_INFO, "Always 1; labels name the build");
    metrics::describe_counter!(
        crate::cache::LOOKUPS,
        "Read-cache lookups, by part (window, total, article, body, author, count, viewer, slug, username, tags) and result (hit, miss)"
    );
    metrics::describe_gauge!(
        crate::cache::STALENESS,
        "Seconds since this replica's last complete read of the change log began (Postgres); past cache.max_staleness it serves no cached part"
    );
    metrics::describe_counter!(
        RATE_LIMITED,
        "Logins and registrations refused 429 / RESOURCE_EXHAUSTED by the attempt limits"
    );
    metrics::describe_counter!(
        crate::middleware::shed::SHED,
        "Requests answered 503 / RESOURCE_EXHAUSTED because server.concurrency_limit were in flight"
    );
    metrics::describe_counter!(
        HASHING_REFUSED,
        "Logins, registrations and password changes answered 503 / UNAVAILABLE because every password-hashing slot stayed busy"
    );
    metrics::describe_gauge!(
        READY,
        "1 while this replica takes traffic (database up, schema current, not draining), else 0"
    );
    metrics::describe_gauge!(
        NOT_READY_BECAUSE,
        "1 for each condition keeping this replica out of rotation: database_unreachable, schema_behind, draining"
    );
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "git_sha" => env!("CONDUIT_GIT_SHA")).set(1.0);
    Ok(handle)
}

pub fn job_run(job: &'static str, ok: bool) {
    metrics::counter!(JOB_RUNS, "job_name" => job, "outcome" => if ok { "ok" } else { "error" })
        .increment(1);
}

#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    db: DatabaseConnection,
    max_connections: u32,
    readiness: crate::lifecycle::Readiness,
}

pub const OPERATIONS: &[crate::operations::Operation] = &[crate::operations::rest_only(
    "GET /metrics",
    crate::operations::Access::Public,
    crate::operations::Effect::Read,
)];

/// `GET /metrics` in the text exposition format.
pub fn router(
    handle: PrometheusHandle,
    db: DatabaseConnection,
    max_connections: u32,
    readiness: crate::lifecycle::Readiness,
) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape {
            handle,
            db,
            max_connections,
            readiness,
        })
}

async fn scrape(State(s): State<Scrape>) -> impl IntoResponse {
    // Pool gauges are sampled when scraped: always current, no sampling task.
    let (size, idle) = crate::db::pool_usage(&s.db);
    let idle = idle as f64;
    metrics::gauge!(DB_CONNECTIONS, "state" => "idle").set(idle);
    metrics::gauge!(DB_CONNECTIONS, "state" => "used").set((size as f64 - idle).max(0.0));
    metrics::gauge!(DB_CONNECTIONS_MAX).set(s.max_connections as f64);
    // Readiness as alerting sees it: a replica out of rotation for minutes, and why.
    let ready = s.readiness.current();
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    metrics::gauge!(READY).set(flag(ready.is_ready()));
    for (condition, on) in [
        ("database_unreachable", !ready.database_up),
        ("schema_behind", ready.schema_behind),
        ("draining", ready.draining),
    ] {
        metrics::gauge!(NOT_READY_BECAUSE, "condition" => condition).set(flag(on));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.handle.render(),
    )
}
