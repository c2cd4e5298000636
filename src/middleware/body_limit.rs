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

use crate::{context::Protocol, error::layer_error};

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

/// `request` with its body cut at `limit` bytes while it is read. A read that fails
/// because the client went away is reported to `observe` as a cancellation.
pub fn bounded(limit: usize, protocol: Protocol, request: Request) -> Request {
    let gone = super::observe::ClientGone::of(&request);
    request.map(|body| {
        Body::new(Limited::new(body, limit).map_err(move |e| {
            if e.is::<LengthLimitError>() {
                if protocol.is_grpc() {
                    return Box::new(grpc_too_large(limit))
                        as Box<dyn std::error::Error + Send + Sync>;
                }
            } else if client_went_away(&*e) {
                if let Some(gone) = &gone {
                    gone.mark();
                }
            } else {
                tracing::debug!(error = %e, "request body failed");
            }
            e
        }))
    })
}

/// A translated gRPC-Web request (tonic's body type) cut at `limit` bytes:
/// RESOURCE_EXHAUSTED past it.
pub fn bounded_grpc(
    limit: usize,
    request: http::Request<tonic::body::Body>,
) -> http::Request<tonic::body::Body> {
    request.map(|body| {
        tonic::body::Body::new(Limited::new(body, limit).map_err(move |e| {
            if e.is::<LengthLimitError>() {
                Box::new(grpc_too_large(limit)) as Box<dyn std::error::Error + Send + Sync>
            } else {
                e
            }
        }))
    })
}

/// The answer to a request body that could not be read to its end: over the limit
/// (413 / RESOURCE_EXHAUSTED), or broken off (400 / INVALID_ARGUMENT), for whatever reads
/// a body below this layer.
pub fn unreadable(protocol: Protocol, error: &axum::Error) -> Response {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut too_large = false;
    while let Some(e) = source {
        too_large |= e.is::<http_body_util::LengthLimitError>()
            || e.downcast_ref::<tonic::Status>()
                .is_some_and(|s| s.code() == tonic::Code::ResourceExhausted);
        source = e.source();
    }
    if too_large {
        crate::error::AppError::PayloadTooLarge.into_response_for(protocol)
    } else {
        layer_error(
            protocol,
            crate::error::status(
                tonic::Code::InvalidArgument,
                crate::error::Reason::RequestUnreadable,
                "request body could not be read",
            ),
            StatusCode::BAD_REQUEST,
            "body",
            "could not be read",
        )
    }
}

/// The bound on a raw request body: gRPC-Web text is base64, a third larger than the
/// messages it carries (which are bounded after decoding, `bounded_grpc`).
pub fn raw_limit(limit: usize, protocol: Protocol) -> usize {
    if protocol == Protocol::GrpcWeb {
        limit.saturating_add(limit / 3).saturating_add(1024)
    } else {
        limit
    }
}

/// Whether a body error means the peer stopped sending: the connection closed before the
/// body was complete, or the HTTP/2 stream was reset.
fn client_went_away(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && (hyper.is_incomplete_message() || hyper.is_canceled() || hyper.is_closed())
        {
            return true;
        }
        // HTTP/1.1: the connection ended before the promised length (an I/O error such
        // as UnexpectedEof or a reset, under hyper's body error).
        if e.is::<std::io::Error>() {
            return true;
        }
        // HTTP/2: the client reset the stream (CANCEL), or the connection went.
        if let Some(h2) = e.downcast_ref::<h2::Error>()
            && (h2.is_remote()
                || h2.is_io()
                || h2.is_go_away()
                || h2.reason() == Some(h2::Reason::CANCEL))
        {
            return true;
        }
        source = e.source();
    }
    false
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
