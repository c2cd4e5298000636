//! The rest of the stack behind one `Arc`, so a layer that clones its inner service per
//! request (a layer whose future must own the service: today `observe`, whose future
//! calls the rest inside the request's span and ids) copies a pointer, not everything
//! below it. Without it each such layer cloned the whole remaining stack on every
//! request: per-request work that grew with the square of the stack's depth.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tower::{Layer, Service, ServiceExt, util::Oneshot};

#[derive(Clone, Copy, Default)]
pub struct SharedLayer;

impl<S> Layer<S> for SharedLayer {
    type Service = Shared<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shared(Arc::new(inner))
    }
}

pub struct Shared<S>(Arc<S>);

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<S, R> Service<R> for Shared<S>
where
    S: Service<R> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Oneshot<S, R>;

    /// Readiness is the clone's, awaited inside the future (as axum's routes do).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        S::clone(&self.0).oneshot(request)
    }
}
