//! Writing a request's access line, RED metrics and span status once its outcome is
//! known: when the response body ends, or when it is dropped because the caller left.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    body::Body,
    extract::MatchedPath,
    http::{Method, Uri},
};
use bytes::Bytes;
use http_body::Frame;
use pin_project_lite::pin_project;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::ACTIVE;
use super::{
    info::InfoSlot,
    labels::{self, grpc_code, grpc_code_name, is_server_error},
};
use crate::{
    context::{Ids, Protocol},
    metrics::handles::Kept,
};

pub(super) struct Completion {
    started: Instant,
    protocol: Protocol,
    method: Method,
    uri: Uri,
    quiet: bool,
    /// The request's ids, shared with the task that serves it (`context`).
    ids: Arc<Ids>,
    pub(super) status: u16,
    pub(super) grpc_code: Option<i32>,
    info: InfoSlot,
    span: Span,
}

/// What a request is while its outcome is unknown: the caller went away first.
const CLIENT_CLOSED: u16 = 499;

impl Completion {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(
        protocol: Protocol,
        method: Method,
        uri: Uri,
        quiet: bool,
        ids: Arc<Ids>,
        info: InfoSlot,
        span: Span,
    ) -> Self {
        if !quiet {
            active(protocol.as_str()).increment(1.0);
        }
        Completion {
            started: Instant::now(),
            protocol,
            method,
            uri,
            quiet,
            ids,
            status: CLIENT_CLOSED,
            grpc_code: None,
            info,
            span,
        }
    }

    /// Writes the request's ids into an error answer, and logs an internal failure with
    /// them (`error::quote_ids`).
    pub(super) fn quote_ids(&self, response: &mut axum::response::Response) {
        let ids = crate::error::AnswerIds {
            request_id: &self.ids.request_id,
            trace_id: self.ids.trace_id.as_deref(),
            span: &self.span,
        };
        crate::error::quote_ids(response, self.protocol, ids);
    }

    /// Bounded label values: a registered gRPC method or a REST route template, never a
    /// raw path or method a caller chose (they would let any caller mint new series).
    fn operation(&self, code: Option<i32>) -> &'static str {
        if self.protocol.is_rpc() {
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
                .is_rpc()
                .then_some(tonic::Code::Cancelled as i32);
        }
        // gRPC-Web and Connect outcomes come from inside the translations; a body dropped before
        // its trailers means the client went away.
        let code = match self
            .grpc_code
            .or_else(|| self.info.0.grpc_code.get().copied())
        {
            None if self.protocol.is_rpc() => Some(tonic::Code::Cancelled as i32),
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
            active(protocol).decrement(1.0);
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
                    request_id = %self.ids.request_id,
                    trace_id = self.ids.trace_id.as_deref(),
                    client_ip = self.ids.client_ip.map(tracing::field::display),
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
    pub(super) struct ObservedBody {
        #[pin]
        pub(super) inner: Body,
        pub(super) completion: Option<Completion>,
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
                    && done.protocol.is_rpc()
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

/// The in-flight gauge of `protocol`.
fn active(protocol: &'static str) -> metrics::Gauge {
    static GAUGES: Kept<&str, metrics::Gauge> = Kept::new();
    GAUGES.get(protocol, || metrics::gauge!(ACTIVE, "protocol" => protocol))
}
