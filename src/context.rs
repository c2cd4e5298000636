//! What the request being served is, for whatever runs inside it: its ids and its
//! client's address (task-locals set by `observe`, so that log lines written deep inside a
//! handler carry them, and sessions record the address, without every function passing
//! them along) and its protocol (read off the request). Error answers do not read them:
//! `observe` writes the ids into those itself (`error::quote_ids`). Infrastructure: the layers below the transport read
//! it without depending on the middleware that sets it.

use std::{future::Future, sync::Arc};

use axum::http::{Method, Request, header::CONTENT_TYPE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    GrpcWeb,
    /// Connect (connectrpc.com), unary: JSON or protobuf over plain HTTP, on a gRPC
    /// method's path.
    Connect,
    Http,
}

impl Protocol {
    pub fn of<B>(request: &Request<B>) -> Self {
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if content_type.starts_with("application/grpc-web") {
            Protocol::GrpcWeb
        } else if content_type.starts_with("application/grpc") {
            Protocol::Grpc
        } else if matches!(*request.method(), Method::POST | Method::GET)
            && is_method_path(request.uri().path())
        {
            // A CORS preflight (OPTIONS) is answered as HTTP, whatever it asks about.
            Protocol::Connect
        } else {
            Protocol::Http
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::Connect => "connect",
            Protocol::Http => "http",
        }
    }

    /// gRPC framing: messages in length-prefixed frames, the outcome in `grpc-status`.
    pub fn is_grpc(self) -> bool {
        matches!(self, Protocol::Grpc | Protocol::GrpcWeb)
    }

    /// A call of a `conduit.v1` method, in any of the protocols that carry them: named,
    /// counted and concluded (a gRPC code) as an RPC, not as an HTTP route.
    pub fn is_rpc(self) -> bool {
        self != Protocol::Http
    }
}

/// The request's media type: its `content-type` without parameters (`; charset=…` does
/// not change the encoding); empty when there is none.
pub fn media_type(headers: &axum::http::HeaderMap) -> &str {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
}

/// `…/package.Service/Method`: the path of a gRPC method (after any base path). No REST
/// route ends so — a capitalised last segment after one with a dot.
///
/// Asked several times per request of every REST GET and POST, so it reads bytes from the
/// end and gives up at the first lowercase method, not splitting the path.
fn is_method_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    let Some(last) = bytes.iter().rposition(|&b| b == b'/') else {
        return false;
    };
    if !bytes.get(last + 1).is_some_and(u8::is_ascii_uppercase) {
        return false;
    }
    let service = &bytes[..last];
    let start = service
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(0, |slash| slash + 1);
    service[start..].contains(&b'.')
}

/// What identifies the request being served, for whatever runs inside it.
#[derive(Clone)]
pub struct Ids {
    pub request_id: String,
    pub trace_id: Option<String>,
    /// The client's address (see `auth::attempts::client_ip`), when served over TCP.
    pub client_ip: Option<std::net::IpAddr>,
}

/// Request extension set by the server loop: the client's address, with
/// `X-Forwarded-For` followed only behind a trusted proxy.
#[derive(Clone, Copy)]
pub struct ClientIp(pub std::net::IpAddr);

/// The current request's client address.
pub fn client_ip() -> Option<std::net::IpAddr> {
    IDS.try_with(|ids| ids.client_ip).ok().flatten()
}

// Shared, so that setting them for a request's synchronous part and its future, or
// carrying them into a task, copies a pointer.
tokio::task_local! {
    static IDS: Arc<Ids>;
}

/// Runs `f` with the current request's ids, without copying them.
pub fn with_current<R>(f: impl FnOnce(&Ids) -> R) -> Option<R> {
    IDS.try_with(|ids| f(ids)).ok()
}

pub fn scope<F: Future>(
    ids: Arc<Ids>,
    future: F,
) -> tokio::task::futures::TaskLocalFuture<Arc<Ids>, F> {
    IDS.scope(ids, future)
}

/// Runs `f` (a service's `call`, which works before its future is polled) with `ids`.
pub fn sync_scope<R>(ids: Arc<Ids>, f: impl FnOnce() -> R) -> R {
    IDS.sync_scope(ids, f)
}

/// `future` with the current request's ids (if any) carried into it: for work spawned on
/// a task of its own, where task-locals do not follow.
pub fn carry<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let ids = IDS.try_with(Clone::clone).ok();
    async move {
        match ids {
            Some(ids) => scope(ids, future).await,
            None => future.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocol(method: Method, path: &str) -> Protocol {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .expect("request");
        Protocol::of(&request)
    }

    #[test]
    fn method_paths_are_connect_and_no_rest_route_is() {
        for path in [
            "/conduit.v1.ArticleService/ListArticles",
            "/base/path/conduit.v1.TagService/ListTags",
            "/grpc.health.v1.Health/Check",
        ] {
            assert_eq!(protocol(Method::POST, path), Protocol::Connect, "{path}");
            assert_eq!(protocol(Method::GET, path), Protocol::Connect, "{path}");
        }
        assert_eq!(
            protocol(Method::OPTIONS, "/conduit.v1.TagService/ListTags"),
            Protocol::Http,
            "a preflight"
        );
        // Usernames and slugs may hold dots and capitals; REST routes end in a lowercase
        // word, a slug, a username or an id, never after a dotted segment in capitals.
        for path in [
            "/api/profiles/John.Doe",
            "/api/profiles/John.Doe/follow",
            "/api/articles/how-to.train/comments",
            "/api/articles/how-to.train/comments/12",
            "/api/articles/how-to.train/favorite",
            "/api/users/login",
            "/api/docs/swagger-ui.css",
            "/api/openapi.json",
        ] {
            assert_eq!(protocol(Method::POST, path), Protocol::Http, "{path}");
            assert_eq!(protocol(Method::GET, path), Protocol::Http, "{path}");
        }
    }
}
