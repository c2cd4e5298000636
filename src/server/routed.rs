//! The route layer: what runs on every routed request once the router knows its
//! operation, as one service. Unrouted requests never pass it: they get the fallbacks'
//! 404 / UNIMPLEMENTED, unjudged. In order:
//!
//! 1. the operation's name for metrics, spans and the access line
//!    (`observe::record_route`), before anything can refuse the request;
//! 2. deny by default (`policy::refusal`): the request is marked with its row of the
//!    operations table and refused when the row's access rule does not admit it;
//! 3. idempotency keys (`idempotency::guard`), only for requests that carry one.
//!
//! Three route layers cost more than the work they did: axum boxes every layered route
//! and clones the whole boxed chain below on each call, so three layers made about twenty
//! allocations per request, in REST and gRPC alike. Steps 1 and 2 need no I/O, so here
//! they run inside `call` and an admitted request is handed straight to the route.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{extract::Request, response::Response};
use futures_util::future::{BoxFuture, Either};
use tower::{Layer, Service, util::BoxCloneSyncService};

use crate::{
    idempotency::{self, Idempotency},
    middleware::{observe, policy},
    operations::Operations,
    state::AppState,
};

/// Behind one `Arc`: axum clones the layered route on every call.
#[derive(Clone)]
pub struct RoutedLayer(Arc<Steps>);

struct Steps {
    operations: &'static Operations,
    idempotency: Idempotency,
}

impl RoutedLayer {
    pub fn new(operations: &'static Operations, state: &AppState) -> Self {
        Self(Arc::new(Steps {
            operations,
            idempotency: Idempotency::new(state),
        }))
    }
}

impl<S> Layer<S> for RoutedLayer {
    type Service = Routed<S>;

    fn layer(&self, route: S) -> Routed<S> {
        Routed {
            route,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Routed<S> {
    route: S,
    layer: RoutedLayer,
}

impl<S> Service<Request> for Routed<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    /// The route's own future, or (a refusal, a keyed request) a boxed one.
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    /// `S` is axum's `Route`, always ready: the refused and keyed paths leave it
    /// uncalled, which a service that reserved capacity here would not allow.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.route.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        observe::record_route(&request);
        if let Some(refused) = policy::refusal(self.layer.0.operations, &mut request) {
            return Either::Right(Box::pin(std::future::ready(Ok(refused))));
        }
        if request.headers().contains_key(idempotency::HEADER) {
            // The keyed path runs the route on a task of its own, which needs it owned.
            let route = BoxCloneSyncService::new(self.route.clone());
            let idempotency = self.layer.0.idempotency.clone();
            return Either::Right(Box::pin(async move {
                Ok(idempotency::guard(idempotency, request, route).await)
            }));
        }
        Either::Left(self.route.call(request))
    }
}
