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

mod answer;
mod store;

use std::{convert::Infallible, time::Duration};

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderName, StatusCode},
    response::Response,
};
use http_body_util::{BodyExt, Limited};
use tonic::Code;
use tower::{ServiceExt, util::BoxCloneSyncService};
use tracing::Instrument;

pub use self::store::purge_expired;
use self::{
    answer::{
        MAX_KEY_LEN, body_of, encode_headers, fingerprint, replay, valid_key, worth_replaying,
    },
    store::{Claim, KeyRef, Stored},
};
use crate::{
    auth::Auth,
    context::{self, Protocol},
    db::Store,
    error::{self, AppError, Reason, layer_error},
    middleware::{body_limit, guard, timeout},
    operations::{Effect, Identified},
    state::AppState,
};

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// Answers larger than this are passed on but not kept (mutations answer one resource).
const MAX_KEPT_ANSWER: usize = 1 << 20;

/// The third step of the route layer (`server::routed`), for requests that carry a
/// key.
#[derive(Clone)]
pub struct Idempotency {
    store: Store,
    ttl: chrono::Duration,
    /// A claim this old belongs to a request that died before recording its answer.
    lease: chrono::Duration,
    max_keys_per_caller: u64,
}

impl Idempotency {
    pub fn new(state: &AppState) -> Self {
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

/// What runs after this step of the route layer (the route), owned: a keyed request
/// runs on a task of its own.
pub type Inner = BoxCloneSyncService<Request, Response, Infallible>;

/// Passes through requests without a key, and requests a key means nothing to.
pub async fn guard(idempotency: Idempotency, request: Request, next: Inner) -> Response {
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
        Err(e) => return body_limit::unreadable(protocol, &e),
    };
    let key = KeyRef {
        scope: format!("user:{user_id}").into(),
        key: key.into(),
        fingerprint: fingerprint(&parts.method, parts.uri.path(), &bytes).into(),
    };
    let admitted = parts.extensions.get::<guard::Admitted>().cloned();
    let deadline = admitted.as_ref().map(|admitted| admitted.deadline);
    // Held by the task: work that outlives its caller still counts as in flight.
    let place = admitted.and_then(|admitted| admitted.place);
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
