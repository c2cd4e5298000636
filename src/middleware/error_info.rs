//! Every non-OK gRPC status carries `google.rpc.ErrorInfo` (AIP-193). Handlers and the
//! other layers attach it themselves ([`crate::error::status`]); this layer completes the
//! statuses tonic answers on its own before any handler runs — an unknown method of a
//! known service, a message that does not decode, an unsupported compression — which
//! arrive trailers-only, with the outcome in the response headers.

use axum::{extract::Request, middleware::Next, response::Response};
use tonic::Code;

use crate::context::Protocol;
use crate::error::{self, Reason};

const DETAILS: &str = "grpc-status-details-bin";

pub async fn complete(request: Request, next: Next) -> Response {
    let grpc = Protocol::of(&request).is_grpc();
    let mut response = next.run(request).await;
    if !grpc || response.headers().contains_key(DETAILS) {
        return response;
    }
    let headers = response.headers();
    let Some(code) = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from)
    else {
        return response;
    };
    let reason = match code {
        Code::Ok => return response,
        Code::Unimplemented => Reason::MethodNotFound,
        Code::ResourceExhausted => Reason::RequestTooLarge,
        Code::DeadlineExceeded => Reason::DeadlineExceeded,
        _ => Reason::Internal,
    };
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let completed = error::status(code, reason, message).into_http::<()>();
    if let Some(details) = completed.headers().get(DETAILS) {
        response.headers_mut().insert(DETAILS, details.clone());
    }
    response
}
