//! The OpenAPI document (assembled from the feature modules' annotated handlers) and the
//! Swagger UI, both under `/api` rather than at the root. Both stay correct behind a proxy
//! that mounts the service under a path prefix: the document's first server URL follows
//! the prefix, and the UI only uses relative URLs.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        self, ServerBuilder,
        security::{ApiKey, ApiKeyValue, SecurityScheme},
    },
};
use utoipa_swagger_ui::Config;

use crate::{
    config::Settings,
    error::GenericErrorModel,
    operations::{
        Access::{self, Public},
        Effect::Read,
        Limit, Operation, Operations, rest_only,
    },
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "conduit",
        description = "RealWorld (Conduit) API. The same operations are served over gRPC (package conduit.v1) on the same port.",
    ),
    modifiers(&TokenScheme),
    components(schemas(GenericErrorModel)),
)]
struct ApiDoc;

struct TokenScheme;

impl Modify for TokenScheme {
    fn modify(&self, openapi: &mut openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "Token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Token <jwt>` (or `Bearer <jwt>`), the token from login or registration",
            ))),
        );
    }
}

/// Writes what the operations table states into each operation: its `security`
/// (required → `Token`; optional → none or `Token`; public → none), and for calls that
/// spend credential attempts the 429 they may answer.
pub fn apply_operations(doc: &mut openapi::OpenApi, operations: &Operations) {
    use axum::http::Method;
    use openapi::security::SecurityRequirement;

    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, operation) in [
            (Method::GET, &mut item.get),
            (Method::PUT, &mut item.put),
            (Method::POST, &mut item.post),
            (Method::DELETE, &mut item.delete),
            (Method::PATCH, &mut item.patch),
        ] {
            let Some(operation) = operation else { continue };
            let token = || SecurityRequirement::new("Token", Vec::<String>::new());
            operation.security = match operations.rest_access(&method, path) {
                Access::Public => None,
                Access::Optional => Some(vec![SecurityRequirement::default(), token()]),
                Access::Required => Some(vec![token()]),
            };
            let limited = operations
                .rest(&method, path)
                .is_some_and(|op| op.limit == Limit::CredentialAttempt);
            if limited {
                operation
                    .responses
                    .responses
                    .insert("429".into(), too_many_attempts().into());
            }
        }
    }
}

fn too_many_attempts() -> openapi::Response {
    use openapi::{
        ContentBuilder, Ref, ResponseBuilder, Type,
        header::HeaderBuilder,
        schema::{ObjectBuilder, Schema},
    };
    let seconds = Schema::Object(ObjectBuilder::new().schema_type(Type::Integer).build());
    ResponseBuilder::new()
        .description(
            "Too many credential attempts from this address or on this account \
             (`rate_limit.*`); retry after `Retry-After` seconds",
        )
        .header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(seconds))
                .description(Some("seconds until an attempt is counted again"))
                .build(),
        )
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("GenericErrorModel")))
                .build(),
        )
        .build()
}

/// The document the feature routers add their paths to.
pub fn base() -> openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc
}

struct Docs {
    document: openapi::OpenApi,
    base_path: String,
    extra_servers: Vec<String>,
    ui: Arc<Config<'static>>,
}

#[rustfmt::skip]
pub const OPERATIONS: &[Operation] = &[
    rest_only("GET /api/openapi.json", Public, Read).tooling(),
    rest_only("GET /api/docs", Public, Read).tooling(),
    rest_only("GET /api/docs/", Public, Read).tooling(),
    rest_only("GET /api/docs/{*file}", Public, Read).tooling(),
];

pub fn router(document: openapi::OpenApi, settings: &Settings) -> Router {
    let docs = Arc::new(Docs {
        document,
        base_path: settings.server.base_path.clone(),
        extra_servers: settings.docs.servers.clone(),
        // Relative to /api/docs/, so it resolves under whatever prefix the page was served.
        ui: Arc::new(Config::new(["../openapi.json"])),
    });
    Router::new()
        .route("/api/openapi.json", get(openapi_json))
        .route("/api/docs", get(|| async { redirect("docs/") }))
        .route("/api/docs/", get(ui_index))
        .route("/api/docs/{*file}", get(ui_file))
        .with_state(docs)
}

/// The document as served: servers are the request's proxy prefix (`X-Forwarded-Prefix`,
/// else `server.base_path`), then the configured `docs.servers`.
pub fn with_servers(
    document: &openapi::OpenApi,
    prefix: &str,
    extra: &[String],
) -> openapi::OpenApi {
    let mut doc = document.clone();
    let own = if prefix.is_empty() { "/" } else { prefix };
    let mut servers = vec![
        ServerBuilder::new()
            .url(own)
            .description(Some("this server"))
            .build(),
    ];
    servers.extend(
        extra
            .iter()
            .map(|url| ServerBuilder::new().url(url.clone()).build()),
    );
    doc.servers = Some(servers);
    doc
}

async fn openapi_json(State(docs): State<Arc<Docs>>, headers: HeaderMap) -> Response {
    let prefix = forwarded_prefix(&headers).unwrap_or_else(|| docs.base_path.clone());
    let doc = with_servers(&docs.document, &prefix, &docs.extra_servers);
    axum::Json(doc).into_response()
}

/// Accepts only a plain path so a forged header cannot inject anything into the document.
fn forwarded_prefix(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("x-forwarded-prefix")?.to_str().ok()?.trim();
    let plain = value.starts_with('/')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.~".contains(c));
    plain.then(|| value.trim_end_matches('/').to_string())
}

async fn ui_index(State(docs): State<Arc<Docs>>) -> Response {
    serve_ui("", &docs)
}

async fn ui_file(State(docs): State<Arc<Docs>>, Path(file): Path<String>) -> Response {
    serve_ui(&file, &docs)
}

fn serve_ui(file: &str, docs: &Docs) -> Response {
    match utoipa_swagger_ui::serve(file, docs.ui.clone()) {
        Ok(Some(asset)) => {
            let mut response = (
                [(header::CONTENT_TYPE, asset.content_type)],
                asset.bytes.into_owned(),
            )
                .into_response();
            if asset.gzpipped {
                response
                    .headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            response
        }
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            crate::error::AppError::internal(anyhow::anyhow!("swagger ui: {e}")).into_response()
        }
    }
}

fn redirect(location: &'static str) -> Response {
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, location)],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_header_is_sanitised() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-prefix", HeaderValue::from_static("/conduit/"));
        assert_eq!(forwarded_prefix(&h).as_deref(), Some("/conduit"));
        h.insert("x-forwarded-prefix", HeaderValue::from_static("/a\"b"));
        assert_eq!(forwarded_prefix(&h), None);
        h.insert("x-forwarded-prefix", HeaderValue::from_static("relative"));
        assert_eq!(forwarded_prefix(&h), None);
    }
}
