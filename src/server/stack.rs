//! The one middleware stack every request passes through.

use axum::{Router, http::HeaderValue, response::IntoResponse};
use tower::{ServiceBuilder, ServiceExt};
use tower_http::compression::{
    CompressionLayer, Predicate,
    predicate::{DefaultPredicate, NotForContentType},
};

use crate::{
    config::Settings,
    middleware::{self, authenticate::AuthenticateLayer, guard::GuardLayer, observe::ObserveLayer},
    state::AppState,
};

use super::App;

/// The one middleware stack, outermost first. Every request — gRPC, gRPC-Web, REST,
/// probes, docs — passes through every layer, so order is behaviour:
pub fn stack(router: Router, settings: &Settings, state: &AppState) -> App {
    middleware::observe::describe_metrics();
    let server = &settings.server;
    let hsts = (!server.hsts.is_empty())
        .then(|| HeaderValue::from_str(&server.hsts).ok())
        .flatten();
    // Every layer calls the one below in place; they clone it (a few `Arc`s) only on
    // their rare paths: a credential to check, a Connect or gRPC-Web call.
    ServiceBuilder::new()
        // nosniff, no-referrer, never framed, HSTS when configured: REST answers only
        .map_response(move |response| middleware::security_headers::add(response, hsts.as_ref()))
        // 1-3. the request id (the caller's x-request-id when short and safe, else a fresh
        //    UUID), set before anything logs and echoed on every answer (gRPC: response
        //    metadata); span + access log, the outcome read from grpc-status (header or
        //    trailer). Every error answer from below leaves with the request id (gRPC: in
        //    its ErrorInfo, which tonic's own statuses get here too; an internal failure:
        //    in its message), and an internal failure is logged with both ids
        .layer(ObserveLayer::new(super::operations()))
        // 4. CORS: answers preflights before deadlines, limits or auth get involved, and
        //    puts its headers on every answer below a browser can read, errors included
        .layer(middleware::cors::layer(&settings.cors))
        // 5. guards (middleware::guard): strip server.base_path before routing; a body
        //    over the limit → 413 / RESOURCE_EXHAUSTED; the deadline, server.request_timeout
        //    or a shorter grpc-timeout → 504 / DEADLINE_EXCEEDED; a panicking handler →
        //    500 / INTERNAL for that request only (inside observe: logged with its id);
        //    load shedding: past server.concurrency_limit requests in flight, 503 /
        //    RESOURCE_EXHAUSTED at once (probes, /metrics and gRPC health are exempt)
        .layer(GuardLayer::new(server, super::operations()))
        // 6. gzip for REST only: compressing gRPC or gRPC-Web frames breaks their framing
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .compress_when(rest_only()),
        )
        // 7. authentication: Authorization header / metadata → Auth extension
        .layer(AuthenticateLayer::new(state.authenticator.clone()))
        // 8. Connect and gRPC-Web → gRPC translations, so every layer above saw the
        //    original (and the router's route layer — operation name, access policy,
        //    idempotency keys — sees the three alike: their retries share one stored answer)
        .layer(middleware::connect::ConnectLayer)
        .layer(middleware::grpc_web::GrpcWebOnlyLayer {
            body_limit: server.body_limit_bytes,
        })
        .layer(middleware::grpc_web::AxumBodyLayer)
        .service(router)
        .map_response(IntoResponse::into_response)
        .boxed_clone()
}

fn rest_only() -> impl Predicate {
    DefaultPredicate::new().and(NotForContentType::const_new("application/grpc"))
}
