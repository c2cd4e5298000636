//! One span and one access-log line per request, for every protocol. The outcome of a gRPC
//! call is its `grpc-status` — a header on trailers-only responses, otherwise a trailer
//! that arrives after the body — so the line is written when the response body finishes
//! (or is dropped because the client went away), not when the headers leave.

use std::{
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderMap, Method},
    middleware::Next,
    response::Response,
};
use bytes::Bytes;
use http_body::Frame;
use pin_project_lite::pin_project;
use tracing::{Instrument, Span, field::Empty};

use super::{Protocol, request_id};

/// Paths that probes, scrapers and doc viewers hit: logged at debug, not info.
fn is_quiet(path: &str) -> bool {
    matches!(path, "/livez" | "/readyz" | "/metrics")
        || path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/api/docs")
        || path == "/api/openapi.json"
}

/// Filled by the auth layer (deeper in the stack) so the access line can name the caller.
#[derive(Clone, Default)]
struct PrincipalSlot(Arc<OnceLock<i64>>);

pub fn record_principal<B>(request: &http::Request<B>, user_id: i64) {
    if let Some(slot) = request.extensions().get::<PrincipalSlot>() {
        let _ = slot.0.set(user_id);
    }
}

pub async fn observe(mut request: Request, next: Next) -> Response {
    let protocol = Protocol::of(&request);
    let request_id = request_id::from_headers(request.headers());
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let span = tracing::info_span!(
        "request",
        protocol = protocol.as_str(),
        method = %method,
        path = %path,
        request_id = %request_id,
        status = Empty,
        grpc_code = Empty,
    );
    let principal = PrincipalSlot::default();
    request.extensions_mut().insert(principal.clone());

    let started = Instant::now();
    let response = request_id::scope(
        request_id.clone(),
        next.run(request).instrument(span.clone()),
    )
    .await;

    let status = response.status().as_u16();
    span.record("status", status);
    let completion = Completion {
        started,
        protocol,
        method,
        quiet: is_quiet(&path),
        path,
        request_id,
        status,
        grpc_code: grpc_code(response.headers()),
        principal,
        span,
    };
    // Even when the outcome is known now (REST, trailers-only gRPC), the line waits for the
    // body so that latency covers the whole response.
    response.map(|body| {
        Body::new(ObservedBody {
            inner: body,
            completion: Some(completion),
        })
    })
}

fn grpc_code(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

struct Completion {
    started: Instant,
    protocol: Protocol,
    method: Method,
    path: String,
    quiet: bool,
    request_id: String,
    status: u16,
    grpc_code: Option<i32>,
    principal: PrincipalSlot,
    span: Span,
}

impl Drop for Completion {
    /// Runs when the body ends, fails, or is dropped unfinished (client cancelled).
    fn drop(&mut self) {
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        // A gRPC body dropped before its trailers means the client went away.
        let code = match self.grpc_code {
            None if self.protocol.is_grpc() => Some(tonic::Code::Cancelled as i32),
            other => other,
        };
        let grpc_code = code.map(|c| format!("{:?}", tonic::Code::from_i32(c)));
        if let Some(code) = &grpc_code {
            self.span.record("grpc_code", code.as_str());
        }
        let principal = self.principal.0.get().copied();
        macro_rules! access {
            ($level:expr) => {
                tracing::event!(
                    target: "access",
                    parent: &self.span,
                    $level,
                    protocol = self.protocol.as_str(),
                    method = %self.method,
                    path = %self.path,
                    status = self.status,
                    grpc_code = grpc_code.as_deref(),
                    latency_ms,
                    request_id = %self.request_id,
                    principal,
                    "request finished"
                )
            };
        }
        if self.quiet {
            access!(tracing::Level::DEBUG);
        } else {
            access!(tracing::Level::INFO);
        }
    }
}

pin_project! {
    struct ObservedBody {
        #[pin]
        inner: Body,
        completion: Option<Completion>,
    }
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(mut done) = this.completion.take()
                {
                    done.grpc_code = grpc_code(trailers).or(done.grpc_code);
                }
            }
            Poll::Ready(None) => {
                this.completion.take();
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut done) = this.completion.take()
                    && done.protocol.is_grpc()
                    && done.grpc_code.is_none()
                {
                    done.grpc_code = Some(tonic::Code::Internal as i32);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
