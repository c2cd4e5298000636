//! Users: registration, login, the current user.

pub(crate) mod grpc;
pub(crate) mod repo;
pub(crate) mod rest;
pub mod service;

use super::{GrpcServices, Module, tune_grpc};
use crate::operations::{
    Access::{Public, Required},
    Effect::{IssuesCredentials, Read},
    Operation, both,
};

pub const MODULE: Module = Module {
    name: "users",
    operations: OPERATIONS,
    rest: rest::router,
    grpc: |state| {
        GrpcServices::default().with(tune_grpc!(
            grpc::server(service::UserService::new(state)),
            state
        ))
    },
};

/// What this module serves, on each protocol (see `operations`).
#[rustfmt::skip]
pub const OPERATIONS: &[Operation] = &[
    // Answers the new user's access and refresh tokens; counts against the address.
    both("POST /api/users", "/conduit.v1.UserService/Register", Public, IssuesCredentials).credential_attempt(),
    both("POST /api/users/login", "/conduit.v1.UserService/Login", Public, IssuesCredentials).credential_attempt(),
    both("GET /api/user", "/conduit.v1.UserService/GetCurrentUser", Required, Read),
    // Answers a fresh access token, and after a password change a refresh token.
    both("PUT /api/user", "/conduit.v1.UserService/UpdateUser", Required, IssuesCredentials),
];
