//! The `x-request-id` header: a caller's id is kept when safe, else one is minted, and
//! it is echoed on every answer — by `observe`, the layer that logs with it and puts it,
//! with the trace id and the client's address, into the request's context
//! (`crate::context`).

use axum::http::{HeaderMap, HeaderName, HeaderValue};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest caller-chosen request id kept; longer ones are replaced.
pub const MAX_LEN: usize = 128;

/// The request's id, set on the request for everything below and returned to be echoed
/// on the answer: the caller's, when it is 1 to [`MAX_LEN`] characters from a set that is
/// safe in logs, headers and metadata (what UUIDs, ULIDs, base64 and trace ids use), or
/// else a fresh UUID — 100 KB ids, control characters, bytes that are not UTF-8 are
/// replaced.
pub fn ensure(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(HEADER)
        && is_safe(id.as_bytes())
    {
        return id.clone();
    }
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let minted = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    let minted = HeaderValue::from_str(minted).unwrap_or(HeaderValue::from_static("unknown"));
    headers.insert(HEADER, minted.clone());
    minted
}

fn is_safe(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b))
}
