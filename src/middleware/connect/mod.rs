//! The Connect protocol (connectrpc.com), unary, on the gRPC methods' own paths: a POST
//! of the request message as JSON (`application/json`) or protobuf (`application/proto`),
//! or a GET with `?encoding=…&message=…` for methods the protos mark
//! `NO_SIDE_EFFECTS`. Like the gRPC-Web translation it sits in front of the router: the
//! message is transcoded by the embedded descriptors (`proto::descriptors`, canonical
//! proto3 JSON) and handed on as a gRPC call, so the tonic services, the access policy,
//! idempotency keys and the metrics' operation names are the gRPC ones. Every layer above
//! saw the Connect request: its deadline is `Connect-Timeout-Ms` (`middleware::timeout`)
//! and its errors are Connect's JSON (`error::connect_error`), counted as protocol
//! `connect`.

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use axum::{
    body::Body,
    extract::Request,
    http::{
        HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri,
        header::{ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, TE},
    },
    response::Response,
};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::{BoxFuture, Either};
use http_body_util::BodyExt;
use prost_reflect::MethodDescriptor;
use tonic::Code;
use tower::{Layer, Service, ServiceExt};

mod message;

use message::{Encoding, answer_message, get_query, request_message, response_json};

use super::observe::GrpcOutcome;
use crate::{
    context::Protocol,
    error::{AppError, Reason, connect_error, status},
};

#[derive(Clone, Copy, Default)]
pub struct ConnectLayer;

impl<S> Layer<S> for ConnectLayer {
    type Service = Connect<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Connect { inner }
    }
}

#[derive(Clone)]
pub struct Connect<S> {
    inner: S,
}

impl<S> Service<Request> for Connect<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    /// Every other protocol passes straight through, with no clone and no boxed future.
    fn call(&mut self, request: Request) -> Self::Future {
        if Protocol::of(&request) != Protocol::Connect {
            return Either::Left(self.inner.call(request));
        }
        let inner = super::take_ready(&mut self.inner);
        Either::Right(Box::pin(async move {
            Ok(unary(inner, request)
                .await
                .unwrap_or_else(|refused| *refused))
        }))
    }
}

/// A Connect error answer, made before or instead of the call (boxed: it is the rare
/// path, and a `Response` is large to return by value).
type Refused = Box<Response>;

fn refuse(status: tonic::Status) -> Refused {
    Box::new(connect_error(status))
}

async fn unary<S>(inner: S, request: Request) -> Result<Response, Refused>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let outcome = GrpcOutcome::of(&request);
    let (mut parts, body) = request.into_parts();
    let method = procedure(parts.uri.path())?;
    // Named from here on, refusals of this layer included (a method of the descriptors).
    if let Some(outcome) = &outcome {
        outcome.record_method(&parts.uri);
    }
    if let Some(version) = parts.headers.get("connect-protocol-version")
        && version != "1"
    {
        return Err(malformed("connect-protocol-version must be 1".into()));
    }
    // The guard above has taken a good one as the deadline (`timeout::deadline`).
    if parts.headers.contains_key("connect-timeout-ms")
        && crate::middleware::timeout::connect_timeout(&parts.headers).is_none()
    {
        return Err(malformed(
            "connect-timeout-ms must be 1 to 10 digits of milliseconds".into(),
        ));
    }
    let (encoding, message) = match parts.method {
        Method::POST => {
            let encoding =
                Encoding::of_content_type(&parts.headers).ok_or_else(unsupported_media_type)?;
            compression(
                parts
                    .headers
                    .get(CONTENT_ENCODING)
                    .and_then(|v| v.to_str().ok()),
            )?;
            (encoding, read_body(body).await?)
        }
        Method::GET if crate::proto::side_effect_free(&method) => {
            get_query(parts.uri.query().unwrap_or_default())?
        }
        _ => return Err(method_not_allowed(&method)),
    };
    let message = request_message(&method.input(), encoding, message)?;

    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    let length =
        u32::try_from(message.len()).map_err(|_| refuse(AppError::PayloadTooLarge.into()))?;
    frame.put_u32(length);
    frame.extend_from_slice(&message);
    parts.method = Method::POST;
    parts.uri = Uri::try_from(parts.uri.path()).map_err(|e| internal(e.into()))?;
    // Only the caller's own metadata goes on: nothing of HTTP's or Connect's framing, and
    // no gRPC header of the caller's (`grpc-accept-encoding` would make tonic compress).
    let headers = std::mem::take(&mut parts.headers);
    parts.headers = metadata(&headers);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    parts
        .headers
        .insert(TE, HeaderValue::from_static("trailers"));
    let call = Request::from_parts(parts, Body::from(frame.freeze()));

    let answer = match inner.oneshot(call).await {
        Ok(answer) => answer,
        Err(never) => match never {},
    };
    let (mut parts, body) = answer.into_parts();
    // tonic's own answer carries its status, with the details of an internal failure.
    let carried = parts.extensions.remove::<tonic::Status>();
    let collected = body
        .collect()
        .await
        .map_err(|e| internal(anyhow::anyhow!("reading the gRPC answer: {e}")))?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let ending = if parts.headers.contains_key("grpc-status") {
        &parts.headers
    } else {
        &trailers
    };
    if let Some(outcome) = &outcome {
        outcome.record_headers(ending);
    }
    let status = tonic::Status::from_header_map(ending)
        .ok_or_else(|| internal(anyhow::anyhow!("the gRPC answer has no grpc-status")))?;
    // Connect carries a unary call's metadata as headers and its trailers as headers
    // prefixed `trailer-`, on errors as on answers.
    let mut answer_headers = metadata(&parts.headers);
    for (name, value) in trailers.iter() {
        if is_grpc_header(name) {
            continue;
        }
        if let Ok(name) = HeaderName::try_from(format!("trailer-{name}")) {
            answer_headers.append(name, value.clone());
        }
    }
    if status.code() != Code::Ok {
        let status = carried
            .filter(|carried| carried.code() == status.code())
            .unwrap_or(status);
        let mut refused = connect_error(status);
        for (name, value) in answer_headers.iter() {
            refused.headers_mut().append(name, value.clone());
        }
        return Err(Box::new(refused));
    }

    let data = collected.to_bytes();
    let message = answer_message(&data, parts.headers.get("grpc-encoding"))?;
    let body = match encoding {
        Encoding::Json => response_json(&method.output(), &message)?,
        Encoding::Proto => message,
    };
    answer_headers.insert(CONTENT_TYPE, encoding.content_type());
    parts.headers = answer_headers;
    parts.status = StatusCode::OK;
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// The headers of `headers` that are the call's metadata: every one but the framing of
/// HTTP, gRPC and Connect.
fn metadata(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers.iter() {
        let framing = matches!(
            *name,
            CONTENT_TYPE | CONTENT_LENGTH | CONTENT_ENCODING | ACCEPT_ENCODING | TE
        ) || is_grpc_header(name)
            || name.as_str().starts_with("connect-");
        if !framing {
            kept.append(name, value.clone());
        }
    }
    kept
}

fn is_grpc_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("grpc-")
}

/// The method a path names (`/conduit.v1.ArticleService/ListArticles`), when it is unary.
fn procedure(path: &str) -> Result<MethodDescriptor, Refused> {
    match crate::proto::method(path) {
        Some(method) if !method.is_client_streaming() && !method.is_server_streaming() => {
            Ok(method)
        }
        Some(_) => Err(refuse(status(
            Code::Unimplemented,
            Reason::MethodNotFound,
            format!("{path} streams; Connect is served for unary methods"),
        ))),
        None => Err(refuse(status(
            Code::Unimplemented,
            Reason::MethodNotFound,
            format!("unknown method {path}"),
        ))),
    }
}

/// Only uncompressed messages are read; Connect asks for UNIMPLEMENTED otherwise.
fn compression(coding: Option<&str>) -> Result<(), Refused> {
    match coding {
        None | Some("identity") => Ok(()),
        Some(other) => {
            let mut refused = connect_error(status(
                Code::Unimplemented,
                Reason::UnsupportedContentType,
                format!("compression {other:?} is not supported; send messages uncompressed"),
            ));
            refused
                .headers_mut()
                .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
            Err(Box::new(refused))
        }
    }
}

/// The request body, read to its end under the guard's limit.
async fn read_body(body: Body) -> Result<Bytes, Refused> {
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => Err(Box::new(super::body_limit::unreadable(
            Protocol::Connect,
            &error,
        ))),
    }
}

fn malformed(message: String) -> Refused {
    refuse(status(
        Code::InvalidArgument,
        Reason::MalformedMessage,
        message,
    ))
}

fn internal(error: anyhow::Error) -> Refused {
    refuse(AppError::Internal(error).into())
}

/// Connect's answer to a content type it does not speak: 415, naming the ones it does.
fn unsupported_media_type() -> Refused {
    let mut refused = connect_error(status(
        Code::InvalidArgument,
        Reason::UnsupportedContentType,
        "send the message as application/json or application/proto",
    ));
    *refused.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    refused.headers_mut().insert(
        "accept-post",
        HeaderValue::from_static("application/json, application/proto"),
    );
    Box::new(refused)
}

fn method_not_allowed(method: &MethodDescriptor) -> Refused {
    let get = crate::proto::side_effect_free(method);
    let mut refused = connect_error(status(
        Code::Unimplemented,
        Reason::MethodNotAllowed,
        if get {
            "call it with POST or GET"
        } else {
            "it changes state: call it with POST"
        },
    ));
    *refused.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    refused.headers_mut().insert(
        ALLOW,
        HeaderValue::from_static(if get { "GET, POST" } else { "POST" }),
    );
    Box::new(refused)
}
