//! `GET /metrics`: the exposition, with the gauges that are sampled when scraped
//! (database pool, readiness) rather than by a task.

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use sea_orm::DatabaseConnection;

use crate::operations::{Access::Public, Effect::Read, Operation, rest_only};

pub const DB_CONNECTIONS: &str = "db_client_connections_usage";
pub const DB_CONNECTIONS_MAX: &str = "db_client_connections_max";
pub const READY: &str = "conduit_ready";
pub const NOT_READY_BECAUSE: &str = "conduit_not_ready_because";

#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    db: DatabaseConnection,
    max_connections: u32,
    readiness: crate::readiness::Readiness,
}

pub const OPERATIONS: &[Operation] = &[rest_only("GET /metrics", Public, Read).probe()];

/// `GET /metrics` in the text exposition format.
pub fn router(
    handle: PrometheusHandle,
    db: DatabaseConnection,
    max_connections: u32,
    readiness: crate::readiness::Readiness,
) -> Router {
    describe_metrics();
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

/// Describes this module's metrics to the recorder (a no-op until one is installed).
pub fn describe_metrics() {
    metrics::describe_gauge!(
        DB_CONNECTIONS,
        "Database pool connections by state (idle, used)"
    );
    metrics::describe_gauge!(DB_CONNECTIONS_MAX, "Database pool size limit");
    metrics::describe_gauge!(
        READY,
        "1 while this replica takes traffic (database up, schema current, not draining), else 0"
    );
    metrics::describe_gauge!(
        NOT_READY_BECAUSE,
        "1 for each condition keeping this replica out of rotation: database_unreachable, schema_behind, draining"
    );
}
