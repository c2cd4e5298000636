//! The request id (and trace id) as a task-local, so that errors rendered deep inside a handler can quote
//! it without every function passing it along. Set by `observe`; the `x-request-id` header
//! itself is accepted or generated, and echoed, by tower-http's request-id layers.

use std::future::Future;

use axum::http::{HeaderMap, HeaderName};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// What identifies the request being served, for whatever runs inside it.
#[derive(Clone)]
pub struct Ids {
    pub request_id: String,
    pub trace_id: Option<String>,
    /// The client's address (see `auth::attempts::client_ip`), when served over TCP.
    pub client_ip: Option<std::net::IpAddr>,
}

/// Request extension set by the server loop: the client's address, with
/// `X-Forwarded-For` followed only behind a trusted proxy.
#[derive(Clone, Copy)]
pub struct ClientIp(pub std::net::IpAddr);

/// The current request's client address.
pub fn client_ip() -> Option<std::net::IpAddr> {
    IDS.try_with(|ids| ids.client_ip).ok().flatten()
}

tokio::task_local! {
    static IDS: Ids;
}

pub fn current() -> Option<String> {
    IDS.try_with(|ids| ids.request_id.clone()).ok()
}

/// Runs `f` with the current request's ids, without copying them.
pub fn with_current<R>(f: impl FnOnce(&Ids) -> R) -> Option<R> {
    IDS.try_with(f).ok()
}

pub fn current_trace() -> Option<String> {
    IDS.try_with(|ids| ids.trace_id.clone()).ok().flatten()
}

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

pub async fn scope<F: Future>(ids: Ids, future: F) -> F::Output {
    IDS.scope(ids, future).await
}

/// `future` with the current request's ids (if any) carried into it: for work spawned on
/// a task of its own, where task-locals do not follow.
pub fn carry<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let ids = IDS.try_with(Clone::clone).ok();
    async move {
        match ids {
            Some(ids) => scope(ids, future).await,
            None => future.await,
        }
    }
}
