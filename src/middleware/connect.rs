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
use base64::{
    Engine,
    engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD},
};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::{BoxFuture, Either};
use http_body_util::BodyExt;
use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, MessageDescriptor, MethodDescriptor, SerializeOptions,
};
use tonic::Code;
use tower::{Layer, Service, ServiceExt, util::Oneshot};

use super::observe::GrpcOutcome;
use crate::{
    context::Protocol,
    error::{AppError, Reason, connect_error, status},
};

/// `body_limit` is `server.body_limit`, for the message of a request that went over it.
#[derive(Clone, Copy)]
pub struct ConnectLayer {
    pub body_limit: usize,
}

impl<S> Layer<S> for ConnectLayer {
    type Service = Connect<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Connect {
            inner,
            body_limit: self.body_limit,
        }
    }
}

#[derive(Clone)]
pub struct Connect<S> {
    inner: S,
    body_limit: usize,
}

impl<S> Service<Request> for Connect<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Oneshot<S, Request>, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both paths call a clone via `oneshot`, which drives readiness itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let inner = self.inner.clone();
        if Protocol::of(&request) != Protocol::Connect {
            return Either::Left(inner.oneshot(request));
        }
        let body_limit = self.body_limit;
        Either::Right(Box::pin(async move {
            Ok(unary(inner, body_limit, request)
                .await
                .unwrap_or_else(|refused| *refused))
        }))
    }
}

/// How the caller's message (and so the answer) is encoded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Json,
    Proto,
}

impl Encoding {
    fn named(name: &str) -> Option<Encoding> {
        match name {
            "json" => Some(Encoding::Json),
            "proto" => Some(Encoding::Proto),
            _ => None,
        }
    }

    fn of_content_type(headers: &HeaderMap) -> Option<Encoding> {
        let content_type = headers.get(CONTENT_TYPE)?.to_str().ok()?;
        // Parameters (`; charset=utf-8`) do not change the encoding.
        let media_type = content_type.split(';').next()?.trim();
        let subtype = media_type
            .get(..12)
            .filter(|prefix| prefix.eq_ignore_ascii_case("application/"))
            .and(media_type.get(12..))?;
        Encoding::named(&subtype.to_ascii_lowercase())
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Encoding::Json => "application/json",
            Encoding::Proto => "application/proto",
        })
    }
}

/// A Connect error answer, made before or instead of the call (boxed: it is the rare
/// path, and a `Response` is large to return by value).
type Refused = Box<Response>;

fn refuse(status: tonic::Status) -> Refused {
    Box::new(connect_error(status))
}

async fn unary<S>(inner: S, body_limit: usize, request: Request) -> Result<Response, Refused>
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
            (encoding, read_body(body, body_limit).await?)
        }
        Method::GET if side_effect_free(&method) => {
            get_query(parts.uri.query().unwrap_or_default())?
        }
        _ => return Err(method_not_allowed(&method)),
    };
    let message = request_message(&method.input(), encoding, message)?;

    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len()).map_err(|_| too_large(body_limit))?);
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
    let found = path
        .strip_prefix('/')
        .and_then(|path| path.split_once('/'))
        .and_then(|(service, name)| {
            crate::proto::descriptors()
                .get_service_by_name(service)?
                .methods()
                .find(|method| method.name() == name)
        });
    match found {
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

/// Whether the protos mark the method `idempotency_level = NO_SIDE_EFFECTS`, which is
/// what lets Connect clients call it with GET (and caches keep the answer).
pub fn side_effect_free(method: &MethodDescriptor) -> bool {
    method
        .method_descriptor_proto()
        .options
        .as_ref()
        .is_some_and(|options| {
            options.idempotency_level()
                == prost_types::method_options::IdempotencyLevel::NoSideEffects
        })
}

/// A GET's query: `encoding`, `message` (percent-encoded, or base64url with `base64=1`),
/// and optionally `connect=v1` and `compression=identity`.
fn get_query(query: &str) -> Result<(Encoding, Bytes), Refused> {
    let mut encoding = None;
    let mut message = None;
    let mut base64 = false;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = form_decoded(value);
        match key {
            "encoding" => {
                let name = String::from_utf8_lossy(&value);
                encoding =
                    Some(Encoding::named(&name).ok_or_else(|| {
                        malformed(format!("encoding {name:?} is not json or proto"))
                    })?);
            }
            "message" => message = Some(value),
            "base64" => base64 = value == b"1",
            "compression" => compression(std::str::from_utf8(&value).ok())?,
            "connect" if value != b"v1" => {
                return Err(malformed("connect must be v1".into()));
            }
            _ => {}
        }
    }
    let encoding =
        encoding.ok_or_else(|| malformed("a GET needs encoding=json or encoding=proto".into()))?;
    let message = message.unwrap_or_default();
    let message = if base64 {
        // Connect clients may leave the padding off, or keep it.
        let text = message
            .strip_suffix(b"==")
            .or_else(|| message.strip_suffix(b"="))
            .unwrap_or(&message);
        URL_SAFE_NO_PAD
            .decode(text)
            .or_else(|_| URL_SAFE.decode(&message))
            .map_err(|e| malformed(format!("message is not base64url: {e}")))?
    } else {
        message
    };
    Ok((encoding, message.into()))
}

/// `application/x-www-form-urlencoded` decoding, to bytes: a message need not be UTF-8.
fn form_decoded(value: &str) -> Vec<u8> {
    let spaced = value.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).collect()
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

async fn read_body(body: Body, limit: usize) -> Result<Bytes, Refused> {
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
            while let Some(e) = source {
                if e.is::<http_body_util::LengthLimitError>() {
                    return Err(too_large(limit));
                }
                source = e.source();
            }
            Err(refuse(status(
                Code::InvalidArgument,
                Reason::RequestUnreadable,
                "request body could not be read",
            )))
        }
    }
}

/// The request message as protobuf: JSON is transcoded, protobuf checked (tonic would
/// answer INTERNAL for a message that does not decode; the caller's mistake is
/// INVALID_ARGUMENT). An empty body is the empty message, in either encoding.
fn request_message(
    input: &MessageDescriptor,
    encoding: Encoding,
    message: Bytes,
) -> Result<Bytes, Refused> {
    match encoding {
        Encoding::Proto => {
            DynamicMessage::decode(input.clone(), message.as_ref()).map_err(|e| {
                malformed(format!("the message is not a {}: {e}", input.full_name()))
            })?;
            Ok(message)
        }
        Encoding::Json if message.is_empty() => Ok(Bytes::new()),
        Encoding::Json => {
            let mut json = serde_json::Deserializer::from_slice(&message);
            // Unknown fields are skipped, as connect-go and the protobuf encoding do: a
            // client built from a newer schema still gets through.
            let decoded = DynamicMessage::deserialize_with_options(
                input.clone(),
                &mut json,
                &DeserializeOptions::new().deny_unknown_fields(false),
            )
            .and_then(|decoded| json.end().map(|()| decoded))
            .map_err(|e| malformed(format!("the message is not a {}: {e}", input.full_name())))?;
            Ok(decoded.encode_to_vec().into())
        }
    }
}

/// The answer's message as canonical proto3 JSON (camelCase names, defaults left out,
/// 64-bit integers as strings).
fn response_json(output: &MessageDescriptor, message: &[u8]) -> Result<Bytes, Refused> {
    let decoded = DynamicMessage::decode(output.clone(), message)
        .map_err(|e| internal(anyhow::anyhow!("decoding the gRPC answer: {e}")))?;
    let mut json = Vec::with_capacity(message.len() * 2);
    decoded
        .serialize_with_options(
            &mut serde_json::Serializer::new(&mut json),
            &SerializeOptions::new(),
        )
        .map_err(|e| internal(anyhow::anyhow!("writing the answer as JSON: {e}")))?;
    Ok(json.into())
}

/// The message of a unary gRPC answer, decompressed when the service compressed it (it
/// may, for a stored answer first given to a gRPC caller that accepted gzip).
fn answer_message(data: &Bytes, encoding: Option<&HeaderValue>) -> Result<Bytes, Refused> {
    let (compressed, message) = unframe(data)
        .ok_or_else(|| internal(anyhow::anyhow!("the gRPC answer is not one message")))?;
    if !compressed {
        return Ok(data.slice_ref(message));
    }
    if encoding.is_none_or(|encoding| encoding != "gzip") {
        return Err(internal(anyhow::anyhow!(
            "the gRPC answer is compressed as {encoding:?}"
        )));
    }
    let mut inflated = Vec::with_capacity(message.len() * 4);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(flate2::read::GzDecoder::new(message), MAX_ANSWER_BYTES),
        &mut inflated,
    )
    .map_err(|e| internal(anyhow::anyhow!("inflating the gRPC answer: {e}")))?;
    Ok(inflated.into())
}

/// Larger than any answer conduit gives (a page is at most 100 articles); a bound, so a
/// corrupt stored answer cannot inflate without end.
const MAX_ANSWER_BYTES: u64 = 64 << 20;

/// The one message of a unary gRPC answer, and whether it is compressed.
fn unframe(data: &[u8]) -> Option<(bool, &[u8])> {
    let (&compressed, rest) = data.split_first()?;
    let length = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let message = rest.get(4..4 + length)?;
    (compressed <= 1 && rest.len() == 4 + length).then_some((compressed == 1, message))
}

fn malformed(message: String) -> Refused {
    refuse(status(
        Code::InvalidArgument,
        Reason::MalformedMessage,
        message,
    ))
}

fn too_large(limit: usize) -> Refused {
    refuse(status(
        Code::ResourceExhausted,
        Reason::RequestTooLarge,
        format!("request body is larger than {limit} bytes"),
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
    let get = side_effect_free(method);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_query_carries_the_message_plain_or_base64url() {
        let (encoding, message) =
            get_query("connect=v1&encoding=json&message=%7B%22limit%22%3A2%7D").expect("query");
        assert!(encoding == Encoding::Json);
        assert_eq!(&message[..], br#"{"limit":2}"#);
        let (encoding, message) = get_query("encoding=proto&base64=1&message=CAI").expect("query");
        assert!(encoding == Encoding::Proto);
        assert_eq!(&message[..], &[8, 2]);
        let (_, padded) = get_query("encoding=proto&base64=1&message=CAI%3D").expect("padded");
        assert_eq!(&padded[..], &[8, 2]);
        assert!(get_query("message=e30").is_err(), "encoding is required");
        assert!(get_query("encoding=xml&message=x").is_err());
        assert!(get_query("encoding=json&connect=v2").is_err());
        assert!(get_query("encoding=json&compression=gzip").is_err());
    }

    #[test]
    fn content_types_name_the_encoding() {
        let of = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
            Encoding::of_content_type(&headers)
        };
        assert!(of("application/json") == Some(Encoding::Json));
        assert!(of("Application/JSON; charset=utf-8") == Some(Encoding::Json));
        assert!(of("application/proto") == Some(Encoding::Proto));
        assert!(of("application/xml").is_none());
        assert!(of("text/json").is_none());
    }

    #[test]
    fn one_message_is_unframed_and_inflated_when_gzipped() {
        assert_eq!(
            unframe(&[0, 0, 0, 0, 2, 8, 2]),
            Some((false, &[8u8, 2][..]))
        );
        assert_eq!(unframe(&[0, 0, 0, 0, 0]), Some((false, &[][..])));
        assert_eq!(unframe(&[1, 0, 0, 0, 1, 8]), Some((true, &[8u8][..])));
        assert_eq!(unframe(&[2, 0, 0, 0, 1, 8]), None, "no such flag");
        assert_eq!(unframe(&[0, 0, 0, 0, 3, 8, 2]), None, "short");
        assert_eq!(unframe(&[0, 0, 0, 0, 1, 8, 2]), None, "two messages");
        assert_eq!(unframe(&[0, 0, 0]), None);

        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gzip, &[8, 2]).expect("gzip");
        let gzipped = gzip.finish().expect("gzip");
        let mut frame = vec![1];
        frame.extend_from_slice(&(gzipped.len() as u32).to_be_bytes());
        frame.extend_from_slice(&gzipped);
        let gzip_header = HeaderValue::from_static("gzip");
        let inflated = answer_message(&Bytes::from(frame.clone()), Some(&gzip_header));
        assert_eq!(inflated.ok().as_deref(), Some(&[8u8, 2][..]));
        assert!(
            answer_message(&Bytes::from(frame), None).is_err(),
            "compressed, but how?"
        );
    }

    #[test]
    fn reads_are_the_methods_marked_side_effect_free() {
        let pool = crate::proto::descriptors();
        let method = |service: &str, name: &str| {
            pool.get_service_by_name(service)
                .and_then(|s| s.methods().find(|m| m.name() == name))
                .expect("method")
        };
        assert!(side_effect_free(&method(
            "conduit.v1.ArticleService",
            "ListArticles"
        )));
        assert!(!side_effect_free(&method(
            "conduit.v1.ArticleService",
            "CreateArticle"
        )));
    }
}
