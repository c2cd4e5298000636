//! One span, one access-log line and one set of RED metrics per request, for every
//! protocol. The outcome of a gRPC call is its `grpc-status` — a header on trailers-only
//! responses, otherwise a trailer that arrives after the body — so the line and the
//! metrics are written when the response body finishes (or is dropped because the client
//! went away), not when the headers leave.

mod completion;
mod info;
mod labels;

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use axum::{
    body::Body,
    extract::{MatchedPath, Request},
    http::{HeaderMap, HeaderName, HeaderValue},
    response::Response,
};
use opentelemetry::propagation::Extractor;
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};
use tracing::{Instrument, Span, field::Empty, instrument::Instrumented};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use completion::{Completion, ObservedBody};
use info::InfoSlot;
pub use info::{ClientGone, GrpcOutcome, record_principal};
use labels::grpc_code;

use super::request_id;
use crate::{
    context::{self, Protocol},
    operations::Operations,
};

/// First step of the route layer (`server::routed`): the matched template
/// (`/api/articles/{slug}`, or `/conduit.v1.ArticleService/{*rest}` for a registered gRPC
/// service) names the operation in metrics and spans, never a raw path a caller chose.
pub fn record_route(request: &Request) {
    let extensions = request.extensions();
    if let (Some(route), Some(slot)) = (
        extensions.get::<MatchedPath>(),
        extensions.get::<InfoSlot>(),
    ) {
        if route.as_str().ends_with("/{*rest}") {
            let _ = slot.0.grpc_method.set(request.uri().clone());
        } else {
            let _ = slot.0.route.set(route.clone());
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

macro_rules! request_span {
    ($level:expr, $name:expr, $protocol:expr, $method:expr, $path:expr, $request_id:expr) => {
        tracing::span!(
            $level,
            "request",
            otel.name = %$name,
            otel.kind = "server",
            otel.status_code = Empty,
            protocol = $protocol.as_str(),
            request_id = %$request_id,
            trace_id = Empty,
            http.request.method = %$method,
            url.path = %$path,
            http.route = Empty,
            http.response.status_code = Empty,
            rpc.system = Empty,
            rpc.service = Empty,
            rpc.method = Empty,
            rpc.grpc.status_code = Empty,
        )
    };
}

/// The layer, outermost in the stack. Probes, scrapes and doc viewers (the operations
/// table's probe and tooling rows) are logged at debug, export no span and are not
/// counted as API traffic.
///
/// A service with a future of its own rather than `from_fn`, which boxed a `Next` and
/// the future of every request.
#[derive(Clone, Copy)]
pub struct ObserveLayer(&'static Operations);

impl ObserveLayer {
    pub fn new(operations: &'static Operations) -> Self {
        Self(operations)
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            operations: self.0,
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    operations: &'static Operations,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Observed<S::Future>;

    /// Outside the request's span and ids: the layers' `poll_ready` must not log.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let (answer, span, ids) = begin(self.operations, &mut request);
        // Everything below runs inside the request's span and with its ids: the work
        // the layers do in `call`, here, and their futures, below.
        let called =
            span.in_scope(|| context::sync_scope(ids.clone(), || self.inner.call(request)));
        Observed {
            inner: context::scope(ids, called.instrument(span)),
            answer: Some(answer),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct Observed<F> {
        #[pin]
        inner: TaskLocalFuture<Arc<context::Ids>, Instrumented<F>>,
        answer: Option<Answer>,
    }
}

impl<F> Future for Observed<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.inner.poll(cx));
        Poll::Ready(Ok(match this.answer.take() {
            Some(answer) => answer.finish(response),
            None => response,
        }))
    }
}

/// What the answer needs from the request: its id, and the completion that logs and
/// counts it.
pub struct Answer {
    protocol: Protocol,
    id_header: HeaderValue,
    completion: Completion,
}

/// The work before the inner service: the request id, the span, the trace id, the
/// completion that will log and count the request.
fn begin(operations: &Operations, request: &mut Request) -> (Answer, Span, Arc<context::Ids>) {
    let protocol = Protocol::of(request);
    let id_header = request_id::ensure(request.headers_mut());
    let request_id = id_header.to_str().unwrap_or_default().to_string();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let path = uri.path();
    let quiet = operations.is_quiet(path);
    let name = if protocol.is_rpc() {
        path.trim_start_matches('/')
    } else {
        method.as_str()
    };
    // Exported spans carry the OpenTelemetry attributes. Without an exporter a span is
    // only context for human-readable log lines; JSON lines take the request's ids from
    // the task, so then there is no span at all.
    let span = match (crate::telemetry::exporting(), quiet) {
        (true, true) => request_span!(
            tracing::Level::DEBUG,
            name,
            protocol,
            method,
            path,
            request_id
        ),
        (true, false) => request_span!(
            tracing::Level::INFO,
            name,
            protocol,
            method,
            path,
            request_id
        ),
        (false, _) if !crate::telemetry::text_logs() => Span::none(),
        (false, true) => {
            tracing::debug_span!("request", request_id = %request_id, trace_id = Empty)
        }
        (false, false) => {
            tracing::info_span!("request", request_id = %request_id, trace_id = Empty)
        }
    };
    // Continue the caller's trace: W3C traceparent/tracestate, from REST headers or gRPC
    // metadata alike (metadata are HTTP/2 headers). Without an exporter there is no
    // OpenTelemetry context to maintain: the trace id is the caller's or a fresh one.
    let trace_id = if crate::telemetry::exporting() {
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(request.headers()))
        });
        let _ = span.set_parent(parent);
        crate::telemetry::trace_id_of(&span)
    } else {
        let caller = request
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::telemetry::trace_id_from_traceparent);
        Some(caller.map_or_else(crate::telemetry::new_trace_id, str::to_string))
    };
    if let Some(id) = &trace_id {
        span.record("trace_id", id.as_str());
    }
    if protocol.is_rpc()
        && let Some((service, rpc)) = name.split_once('/')
    {
        let system = if protocol == Protocol::Connect {
            "connect_rpc"
        } else {
            "grpc"
        };
        span.record("rpc.system", system);
        span.record("rpc.service", service);
        span.record("rpc.method", rpc);
    }

    let info = InfoSlot::default();
    request.extensions_mut().insert(info.clone());
    // Built before the handler runs: if the caller goes away before the response starts,
    // dropping this still logs the request, counts it and restores the in-flight gauge.
    let client_ip = request.extensions().get::<context::ClientIp>().map(|c| c.0);
    let ids = Arc::new(context::Ids {
        request_id,
        trace_id,
        client_ip,
    });
    let completion = Completion::start(
        protocol,
        method,
        uri.clone(),
        quiet,
        ids.clone(),
        info,
        span.clone(),
    );
    (
        Answer {
            protocol,
            id_header,
            completion,
        },
        span,
        ids,
    )
}

impl Answer {
    fn finish(self, mut response: Response) -> Response {
        let Answer {
            protocol,
            mut id_header,
            mut completion,
        } = self;
        completion.quote_ids(&mut response);
        // Every answer names its request, errors from any layer below included. Each id is
        // new, so HTTP/2 must not index it: indexed, every answer would insert one more
        // entry into the connection's HPACK table and push out those that repeat (the
        // content type, the CORS headers), which would then be sent in full again.
        id_header.set_sensitive(true);
        response
            .headers_mut()
            .entry(request_id::HEADER)
            .or_insert(id_header);
        completion.status = response.status().as_u16();
        // A Connect error's code travels with it (`error::connect_error`); a Connect success
        // is reported from inside the translation, like gRPC-Web's outcomes.
        completion.grpc_code = grpc_code(response.headers()).or_else(|| {
            (protocol == Protocol::Connect)
                .then(|| response.extensions().get::<tonic::Status>())
                .flatten()
                .map(|status| status.code() as i32)
        });
        // Even when the outcome is known now (REST, trailers-only gRPC), completion waits for
        // the body so latency covers the whole response.
        response.map(|body| {
            Body::new(ObservedBody {
                inner: body,
                completion: Some(completion),
            })
        })
    }
}

/// A `HeaderName`, not a `&str` that each request's lookup would parse first.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

pub const REQUESTS: &str = "http_server_requests_total";
pub const DURATION: &str = "http_server_request_duration_seconds";
pub const ACTIVE: &str = "http_server_active_requests";

/// Describes this module's metrics to the recorder (a no-op until one is installed).
pub fn describe_metrics() {
    metrics::describe_counter!(
        REQUESTS,
        "Requests served, by protocol, operation and outcome"
    );
    metrics::describe_histogram!(
        DURATION,
        metrics::Unit::Seconds,
        "Request latency until the response body ends"
    );
    metrics::describe_gauge!(ACTIVE, "Requests in flight");
}
