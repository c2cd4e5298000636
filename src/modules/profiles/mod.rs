//! Profiles: how users see each other, and follows.

mod grpc;
mod repo;
pub(crate) mod rest;
pub mod service;

use super::{GrpcServices, Module, tune_grpc};

pub const MODULE: Module = Module {
    name: "profiles",
    rest: rest::router,
    grpc: |state| {
        GrpcServices::default().with(tune_grpc!(
            grpc::server(service::ProfileService::new(state)),
            state
        ))
    },
};
