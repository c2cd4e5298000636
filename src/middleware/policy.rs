//! Who may call what: the route layer (`server::routed`) finds each routed request's row
//! in the operations table the modules state, marks the request with it ([`Identified`],
//! which the idempotency step reads next) and admits the request or not by the row's
//! access rule.
//! Only requests that matched a route are judged, so unknown paths still get their 404 /
//! UNIMPLEMENTED. A request without a row requires authentication: forgetting an entry
//! fails closed. Handlers still ask for the caller they need; the rows are the guarantee
//! that none was forgotten.

use axum::{
    extract::{MatchedPath, Request},
    response::Response,
};

use crate::{
    auth::Auth,
    context::Protocol,
    operations::{Access, Identified, Operations},
};

/// Second step of the route layer (`server::routed`): marks the request with its row,
/// then answers the refusal when the row's rule does not admit it, in the caller's
/// protocol (401 with the RealWorld body, or UNAUTHENTICATED).
pub fn refusal(operations: &Operations, request: &mut Request) -> Option<Response> {
    let identified = identify(operations, request);
    request.extensions_mut().insert(identified);
    // No such gRPC method: left to the router's UNIMPLEMENTED.
    let access = Identified::access(Some(&identified))?;
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
    admitted
        .err()
        .map(|refused| refused.into_response_for(Protocol::of(request)))
}

/// What `request` calls, by its gRPC method or its routed REST template.
fn identify(operations: &Operations, request: &Request) -> Identified {
    if Protocol::of(request).is_grpc() {
        let path = request.uri().path();
        match operations.grpc(path) {
            Some(op) => Identified::Stated(op),
            // A method that exists but no table states is judged (fail closed); one that
            // does not exist is left to the router's UNIMPLEMENTED.
            None if crate::proto::method_paths().contains(path) => Identified::Unstated,
            None => Identified::NoSuchMethod,
        }
    } else {
        let path = request
            .extensions()
            .get::<MatchedPath>()
            .map_or(request.uri().path(), MatchedPath::as_str);
        operations
            .rest(request.method(), path)
            .map_or(Identified::Unstated, Identified::Stated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::{Effect, Operation, both, rest_only};

    static ROWS: &[Operation] = &[
        both(
            "GET /api/tags",
            "/conduit.v1.TagService/ListTags",
            Access::Public,
            Effect::Read,
        ),
        rest_only("GET /api/articles/{slug}", Access::Optional, Effect::Read),
    ];

    fn grpc(path: &str) -> Request {
        Request::builder()
            .uri(path)
            .header("content-type", "application/grpc")
            .body(axum::body::Body::empty())
            .expect("request")
    }

    #[test]
    fn a_missing_entry_requires_authentication() {
        let operations = Operations::new([&ROWS]);
        let access = |request: &Request| Identified::access(Some(&identify(&operations, request)));
        assert_eq!(
            access(&grpc("/conduit.v1.TagService/ListTags")),
            Some(Access::Public)
        );
        // A method of the descriptor set that no row states.
        assert_eq!(
            access(&grpc("/conduit.v1.ArticleService/DeleteArticle")),
            Some(Access::Required)
        );
        // Not a method at all: the router answers UNIMPLEMENTED.
        assert_eq!(
            access(&grpc("/conduit.v1.ArticleService/NoSuchMethod")),
            None
        );
        assert_eq!(
            operations.rest_access(&axum::http::Method::HEAD, "/api/tags"),
            Access::Public
        );
        assert_eq!(
            operations.rest_access(&axum::http::Method::PATCH, "/api/articles/{slug}"),
            Access::Required
        );
        // Nothing marked the request at all: judged as unstated.
        assert_eq!(Identified::access(None), Some(Access::Required));
    }
}
