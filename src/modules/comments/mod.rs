//! Comments on articles.

mod grpc;
mod repo;
mod rest;
pub mod service;

use super::{GrpcServices, Module, tune_grpc};

pub const MODULE: Module = Module {
    name: "comments",
    rest: rest::router,
    grpc: |state| {
        GrpcServices::default().with(tune_grpc!(
            grpc::server(service::CommentService::new(state)),
            state
        ))
    },
};
