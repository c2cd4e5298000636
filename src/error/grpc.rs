//! The gRPC rendering: a `tonic::Status` with `ErrorInfo` (reason, domain, request id),
//! field violations and retry information.

use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use super::{AppError, ERROR_DOMAIN, Reason, internal_message};
use axum::{
    body::Body,
    http::{HeaderValue, header::CONTENT_TYPE},
    response::Response,
};

use crate::context::{self, Protocol};

/// A gRPC status with its `ErrorInfo` (and the request id to quote, when there is one):
/// how every layer and handler answers a failed call.
pub fn status(code: Code, reason: Reason, message: impl Into<String>) -> tonic::Status {
    status_with(code, reason, message, ErrorDetails::new())
}

fn status_with(
    code: Code,
    reason: Reason,
    message: impl Into<String>,
    mut details: ErrorDetails,
) -> tonic::Status {
    let metadata: std::collections::HashMap<String, String> = context::current()
        .map(|id| ("request_id".to_string(), id))
        .into_iter()
        .collect();
    details.set_error_info(reason.as_str(), ERROR_DOMAIN, metadata);
    tonic::Status::with_error_details(code, message, details)
}

/// Every status carries `ErrorInfo` (reason, domain `conduit`); invalid arguments also
/// carry `BadRequest` field violations.
impl From<AppError> for tonic::Status {
    fn from(error: AppError) -> Self {
        error.log_if_internal();
        let code = error.grpc_code();
        let reason = error.reason();
        let violations = error.field_errors();
        let message = match &error {
            AppError::Internal(_) => internal_message(),
            _ => violations
                .iter()
                .map(|(field, message)| format!("{field} {message}"))
                .collect::<Vec<_>>()
                .join("; "),
        };
        let mut details = ErrorDetails::new();
        if code == Code::InvalidArgument {
            for (field, description) in violations {
                details.add_bad_request_violation(field, description);
            }
        }
        if let AppError::RateLimited(wait) = error {
            details.set_retry_info(Some(wait));
        }
        status_with(code, reason, message, details)
    }
}

/// A trailers-only gRPC (or gRPC-Web) response carrying `status`.
pub fn grpc_error(protocol: Protocol, status: tonic::Status) -> Response {
    let mut response: Response = status.into_http();
    if protocol == Protocol::GrpcWeb {
        // Browsers' gRPC-Web clients read trailers-only outcomes from these headers.
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web+proto"),
        );
    }
    response.map(|_: Body| Body::empty())
}
