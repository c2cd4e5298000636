//! A panicking handler becomes INTERNAL (gRPC) or 500 (REST) for that one request; the
//! connection, the worker and every other request carry on. The payload is logged, never sent.

use std::panic::AssertUnwindSafe;

use axum::{extract::Request, http::StatusCode, middleware::Next, response::Response};
use futures_util::FutureExt;

use super::{Protocol, layer_error, request_id};

pub async fn catch(request: Request, next: Next) -> Response {
    let protocol = Protocol::of(&request);
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            tracing::error!(panic = %detail, "handler panicked");
            let message = match request_id::current() {
                Some(id) => format!("internal error (request id {id})"),
                None => "internal error".into(),
            };
            layer_error(
                protocol,
                tonic::Status::internal(message.clone()),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                &message,
            )
        }
    }
}
