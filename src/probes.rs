//! Kubernetes probes. Liveness says only that the process answers; readiness follows the
//! lifecycle's view (database up, not draining), the same state gRPC health reports.

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use serde_json::json;

use crate::{
    operations::{Access::Public, Effect::Read, Operation, rest_only},
    readiness::Readiness,
};

pub const OPERATIONS: &[Operation] = &[
    rest_only("GET /livez", Public, Read).probe(),
    rest_only("GET /readyz", Public, Read).probe(),
];

pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/livez",
            get(|| async { Json(json!({ "status": "alive" })) }),
        )
        .route("/readyz", get(ready))
        .with_state(readiness)
}

async fn ready(State(readiness): State<Readiness>) -> impl IntoResponse {
    let state = readiness.current();
    match state.reason() {
        None => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "reason": reason })),
        ),
    }
}
