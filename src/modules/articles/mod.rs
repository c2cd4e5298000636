//! Articles: listing (global, filtered, feed), authoring, favorites.

mod grpc;
mod reads;
/// Public for the benchmark harness, which runs its statements against the database
/// alone; modules use the service.
pub mod repo;
pub(crate) mod rest;
pub mod service;

use super::{GrpcServices, Module, tune_grpc};

pub const MODULE: Module = Module {
    name: "articles",
    rest: rest::router,
    grpc: |state| {
        GrpcServices::default().with(tune_grpc!(
            grpc::server(service::ArticleService::new(state)),
            state
        ))
    },
};
