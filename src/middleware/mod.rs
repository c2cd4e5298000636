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

/// The service in `slot`, which `poll_ready` made ready, for a future that must own it; a
/// fresh clone stays behind for the next request (tower's contract: the service polled
/// ready is the one called).
pub fn take_ready<S: Clone>(slot: &mut S) -> S {
    let fresh = slot.clone();
    std::mem::replace(slot, fresh)
}
