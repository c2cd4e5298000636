//! Identity beyond the login itself: refreshing and ending sessions, listing them, and
//! TOTP second factors (REST under `/api/users/*` and `/api/user/*`, gRPC
//! `conduit.v1.AuthService`).

mod grpc;
mod rest;
pub mod service;

use super::{GrpcServices, Module, tune_grpc};
use crate::operations::{
    Access::{Public, Required},
    Effect::{IssuesCredentials, Read, Write},
    Operation, both,
};

pub const MODULE: Module = Module {
    name: "identity",
    operations: OPERATIONS,
    rest: rest::router,
    grpc: |state| {
        GrpcServices::default().with(tune_grpc!(
            grpc::server(service::IdentityService::new(state)),
            state
        ))
    },
};

/// What this module serves, on each protocol (see `operations`).
#[rustfmt::skip]
pub const OPERATIONS: &[Operation] = &[
    both("POST /api/users/refresh", "/conduit.v1.AuthService/Refresh", Public, IssuesCredentials).credential_attempt(),
    both("POST /api/users/logout", "/conduit.v1.AuthService/Logout", Required, Write),
    both("GET /api/user/sessions", "/conduit.v1.AuthService/ListSessions", Required, Read),
    both("DELETE /api/user/sessions/{id}", "/conduit.v1.AuthService/RevokeSession", Required, Write),
    both("POST /api/user/totp", "/conduit.v1.AuthService/EnrollTotp", Required, IssuesCredentials),
    both("POST /api/user/totp/confirm", "/conduit.v1.AuthService/ConfirmTotp", Required, IssuesCredentials).credential_attempt(),
    both("DELETE /api/user/totp", "/conduit.v1.AuthService/DisableTotp", Required, Write).credential_attempt(),
];
