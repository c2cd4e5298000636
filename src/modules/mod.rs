//! Feature modules. Each registers a REST router (whose annotated handlers make up the
//! OpenAPI document) and its gRPC services. `server` assembles the modules `enabled`
//! returns — those `features.<name>` leaves on — so switching one off removes it from
//! routing, docs, health and reflection alike.

pub mod articles;
pub mod comments;
pub mod identity;
pub mod legacy;
pub mod profiles;
pub mod tags;
pub mod users;

use std::convert::Infallible;

use axum::{body::Body, http::Request};
use tonic::server::NamedService;
use tower::{Service, ServiceExt};
use utoipa_axum::router::OpenApiRouter;

use crate::{config::Settings, operations::Operation, state::AppState};

pub struct Module {
    pub name: &'static str,
    /// Its rows of the operations table: every REST route and gRPC method it serves.
    pub operations: &'static [Operation],
    /// Routes relative to `/api`, with their OpenAPI paths. Needs no state, so the
    /// document can be printed without a database.
    pub rest: fn() -> OpenApiRouter<AppState>,
    pub grpc: fn(&AppState) -> GrpcServices,
}

pub const ALL: &[Module] = &[
    users::MODULE,
    identity::MODULE,
    profiles::MODULE,
    articles::MODULE,
    comments::MODULE,
    tags::MODULE,
    legacy::MODULE,
];

/// The modules `features.<name>` leaves on (all, by default).
pub fn enabled(settings: &Settings) -> impl Iterator<Item = &'static Module> {
    ALL.iter()
        .filter(|module| settings.features.enabled(module.name))
}

/// A module's tonic services as axum routes.
#[derive(Default)]
pub struct GrpcServices {
    pub router: axum::Router,
    pub names: Vec<&'static str>,
}

impl GrpcServices {
    /// Mounts a service at `/{package.Service}/*` as tonic's own `Routes` does, minus
    /// `Routes`' catch-all fallback: the merged router must have exactly one.
    pub fn with<S>(mut self, service: S) -> Self
    where
        S: Service<
                Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.router = self.router.route_service(
            &format!("/{}/{{*rest}}", S::NAME),
            service.map_request(|r: Request<Body>| r.map(tonic::body::Body::new)),
        );
        self.names.push(S::NAME);
        self
    }
}

/// What tonic's own `Server` would configure per service: decoded messages bounded by the
/// body limit, gzip accepted from and offered to clients that ask for it.
macro_rules! tune_grpc {
    ($server:expr, $state:expr) => {
        $server
            .max_decoding_message_size($state.settings.server.body_limit_bytes)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
            .send_compressed(tonic::codec::CompressionEncoding::Gzip)
    };
}
pub(crate) use tune_grpc;
