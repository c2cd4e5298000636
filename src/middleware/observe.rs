//! One span, one access-log line and one set of RED metrics per request, for every
//! protocol. The outcome of a gRPC call is its `grpc-status` — a header on trailers-only
//! responses, otherwise a trailer that arrives after the body — so the line and the
//! metrics are written when the response body finishes (or is dropped because the client
//! went away), not when the headers leave.

use std::{
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    body::Body,
    extract::{MatchedPath, Request},
    http::{HeaderMap, Method, Uri},
    middleware::Next,
    response::Response,
};
use bytes::Bytes;
use http_body::Frame;
use opentelemetry::propagation::Extractor;
use pin_project_lite::pin_project;
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{Protocol, request_id};
use crate::metrics::ACTIVE;

/// Probes, scrapes and doc viewers: logged at debug, no span exported, not counted as API
/// traffic.
fn is_quiet(path: &str) -> bool {
    matches!(path, "/livez" | "/readyz" | "/metrics")
        || path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.")
        || path.starts_with("/api/docs")
        || path == "/api/openapi.json"
}

/// Filled by layers deeper in the stack (auth, routing) so the outer layer can report them.
#[derive(Default)]
struct RequestInfo {
    principal: OnceLock<i64>,
    route: OnceLock<MatchedPath>,
    /// `package.Service/Method` (the request path after any base-path rewrite), recorded
    /// when a registered gRPC service matched.
    grpc_method: OnceLock<Uri>,
    /// Set from inside the gRPC-Web translation, where the gRPC trailers still exist
    /// (tonic-web folds them into the body before they reach this layer).
    grpc_code: OnceLock<i32>,
    /// Reading the request body failed because the client went away (connection closed
    /// or stream reset mid-body): whatever the handler then answered, the outcome is the
    /// client's cancellation.
    client_gone: OnceLock<()>,
}

#[derive(Clone, Default)]
struct InfoSlot(Arc<RequestInfo>);

pub fn record_principal<B>(request: &http::Request<B>, user_id: i64) {
    if let Some(slot) = request.extensions().get::<InfoSlot>() {
        let _ = slot.0.principal.set(user_id);
    }
}

/// Where the request body reports that its client went away.
#[derive(Clone)]
pub struct ClientGone(InfoSlot);

impl ClientGone {
    pub fn of<B>(request: &http::Request<B>) -> Option<ClientGone> {
        request
            .extensions()
            .get::<InfoSlot>()
            .cloned()
            .map(ClientGone)
    }

    pub fn mark(&self) {
        let _ = self.0.0.client_gone.set(());
    }
}

/// Where a layer inside the gRPC-Web translation reports the call's gRPC status.
#[derive(Clone)]
pub struct GrpcOutcome(InfoSlot);

impl GrpcOutcome {
    pub fn of<B>(request: &http::Request<B>) -> Option<GrpcOutcome> {
        request
            .extensions()
            .get::<InfoSlot>()
            .cloned()
            .map(GrpcOutcome)
    }

    pub fn record_headers(&self, headers: &HeaderMap) {
        if let Some(code) = grpc_code(headers) {
            let _ = self.0.0.grpc_code.set(code);
        }
    }
}

/// Route layer on the REST and gRPC routers: the matched template (`/api/articles/{slug}`,
/// or `/conduit.v1.ArticleService/{*rest}` for a registered gRPC service) names the
/// operation in metrics and spans, never a raw path a caller chose.
pub async fn record_route(route: Option<MatchedPath>, request: Request, next: Next) -> Response {
    if let (Some(route), Some(slot)) = (route, request.extensions().get::<InfoSlot>()) {
        if route.as_str().ends_with("/{*rest}") {
            let _ = slot.0.grpc_method.set(request.uri().clone());
        } else {
            let _ = slot.0.route.set(route);
        }
    }
    next.run(request).await
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

pub async fn observe(mut request: Request, next: Next) -> Response {
    let protocol = Protocol::of(&request);
    let request_id = request_id::from_headers(request.headers());
    let method = request.method().clone();
    let uri = request.uri().clone();
    let path = uri.path();
    let quiet = is_quiet(path);
    let name = if protocol.is_grpc() {
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
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::telemetry::trace_id_from_traceparent);
        Some(caller.map_or_else(crate::telemetry::new_trace_id, str::to_string))
    };
    if let Some(id) = &trace_id {
        span.record("trace_id", id.as_str());
    }
    if protocol.is_grpc()
        && let Some((service, rpc)) = name.split_once('/')
    {
        span.record("rpc.system", "grpc");
        span.record("rpc.service", service);
        span.record("rpc.method", rpc);
    }

    let info = InfoSlot::default();
    request.extensions_mut().insert(info.clone());
    // Built before the handler runs: if the caller goes away before the response starts,
    // dropping this still logs the request, counts it and restores the in-flight gauge.
    let client_ip = request
        .extensions()
        .get::<request_id::ClientIp>()
        .map(|c| c.0);
    let ids = request_id::Ids {
        request_id: request_id.clone(),
        trace_id: trace_id.clone(),
        client_ip,
    };
    let mut completion = Completion::start(
        protocol,
        method,
        uri.clone(),
        quiet,
        request_id,
        trace_id,
        client_ip,
        info,
        span.clone(),
    );
    let response = request_id::scope(ids, next.run(request).instrument(span)).await;
    completion.status = response.status().as_u16();
    completion.grpc_code = grpc_code(response.headers());
    // Even when the outcome is known now (REST, trailers-only gRPC), completion waits for
    // the body so latency covers the whole response.
    response.map(|body| {
        Body::new(ObservedBody {
            inner: body,
            completion: Some(completion),
        })
    })
}

/// Metric label values and instruments without per-request allocation: every value is
/// from a bounded set (route templates, registered methods, status codes, code names), so
/// each is interned once for the life of the process, and the counter and histogram of
/// each label set are registered once and reused.
mod labels {
    use std::{
        collections::{HashMap, HashSet},
        sync::{LazyLock, RwLock},
    };

    use metrics::{Counter, Histogram};

    use crate::metrics::{DURATION, REQUESTS};

    type Labels = (&'static str, &'static str, &'static str);

    static STRINGS: LazyLock<RwLock<HashSet<&'static str>>> = LazyLock::new(Default::default);
    static OPERATIONS: LazyLock<RwLock<HashMap<&'static str, HashMap<String, &'static str>>>> =
        LazyLock::new(Default::default);
    static INSTRUMENTS: LazyLock<RwLock<HashMap<Labels, (Counter, Histogram)>>> =
        LazyLock::new(Default::default);

    /// Only call with values from a bounded set: each distinct one lives forever.
    pub fn intern(value: &str) -> &'static str {
        if let Some(found) = STRINGS.read().ok().and_then(|s| s.get(value).copied()) {
            return found;
        }
        let Ok(mut strings) = STRINGS.write() else {
            return "unknown";
        };
        if let Some(found) = strings.get(value) {
            return found;
        }
        let leaked: &'static str = Box::leak(value.into());
        strings.insert(leaked);
        leaked
    }

    /// `"{method} {route}"`, interned.
    pub fn operation(method: &'static str, route: &str) -> &'static str {
        let found = OPERATIONS
            .read()
            .ok()
            .and_then(|o| o.get(method).and_then(|routes| routes.get(route).copied()));
        if let Some(found) = found {
            return found;
        }
        let label = intern(&format!("{method} {route}"));
        if let Ok(mut operations) = OPERATIONS.write() {
            operations
                .entry(method)
                .or_default()
                .insert(route.to_string(), label);
        }
        label
    }

    pub fn status(status: u16) -> &'static str {
        match status {
            200 => "200",
            201 => "201",
            204 => "204",
            _ => intern(&status.to_string()),
        }
    }

    pub fn instruments(
        protocol: &'static str,
        operation: &'static str,
        outcome: &'static str,
    ) -> (Counter, Histogram) {
        let labels = (protocol, operation, outcome);
        if let Some(found) = INSTRUMENTS
            .read()
            .ok()
            .and_then(|i| i.get(&labels).cloned())
        {
            return found;
        }
        let set = [
            ("protocol", protocol),
            ("operation", operation),
            ("outcome", outcome),
        ];
        let made = (
            metrics::counter!(REQUESTS, &set),
            metrics::histogram!(DURATION, &set),
        );
        if let Ok(mut instruments) = INSTRUMENTS.write() {
            instruments.insert(labels, made.clone());
        }
        made
    }
}

fn grpc_code(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// The canonical gRPC code name (`NOT_FOUND`), as grpc-go and the OpenTelemetry
/// conventions spell it.
fn grpc_code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// Server-side failures by the OpenTelemetry RPC and HTTP conventions (a 4xx or a
/// NOT_FOUND is the caller's problem, not an error of this span).
fn is_server_error(status: u16, grpc_code: Option<i32>) -> bool {
    match grpc_code {
        Some(code) => matches!(code, 2 | 4 | 12 | 13 | 14 | 15),
        None => status >= 500,
    }
}

struct Completion {
    started: Instant,
    protocol: Protocol,
    method: Method,
    uri: Uri,
    quiet: bool,
    request_id: String,
    trace_id: Option<String>,
    client_ip: Option<std::net::IpAddr>,
    status: u16,
    grpc_code: Option<i32>,
    info: InfoSlot,
    span: Span,
}

/// What a request is while its outcome is unknown: the caller went away first.
const CLIENT_CLOSED: u16 = 499;

impl Completion {
    #[allow(clippy::too_many_arguments)]
    fn start(
        protocol: Protocol,
        method: Method,
        uri: Uri,
        quiet: bool,
        request_id: String,
        trace_id: Option<String>,
        client_ip: Option<std::net::IpAddr>,
        info: InfoSlot,
        span: Span,
    ) -> Self {
        if !quiet {
            metrics::gauge!(ACTIVE, "protocol" => protocol.as_str()).increment(1.0);
        }
        Completion {
            started: Instant::now(),
            protocol,
            method,
            uri,
            quiet,
            request_id,
            trace_id,
            client_ip,
            status: CLIENT_CLOSED,
            grpc_code: None,
            info,
            span,
        }
    }

    /// Bounded label values: a registered gRPC method or a REST route template, never a
    /// raw path or method a caller chose (they would let any caller mint new series).
    fn operation(&self, code: Option<i32>) -> &'static str {
        if self.protocol.is_grpc() {
            match self.info.0.grpc_method.get() {
                Some(uri) if code != Some(tonic::Code::Unimplemented as i32) => {
                    labels::intern(uri.path().trim_start_matches('/'))
                }
                _ => "unknown",
            }
        } else {
            let method = match self.method {
                Method::GET => "GET",
                Method::POST => "POST",
                Method::PUT => "PUT",
                Method::DELETE => "DELETE",
                Method::PATCH => "PATCH",
                Method::HEAD => "HEAD",
                Method::OPTIONS => "OPTIONS",
                _ => "OTHER",
            };
            let route = self
                .info
                .0
                .route
                .get()
                .map_or("unmatched", MatchedPath::as_str);
            labels::operation(method, route)
        }
    }
}

impl Drop for Completion {
    /// Runs when the body ends, fails, or is dropped unfinished (client cancelled).
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        // A client that went away while sending its body is a cancellation, not the
        // error the handler made of the broken body.
        if self.info.0.client_gone.get().is_some() {
            self.status = CLIENT_CLOSED;
            self.grpc_code = self
                .protocol
                .is_grpc()
                .then_some(tonic::Code::Cancelled as i32);
        }
        // gRPC-Web outcomes come from inside the translation; a gRPC body dropped before
        // its trailers means the client went away.
        let code = match self
            .grpc_code
            .or_else(|| self.info.0.grpc_code.get().copied())
        {
            None if self.protocol.is_grpc() => Some(tonic::Code::Cancelled as i32),
            other => other,
        };
        let operation = self.operation(code);
        let outcome = match code {
            Some(c) => grpc_code_name(c),
            None => labels::status(self.status),
        };

        self.span.record("http.response.status_code", self.status);
        if let Some(c) = code {
            self.span.record("rpc.grpc.status_code", c);
        } else if let Some(route) = self.info.0.route.get() {
            self.span.record("http.route", route.as_str());
            self.span.record("otel.name", operation);
            if crate::telemetry::exporting() {
                use opentelemetry::trace::TraceContextExt;
                // The OpenTelemetry span started before routing; `otel.name` only names
                // spans that have not, so rename the started one directly.
                self.span.context().span().update_name(operation);
            }
        }
        if is_server_error(self.status, code) {
            self.span.record("otel.status_code", "ERROR");
        }

        if !self.quiet {
            let protocol = self.protocol.as_str();
            let (requests, duration) = labels::instruments(protocol, operation, outcome);
            requests.increment(1);
            duration.record(elapsed.as_secs_f64());
            metrics::gauge!(ACTIVE, "protocol" => protocol).decrement(1.0);
        }

        let principal = self.info.0.principal.get().copied();
        let grpc_code = code.map(grpc_code_name);
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        macro_rules! access {
            ($level:expr) => {
                tracing::event!(
                    target: "access",
                    parent: &self.span,
                    $level,
                    protocol = self.protocol.as_str(),
                    method = %self.method,
                    path = self.uri.path(),
                    operation,
                    status = self.status,
                    grpc_code,
                    latency_ms,
                    request_id = %self.request_id,
                    trace_id = self.trace_id.as_deref(),
                    client_ip = self.client_ip.map(tracing::field::display),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_code_names() {
        assert_eq!(grpc_code_name(0), "OK");
        assert_eq!(grpc_code_name(5), "NOT_FOUND");
        assert_eq!(grpc_code_name(16), "UNAUTHENTICATED");
        assert_eq!(grpc_code_name(99), "UNKNOWN");
        assert_eq!(grpc_code_name(-1), "UNKNOWN");
    }

    #[test]
    fn server_errors_by_convention() {
        assert!(is_server_error(500, None));
        assert!(!is_server_error(404, None));
        assert!(is_server_error(200, Some(13)));
        assert!(!is_server_error(200, Some(5)), "NOT_FOUND is the caller's");
    }
}
