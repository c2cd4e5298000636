//! The stack's authentication layer: the caller a request's credential names, resolved
//! once for every protocol (see `auth::Auth`). Whether an operation needs a caller is
//! its row's business in the operations table (`middleware::policy`, on the router).
//!
//! A service of its own rather than `from_fn`: a request without credentials (every
//! anonymous read, gRPC calls between services that carry none) is marked anonymous and
//! passed on inside `call`, with no boxed future, boxed `Next` or clone of the stack
//! below. Only a credential to check (the token, then its session) takes the async path.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{extract::Request, http::header::AUTHORIZATION, response::Response};
use futures_util::future::{BoxFuture, Either};
use tower::{Layer, Service, ServiceExt};

use crate::auth::{Auth, Authenticator};

#[derive(Clone)]
pub struct AuthenticateLayer(Arc<Authenticator>);

impl AuthenticateLayer {
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self(authenticator)
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            authenticator: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

impl<S> Service<Request> for Authenticate<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if !request.headers().contains_key(AUTHORIZATION) {
            request.extensions_mut().insert(Auth::Anonymous);
            return Either::Left(self.inner.call(request));
        }
        let inner = super::take_ready(&mut self.inner);
        let authenticator = self.authenticator.clone();
        Either::Right(Box::pin(async move {
            let auth = Auth::from_headers(request.headers(), &authenticator).await;
            if let Auth::Authenticated(principal) = auth {
                super::observe::record_principal(&request, principal.user_id);
            }
            request.extensions_mut().insert(auth);
            inner.oneshot(request).await
        }))
    }
}
