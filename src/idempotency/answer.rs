//! What a key's answer is made of: the key itself (checked), the request's fingerprint,
//! which answers are kept, and how a kept answer (status, headers, body and trailers) is
//! stored and replayed.

use std::convert::Infallible;

use axum::{
    body::Body,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::Response,
};
use blake2::{Blake2b512, Digest};
use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;

use super::store::Stored;
use crate::{context::Protocol, error::Reason};

/// Marks an answer given again, not run again.
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
pub(super) const MAX_KEY_LEN: usize = 255;

/// 1–255 visible ASCII characters; a Structured Fields string's quotes are removed.
pub(super) fn valid_key(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?.trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    let ok = !text.is_empty()
        && text.len() <= MAX_KEY_LEN
        && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    ok.then(|| text.to_string())
}

pub(super) fn fingerprint(method: &http::Method, path: &str, body: &[u8]) -> String {
    let mut hash = Blake2b512::new();
    for part in [
        method.as_str().as_bytes(),
        b"\0",
        path.as_bytes(),
        b"\0",
        body,
    ] {
        hash.update(part);
    }
    hash.finalize()
        .iter()
        .take(32)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Answers a retry would get again: 2xx and the deterministic client errors (422; 409
/// for a taken name or an unmet precondition, not for a lost race). gRPC: OK,
/// INVALID_ARGUMENT, ALREADY_EXISTS, FAILED_PRECONDITION.
pub(super) fn worth_replaying(
    protocol: Protocol,
    parts: &http::response::Parts,
    trailers: Option<&HeaderMap>,
) -> bool {
    if protocol.is_grpc() {
        let code = trailers
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| parts.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok());
        return parts.status == StatusCode::OK && matches!(code, Some(0 | 3 | 6 | 9));
    }
    match parts.status {
        status if status.is_success() => true,
        StatusCode::UNPROCESSABLE_ENTITY => true,
        StatusCode::CONFLICT => !matches!(
            parts.extensions.get::<Reason>(),
            Some(Reason::ConcurrentModification | Reason::IdempotencyKeyInUse) | None
        ),
        _ => false,
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct KeptHeaders {
    headers: Vec<(String, String)>,
    trailers: Option<Vec<(String, String)>>,
}

pub(super) fn encode_headers(headers: &HeaderMap, trailers: Option<&HeaderMap>) -> String {
    let pairs = |map: &HeaderMap| {
        map.iter()
            .filter(|(name, _)| *name != header::CONTENT_LENGTH && *name != header::DATE)
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
            .collect::<Vec<_>>()
    };
    serde_json::to_string(&KeptHeaders {
        headers: pairs(headers),
        trailers: trailers.map(pairs),
    })
    .unwrap_or_default()
}

pub(super) fn decode_headers(pairs: &[(String, String)]) -> HeaderMap {
    pairs
        .iter()
        .filter_map(|(name, value)| {
            Some((
                HeaderName::try_from(name.as_str()).ok()?,
                HeaderValue::try_from(value.as_str()).ok()?,
            ))
        })
        .collect()
}

pub(super) fn replay(stored: Stored) -> Response {
    let kept: KeptHeaders = stored
        .headers
        .as_deref()
        .and_then(|h| serde_json::from_str(h).ok())
        .unwrap_or(KeptHeaders {
            headers: Vec::new(),
            trailers: None,
        });
    let trailers = kept.trailers.as_deref().map(decode_headers);
    let mut response = Response::new(body_of(Bytes::from(stored.body), trailers));
    *response.status_mut() =
        StatusCode::from_u16(u16::try_from(stored.status).unwrap_or(500)).unwrap_or_default();
    *response.headers_mut() = decode_headers(&kept.headers);
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// A body of one data frame, followed by trailers when there are any (gRPC).
pub(super) fn body_of(bytes: Bytes, trailers: Option<HeaderMap>) -> Body {
    match trailers {
        None => Body::from(bytes),
        Some(trailers) => {
            let frames = [Frame::data(bytes), Frame::trailers(trailers)];
            Body::new(StreamBody::new(futures_util::stream::iter(
                frames.into_iter().map(Ok::<_, Infallible>),
            )))
        }
    }
}
