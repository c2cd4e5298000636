//! The request guards that need no I/O of their own, as one layer: the base-path rewrite
//! (`rewrite`), the body limit (`body_limit`), the deadline (`timeout`), the panic guard
//! (`panic`) and load shedding (`shed`). As five `from_fn` layers each cost a boxed
//! future, a clone of the service below and a move of the request per request; here it
//! is one of each.
//!
//! It also refuses gRPC calls whose content type names an encoding other than protobuf.
//!
//! Order within: the path is rewritten before anything routes on it; an over-limit
//! declared body is answered before the deadline starts; the deadline covers the handler
//! and everything below; a panic — in the inner service's `call` or while its future
//! runs — becomes INTERNAL / 500 for that request only; a request takes its place among
//! those in flight last (the base path is stripped, so probes are recognised) and holds
//! it until its response headers are ready.

use std::{
    convert::Infallible,
    panic::AssertUnwindSafe,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    extract::Request,
    response::{IntoResponse, Response},
};
use futures_util::{FutureExt, future::BoxFuture};
use tower::{Layer, Service};

use tokio::sync::Semaphore;

use super::{body_limit, panic, rewrite, shed, timeout};
use crate::{
    config::ServerSettings, context::Protocol, error::layer_error, operations::Operations,
};

/// The gRPC and gRPC-Web content types whose messages are protobuf. Any other
/// `application/grpc*` (`+json`, a made-up codec) is refused rather than decoded as
/// protobuf, which would misread the caller's bytes.
const PROTOBUF_CONTENT_TYPES: &[&str] = &[
    "application/grpc",
    "application/grpc+proto",
    "application/grpc-web",
    "application/grpc-web+proto",
    "application/grpc-web-text",
    "application/grpc-web-text+proto",
];

fn unsupported_encoding(protocol: Protocol, request: &Request) -> Option<Response> {
    if !protocol.is_grpc() {
        return None;
    }
    let media_type = crate::context::media_type(request.headers());
    if PROTOBUF_CONTENT_TYPES
        .iter()
        .any(|t| media_type.eq_ignore_ascii_case(t))
    {
        return None;
    }
    Some(layer_error(
        protocol,
        crate::error::status(
            tonic::Code::InvalidArgument,
            crate::error::Reason::UnsupportedContentType,
            format!(
                "content-type {media_type:?} is not supported; send protobuf as application/grpc or application/grpc+proto"
            ),
        ),
        axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "body",
        "has an unsupported content type",
    ))
}

/// What a request was admitted with, in its extensions (one entry, not one each): for
/// work it hands to a task of its own, which the guard's timeout and its hold on the
/// place do not reach.
#[derive(Clone)]
pub struct Admitted {
    pub deadline: timeout::Deadline,
    /// None for the requests never shed (probes, `/metrics`, gRPC health).
    pub place: Option<shed::Place>,
}

#[derive(Clone)]
pub struct GuardLayer(Arc<Limits>);

struct Limits {
    base_path: String,
    request_timeout: Duration,
    body_limit_bytes: usize,
    places: Arc<Semaphore>,
    operations: &'static Operations,
}

impl GuardLayer {
    pub fn new(server: &ServerSettings, operations: &'static Operations) -> Self {
        Self(Arc::new(Limits {
            base_path: server.base_path.clone(),
            request_timeout: server.request_timeout,
            body_limit_bytes: server.body_limit_bytes,
            places: shed::places(server.concurrency_limit),
            operations,
        }))
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            limits: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    limits: Arc<Limits>,
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Error = Infallible>,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let limits = &self.limits;
        let protocol = Protocol::of(&request);
        if let Some(refused) = unsupported_encoding(protocol, &request) {
            return Box::pin(std::future::ready(Ok(refused)));
        }
        rewrite::strip_base_path(&limits.base_path, &mut request);
        let limit = body_limit::raw_limit(limits.body_limit_bytes, protocol);
        if let Some(refused) = body_limit::declared_over(limit, protocol, &request) {
            return Box::pin(std::future::ready(Ok(refused)));
        }
        let mut request = body_limit::bounded(limit, protocol, request);
        let deadline = timeout::deadline(limits.request_timeout, protocol, request.headers());
        let place = match shed::take_place(&limits.places, limits.operations, &request) {
            shed::Admission::Shed(refused) => return Box::pin(std::future::ready(Ok(refused))),
            shed::Admission::Placed(place) => Some(place),
            shed::Admission::Exempt => None,
        };
        request.extensions_mut().insert(Admitted {
            deadline: timeout::Deadline {
                at: tokio::time::Instant::now() + deadline,
                after: deadline,
            },
            place: place.clone(),
        });
        let inner = &mut self.inner;
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(request)));
        Box::pin(async move {
            let future = match called {
                Ok(future) => future,
                Err(payload) => return Ok(panic::answer(protocol, payload)),
            };
            let guarded = AssertUnwindSafe(future).catch_unwind();
            let answer = match tokio::time::timeout(deadline, guarded).await {
                Ok(Ok(Ok(response))) => response.into_response(),
                Ok(Ok(Err(never))) => match never {},
                Ok(Err(payload)) => panic::answer(protocol, payload),
                Err(_) => timeout::timed_out(protocol, deadline),
            };
            drop(place);
            Ok(answer)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::{Extension, Router, body::Body, http::Request, routing::get};
    use tower::ServiceExt;

    use super::*;
    use crate::operations::{Access::Public, Effect::Read, Operation, rest_only};

    const ROWS: &[Operation] = &[rest_only("GET /livez", Public, Read).probe()];

    fn operations() -> &'static Operations {
        static TABLE: std::sync::LazyLock<Operations> =
            std::sync::LazyLock::new(|| Operations::new([&ROWS]));
        &TABLE
    }

    /// What the handler found: its deadline, and whether it holds a place.
    async fn admitted(Extension(admitted): Extension<Admitted>) -> String {
        format!("{:?} {}", admitted.deadline.after, admitted.place.is_some())
    }

    async fn answer(path: &str) -> String {
        let settings = ServerSettings {
            request_timeout: Duration::from_secs(7),
            concurrency_limit: 4,
            ..ServerSettings::default()
        };
        let app = Router::new()
            .route("/work", get(admitted))
            .route("/livez", get(admitted))
            .layer(GuardLayer::new(&settings, operations()));
        let request = Request::get(path).body(Body::empty()).expect("request");
        let response = app.oneshot(request).await.expect("infallible");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        String::from_utf8_lossy(&body).into_owned()
    }

    /// Work handed to a task of its own (the idempotent path) finds the request's
    /// deadline and its place, which it keeps taken while it runs.
    #[tokio::test]
    async fn an_admitted_request_carries_its_deadline_and_place() {
        assert_eq!(answer("/work").await, "7s true");
        // A probe is never shed, so it holds no place.
        assert_eq!(answer("/livez").await, "7s false");
    }
}
