//! One port, one router, one tower stack. `routes` merges the feature modules' REST and
//! gRPC routes with probes, docs, health and reflection; `stack` wraps the result in the
//! middleware every request passes through; `listen` accepts HTTP/1.1 and h2c on one
//! socket.

mod accept;
mod balance;
mod listen;
mod routed;
mod routes;
mod stack;

use std::convert::Infallible;

use axum::{extract::Request, response::Response};
use tower::util::BoxCloneService;

pub use listen::{Listeners, ServingThreads, bind, bind_admin, serve};
pub use routes::{Routers, openapi, operations, rest_routes, routers};
pub use stack::stack;

/// The fully assembled application: what one connection serves.
pub type App = BoxCloneService<Request, Response, Infallible>;
