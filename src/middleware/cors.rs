//! CORS, by tower-http, for the requests a browser can read the answer to.
//!
//! A browser sends `Origin` on every cross-origin request and on every request that is
//! not a GET or HEAD, same-origin ones included. So a request of any other method (POST,
//! PUT, PATCH, DELETE) without `Origin` comes from a client that ignores CORS, and
//! nothing can store its answer for a browser later: gRPC from services, scripts. Those
//! skip the layer, which would otherwise add its headers to every answer, at a cost in
//! HPACK and in a header map per request on the gRPC path. GETs keep their CORS headers
//! with or without `Origin`, since an HTTP cache may hand a same-origin answer to a
//! cross-origin reader; OPTIONS always reaches the layer, which answers preflights
//! itself.

use axum::http::{HeaderName, HeaderValue, Method, Request, Response, header};
use futures_util::future::Either;
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, Cors as TowerCors};

use crate::config::CorsSettings;

pub fn layer(settings: &CorsSettings) -> CorsLayer {
    CorsLayer(configured(settings))
}

#[derive(Clone)]
pub struct CorsLayer(tower_http::cors::CorsLayer);

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Cors<S> {
        Cors(self.0.layer(inner))
    }
}

#[derive(Clone)]
pub struct Cors<S>(TowerCors<S>);

/// Whether a browser could read the answer to `request` (see the module's notes).
fn for_browsers<B>(request: &Request<B>) -> bool {
    request.headers().contains_key(header::ORIGIN)
        || matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        )
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Cors<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Either<<TowerCors<S> as Service<Request<ReqBody>>>::Future, S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if for_browsers(&request) {
            Either::Left(self.0.call(request))
        } else {
            Either::Right(self.0.get_mut().call(request))
        }
    }
}

fn configured(settings: &CorsSettings) -> tower_http::cors::CorsLayer {
    let origin = if settings.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            settings
                .allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    let names = |list: &[&'static str]| {
        list.iter()
            .map(|h| HeaderName::from_static(h))
            .collect::<Vec<_>>()
    };
    tower_http::cors::CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(
            [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT]
                .into_iter()
                .chain(names(&[
                    "x-request-id",
                    "x-grpc-web",
                    "x-user-agent",
                    "grpc-timeout",
                    "grpc-accept-encoding",
                    "grpc-encoding",
                    "traceparent",
                    "tracestate",
                    "idempotency-key",
                    "connect-protocol-version",
                    "connect-timeout-ms",
                ]))
                .collect::<Vec<_>>(),
        )
        .expose_headers(names(&[
            "grpc-status",
            "grpc-message",
            "grpc-status-details-bin",
            "grpc-encoding",
            "x-request-id",
            "idempotent-replayed",
        ]))
        .max_age(settings.max_age)
}
