//! Safe retries: an `Idempotency-Key` header on REST `POST`s and `idempotency-key`
//! metadata on gRPC mutations (IETF httpapi idempotency-key draft).
//!
//! The first request with a key claims it, runs, and its answer is kept for
//! `idempotency.ttl`; a retry with the same key, caller and body gets that answer again
//! (with `idempotent-replayed: true`) without running. The same key with another body is
//! 422 / INVALID_ARGUMENT; a retry while the first request still runs is 409 / ABORTED.
//! Keys are scoped to the caller (the authenticated user, or all anonymous callers).
//!
//! Only answers that will not change on a retry are kept: successes and the client errors
//! 400, 404, 422 (gRPC: OK, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS). Anything else
//! (401, 409, 5xx, UNAVAILABLE…) wrote nothing — units of database work are atomic — so
//! the key is released and a retry runs afresh. Claim, run and record happen on a task of
//! their own: a client that disconnects after the write still leaves its answer recorded
//! for the retry it will send.

mod store;

use std::{
    convert::Infallible,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    response::Response,
};
use blake2::{Blake2b512, Digest};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::Frame;
use tonic::Code;
use tower::{Layer, Service, ServiceExt, util::BoxCloneSyncService};
use tracing::Instrument;

pub use self::store::purge_expired;
use self::store::{Claim, KeyRef, Stored};
use crate::{
    auth::Auth,
    db::Store,
    error::{self, AppError, Reason},
    middleware::{Protocol, layer_error, request_id},
    state::AppState,
};

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
const MAX_KEY_LEN: usize = 255;
/// Answers larger than this are passed on but not kept (mutations answer one resource).
const MAX_KEPT_ANSWER: usize = 1 << 20;

#[derive(Clone)]
struct Idempotency {
    store: Store,
    ttl: chrono::Duration,
    /// A claim this old belongs to a request that died before recording its answer.
    lease: chrono::Duration,
}

impl Idempotency {
    fn new(state: &AppState) -> Self {
        let settings = &state.settings;
        let to_chrono =
            |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        Self {
            store: state.store.clone(),
            ttl: to_chrono(settings.idempotency.ttl),
            lease: to_chrono(settings.server.request_timeout * 2),
        }
    }
}

/// What runs after this layer (the router).
type Inner = BoxCloneSyncService<Request, Response, Infallible>;

/// A layer of its own rather than `from_fn`: it sits inside the gRPC-Web translation,
/// which calls it with tonic's body type as well as axum's.
#[derive(Clone)]
pub struct IdempotencyLayer(Idempotency);

impl IdempotencyLayer {
    pub fn new(state: &AppState) -> Self {
        Self(Idempotency::new(state))
    }
}

impl<S> Layer<S> for IdempotencyLayer
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Service = Idempotent;
    fn layer(&self, inner: S) -> Idempotent {
        Idempotent {
            inner: BoxCloneSyncService::new(inner),
            idempotency: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Idempotent {
    inner: Inner,
    idempotency: Idempotency,
}

impl<B> Service<http::Request<B>> for Idempotent
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each call drives a clone of the inner service with `oneshot`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (inner, idempotency) = (self.inner.clone(), self.idempotency.clone());
        Box::pin(async move { Ok(guard(idempotency, request.map(Body::new), inner).await) })
    }
}

/// Passes through requests without a key, and non-mutations.
async fn guard(idempotency: Idempotency, request: Request, next: Inner) -> Response {
    let Some(value) = request.headers().get(HEADER) else {
        return call(next, request).await;
    };
    let protocol = Protocol::of(&request);
    if !is_mutation(protocol, request.method(), request.uri().path()) {
        return call(next, request).await;
    }
    let Some(key) = valid_key(value) else {
        return layer_error(
            protocol,
            error::status(
                Code::InvalidArgument,
                Reason::InvalidIdempotencyKey,
                format!("idempotency-key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Idempotency-Key",
            "is invalid",
        );
    };
    let scope = match request.extensions().get::<Auth>() {
        Some(Auth::Authenticated(p)) => format!("user:{}", p.user_id),
        _ => "anonymous".to_string(),
    };
    let (parts, body) = request.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return unreadable_body(protocol, &e),
    };
    let key = KeyRef {
        scope: scope.into(),
        key: key.into(),
        fingerprint: fingerprint(&parts.method, parts.uri.path(), &bytes).into(),
    };
    let request = Request::from_parts(parts, Body::from(bytes));
    let work = run(idempotency, key, protocol, request, next).in_current_span();
    let task = tokio::spawn(request_id::carry(work));
    match task.await {
        Ok(response) => response,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => AppError::internal(e).into_response_for(protocol),
    }
}

async fn call(inner: Inner, request: Request) -> Response {
    match inner.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

async fn run(
    idempotency: Idempotency,
    key: KeyRef,
    protocol: Protocol,
    request: Request,
    next: Inner,
) -> Response {
    let store = &idempotency.store;
    match store::claim(store, &key, idempotency.ttl, idempotency.lease).await {
        Ok(Claim::Owned) => {}
        Ok(Claim::Replay(stored)) => return replay(stored),
        Ok(Claim::Mismatch) => {
            return layer_error(
                protocol,
                error::status(
                    Code::InvalidArgument,
                    Reason::IdempotencyKeyReused,
                    "idempotency-key was already used with a different request",
                ),
                StatusCode::UNPROCESSABLE_ENTITY,
                "Idempotency-Key",
                "was already used with a different request",
            );
        }
        Ok(Claim::InProgress) => {
            return AppError::Contention(Reason::IdempotencyKeyInUse).into_response_for(protocol);
        }
        Err(e) => return e.into_response_for(protocol),
    }

    let (parts, body) = call(next, request).await.into_parts();
    let collected = match Limited::new(body, MAX_KEPT_ANSWER).collect().await {
        Ok(collected) => collected,
        Err(e) => {
            tracing::warn!(error = %e, "answer to a keyed request could not be kept");
            let _ = store::release(store, &key).await;
            return AppError::internal(anyhow::anyhow!("unreadable answer: {e}"))
                .into_response_for(protocol);
        }
    };
    let trailers = collected.trailers().cloned();
    let bytes = collected.to_bytes();
    let kept = if worth_replaying(protocol, parts.status, &parts.headers, trailers.as_ref()) {
        let answer = Stored {
            status: i32::from(parts.status.as_u16()),
            headers: Some(encode_headers(&parts.headers, trailers.as_ref())),
            body: bytes.to_vec(),
        };
        store::record(store, &key, answer).await
    } else {
        store::release(store, &key).await
    };
    if let Err(e) = kept {
        // The answer stands; only its replay is lost (a retry then waits out the lease).
        tracing::warn!(error = %e, "idempotency key not updated");
    }
    Response::from_parts(parts, body_of(bytes, trailers))
}

/// Operations whose answers carry credentials (access and refresh tokens, a TOTP secret,
/// recovery codes). Their answers are never kept, since keeping them would store
/// credentials in the clear and let a copy of the request fetch them again (a replayed
/// refresh would undo refresh-token rotation); a key sent with them is ignored.
const ISSUES_CREDENTIALS_REST: &[&str] = &[
    "/api/users",
    "/api/users/login",
    "/api/users/refresh",
    "/api/user/totp",
    "/api/user/totp/confirm",
];
const ISSUES_CREDENTIALS_GRPC: &[&str] =
    &["Register", "Login", "Refresh", "EnrollTotp", "ConfirmTotp"];

/// Mutations that honour a key: REST POSTs and conduit.v1 methods other than reads and
/// those that issue credentials. Health and reflection never.
fn is_mutation(protocol: Protocol, method: &Method, path: &str) -> bool {
    if protocol.is_grpc() {
        let Some(rpc) = path
            .strip_prefix("/conduit.v1.")
            .and_then(|p| p.rsplit('/').next())
        else {
            return false;
        };
        return !(rpc.starts_with("Get")
            || rpc.starts_with("List")
            || rpc.starts_with("Feed")
            || ISSUES_CREDENTIALS_GRPC.contains(&rpc));
    }
    method == Method::POST && !ISSUES_CREDENTIALS_REST.contains(&path)
}

/// 1–255 visible ASCII characters; a Structured Fields string's quotes are removed.
fn valid_key(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?.trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    let ok = !text.is_empty()
        && text.len() <= MAX_KEY_LEN
        && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    ok.then(|| text.to_string())
}

fn fingerprint(method: &Method, path: &str, body: &[u8]) -> String {
    let mut hash = Blake2b512::new();
    for part in [
        method.as_str().as_bytes(),
        b"\0",
        path.as_bytes(),
        b"\0",
        body,
    ] {
        hash.update(part);
    }
    hash.finalize()
        .iter()
        .take(32)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn worth_replaying(
    protocol: Protocol,
    status: StatusCode,
    headers: &HeaderMap,
    trailers: Option<&HeaderMap>,
) -> bool {
    if protocol.is_grpc() {
        let code = trailers
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok());
        // OK, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS
        return status == StatusCode::OK && matches!(code, Some(0 | 3 | 5 | 6));
    }
    status.is_success()
        || matches!(
            status,
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY
        )
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KeptHeaders {
    headers: Vec<(String, String)>,
    trailers: Option<Vec<(String, String)>>,
}

fn encode_headers(headers: &HeaderMap, trailers: Option<&HeaderMap>) -> String {
    let pairs = |map: &HeaderMap| {
        map.iter()
            .filter(|(name, _)| *name != header::CONTENT_LENGTH && *name != header::DATE)
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
            .collect::<Vec<_>>()
    };
    serde_json::to_string(&KeptHeaders {
        headers: pairs(headers),
        trailers: trailers.map(pairs),
    })
    .unwrap_or_default()
}

fn decode_headers(pairs: &[(String, String)]) -> HeaderMap {
    pairs
        .iter()
        .filter_map(|(name, value)| {
            Some((
                HeaderName::try_from(name.as_str()).ok()?,
                HeaderValue::try_from(value.as_str()).ok()?,
            ))
        })
        .collect()
}

fn replay(stored: Stored) -> Response {
    let kept: KeptHeaders = stored
        .headers
        .as_deref()
        .and_then(|h| serde_json::from_str(h).ok())
        .unwrap_or(KeptHeaders {
            headers: Vec::new(),
            trailers: None,
        });
    let trailers = kept.trailers.as_deref().map(decode_headers);
    let mut response = Response::new(body_of(Bytes::from(stored.body), trailers));
    *response.status_mut() =
        StatusCode::from_u16(u16::try_from(stored.status).unwrap_or(500)).unwrap_or_default();
    *response.headers_mut() = decode_headers(&kept.headers);
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// A body of one data frame, followed by trailers when there are any (gRPC).
fn body_of(bytes: Bytes, trailers: Option<HeaderMap>) -> Body {
    match trailers {
        None => Body::from(bytes),
        Some(trailers) => {
            let frames = [Frame::data(bytes), Frame::trailers(trailers)];
            Body::new(StreamBody::new(futures_util::stream::iter(
                frames.into_iter().map(Ok::<_, Infallible>),
            )))
        }
    }
}

fn unreadable_body(protocol: Protocol, error: &axum::Error) -> Response {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut too_large = false;
    while let Some(e) = source {
        too_large |= e.is::<http_body_util::LengthLimitError>()
            || e.downcast_ref::<tonic::Status>()
                .is_some_and(|s| s.code() == tonic::Code::ResourceExhausted);
        source = e.source();
    }
    if too_large {
        AppError::PayloadTooLarge.into_response_for(protocol)
    } else {
        layer_error(
            protocol,
            error::status(
                Code::InvalidArgument,
                Reason::RequestUnreadable,
                "request body could not be read",
            ),
            StatusCode::BAD_REQUEST,
            "body",
            "could not be read",
        )
    }
}
