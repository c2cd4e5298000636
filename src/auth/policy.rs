//! Who may call what, and what each call does: one table, [`OPERATIONS`], with a row per
//! operation naming its REST route and gRPC method together, its access rule and its
//! effect. The access rule is enforced on the router (so only requests that matched a
//! route are judged; unknown paths still get their 404 / UNIMPLEMENTED). An operation
//! missing from the table requires authentication: forgetting an entry fails closed.
//! Handlers still ask for the caller they need; the table is the guarantee that none was
//! forgotten. The OpenAPI document's `security` and the idempotency layer (which
//! operations may keep an answer) read the same rows.

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

/// What an operation does, as retries see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Changes nothing: an idempotency key means nothing to it.
    Read,
    /// Changes state: an idempotency key makes its retries safe.
    Write,
    /// Answers with credentials (access or refresh tokens, a TOTP secret, recovery
    /// codes). Its answer is never kept for replay — that would store credentials in
    /// the clear and let a copy of the request fetch them again — so a key is ignored.
    IssuesCredentials,
}

/// One operation, on each protocol that offers it.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// `METHOD /path/{template}` (the routed path, base path stripped).
    pub rest: Option<&'static str>,
    /// `/package.Service/Method`.
    pub grpc: Option<&'static str>,
    pub access: Access,
    pub effect: Effect,
}

use Access::{Optional, Public, Required};
use Effect::{IssuesCredentials, Read, Write};

const fn both(rest: &'static str, grpc: &'static str, access: Access, effect: Effect) -> Operation {
    Operation {
        rest: Some(rest),
        grpc: Some(grpc),
        access,
        effect,
    }
}

const fn rest_only(rest: &'static str, access: Access, effect: Effect) -> Operation {
    Operation {
        rest: Some(rest),
        grpc: None,
        access,
        effect,
    }
}

const fn grpc_only(grpc: &'static str, access: Access, effect: Effect) -> Operation {
    Operation {
        rest: None,
        grpc: Some(grpc),
        access,
        effect,
    }
}

#[rustfmt::skip]
pub const OPERATIONS: &[Operation] = &[
    // Users and authentication
    both("POST /api/users", "/conduit.v1.UserService/Register", Public, IssuesCredentials),
    both("POST /api/users/login", "/conduit.v1.UserService/Login", Public, IssuesCredentials),
    both("GET /api/user", "/conduit.v1.UserService/GetCurrentUser", Required, Read),
    // Answers a fresh access token, and after a password change a refresh token.
    both("PUT /api/user", "/conduit.v1.UserService/UpdateUser", Required, IssuesCredentials),
    both("POST /api/users/refresh", "/conduit.v1.AuthService/Refresh", Public, IssuesCredentials),
    both("POST /api/users/logout", "/conduit.v1.AuthService/Logout", Required, Write),
    both("GET /api/user/sessions", "/conduit.v1.AuthService/ListSessions", Required, Read),
    both("DELETE /api/user/sessions/{id}", "/conduit.v1.AuthService/RevokeSession", Required, Write),
    both("POST /api/user/totp", "/conduit.v1.AuthService/EnrollTotp", Required, IssuesCredentials),
    both("POST /api/user/totp/confirm", "/conduit.v1.AuthService/ConfirmTotp", Required, IssuesCredentials),
    both("DELETE /api/user/totp", "/conduit.v1.AuthService/DisableTotp", Required, Write),
    // Profiles
    both("GET /api/profiles/{username}", "/conduit.v1.ProfileService/GetProfile", Optional, Read),
    both("POST /api/profiles/{username}/follow", "/conduit.v1.ProfileService/FollowUser", Required, Write),
    both("DELETE /api/profiles/{username}/follow", "/conduit.v1.ProfileService/UnfollowUser", Required, Write),
    // Articles
    both("GET /api/articles", "/conduit.v1.ArticleService/ListArticles", Optional, Read),
    both("GET /api/articles/feed", "/conduit.v1.ArticleService/FeedArticles", Required, Read),
    rest_only("GET /api/feed", Required, Read),
    both("GET /api/articles/{slug}", "/conduit.v1.ArticleService/GetArticle", Optional, Read),
    both("POST /api/articles", "/conduit.v1.ArticleService/CreateArticle", Required, Write),
    both("PUT /api/articles/{slug}", "/conduit.v1.ArticleService/UpdateArticle", Required, Write),
    both("DELETE /api/articles/{slug}", "/conduit.v1.ArticleService/DeleteArticle", Required, Write),
    both("POST /api/articles/{slug}/favorite", "/conduit.v1.ArticleService/FavoriteArticle", Required, Write),
    both("DELETE /api/articles/{slug}/favorite", "/conduit.v1.ArticleService/UnfavoriteArticle", Required, Write),
    // Comments
    both("GET /api/articles/{slug}/comments", "/conduit.v1.CommentService/ListComments", Optional, Read),
    both("POST /api/articles/{slug}/comments", "/conduit.v1.CommentService/AddComment", Required, Write),
    both("DELETE /api/articles/{slug}/comments/{id}", "/conduit.v1.CommentService/DeleteComment", Required, Write),
    // Tags
    both("GET /api/tags", "/conduit.v1.TagService/ListTags", Public, Read),
    // Operations: probes, metrics, docs, health, reflection
    rest_only("GET /livez", Public, Read),
    rest_only("GET /readyz", Public, Read),
    rest_only("GET /metrics", Public, Read),
    rest_only("GET /api/openapi.json", Public, Read),
    rest_only("GET /api/docs", Public, Read),
    rest_only("GET /api/docs/", Public, Read),
    rest_only("GET /api/docs/{*file}", Public, Read),
    grpc_only("/grpc.health.v1.Health/Check", Public, Read),
    grpc_only("/grpc.health.v1.Health/Watch", Public, Read),
    grpc_only("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Public, Read),
    grpc_only("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Public, Read),
];

/// Every name the table states: REST operations and gRPC methods.
pub fn stated() -> impl Iterator<Item = &'static str> {
    OPERATIONS
        .iter()
        .flat_map(|op| op.rest.into_iter().chain(op.grpc))
}

static TABLE: LazyLock<HashMap<&'static str, &'static Operation>> = LazyLock::new(|| {
    OPERATIONS
        .iter()
        .flat_map(|op| {
            op.rest
                .into_iter()
                .chain(op.grpc)
                .map(move |name| (name, op))
        })
        .collect()
});

/// The row of a REST operation (`method`, routed path template).
pub fn rest_operation(method: &Method, path: &str) -> Option<&'static Operation> {
    // HEAD is served by the GET route.
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    TABLE.get(format!("{method} {path}").as_str()).copied()
}

/// The row of a gRPC method (`/package.Service/Method`).
pub fn grpc_operation(path: &str) -> Option<&'static Operation> {
    TABLE.get(path).copied()
}

/// The access rule for a REST operation (`method`, routed path template).
pub fn rest(method: &Method, path: &str) -> Access {
    rest_operation(method, path).map_or(Required, |op| op.access)
}

/// The access rule for a gRPC method (`/package.Service/Method`).
pub fn grpc(path: &str) -> Access {
    grpc_operation(path).map_or(Required, |op| op.access)
}

/// The operation a routed request calls: its gRPC method, or its REST route.
pub fn of_request(request: &Request) -> Option<&'static Operation> {
    if Protocol::of(request).is_grpc() {
        grpc_operation(request.uri().path())
    } else {
        let path = request.extensions().get::<MatchedPath>()?.as_str();
        rest_operation(request.method(), path)
    }
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
    match grpc_operation(path) {
        Some(op) => Some(op.access),
        None if GRPC_METHODS.contains(path) => Some(Required),
        None => None,
    }
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
        let stated: HashSet<&str> = stated().collect();
        assert_eq!(
            stated.len(),
            super::stated().count(),
            "an operation is listed twice"
        );
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
