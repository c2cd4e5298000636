//! Users: registration, login, the current user.

pub(crate) mod grpc;
pub(crate) mod repo;
pub(crate) mod rest;
pub mod service;

use super::{GrpcServices, Module, tune_grpc};

pub const MODULE: Module = Module {
    name: "users",
    rest: rest::router,
    grpc: |state| {
        GrpcServices::default().with(tune_grpc!(
            grpc::server(service::UserService::new(state)),
            state
        ))
    },
};
