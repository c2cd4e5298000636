//! The `x-request-id` header: a caller's id is kept when safe, else tower-http's layers
//! mint one, and echo it. `observe` puts it, with the trace id and the client's address,
//! into the request's context (`crate::context`).

use axum::http::{HeaderMap, HeaderName};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest caller-chosen request id kept; longer ones are replaced.
pub const MAX_LEN: usize = 128;

/// A caller's id is kept only when it is 1 to [`MAX_LEN`] characters from a set that is
/// safe in logs, headers and metadata (what UUIDs, ULIDs, base64 and trace ids use);
/// anything else — 100 KB ids, control characters, bytes that are not UTF-8 — is removed
/// here so the next layer mints a fresh one.
pub fn keep_only_safe<B>(mut request: http::Request<B>) -> http::Request<B> {
    let unsafe_id = request.headers().get(HEADER).is_some_and(|id| {
        let id = id.as_bytes();
        id.is_empty()
            || id.len() > MAX_LEN
            || !id
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b))
    });
    if unsafe_id {
        request.headers_mut().remove(HEADER);
    }
    request
}

pub fn from_headers(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}
