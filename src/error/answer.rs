//! The last touch of every error answer: the request's ids, given as arguments by the one
//! layer that holds them (`observe`), written into the answer in the caller's protocol —
//! the request id in every gRPC status's `ErrorInfo` and in what a client sees of an
//! internal failure, whose details are logged here with both ids. Errors are made without
//! ids wherever they arise (a `?` deep in a service, a layer that refuses a request), and
//! an answer replayed from the idempotency store quotes the request it answers now.

use std::sync::Arc;

use axum::{
    body::Body,
    http::header::{CONTENT_ENCODING, CONTENT_LENGTH},
    response::Response,
};
use serde_json::json;
use std::error::Error as _;
use tonic::Code;

use tonic_types::StatusExt;

use super::{ERROR_DOMAIN, Reason, internal_message};
use crate::context::Protocol;

/// The details of an internal failure, travelling out with its answer (a response
/// extension for REST, the status's source for gRPC) to be logged with the request's ids.
#[derive(Debug, Clone)]
pub struct Failure(Arc<str>);

impl Failure {
    pub(super) fn new(detail: String) -> Self {
        Failure(detail.into())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// The request's ids, for the answer and the log, and the request's span, which the log
/// line of an internal failure belongs to.
#[derive(Clone, Copy)]
pub struct AnswerIds<'a> {
    pub request_id: &'a str,
    pub trace_id: Option<&'a str>,
    pub span: &'a tracing::Span,
}

/// Writes `ids` into `response` if it is an error answer; logs an internal failure's
/// details. Success answers pass untouched, at the cost of a header read and an
/// extension look-up.
pub fn quote_ids(response: &mut Response, protocol: Protocol, ids: AnswerIds<'_>) {
    let failure = failure_of(response);
    if let Some(failure) = &failure {
        // Fields, not only span context, so error tracking receives them too.
        tracing::error!(
            parent: ids.span,
            error = %failure,
            request_id = ids.request_id,
            trace_id = ids.trace_id,
            "internal error"
        );
    }
    if protocol.is_grpc() {
        quote_in_status(response, ids.request_id, failure.is_some());
    } else if protocol == Protocol::Connect {
        quote_in_connect_error(response, ids.request_id, failure.is_some());
    } else if failure.is_some() {
        let body = json!({ "errors": { "internal": [internal_message(Some(ids.request_id))] } });
        // The body is written again whole, so any encoding a layer gave the first is gone.
        let headers = response.headers_mut();
        headers.remove(CONTENT_ENCODING);
        headers.remove(CONTENT_LENGTH);
        *response.body_mut() = Body::from(body.to_string());
    }
}

fn failure_of(response: &mut Response) -> Option<Failure> {
    if let Some(failure) = response.extensions_mut().remove::<Failure>() {
        return Some(failure);
    }
    response
        .extensions()
        .get::<tonic::Status>()
        .and_then(|status| status.source())
        .and_then(|source| source.downcast_ref::<Failure>().cloned())
}

/// Every error answer is trailers-only (the outcome in the headers): the status is read
/// back, its `ErrorInfo` given the request id — or made, for the statuses tonic answers by
/// itself (an unknown method, a message that does not decode) — and written again.
fn quote_in_status(response: &mut Response, request_id: &str, internal: bool) {
    let headers = response.headers_mut();
    let Some(quoted) = tonic::Status::from_header_map(headers)
        .and_then(|status| quoted(&status, request_id, internal))
    else {
        return;
    };
    // Only the three outcome headers are written again: the status read back also holds
    // every other header as metadata, which must not be added twice.
    if quoted.add_header(headers).is_err() {
        tracing::warn!("could not write the request id into a gRPC status");
    }
}

/// A Connect error carries its status as an extension (`connect_error`): quoted, it is
/// written again as the body; the HTTP status and the other headers stay.
fn quote_in_connect_error(response: &mut Response, request_id: &str, internal: bool) {
    let Some(quoted) = response
        .extensions()
        .get::<tonic::Status>()
        .and_then(|status| quoted(status, request_id, internal))
    else {
        return;
    };
    super::connect::render_body(response, &quoted);
    response.extensions_mut().insert(quoted);
}

/// `status` with the request id in its `ErrorInfo` (made for the statuses tonic answers by
/// itself) and, for an internal failure, in its message; `None` for OK.
fn quoted(status: &tonic::Status, request_id: &str, internal: bool) -> Option<tonic::Status> {
    let code = status.code();
    if code == Code::Ok {
        return None;
    }
    let mut details = status.get_error_details();
    let (reason, mut metadata) = match details.error_info() {
        Some(info) if info.domain == ERROR_DOMAIN => (info.reason.clone(), info.metadata.clone()),
        _ => (
            reason_of_bare(code).as_str().to_string(),
            Default::default(),
        ),
    };
    metadata.insert("request_id".into(), request_id.into());
    details.set_error_info(reason, ERROR_DOMAIN, metadata);
    let message = if internal {
        internal_message(Some(request_id))
    } else {
        status.message().to_string()
    };
    Some(tonic::Status::with_error_details(code, message, details))
}

/// The reason of a status no code of ours made: tonic answers these before any handler.
fn reason_of_bare(code: Code) -> Reason {
    match code {
        Code::Unimplemented => Reason::MethodNotFound,
        Code::ResourceExhausted => Reason::RequestTooLarge,
        Code::DeadlineExceeded => Reason::DeadlineExceeded,
        _ => Reason::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    use crate::error::{AppError, grpc_error, status};

    fn details(response: &Response) -> (tonic::Status, ErrorDetails) {
        let status = tonic::Status::from_header_map(response.headers()).expect("status");
        let details = status.get_error_details();
        (status, details)
    }

    static SPAN: std::sync::LazyLock<tracing::Span> = std::sync::LazyLock::new(tracing::Span::none);

    fn ids() -> AnswerIds<'static> {
        AnswerIds {
            request_id: "req-1",
            trace_id: None,
            span: &SPAN,
        }
    }

    #[test]
    fn grpc_errors_quote_the_request_id_and_keep_their_reason() {
        let mut response = grpc_error(
            Protocol::Grpc,
            status(Code::NotFound, Reason::ArticleNotFound, "article not found"),
        );
        quote_ids(&mut response, Protocol::Grpc, ids());
        let (status, details) = details(&response);
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "article not found");
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, Reason::ArticleNotFound.as_str());
        assert_eq!(info.metadata["request_id"], "req-1");
    }

    #[test]
    fn bare_statuses_get_error_info() {
        let mut response: Response =
            tonic::Status::unimplemented("no such method").into_http::<Body>();
        quote_ids(&mut response, Protocol::Grpc, ids());
        let (_, details) = details(&response);
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, Reason::MethodNotFound.as_str());
        assert_eq!(info.domain, ERROR_DOMAIN);
    }

    #[test]
    fn internal_failures_quote_the_id_and_nothing_else() {
        let failure = || AppError::Internal(anyhow::anyhow!("secret: relation missing"));
        let mut grpc = grpc_error(Protocol::Grpc, failure().into());
        quote_ids(&mut grpc, Protocol::Grpc, ids());
        let (status, _) = details(&grpc);
        assert_eq!(status.message(), "internal error (request id req-1)");

        let mut rest = failure().into_response_for(Protocol::Http);
        quote_ids(&mut rest, Protocol::Http, ids());
        assert!(rest.extensions().get::<Failure>().is_none());
    }

    #[test]
    fn success_passes_untouched() {
        let mut response = Response::new(Body::empty());
        response
            .headers_mut()
            .insert("grpc-status", "0".parse().expect("value"));
        quote_ids(&mut response, Protocol::Grpc, ids());
        assert!(!response.headers().contains_key("grpc-status-details-bin"));
    }
}
