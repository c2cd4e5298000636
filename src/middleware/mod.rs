//! One file per cross-cutting layer. `server::stack` applies them in order; each
//! treats gRPC, gRPC-Web and REST requests alike and answers errors in the caller's protocol.

pub mod body_limit;
pub mod error_info;
pub mod grpc_web;
pub mod guard;
pub mod observe;
pub mod operation;
pub mod panic;
pub mod request_id;
pub mod rewrite;
pub mod security_headers;
pub mod shared;
pub mod shed;
pub mod timeout;

use axum::{
    Json,
    body::Body,
    http::{HeaderValue, Request, StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    GrpcWeb,
    Http,
}

impl Protocol {
    pub fn of<B>(request: &Request<B>) -> Self {
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if content_type.starts_with("application/grpc-web") {
            Protocol::GrpcWeb
        } else if content_type.starts_with("application/grpc") {
            Protocol::Grpc
        } else {
            Protocol::Http
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::Http => "http",
        }
    }

    pub fn is_grpc(self) -> bool {
        matches!(self, Protocol::Grpc | Protocol::GrpcWeb)
    }
}

/// An error produced by a layer (not a handler), in the caller's protocol: a trailers-only
/// gRPC response (HTTP 200, outcome in `grpc-status`), or a RealWorld-shaped JSON error.
pub fn layer_error(
    protocol: Protocol,
    status: tonic::Status,
    http: StatusCode,
    field: &str,
    message: &str,
) -> Response {
    if protocol.is_grpc() {
        return grpc_error(protocol, status);
    }
    (http, Json(json!({ "errors": { field: [message] } }))).into_response()
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
