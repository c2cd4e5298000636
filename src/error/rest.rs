//! The REST rendering: RealWorld's `{"errors": {field: [message]}}` with the HTTP status.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{AppError, kind::retry_after_secs};

impl AppError {
    /// The error in the caller's protocol, for layers that answer before any handler.
    pub fn into_response_for(self, protocol: crate::middleware::Protocol) -> Response {
        if protocol.is_grpc() {
            crate::middleware::grpc_error(protocol, self.into())
        } else {
            self.into_response()
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log_if_internal();
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
        response
    }
}

/// The RealWorld error body, for the OpenAPI document.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct GenericErrorModel {
    pub errors: std::collections::HashMap<String, Vec<String>>,
}
