//! Identity beyond the login itself: refreshing and ending sessions, listing them, and
//! TOTP second factors (REST under `/api/users/*` and `/api/user/*`, gRPC
//! `conduit.v1.AuthService`).

mod grpc;
mod rest;
pub mod service;

use super::{GrpcServices, Module, tune_grpc};

pub const MODULE: Module = Module {
    name: "identity",
    rest: rest::router,
    grpc: |state| {
        GrpcServices::default().with(tune_grpc!(
            grpc::server(service::IdentityService::new(state)),
            state
        ))
    },
};
