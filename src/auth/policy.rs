//! Who may call what: one table for every REST operation and gRPC method, enforced on
//! the router (so only requests that matched a route are judged; unknown paths still get
//! their 404 / UNIMPLEMENTED). An operation missing from the table requires
//! authentication: forgetting an entry fails closed. Handlers still ask for the caller
//! they need; the table is the guarantee that none was forgotten, and the OpenAPI
//! document's `security` is written from it.

use std::{collections::HashMap, sync::LazyLock};

use axum::{
    extract::{MatchedPath, Request},
    http::Method,
    middleware::Next,
    response::Response,
};

use super::Auth;
use crate::middleware::Protocol;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed; any sent are not looked at.
    Public,
    /// Anonymous callers are served; a credential that is sent must be good.
    Optional,
    /// A good credential is required.
    Required,
}

use Access::{Optional, Public, Required};

/// REST operations as `METHOD /path/{template}` (the routed path, base path stripped),
/// gRPC methods as `/package.Service/Method`.
pub const POLICY: &[(&str, Access)] = &[
    // Users and authentication
    ("POST /api/users", Public),
    ("POST /api/users/login", Public),
    ("POST /api/users/refresh", Public),
    ("POST /api/users/logout", Required),
    ("GET /api/user", Required),
    ("PUT /api/user", Required),
    ("GET /api/user/sessions", Required),
    ("DELETE /api/user/sessions/{id}", Required),
    ("POST /api/user/totp", Required),
    ("POST /api/user/totp/confirm", Required),
    ("DELETE /api/user/totp", Required),
    ("/conduit.v1.UserService/Register", Public),
    ("/conduit.v1.UserService/Login", Public),
    ("/conduit.v1.UserService/GetCurrentUser", Required),
    ("/conduit.v1.UserService/UpdateUser", Required),
    ("/conduit.v1.AuthService/Refresh", Public),
    ("/conduit.v1.AuthService/Logout", Required),
    ("/conduit.v1.AuthService/ListSessions", Required),
    ("/conduit.v1.AuthService/RevokeSession", Required),
    ("/conduit.v1.AuthService/EnrollTotp", Required),
    ("/conduit.v1.AuthService/ConfirmTotp", Required),
    ("/conduit.v1.AuthService/DisableTotp", Required),
    // Profiles
    ("GET /api/profiles/{username}", Optional),
    ("POST /api/profiles/{username}/follow", Required),
    ("DELETE /api/profiles/{username}/follow", Required),
    ("/conduit.v1.ProfileService/GetProfile", Optional),
    ("/conduit.v1.ProfileService/FollowUser", Required),
    ("/conduit.v1.ProfileService/UnfollowUser", Required),
    // Articles
    ("GET /api/articles", Optional),
    ("GET /api/articles/feed", Required),
    ("GET /api/feed", Required),
    ("GET /api/articles/{slug}", Optional),
    ("POST /api/articles", Required),
    ("PUT /api/articles/{slug}", Required),
    ("DELETE /api/articles/{slug}", Required),
    ("POST /api/articles/{slug}/favorite", Required),
    ("DELETE /api/articles/{slug}/favorite", Required),
    ("/conduit.v1.ArticleService/ListArticles", Optional),
    ("/conduit.v1.ArticleService/FeedArticles", Required),
    ("/conduit.v1.ArticleService/GetArticle", Optional),
    ("/conduit.v1.ArticleService/CreateArticle", Required),
    ("/conduit.v1.ArticleService/UpdateArticle", Required),
    ("/conduit.v1.ArticleService/DeleteArticle", Required),
    ("/conduit.v1.ArticleService/FavoriteArticle", Required),
    ("/conduit.v1.ArticleService/UnfavoriteArticle", Required),
    // Comments
    ("GET /api/articles/{slug}/comments", Optional),
    ("POST /api/articles/{slug}/comments", Required),
    ("DELETE /api/articles/{slug}/comments/{id}", Required),
    ("/conduit.v1.CommentService/ListComments", Optional),
    ("/conduit.v1.CommentService/AddComment", Required),
    ("/conduit.v1.CommentService/DeleteComment", Required),
    // Tags
    ("GET /api/tags", Public),
    ("/conduit.v1.TagService/ListTags", Public),
    // Operations: probes, metrics, docs, health, reflection
    ("GET /livez", Public),
    ("GET /readyz", Public),
    ("GET /metrics", Public),
    ("GET /api/openapi.json", Public),
    ("GET /api/docs", Public),
    ("GET /api/docs/", Public),
    ("GET /api/docs/{*file}", Public),
    ("/grpc.health.v1.Health/Check", Public),
    ("/grpc.health.v1.Health/Watch", Public),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Public,
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Public,
    ),
];

static TABLE: LazyLock<HashMap<&'static str, Access>> =
    LazyLock::new(|| POLICY.iter().copied().collect());

/// The access rule for a REST operation (`method`, routed path template).
pub fn rest(method: &Method, path: &str) -> Access {
    // HEAD is served by the GET route.
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    lookup(&format!("{method} {path}"))
}

/// The access rule for a gRPC method (`/package.Service/Method`).
pub fn grpc(path: &str) -> Access {
    lookup(path)
}

/// The conduit gRPC methods that exist, from the descriptor set: a call to a method that
/// does not exist is left to the router's UNIMPLEMENTED rather than judged (there is
/// nothing to protect, and clients probing for methods get the honest answer).
static GRPC_METHODS: LazyLock<std::collections::HashSet<String>> = LazyLock::new(|| {
    use prost::Message;
    prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
        .map(|set| {
            set.file
                .iter()
                .flat_map(|file| {
                    file.service.iter().flat_map(move |service| {
                        service.method.iter().map(move |method| {
                            format!("/{}.{}/{}", file.package(), service.name(), method.name())
                        })
                    })
                })
                .collect()
        })
        .unwrap_or_default()
});

fn judged_grpc(path: &str) -> Option<Access> {
    match TABLE.get(path) {
        Some(access) => Some(*access),
        None if GRPC_METHODS.contains(path) => Some(Required),
        None => None,
    }
}

fn lookup(operation: &str) -> Access {
    TABLE.get(operation).copied().unwrap_or(Required)
}

/// Route layer: refuses a request its operation's rule does not admit, in the caller's
/// protocol (401 with the RealWorld body, or UNAUTHENTICATED).
pub async fn enforce(request: Request, next: Next) -> Response {
    let protocol = Protocol::of(&request);
    let access = if protocol.is_grpc() {
        match judged_grpc(request.uri().path()) {
            Some(access) => access,
            None => return next.run(request).await,
        }
    } else {
        let path = request
            .extensions()
            .get::<MatchedPath>()
            .map_or(request.uri().path(), MatchedPath::as_str);
        rest(request.method(), path)
    };
    let auth = request
        .extensions()
        .get::<Auth>()
        .copied()
        .unwrap_or_default();
    let admitted = match access {
        Public => Ok(()),
        Optional => auth.optional().map(drop),
        Required => auth.required().map(drop),
    };
    match admitted {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response_for(protocol),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Every operation of the OpenAPI document, as `METHOD /path`.
    fn rest_operations() -> Vec<String> {
        let document = crate::server::openapi(&crate::config::Settings::default());
        let value = serde_json::to_value(&document).expect("document");
        let mut operations = Vec::new();
        for (path, item) in value["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "put", "post", "delete", "patch", "head", "options"]
                    .contains(&method.as_str())
                {
                    operations.push(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        operations
    }

    #[test]
    fn every_operation_has_an_explicit_rule() {
        let stated: HashSet<&str> = POLICY.iter().map(|(op, _)| *op).collect();
        assert_eq!(stated.len(), POLICY.len(), "an operation is listed twice");
        let grpc: Vec<String> = GRPC_METHODS.iter().cloned().collect();
        let rest = rest_operations();
        assert!(grpc.len() >= 26 && rest.len() >= 26, "{grpc:?} {rest:?}");
        let missing: Vec<&String> = grpc
            .iter()
            .chain(&rest)
            .filter(|op| !stated.contains(op.as_str()))
            .collect();
        assert!(missing.is_empty(), "operations without a rule: {missing:?}");
        // And no rule outlives its operation (operational routes are not in the
        // document or the conduit descriptor set).
        let known: HashSet<&str> = grpc.iter().chain(&rest).map(String::as_str).collect();
        let stale: Vec<&str> = stated
            .iter()
            .copied()
            .filter(|op| op.contains("conduit.v1") || op.contains(" /api/"))
            .filter(|op| !op.contains("/api/docs") && !op.contains("/api/openapi.json"))
            .filter(|op| !known.contains(op))
            .collect();
        assert!(
            stale.is_empty(),
            "rules for operations that do not exist: {stale:?}"
        );
    }

    #[test]
    fn a_missing_entry_requires_authentication() {
        assert_eq!(grpc("/conduit.v1.UserService/Login"), Public);
        assert_eq!(grpc("/conduit.v1.NewService/Anything"), Required);
        assert_eq!(rest(&Method::HEAD, "/api/tags"), Public);
        assert_eq!(rest(&Method::GET, "/api/articles/{slug}"), Optional);
        assert_eq!(rest(&Method::PATCH, "/api/articles/{slug}"), Required);
        assert_eq!(judged_grpc("/conduit.v1.ArticleService/NoSuchMethod"), None);
        assert_eq!(
            judged_grpc("/conduit.v1.ArticleService/DeleteArticle"),
            Some(Required)
        );
    }
}
