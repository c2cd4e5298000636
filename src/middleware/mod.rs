//! One file per cross-cutting layer. `server::stack` applies them in order; each
//! treats gRPC, gRPC-Web and REST requests alike and answers errors in the caller's protocol.

pub mod authenticate;
pub mod body_limit;
pub mod connect;
pub mod cors;
pub mod grpc_web;
pub mod guard;
pub mod observe;
pub mod panic;
pub mod policy;
pub mod request_id;
pub mod rewrite;
pub mod security_headers;
pub mod shed;
pub mod timeout;
