//! One port, one router, one tower stack. `router` merges the feature modules' REST and
//! gRPC routes with probes, docs, health and reflection; `stack` wraps the result in the
//! middleware every request passes through; `serve` accepts HTTP/1.1 and h2c on one socket.

use std::{
    convert::Infallible,
    future::Future,
    sync::{Arc, LazyLock},
    time::Duration,
};

use anyhow::Context;
use axum::{
    Router,
    body::Body,
    extract::Request,
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::{from_fn, from_fn_with_state},
    response::{IntoResponse, Response},
};
use futures_util::TryFutureExt;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt, util::BoxCloneService};
use tower_http::{
    compression::{
        CompressionLayer, Predicate,
        predicate::{DefaultPredicate, NotForContentType},
    },
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::{
    config::{CorsSettings, ServerSettings, Settings},
    context::Protocol,
    docs,
    error::{Reason, layer_error},
    idempotency::IdempotencyLayer,
    metrics,
    middleware::{self, guard::GuardLayer, shared::SharedLayer},
    modules::{self, GrpcServices},
    operations::{Access::Public, Effect::Read, Operation, Operations, grpc_only},
    probes,
    proto::FILE_DESCRIPTOR_SET,
    state::AppState,
};

/// The fully assembled application: what one connection serves.
pub type App = BoxCloneService<Request, Response, Infallible>;

/// What gRPC health and reflection serve (see `operations`).
#[rustfmt::skip]
const HEALTH_AND_REFLECTION: &[Operation] = &[
    grpc_only("/grpc.health.v1.Health/Check", Public, Read),
    grpc_only("/grpc.health.v1.Health/Watch", Public, Read),
    grpc_only("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Public, Read),
    grpc_only("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Public, Read),
];

/// Every operation the server can serve: the rows of every feature module (switched on or
/// not: a switched-off module's routes are simply not routed) and of the operational
/// endpoints.
pub fn operations() -> &'static Operations {
    static OPERATIONS: LazyLock<Operations> = LazyLock::new(|| {
        Operations::new(modules::ALL.iter().map(|module| &module.operations).chain([
            &probes::OPERATIONS,
            &metrics::scrape::OPERATIONS,
            &docs::OPERATIONS,
            &HEALTH_AND_REFLECTION,
        ]))
    });
    &OPERATIONS
}

/// REST routes of the enabled modules under `/api`, and the OpenAPI document they make.
pub fn rest_routes(settings: &Settings) -> (Router<AppState>, OpenApi) {
    let api = modules::enabled(settings).fold(OpenApiRouter::new(), |api, module| {
        api.merge((module.rest)())
    });
    let (router, mut document) = OpenApiRouter::with_openapi(docs::base())
        .nest("/api", api)
        .split_for_parts();
    docs::apply_operations(&mut document, operations());
    (router, document)
}

pub fn openapi(settings: &Settings) -> OpenApi {
    docs::with_servers(
        &rest_routes(settings).1,
        &settings.server.base_path,
        &settings.docs.servers,
    )
}

/// What the listeners serve: the API port's router, and the admin port's when
/// `server.admin_addr` moves `/metrics` there; and the gRPC health service's reporter
/// with the services it reports, for the lifecycle to keep in step with readiness.
pub struct Routers {
    pub api: Router,
    pub admin: Option<Router>,
    pub health: (tonic_health::server::HealthReporter, Vec<&'static str>),
}

/// Everything routable: feature modules (REST + gRPC), gRPC health and reflection,
/// probes, docs and metrics, with one fallback for both protocols.
pub fn routers(
    settings: &Settings,
    state: &AppState,
    metrics: PrometheusHandle,
) -> anyhow::Result<Routers> {
    let state = state.clone();
    let modules: Vec<&str> = modules::enabled(settings).map(|m| m.name).collect();
    tracing::info!(?modules, "feature modules enabled");
    let (rest, document) = rest_routes(settings);

    let grpc = modules::enabled(settings).fold(GrpcServices::default(), |all, module| {
        let services = (module.grpc)(&state);
        GrpcServices {
            router: all.router.merge(services.router),
            names: [all.names, services.names].concat(),
        }
    });
    let services = grpc.names.clone();
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let grpc = grpc
        .with(health)
        .with(
            reflection(&services)
                .build_v1()
                .context("building reflection v1")?,
        )
        .with(
            reflection(&services)
                .build_v1alpha()
                .context("building reflection v1alpha")?,
        );

    let probes = probes::router(state.readiness.clone());
    let metrics = metrics::scrape::router(
        metrics,
        state.db().clone(),
        settings.database.max_connections,
        state.readiness.clone(),
    );
    let mut api = rest
        .with_state(state.clone())
        .merge(grpc.router)
        .merge(probes.clone());
    if settings.docs.enabled {
        api = api.merge(docs::router(document, settings));
    }
    let admin = match settings.server.admin_addr {
        Some(_) => Some(probes.merge(metrics)),
        None => {
            api = api.merge(metrics);
            None
        }
    };
    Ok(Routers {
        // Route layers, outermost first (only routed requests pass them; unrouted ones get
        // 404 / UNIMPLEMENTED from the fallbacks):
        // 1. the operation's name (route template or gRPC method) for metrics, spans and
        //    logs, before anything can refuse the request (see `observe`);
        // 2. the operation's row of the table, marked on the request;
        // 3. deny by default: the row's access rule judges every routed operation;
        // 4. idempotency keys, for the authenticated writes the policy admitted.
        api: api
            .route_layer(IdempotencyLayer::new(&state))
            .route_layer(from_fn(middleware::policy::enforce))
            .route_layer(from_fn_with_state(
                operations(),
                middleware::operation::identify,
            ))
            .route_layer(from_fn(middleware::observe::record_route))
            .fallback(fallback)
            .method_not_allowed_fallback(method_not_allowed),
        admin,
        health: (health_reporter, services),
    })
}

/// Reflection lists the enabled conduit services (plus health and reflection itself).
/// grpcurl and Python's grpcio-reflection still speak v1alpha only, hence both versions.
fn reflection<'a>(services: &[&'static str]) -> tonic_reflection::server::Builder<'a> {
    services
        .iter()
        .chain(&["grpc.health.v1.Health"])
        .fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // google.rpc error details, so reflection clients can decode them
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET),
            |builder, name| builder.with_service_name(*name),
        )
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
}

async fn fallback(request: Request) -> Response {
    let message = format!("unknown method {}", request.uri().path());
    layer_error(
        Protocol::of(&request),
        crate::error::status(tonic::Code::Unimplemented, Reason::MethodNotFound, message),
        StatusCode::NOT_FOUND,
        "route",
        "not found",
    )
}

async fn method_not_allowed(request: Request) -> Response {
    layer_error(
        Protocol::of(&request),
        crate::error::status(
            tonic::Code::Unimplemented,
            Reason::MethodNotAllowed,
            "method not allowed",
        ),
        StatusCode::METHOD_NOT_ALLOWED,
        "method",
        "not allowed",
    )
}

/// The one middleware stack, outermost first. Every request — gRPC, gRPC-Web, REST,
/// probes, docs — passes through every layer, so order is behaviour:
pub fn stack(router: Router, settings: &Settings, state: &AppState) -> App {
    middleware::observe::describe_metrics();
    let server = &settings.server;
    let hsts = (!server.hsts.is_empty())
        .then(|| HeaderValue::from_str(&server.hsts).ok())
        .flatten();
    // `SharedLayer` sits under each layer that clones its inner service per request, so
    // that clone is one pointer (middleware::shared).
    ServiceBuilder::new()
        // 1. request id: keep the caller's x-request-id when it is short and safe, else
        //    mint a UUID, before anything logs
        .map_request(middleware::request_id::keep_only_safe::<Body>)
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        // 2. echo it on every response (gRPC: response metadata), including errors below
        .layer(PropagateRequestIdLayer::x_request_id())
        // nosniff, no-referrer, never framed, HSTS when configured: REST answers only
        .map_response(move |response| middleware::security_headers::add(response, hsts.as_ref()))
        // 3. span + access log; the outcome is read from grpc-status (header or trailer)
        .layer(from_fn(middleware::observe::observe))
        .layer(SharedLayer)
        // 4. CORS: answers preflights before deadlines, limits or auth get involved, and
        //    puts its headers on every answer below, errors included
        .layer(cors(&settings.cors))
        // 5. guards (middleware::guard): strip server.base_path before routing; a body
        //    over the limit → 413 / RESOURCE_EXHAUSTED; the deadline, server.request_timeout
        //    or a shorter grpc-timeout → 504 / DEADLINE_EXCEEDED; a panicking handler →
        //    500 / INTERNAL for that request only (inside observe: logged with its id)
        .layer(GuardLayer::new(
            &server.base_path,
            server.request_timeout,
            server.body_limit_bytes,
        ))
        // 5b. load shedding: past server.concurrency_limit requests in flight, 503 /
        //     RESOURCE_EXHAUSTED at once; probes, /metrics and gRPC health are exempt
        .layer(from_fn_with_state(
            middleware::shed::places(server.concurrency_limit),
            middleware::shed::shed,
        ))
        .layer(SharedLayer)
        // 6. gzip for REST only: compressing gRPC or gRPC-Web frames breaks their framing
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .compress_when(rest_only()),
        )
        // 7. authentication: Authorization header / metadata → Auth extension
        .layer(from_fn_with_state(
            state.authenticator.clone(),
            middleware::authenticate::resolve,
        ))
        .layer(SharedLayer)
        // 8. gRPC-Web → gRPC translation, so every layer above saw the original (and the
        //    router's route layers — operation name, access policy, idempotency keys —
        //    see gRPC and gRPC-Web alike: their retries share one stored answer)
        .layer(middleware::grpc_web::GrpcWebOnlyLayer {
            body_limit: server.body_limit_bytes,
        })
        .layer(SharedLayer)
        .layer(middleware::grpc_web::AxumBodyLayer)
        // 9. statuses tonic answers by itself (unknown method, undecodable message) get
        //     the ErrorInfo every other gRPC error carries
        .layer(from_fn(middleware::error_info::complete))
        .layer(SharedLayer)
        .service(router)
        .map_response(IntoResponse::into_response)
        .boxed_clone()
}

fn rest_only() -> impl Predicate {
    DefaultPredicate::new().and(NotForContentType::const_new("application/grpc"))
}

fn cors(settings: &CorsSettings) -> CorsLayer {
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
    CorsLayer::new()
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

pub async fn bind(settings: &ServerSettings) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(&settings.addr)
        .await
        .with_context(|| format!("binding {}", settings.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    Ok(listener)
}

/// The admin listener (metrics and probes), when `server.admin_addr` is set.
pub async fn bind_admin(
    settings: &ServerSettings,
    router: Option<Router>,
) -> anyhow::Result<Option<(TcpListener, Router)>> {
    let (Some(addr), Some(router)) = (&settings.admin_addr, router) else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin port {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "admin listening");
    Ok(Some((listener, router)))
}

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge, as gRPC uses) on one socket until
/// `shutdown` resolves, then stops accepting and lets open requests finish within
/// `server.shutdown_timeout`.
/// While `readiness` reports draining, HTTP/1.1 responses carry `Connection: close`, so
/// keep-alive clients reconnect (to a replica that is not going away) before the
/// listener closes rather than have an idle connection closed under a request they are
/// sending. HTTP/2 connections get GOAWAY when the listener closes.
pub async fn serve(
    listener: TcpListener,
    app: App,
    admin: Option<(TcpListener, Router)>,
    settings: &ServerSettings,
    readiness: crate::readiness::Readiness,
    shutdown: impl Future<Output = ()>,
) {
    // The admin port stays up through the drain delay (probes report the drain), then
    // closes with the API port.
    let admin_stop = tokio_util::sync::CancellationToken::new();
    let admin_task = admin.map(|(listener, router)| {
        let stop = admin_stop.clone();
        tokio::spawn(async move {
            let served =
                axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = served.await {
                tracing::warn!(error = %e, "admin listener failed");
            }
        })
    });
    // Serving tonic through axum loses tonic Server's transport settings; restore them.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(settings.http2_keepalive_interval))
        .keep_alive_timeout(settings.http2_keepalive_timeout)
        .max_concurrent_streams(settings.http2_max_concurrent_streams)
        // What h2 buffers per stream for a client that is not reading: with the stream
        // limit, a bound on a connection's buffered bytes (hyper's default is 400 KiB).
        .max_send_buf_size(64 * 1024);
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(settings.handshake_timeout);

    let graceful = GracefulShutdown::new();
    // Connection tasks are kept so the ones still open at the shutdown timeout can be
    // aborted rather than outliving the server.
    let mut connections = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    let mut accept_errors = AcceptErrors::default();
    // Validated with the settings; an entry that does not parse cannot get here.
    let trusted_proxies: Arc<[ipnet::IpNet]> =
        settings.trusted_proxy_nets().unwrap_or_default().into();
    let mut at_limit = false;
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the limit, new connections wait in the listen backlog (told
        // once per episode, not per connection).
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                // The episode ends once half the slots are free again.
                if at_limit && slots.available_permits() >= settings.max_connections / 2 {
                    tracing::info!("connections below the limit again");
                    at_limit = false;
                }
                slot
            }
            Err(_) => {
                if !at_limit {
                    tracing::warn!(
                        max_connections = settings.max_connections,
                        "connection limit reached; new connections wait until one closes"
                    );
                    at_limit = true;
                }
                tokio::select! {
                    acquired = slots.clone().acquire_owned() => match acquired {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            // Reap finished connections so the set stays the size of the open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    accept_errors.recovered();
                    conn
                }
                Err(e) => {
                    // e.g. EMFILE: back off instead of spinning; the listener stays usable.
                    tokio::time::sleep(accept_errors.failed(&e)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if settings.tcp_nodelay
            && let Err(e) = stream.set_nodelay(true)
        {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let progress = crate::connection::Progress::default();
        let app = app.clone();
        let started = progress.clone();
        let trusted = trusted_proxies.clone();
        let stalls = crate::connection::Stalls::default();
        let watched = stalls.clone();
        let readiness = readiness.clone();
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            started.mark();
            let mut request = request.map(Body::new);
            let client = crate::auth::attempts::client_ip(peer.ip(), request.headers(), &trusted);
            request
                .extensions_mut()
                .insert(crate::context::ClientIp(client));
            let watched = watched.clone();
            let http1 = request.version() < http::Version::HTTP_2;
            let readiness = readiness.clone();
            app.clone().oneshot(request).map_ok(move |response| {
                let mut response = response.map(|body| watched.watch(body));
                if http1 && readiness.current().draining {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            })
        });
        let io = crate::connection::Watched::new(stream, progress.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let handshake_timeout = settings.handshake_timeout;
        let send_timeout = settings.send_timeout;
        connections.spawn(async move {
            let _slot = slot;
            tokio::pin!(connection);
            let handshake = tokio::time::sleep(handshake_timeout);
            tokio::pin!(handshake);
            let mut handshaken = false;
            let mut check = tokio::time::interval((send_timeout / 2).min(Duration::from_secs(5)));
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut connection => break outcome,
                    () = &mut handshake, if !handshaken => {
                        if !progress.made() {
                            tracing::debug!(%peer, "closing a connection that sent no request");
                            return;
                        }
                        handshaken = true;
                    }
                    _ = check.tick() => {
                        if stalls.longest().is_some_and(|waited| waited > send_timeout) {
                            tracing::info!(%peer, ?send_timeout, "closing a connection whose client stopped reading its responses");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = outcome {
                tracing::debug!(%peer, error = %e, "connection closed with error");
            }
        });
    }
    drop(listener);
    admin_stop.cancel();
    tracing::info!("listener closed; waiting for in-flight requests");
    let mut admin_task = admin_task;
    let drained = async {
        graceful.shutdown().await;
        if let Some(task) = admin_task.as_mut() {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(settings.shutdown_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?settings.shutdown_timeout, "requests still open at shutdown timeout; closing them");
        connections.abort_all();
        if let Some(task) = admin_task {
            task.abort();
        }
    }
}

/// Accept failures (descriptors exhausted, …): retried with a growing pause, logged when
/// they start and when they end, not once per attempt.
#[derive(Default)]
struct AcceptErrors {
    failures: u64,
}

impl AcceptErrors {
    fn failed(&mut self, error: &std::io::Error) -> std::time::Duration {
        if self.failures == 0 {
            tracing::warn!(%error, "accept failed; backing off until connections can be accepted again");
        }
        self.failures += 1;
        let exponent = self.failures.min(7) as u32;
        std::time::Duration::from_millis(10 * 2u64.pow(exponent - 1))
    }

    fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::warn!(failures = self.failures, "accepting connections again");
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    /// Every operation of the OpenAPI document, as `METHOD /path`.
    fn rest_operations() -> Vec<String> {
        let document = openapi(&Settings::default());
        let value = serde_json::to_value(&document).expect("document");
        let mut operations = Vec::new();
        for (path, item) in value["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "put", "post", "delete", "patch", "head", "options"]
                    .contains(&method.as_str())
                {
                    operations.push(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        operations
    }

    /// Every conduit gRPC method of the descriptor set.
    fn grpc_methods() -> Vec<String> {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("set");
        let mut methods = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        methods
    }

    #[test]
    fn every_operation_has_exactly_one_row() {
        let mut times: HashMap<&str, usize> = HashMap::new();
        for name in operations().names() {
            *times.entry(name).or_default() += 1;
        }
        let twice: Vec<&&str> = times
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| k)
            .collect();
        assert!(twice.is_empty(), "operations stated twice: {twice:?}");
        let grpc = grpc_methods();
        let rest = rest_operations();
        assert!(grpc.len() >= 26 && rest.len() >= 26, "{grpc:?} {rest:?}");
        let missing: Vec<&String> = grpc
            .iter()
            .chain(&rest)
            .filter(|op| !times.contains_key(op.as_str()))
            .collect();
        assert!(missing.is_empty(), "operations without a row: {missing:?}");
        // And no row outlives its operation (operational routes are not in the document
        // or the conduit descriptor set).
        let known: HashSet<&str> = grpc.iter().chain(&rest).map(String::as_str).collect();
        let stale: Vec<&str> = times
            .keys()
            .copied()
            .filter(|op| op.contains("conduit.v1") || op.contains(" /api/"))
            .filter(|op| !op.contains("/api/docs") && !op.contains("/api/openapi.json"))
            .filter(|op| !known.contains(op))
            .collect();
        assert!(
            stale.is_empty(),
            "rows for operations that do not exist: {stale:?}"
        );
    }

    #[test]
    fn calls_that_spend_credential_attempts_document_their_429() {
        let document = serde_json::to_value(openapi(&Settings::default())).expect("document");
        let documented = |method: &str, path: &str| {
            document["paths"][path][method]["responses"]["429"]["headers"]["Retry-After"]
                .is_object()
        };
        assert!(documented("post", "/api/users/login"));
        assert!(documented("post", "/api/users/refresh"));
        assert!(!documented("get", "/api/articles"));
    }
}
