//! The stack's authentication layer: the caller a request's credential names, resolved
//! once for every protocol (see `auth::Auth`).

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};

use crate::auth::{Auth, Authenticator};

/// Tower layer body (via `axum::middleware::from_fn_with_state`): resolves the caller once
/// per request for every protocol. Whether an operation needs a caller is its row's
/// business in the operations table (`middleware::policy`, on the router).
pub async fn resolve(
    State(authenticator): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let auth = Auth::from_headers(request.headers(), &authenticator).await;
    if let Auth::Authenticated(principal) = auth {
        super::observe::record_principal(&request, principal.user_id);
    }
    request.extensions_mut().insert(auth);
    next.run(request).await
}
