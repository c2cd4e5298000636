//! Request body limit for both protocols. A declared `content-length` over the limit is
//! refused before reading; otherwise the body is wrapped so reading past the limit fails:
//! axum's JSON extractor turns that into 413, and tonic, which downcasts body errors to
//! `Status`, into RESOURCE_EXHAUSTED.

use axum::{
    body::Body,
    extract::Request,
    http::{StatusCode, header::CONTENT_LENGTH},
    response::Response,
};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::{Protocol, layer_error};

/// The answer to a request whose declared length is over `limit` already.
pub fn declared_over(limit: usize, protocol: Protocol, request: &Request) -> Option<Response> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    declared
        .is_some_and(|len| len > limit as u64)
        .then(|| too_large(protocol, limit))
}

/// `request` with its body cut at `limit` bytes while it is read.
pub fn bounded(limit: usize, protocol: Protocol, request: Request) -> Request {
    request.map(|body| {
        let limited = Limited::new(body, limit);
        if protocol.is_grpc() {
            Body::new(limited.map_err(move |e| {
                if e.is::<LengthLimitError>() {
                    Box::new(grpc_too_large(limit)) as Box<dyn std::error::Error + Send + Sync>
                } else {
                    e
                }
            }))
        } else {
            Body::new(limited)
        }
    })
}

fn grpc_too_large(limit: usize) -> tonic::Status {
    crate::error::status(
        tonic::Code::ResourceExhausted,
        crate::error::Reason::RequestTooLarge,
        format!("request body is larger than {limit} bytes"),
    )
}

fn too_large(protocol: Protocol, limit: usize) -> Response {
    layer_error(
        protocol,
        grpc_too_large(limit),
        StatusCode::PAYLOAD_TOO_LARGE,
        "body",
        "is too large",
    )
}
