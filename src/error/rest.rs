//! The REST rendering: RealWorld's `{"errors": {field: [message]}}` with the HTTP status.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{AppError, connect_error, grpc_error, kind::retry_after_secs};
use crate::context::Protocol;

impl AppError {
    /// The error in the caller's protocol, for layers that answer before any handler.
    pub fn into_response_for(self, protocol: Protocol) -> Response {
        if protocol.is_rpc() {
            rpc_error(protocol, self.into())
        } else {
            self.into_response()
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let failure = self.failure();
        let reason = self.reason();
        let mut errors = serde_json::Map::new();
        for (field, message) in self.field_errors() {
            let entry = errors.entry(field).or_insert_with(|| json!([]));
            if let Some(list) = entry.as_array_mut() {
                list.push(message.into());
            }
        }
        let mut response = (self.http_status(), Json(json!({ "errors": errors }))).into_response();
        if let AppError::RateLimited(wait) = self {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, retry_after_secs(wait).into());
        }
        // For layers that judge the answer (idempotency: a lost race is not kept).
        response.extensions_mut().insert(reason);
        if let Some(failure) = failure {
            response.extensions_mut().insert(failure);
        }
        response
    }
}

/// The RealWorld error body, for the OpenAPI document.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct GenericErrorModel {
    pub errors: std::collections::HashMap<String, Vec<String>>,
}

/// An error produced by a layer (not a handler), in the caller's protocol: a trailers-only
/// gRPC response (HTTP 200, outcome in `grpc-status`), Connect's JSON error, or a
/// RealWorld-shaped JSON error.
pub fn layer_error(
    protocol: Protocol,
    status: tonic::Status,
    http: StatusCode,
    field: &str,
    message: &str,
) -> Response {
    if protocol.is_rpc() {
        return rpc_error(protocol, status);
    }
    (http, Json(json!({ "errors": { field: [message] } }))).into_response()
}

/// `status` as an RPC protocol carries it: trailers-only gRPC or gRPC-Web, or Connect's
/// JSON error.
fn rpc_error(protocol: Protocol, status: tonic::Status) -> Response {
    if protocol == Protocol::Connect {
        connect_error(status)
    } else {
        grpc_error(protocol, status)
    }
}
