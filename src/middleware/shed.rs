//! Load shedding: at most `server.concurrency_limit` requests in flight; beyond it the
//! answer is an immediate 503 / RESOURCE_EXHAUSTED (`OVERLOADED`, with `Retry-After: 1`),
//! not a queue without bound whose waiters all time out together. Probes, `/metrics` and
//! gRPC health are never shed: an overloaded replica must still say how it is.
//!
//! A request holds its place until its response headers are ready; the body streams
//! after that without counting (every response here is short, and streams are health's).
//! Work a request hands to a task of its own (an idempotent write finishing after its
//! caller left) takes the request's [`Place`] along, so it keeps counting.

use std::sync::Arc;

use axum::{
    extract::Request,
    http::{HeaderValue, StatusCode, header::RETRY_AFTER},
    response::Response,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Reason;
use crate::{context::Protocol, error::layer_error, operations::Operations};

pub const SHED: &str = "conduit_requests_shed_total";

/// Places for requests in flight; `0` in the settings means no limit.
pub fn places(limit: usize) -> Arc<Semaphore> {
    describe_metrics();
    Arc::new(Semaphore::new(if limit == 0 {
        Semaphore::MAX_PERMITS
    } else {
        limit
    }))
}

/// A request's place among those in flight, in its extensions (`guard::Admitted`):
/// whoever holds a clone keeps it taken.
#[derive(Clone)]
pub struct Place(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// The last of the guards (`guard`): the request's place among those in flight, held by
/// the caller until the response headers are ready (and set on the request by the guard,
/// for work it hands on); no place for probes, `/metrics` and gRPC health; or, when every
/// place is taken, the 503 / RESOURCE_EXHAUSTED answer.
pub fn take_place(
    places: &Arc<Semaphore>,
    operations: &Operations,
    request: &Request,
) -> Admission {
    if operations.is_never_shed(request.uri().path()) {
        return Admission::Exempt;
    }
    let Ok(place) = places.clone().try_acquire_owned() else {
        metrics::counter!(SHED).increment(1);
        let mut response = layer_error(
            Protocol::of(request),
            crate::error::status(
                tonic::Code::ResourceExhausted,
                Reason::Overloaded,
                "overloaded: too many requests in flight; retry shortly",
            ),
            StatusCode::SERVICE_UNAVAILABLE,
            "request",
            "overloaded; retry shortly",
        );
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return Admission::Shed(response);
    };
    Admission::Placed(Place(Arc::new(place)))
}

pub enum Admission {
    Exempt,
    Placed(Place),
    Shed(Response),
}

/// Describes this module's metrics to the recorder (a no-op until one is installed).
pub fn describe_metrics() {
    metrics::describe_counter!(
        SHED,
        "Requests answered 503 / RESOURCE_EXHAUSTED because server.concurrency_limit were in flight"
    );
}
