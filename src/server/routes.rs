//! What the server routes: the feature modules' REST and gRPC routes, gRPC health and
//! reflection, probes, docs and metrics, one fallback for both protocols, and the
//! operations table they all state.

use std::sync::LazyLock;

use anyhow::Context;
use axum::{Router, extract::Request, http::StatusCode, response::Response};
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use super::routed::RoutedLayer;
use crate::{
    config::Settings,
    context::Protocol,
    docs,
    error::{Reason, layer_error},
    metrics,
    modules::{self, GrpcServices},
    operations::{Access::Public, Effect::Read, Operation, Operations, grpc_only},
    probes,
    proto::FILE_DESCRIPTOR_SET,
    state::AppState,
};

/// What gRPC health and reflection serve (see `operations`).
#[rustfmt::skip]
const HEALTH_AND_REFLECTION: &[Operation] = &[
    grpc_only("/grpc.health.v1.Health/Check", Public, Read).probe(),
    grpc_only("/grpc.health.v1.Health/Watch", Public, Read).probe(),
    grpc_only("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Public, Read).tooling(),
    grpc_only("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Public, Read).tooling(),
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
        // The route layer (server::routed): only routed requests pass it; unrouted
        // ones get 404 / UNIMPLEMENTED from the fallbacks. It names the operation, judges
        // it by its row of the operations table, and takes idempotency keys.
        api: api
            .route_layer(RoutedLayer::new(operations(), &state))
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
        let grpc: Vec<String> = crate::proto::method_paths().iter().cloned().collect();
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

    /// What Connect clients call with GET (the protos' `NO_SIDE_EFFECTS`) is what the
    /// table says changes nothing: two statements of one fact, held together here.
    #[test]
    fn the_protos_side_effect_free_methods_are_the_tables_reads() {
        for path in crate::proto::method_paths() {
            let method = crate::proto::method(path).expect("in the descriptors");
            let row = operations().grpc(path).expect("a row");
            assert_eq!(
                crate::proto::side_effect_free(&method),
                row.effect == crate::operations::Effect::Read,
                "{path}: idempotency_level = NO_SIDE_EFFECTS exactly when the row is a Read"
            );
        }
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
