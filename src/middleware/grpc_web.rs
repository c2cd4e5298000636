//! gRPC-Web → gRPC translation for gRPC-Web requests only. tonic-web's layer answers
//! every other HTTP/1.1 request with 400, so it cannot wrap a router that also serves REST.
//! Inside the translation, the call's gRPC status is reported to `observe`: tonic-web folds
//! the trailers into the body, where the outer layers can no longer read them.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use axum::{body::Body, extract::Request, response::Response};
use bytes::Bytes;
use futures_util::future::{BoxFuture, Either};
use http_body::Frame;
use pin_project_lite::pin_project;
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower::{Layer, Service, ServiceExt};

use super::observe::GrpcOutcome;
use crate::context::Protocol;

/// `body_limit` is the limit on messages after translation: the guard bounds raw
/// gRPC-Web bodies only loosely (text is base64, a third larger), because tonic-web turns
/// errors of the raw body into INTERNAL; the decoded body is bounded here, below the
/// translation, where tonic reads the limit's RESOURCE_EXHAUSTED as it is.
#[derive(Clone, Copy)]
pub struct GrpcWebOnlyLayer {
    pub body_limit: usize,
}

impl<S: Clone> Layer<S> for GrpcWebOnlyLayer {
    type Service = GrpcWebOnly<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcWebOnly {
            web: GrpcWebLayer::new().layer(RecordOutcome {
                inner: inner.clone(),
                body_limit: self.body_limit,
            }),
            plain: inner,
        }
    }
}

#[derive(Clone)]
pub struct GrpcWebOnly<S> {
    web: GrpcWebService<RecordOutcome<S>>,
    plain: S,
}

impl<S, F> Service<Request> for GrpcWebOnly<S>
where
    S: Service<Request, Response = Response, Error = Infallible, Future = F>
        + Service<http::Request<tonic::body::Body>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    F: Future<Output = Result<Response, Infallible>> + Send + 'static,
    <S as Service<http::Request<tonic::body::Body>>>::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<F, BoxFuture<'static, Result<Response, Infallible>>>;

    /// A gRPC-Web call leaves `plain` ready and uncalled: sound because it is axum's
    /// router, always ready, reserving nothing.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request>::poll_ready(&mut self.plain, cx)
    }

    /// Everything but gRPC-Web passes straight through, with no clone and no boxed
    /// future; gRPC-Web drives a clone of the translation.
    fn call(&mut self, request: Request) -> Self::Future {
        if Protocol::of(&request) == Protocol::GrpcWeb {
            let web = self.web.clone();
            Either::Right(Box::pin(async move {
                web.oneshot(request).await.map(|r| r.map(Body::new))
            }))
        } else {
            Either::Left(Service::<Request>::call(&mut self.plain, request))
        }
    }
}

/// Sits between tonic-web and the router: sees the gRPC response before translation.
#[derive(Clone)]
pub struct RecordOutcome<S> {
    inner: S,
    body_limit: usize,
}

impl<S> Service<http::Request<tonic::body::Body>> for RecordOutcome<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let outcome = GrpcOutcome::of(&request);
        let request = super::body_limit::bounded_grpc(self.body_limit, request);
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            let Some(outcome) = outcome else {
                return Ok(response);
            };
            outcome.record_headers(response.headers());
            Ok(response.map(|inner| Body::new(TrailerTap { inner, outcome })))
        })
    }
}

pin_project! {
    struct TrailerTap {
        #[pin]
        inner: Body,
        outcome: GrpcOutcome,
    }
}

impl http_body::Body for TrailerTap {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
        {
            this.outcome.record_headers(trailers);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Takes requests with any body (axum's, or tonic's from inside the translation) and
/// hands them on with axum's, for the router below.
#[derive(Clone, Copy, Default)]
pub struct AxumBodyLayer;

impl<S> Layer<S> for AxumBodyLayer {
    type Service = AxumBody<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AxumBody(inner)
    }
}

#[derive(Clone)]
pub struct AxumBody<S>(S);

impl<S, B> Service<http::Request<B>> for AxumBody<S>
where
    S: Service<Request>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.0.call(request.map(Body::new))
    }
}
