//! The gRPC rendering: a `tonic::Status` with `ErrorInfo` (reason, domain), field
//! violations and retry information. The request id is added on the way out
//! (`answer::quote_ids`).

use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use super::{AppError, ERROR_DOMAIN, Reason, internal_message};
use axum::{
    body::Body,
    http::{HeaderValue, header::CONTENT_TYPE},
    response::Response,
};

use crate::context::Protocol;

/// A gRPC status with its `ErrorInfo`: how every layer and handler answers a failed call.
pub fn status(code: Code, reason: Reason, message: impl Into<String>) -> tonic::Status {
    status_with(code, reason, message, ErrorDetails::new())
}

fn status_with(
    code: Code,
    reason: Reason,
    message: impl Into<String>,
    mut details: ErrorDetails,
) -> tonic::Status {
    details.set_error_info(
        reason.as_str(),
        ERROR_DOMAIN,
        std::collections::HashMap::new(),
    );
    tonic::Status::with_error_details(code, message, details)
}

/// Every status carries `ErrorInfo` (reason, domain `conduit`); invalid arguments also
/// carry `BadRequest` field violations.
impl From<AppError> for tonic::Status {
    fn from(error: AppError) -> Self {
        let failure = error.failure();
        let code = error.grpc_code();
        let reason = error.reason();
        let violations = error.field_errors();
        let message = match &error {
            AppError::Internal(_) => internal_message(None),
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
        let mut status = status_with(code, reason, message, details);
        if let Some(failure) = failure {
            status.set_source(std::sync::Arc::new(failure));
        }
        status
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
