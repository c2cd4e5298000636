//! gRPC-Web → gRPC translation for gRPC-Web requests only. tonic-web's layer answers
//! every other HTTP/1.1 request with 400, so it cannot wrap a router that also serves REST.

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use axum::{body::Body, extract::Request, response::Response};
use futures_util::future::BoxFuture;
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower::{Layer, Service, ServiceExt};

use super::Protocol;

#[derive(Clone, Copy, Default)]
pub struct GrpcWebOnlyLayer;

impl<S: Clone> Layer<S> for GrpcWebOnlyLayer {
    type Service = GrpcWebOnly<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcWebOnly {
            web: GrpcWebLayer::new().layer(inner.clone()),
            plain: inner,
        }
    }
}

#[derive(Clone)]
pub struct GrpcWebOnly<S> {
    web: GrpcWebService<S>,
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
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both paths call a clone via `oneshot`, which drives readiness itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if Protocol::of(&request) == Protocol::GrpcWeb {
            let web = self.web.clone();
            Box::pin(async move { web.oneshot(request).await.map(|r| r.map(Body::new)) })
        } else {
            let plain = self.plain.clone();
            Box::pin(ServiceExt::<Request>::oneshot(plain, request))
        }
    }
}
