//! Safe retries: an `Idempotency-Key` header (REST) or `idempotency-key` metadata (gRPC)
//! on a write (IETF httpapi idempotency-key draft).
//!
//! The first request with a key claims it, runs, and its answer is kept for
//! `idempotency.ttl`; a retry with the same key, caller and body gets that answer again
//! (with `idempotent-replayed: true`) without running. The same key with another body is
//! 422 / INVALID_ARGUMENT; a retry while the first request still runs is 409 / ABORTED.
//!
//! The layer sits on the router, after the access policy: only routed writes (rows with
//! `operations::Effect::Write`) by authenticated callers take part. Keys are scoped to the
//! caller, so another caller's key is simply a new key; a caller holds at most
//! `idempotency.max_keys_per_caller` live keys (beyond: 429 / RESOURCE_EXHAUSTED
//! `IDEMPOTENCY_KEY_QUOTA`, and the operation does not run). Anonymous requests, reads
//! and operations that issue credentials ignore keys, so no stored answer ever holds a
//! token.
//!
//! Only answers that will not change on a retry are kept: 2xx and the deterministic
//! client errors 422 and 409 (taken, precondition; gRPC OK, INVALID_ARGUMENT,
//! ALREADY_EXISTS, FAILED_PRECONDITION). Anything else wrote nothing — units of database
//! work are atomic — so the key is released and a retry runs afresh; except that an
//! answer after a committed write is always kept, whatever it is.
//!
//! Each claim carries a fencing token (`db::Fence`): the request's writes commit only
//! while its claim still holds, and a claim whose write committed is never taken over, so
//! a key's operation commits at most once even when a stalled request's claim is taken
//! over after its lease. Claim, run and record happen on a task the lifecycle tracks
//! (shutdown waits for it), holding the request's load-shedding place and bounded by its
//! deadline: a client that disconnects after the write still leaves its answer recorded
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
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
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
    context::{self, Protocol},
    db::Store,
    error::{self, AppError, Reason, layer_error},
    middleware::{shed, timeout},
    operations::{Effect, Identified},
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
    max_keys_per_caller: u64,
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
            max_keys_per_caller: settings.idempotency.max_keys_per_caller,
        }
    }
}

/// What runs after this layer (the route).
type Inner = BoxCloneSyncService<Request, Response, Infallible>;

/// A route layer of its own rather than `from_fn`: its work runs on a task of its own,
/// which needs an owned inner service.
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

impl Service<Request> for Idempotent {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each call drives a clone of the inner service with `oneshot`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let (inner, idempotency) = (self.inner.clone(), self.idempotency.clone());
        Box::pin(async move { Ok(guard(idempotency, request, inner).await) })
    }
}

/// Passes through requests without a key, and requests a key means nothing to.
async fn guard(idempotency: Idempotency, request: Request, next: Inner) -> Response {
    let Some(value) = request.headers().get(HEADER) else {
        return call(next, request).await;
    };
    let is_write = request
        .extensions()
        .get::<Identified>()
        .and_then(Identified::operation)
        .is_some_and(|op| op.effect == Effect::Write);
    let caller = match request.extensions().get::<Auth>() {
        Some(Auth::Authenticated(principal)) => Some(principal.user_id),
        _ => None,
    };
    let Some(user_id) = caller.filter(|_| is_write) else {
        return call(next, request).await;
    };
    let protocol = Protocol::of(&request);
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
    let (parts, body) = request.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return unreadable_body(protocol, &e),
    };
    let key = KeyRef {
        scope: format!("user:{user_id}").into(),
        key: key.into(),
        fingerprint: fingerprint(&parts.method, parts.uri.path(), &bytes).into(),
    };
    let deadline = parts.extensions.get::<timeout::Deadline>().copied();
    // Held by the task: work that outlives its caller still counts as in flight.
    let place = parts.extensions.get::<shed::Place>().cloned();
    let request = Request::from_parts(parts, Body::from(bytes));
    let store = idempotency.store.clone();
    let work = async move {
        let _place = place;
        run(idempotency, key, protocol, deadline, request, next).await
    };
    let task = store.spawn_tracked(context::carry(work.in_current_span()));
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
    deadline: Option<timeout::Deadline>,
    request: Request,
    next: Inner,
) -> Response {
    let store = &idempotency.store;
    let claimed = store::claim(
        store,
        &key,
        idempotency.ttl,
        idempotency.lease,
        idempotency.max_keys_per_caller,
    );
    let claim = match claimed.await {
        Ok(Claim::Owned(claim)) => claim,
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
    };

    let fence = store::fence(&key, &claim);
    let answered = fence.scope(async {
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.at, call(next, request))
                .await
                .ok(),
            None => Some(call(next, request).await),
        }
    });
    let Some(response) = answered.await else {
        // Out of time: the answer is lost. Unless a write committed under the claim, the
        // key is free again; if one did, the key stays claimed (retries get 409) until it
        // expires, since running the operation again would apply it twice.
        if !fence.committed() {
            let _ = store::release(store, &key, &claim).await;
        }
        let after = deadline.map_or(Duration::ZERO, |d| d.after);
        return timeout::timed_out(protocol, after);
    };
    let (parts, body) = response.into_parts();
    let collected = match Limited::new(body, MAX_KEPT_ANSWER).collect().await {
        Ok(collected) => collected,
        Err(e) => {
            tracing::warn!(error = %e, "answer to a keyed request could not be kept");
            if !fence.committed() {
                let _ = store::release(store, &key, &claim).await;
            }
            return AppError::internal(anyhow::anyhow!("unreadable answer: {e}"))
                .into_response_for(protocol);
        }
    };
    let trailers = collected.trailers().cloned();
    let bytes = collected.to_bytes();
    let keep = fence.committed() || worth_replaying(protocol, &parts, trailers.as_ref());
    let kept = if keep {
        let answer = Stored {
            status: i32::from(parts.status.as_u16()),
            headers: Some(encode_headers(&parts.headers, trailers.as_ref())),
            body: bytes.to_vec(),
        };
        store::record(store, &key, &claim, answer).await
    } else {
        store::release(store, &key, &claim).await
    };
    if let Err(e) = kept {
        // The answer stands; only its replay is lost (a retry then waits out the lease).
        tracing::warn!(error = %e, "idempotency key not updated");
    }
    Response::from_parts(parts, body_of(bytes, trailers))
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

fn fingerprint(method: &http::Method, path: &str, body: &[u8]) -> String {
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

/// Answers a retry would get again: 2xx and the deterministic client errors (422; 409
/// for a taken name or an unmet precondition, not for a lost race). gRPC: OK,
/// INVALID_ARGUMENT, ALREADY_EXISTS, FAILED_PRECONDITION.
fn worth_replaying(
    protocol: Protocol,
    parts: &http::response::Parts,
    trailers: Option<&HeaderMap>,
) -> bool {
    if protocol.is_grpc() {
        let code = trailers
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| parts.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok());
        return parts.status == StatusCode::OK && matches!(code, Some(0 | 3 | 6 | 9));
    }
    match parts.status {
        status if status.is_success() => true,
        StatusCode::UNPROCESSABLE_ENTITY => true,
        StatusCode::CONFLICT => !matches!(
            parts.extensions.get::<Reason>(),
            Some(Reason::ConcurrentModification | Reason::IdempotencyKeyInUse) | None
        ),
        _ => false,
    }
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
