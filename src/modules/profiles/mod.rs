//! Profiles: how users see each other, and follows.

mod grpc;
mod repo;
pub(crate) mod rest;
pub mod service;

use super::{GrpcServices, Module, tune_grpc};
use crate::operations::{
    Access::{Optional, Required},
    Effect::{Read, Write},
    Operation, both,
};

pub const MODULE: Module = Module {
    name: "profiles",
    operations: OPERATIONS,
    rest: rest::router,
    grpc: |state| {
        GrpcServices::default().with(tune_grpc!(
            grpc::server(service::ProfileService::new(state)),
            state
        ))
    },
};

/// What this module serves, on each protocol (see `operations`).
#[rustfmt::skip]
pub const OPERATIONS: &[Operation] = &[
    both("GET /api/profiles/{username}", "/conduit.v1.ProfileService/GetProfile", Optional, Read),
    both("POST /api/profiles/{username}/follow", "/conduit.v1.ProfileService/FollowUser", Required, Write),
    both("DELETE /api/profiles/{username}/follow", "/conduit.v1.ProfileService/UnfollowUser", Required, Write),
];
