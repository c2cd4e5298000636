//! conduit: the RealWorld API as gRPC, gRPC-Web and REST on one port.
//! `docs/ARCHITECTURE.md` maps each responsibility to its module.

pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod connection;
pub mod context;
pub mod db;
pub mod docs;
pub mod entities;
pub mod error;
pub mod grpc;
pub mod idempotency;
pub mod jobs;
pub mod lifecycle;
pub mod metrics;
pub mod middleware;
pub mod modules;
pub mod operations;
pub mod pagination;
pub mod probes;
pub mod proto;
pub mod readiness;
pub mod rest;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod validation;
pub mod values;
