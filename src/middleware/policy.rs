//! Who may call what: each routed request carries its operation's row
//! ([`Identified`], marked by `middleware::operation` from the modules' tables), and this
//! route layer admits it or not by that row's access rule. Only requests that matched a
//! route are judged, so unknown paths still get their 404 / UNIMPLEMENTED. A request
//! without a row requires authentication: forgetting an entry fails closed. Handlers
//! still ask for the caller they need; the rows are the guarantee that none was
//! forgotten.

use axum::{extract::Request, middleware::Next, response::Response};

use crate::{
    auth::Auth,
    context::Protocol,
    operations::{Access, Identified},
};

/// Route layer: refuses a request its operation's rule does not admit, in the caller's
/// protocol (401 with the RealWorld body, or UNAUTHENTICATED).
pub async fn enforce(request: Request, next: Next) -> Response {
    let Some(access) = Identified::access(request.extensions().get::<Identified>()) else {
        return next.run(request).await;
    };
    let auth = request
        .extensions()
        .get::<Auth>()
        .copied()
        .unwrap_or_default();
    let admitted = match access {
        Access::Public => Ok(()),
        Access::Optional => auth.optional().map(drop),
        Access::Required => auth.required().map(drop),
    };
    match admitted {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response_for(Protocol::of(&request)),
    }
}
