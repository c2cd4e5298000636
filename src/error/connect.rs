//! The Connect rendering of a status (connectrpc.com's unary error): the HTTP status
//! Connect gives the code, and `{"code", "message", "details"}` as JSON, each detail the
//! `google.rpc` message of the gRPC status (`ErrorInfo` first) as `type` and base64
//! `value`, with its JSON as `debug` for people reading the answer with curl.

use axum::{
    body::Body,
    http::{
        HeaderValue, StatusCode,
        header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE},
    },
    response::Response,
};
use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use prost::Message;
use serde_json::{Value, json};
use tonic::Code;

/// A Connect error answer. The status rides along as an extension (as tonic's own
/// answers carry theirs), so `quote_ids` can render it again with the request id and
/// `observe` can count its code.
pub fn connect_error(status: tonic::Status) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = http_status(status.code());
    render_body(&mut response, &status);
    response.extensions_mut().insert(status);
    response
}

/// Writes `status` as the body of `response`, whatever body and encoding it had.
pub(super) fn render_body(response: &mut Response, status: &tonic::Status) {
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.remove(CONTENT_ENCODING);
    headers.remove(CONTENT_LENGTH);
    *response.body_mut() = Body::from(body(status).to_string());
}

fn body(status: &tonic::Status) -> Value {
    let mut error = serde_json::Map::new();
    error.insert("code".into(), code_name(status.code()).into());
    if !status.message().is_empty() {
        error.insert("message".into(), status.message().into());
    }
    let details = details(status.details());
    if !details.is_empty() {
        error.insert("details".into(), details.into());
    }
    Value::Object(error)
}

/// The `google.rpc.Status` details of a gRPC status, as Connect details.
fn details(encoded: &[u8]) -> Vec<Value> {
    let Ok(status) = tonic_types::pb::Status::decode(encoded) else {
        return Vec::new();
    };
    status
        .details
        .iter()
        .map(|any| {
            let name = any.type_url.rsplit('/').next().unwrap_or_default();
            let mut detail = json!({ "type": name, "value": STANDARD_NO_PAD.encode(&any.value) });
            if let Some(debug) = debug_json(name, &any.value) {
                detail["debug"] = debug;
            }
            detail
        })
        .collect()
}

fn debug_json(name: &str, value: &[u8]) -> Option<Value> {
    let descriptor = crate::proto::descriptors().get_message_by_name(name)?;
    let message = prost_reflect::DynamicMessage::decode(descriptor, value).ok()?;
    serde_json::to_value(&message).ok()
}

/// Connect's name for a code (`not_found`).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status the Connect protocol gives each code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        // "Client closed request", as nginx and Connect call it.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::REQUEST_TIMEOUT),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Reason, status};

    async fn json_of(response: Response) -> Value {
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn an_error_is_connects_shape_with_its_error_info() {
        let response = connect_error(status(
            Code::NotFound,
            Reason::ArticleNotFound,
            "article not found",
        ));
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body = json_of(response).await;
        assert_eq!(body["code"], "not_found");
        assert_eq!(body["message"], "article not found");
        let detail = &body["details"][0];
        assert_eq!(detail["type"], "google.rpc.ErrorInfo");
        assert_eq!(detail["debug"]["reason"], "ARTICLE_NOT_FOUND");
        let value = STANDARD_NO_PAD
            .decode(detail["value"].as_str().expect("value"))
            .expect("base64");
        let info = tonic_types::pb::ErrorInfo::decode(value.as_slice()).expect("ErrorInfo");
        assert_eq!(info.domain, "conduit");
    }

    #[test]
    fn every_code_has_connects_name_and_status() {
        assert_eq!(code_name(Code::Cancelled), "canceled");
        assert_eq!(http_status(Code::Cancelled).as_u16(), 499);
        assert_eq!(http_status(Code::ResourceExhausted).as_u16(), 429);
        assert_eq!(http_status(Code::Unauthenticated).as_u16(), 401);
        assert_eq!(http_status(Code::Unimplemented).as_u16(), 501);
    }
}
