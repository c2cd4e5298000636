//! Comments on articles.

mod grpc;
mod repo;
mod rest;
pub mod service;

use super::{GrpcServices, Module, tune_grpc};
use crate::operations::{
    Access::{Optional, Required},
    Effect::{Read, Write},
    Operation, both,
};

pub const MODULE: Module = Module {
    name: "comments",
    operations: OPERATIONS,
    rest: rest::router,
    grpc: |state| {
        GrpcServices::default().with(tune_grpc!(
            grpc::server(service::CommentService::new(state)),
            state
        ))
    },
};

/// What this module serves, on each protocol (see `operations`).
#[rustfmt::skip]
pub const OPERATIONS: &[Operation] = &[
    both("GET /api/articles/{slug}/comments", "/conduit.v1.CommentService/ListComments", Optional, Read),
    both("POST /api/articles/{slug}/comments", "/conduit.v1.CommentService/AddComment", Required, Write),
    both("DELETE /api/articles/{slug}/comments/{id}", "/conduit.v1.CommentService/DeleteComment", Required, Write),
];
