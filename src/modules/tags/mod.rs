//! Tags in use.

mod grpc;
mod repo;
mod rest;
pub mod service;

use super::{GrpcServices, Module, tune_grpc};
use crate::operations::{Access::Public, Effect::Read, Operation, both};

pub const MODULE: Module = Module {
    name: "tags",
    operations: OPERATIONS,
    rest: rest::router,
    grpc: |state| {
        GrpcServices::default().with(tune_grpc!(
            grpc::server(service::TagService::new(state)),
            state
        ))
    },
};

/// What this module serves, on each protocol (see `operations`).
#[rustfmt::skip]
pub const OPERATIONS: &[Operation] = &[
    both("GET /api/tags", "/conduit.v1.TagService/ListTags", Public, Read),
];
