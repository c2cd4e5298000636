//! The request id as a task-local, so that errors rendered deep inside a handler can quote
//! it without every function passing it along. Set by `observe`; the `x-request-id` header
//! itself is accepted or generated, and echoed, by tower-http's request-id layers.

use std::future::Future;

use axum::http::{HeaderMap, HeaderName};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: String;
}

pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

pub fn from_headers(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

pub async fn scope<F: Future>(id: String, future: F) -> F::Output {
    REQUEST_ID.scope(id, future).await
}

/// `future` with the current request id (if any) carried into it: for work spawned on a
/// task of its own, where task-locals do not follow.
pub fn carry<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let id = current();
    async move {
        match id {
            Some(id) => scope(id, future).await,
            None => future.await,
        }
    }
}
