//! One thread's accept loop and the connections it serves: the connection limit, each
//! connection's hygiene (handshake and stall timeouts, the client's address), the
//! connections handed over by other per-core threads, and the drain.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderValue, header},
};
use futures_util::TryFutureExt;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::ServerSettings;

use super::{
    App,
    balance::{Handoff, Load, Placed, Workers},
    listen::Shared,
};

/// Serving tonic through axum loses tonic Server's transport settings; restore them.
pub(super) fn connection_builder(settings: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let http2 = &mut builder.http2();
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(settings.http2_keepalive_interval))
        .keep_alive_timeout(settings.http2_keepalive_timeout)
        .max_concurrent_streams(settings.http2_max_concurrent_streams)
        // What h2 buffers per stream for a client that is not reading: with the stream
        // limit, a bound on a connection's buffered bytes (hyper's default is 400 KiB).
        .max_send_buf_size(64 * 1024)
        .adaptive_window(settings.http2_adaptive_window);
    if settings.http2_initial_stream_window_bytes > 0 {
        http2.initial_stream_window_size(settings.http2_initial_stream_window_bytes);
    }
    if settings.http2_initial_connection_window_bytes > 0 {
        http2.initial_connection_window_size(settings.http2_initial_connection_window_bytes);
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(settings.handshake_timeout);
    builder
}

/// A per-core thread's place among the others: its index, their loads and its inbox of
/// connections handed over (`balance`).
pub(super) struct Lane {
    pub(super) me: usize,
    pub(super) workers: Arc<Workers>,
    pub(super) inbox: tokio::sync::mpsc::UnboundedReceiver<Handoff>,
}

/// The next connection handed to this thread; never, without a lane.
async fn handed_over(lane: &mut Option<Lane>) -> Option<Handoff> {
    match lane {
        Some(lane) => lane.inbox.recv().await,
        None => std::future::pending().await,
    }
}

/// One socket's accept loop, on the runtime it runs on, until `stop`; then that socket's
/// drain: it closes, and its connections get `server.shutdown_timeout` to finish.
pub(super) async fn accept(
    listener: TcpListener,
    app: App,
    shared: Arc<Shared>,
    stop: CancellationToken,
    mut lane: Option<Lane>,
) {
    let settings = &shared.settings;
    let graceful = GracefulShutdown::new();
    // Connection tasks are kept so the ones still open at the shutdown timeout can be
    // aborted rather than outliving the server.
    let mut connections = tokio::task::JoinSet::new();
    let slots = &shared.slots;
    let mut accept_errors = AcceptErrors::default();
    let mut at_limit = false;
    loop {
        // A slot first: at the limit, new connections wait in the listen backlog (told
        // once per episode, not per connection).
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                // The episode ends once half the slots are free again.
                if at_limit && slots.available_permits() >= settings.max_connections / 2 {
                    tracing::info!("connections below the limit again");
                    at_limit = false;
                }
                slot
            }
            Err(_) => {
                if !at_limit {
                    tracing::warn!(
                        max_connections = settings.max_connections,
                        "connection limit reached; new connections wait until one closes"
                    );
                    at_limit = true;
                }
                tokio::select! {
                    acquired = slots.clone().acquire_owned() => match acquired {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    // A connection handed over holds a slot already: serving it is what
                    // may free the slots this thread waits for.
                    Some(handoff) = handed_over(&mut lane) => {
                        take_over(handoff, &app, &shared, &graceful, &mut connections);
                        continue;
                    }
                    () = stop.cancelled() => break,
                }
            }
        };
        let (stream, peer, slot, load) = tokio::select! {
            // Reap finished connections so the set stays the size of the open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            // A connection another thread accepted, with its own slot (this one's is
            // given back).
            Some(handoff) = handed_over(&mut lane) => {
                take_over(handoff, &app, &shared, &graceful, &mut connections);
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    accept_errors.recovered();
                    match &lane {
                        Some(lane) => match lane.workers.place(lane.me, stream, peer, slot) {
                            Placed::Here(stream, slot, load) => (stream, peer, slot, Some(load)),
                            Placed::Away => continue,
                        },
                        None => (stream, peer, slot, None),
                    }
                }
                Err(e) => {
                    // e.g. EMFILE: back off instead of spinning; the listener stays usable.
                    tokio::time::sleep(accept_errors.failed(&e)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        serve_connection(
            Accepted {
                stream,
                peer,
                slot,
                load,
            },
            &app,
            &shared,
            &graceful,
            &mut connections,
        );
    }
    drop(listener);
    // No thread hands this one more connections (a later handoff is served by its
    // sender); the ones already handed over are served, and drained with the rest.
    if let Some(lane) = &mut lane {
        lane.inbox.close();
        lane.workers.retire(lane.me);
        while let Ok(handoff) = lane.inbox.try_recv() {
            take_over(handoff, &app, &shared, &graceful, &mut connections);
        }
    }
    tracing::info!("listener closed; waiting for in-flight requests");
    if tokio::time::timeout(settings.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?settings.shutdown_timeout, "requests still open at shutdown timeout; closing them");
        connections.abort_all();
    }
}

/// Serves a connection another thread accepted and handed to this one.
fn take_over(
    handoff: Handoff,
    app: &App,
    shared: &Arc<Shared>,
    graceful: &GracefulShutdown,
    connections: &mut tokio::task::JoinSet<()>,
) {
    match Workers::received(handoff) {
        Ok((stream, peer, slot, load)) => {
            let accepted = Accepted {
                stream,
                peer,
                slot,
                load: Some(load),
            };
            serve_connection(accepted, app, shared, graceful, connections);
        }
        Err(e) => tracing::debug!(error = %e, "a connection handed over is unusable"),
    }
}

/// A connection to serve on this thread: accepted here or handed over, with its place
/// under the connection limit and (per-core) its count against this thread.
struct Accepted {
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    slot: tokio::sync::OwnedSemaphorePermit,
    load: Option<Load>,
}

/// Serves one connection on a task of this thread's runtime, watched for the drain.
fn serve_connection(
    accepted: Accepted,
    app: &App,
    shared: &Arc<Shared>,
    graceful: &GracefulShutdown,
    connections: &mut tokio::task::JoinSet<()>,
) {
    let Accepted {
        stream,
        peer,
        slot,
        load,
    } = accepted;
    let settings = &shared.settings;
    if settings.tcp_nodelay
        && let Err(e) = stream.set_nodelay(true)
    {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
    let progress = crate::connection::Progress::default();
    let stalls = crate::connection::Stalls::default();
    let service = {
        let (app, shared, started) = (OneAtATime::new(app), shared.clone(), progress.clone());
        let watched = stalls.clone();
        hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            started.mark();
            let mut request = request.map(Body::new);
            let trusted = &shared.trusted_proxies;
            let client = crate::auth::attempts::client_ip(peer.ip(), request.headers(), trusted);
            request
                .extensions_mut()
                .insert(crate::context::ClientIp(client));
            let watched = watched.clone();
            let http1 = request.version() < http::Version::HTTP_2;
            let readiness = shared.readiness.clone();
            app.call(request).map_ok(move |response| {
                let mut response = response.map(|body| watched.watch(body));
                if http1 && readiness.current().draining {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            })
        })
    };
    let io = crate::connection::Watched::new(stream, progress.clone());
    let connection = shared
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let connection = graceful.watch(connection);
    let handshake_timeout = settings.handshake_timeout;
    let send_timeout = settings.send_timeout;
    connections.spawn(async move {
        let (_slot, _load) = (slot, load);
        tokio::pin!(connection);
        let handshake = tokio::time::sleep(handshake_timeout);
        tokio::pin!(handshake);
        let mut handshaken = false;
        let mut check = tokio::time::interval((send_timeout / 2).min(Duration::from_secs(5)));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome = loop {
            tokio::select! {
                outcome = &mut connection => break outcome,
                () = &mut handshake, if !handshaken => {
                    if !progress.made() {
                        tracing::debug!(%peer, "closing a connection that sent no request");
                        return;
                    }
                    handshaken = true;
                }
                _ = check.tick() => {
                    if stalls.longest().is_some_and(|waited| waited > send_timeout) {
                        tracing::info!(%peer, ?send_timeout, "closing a connection whose client stopped reading its responses");
                        return;
                    }
                }
            }
        };
        if let Err(e) = outcome {
            tracing::debug!(%peer, error = %e, "connection closed with error");
        }
    });
}

/// A connection's copy of the app, called in place: hyper calls its service through `&self`,
/// and a clone of the whole stack per request (a boxed service, CORS settings with a `Vec`)
/// cost more than the layers' own work for a trivial request. A connection's requests
/// are dispatched one after another from its task, so the lock is never contended.
///
/// Over HTTP/2 the layers' `call` now runs on the connection's task rather than the
/// stream's: a panic there (above the guard's own catch) is caught here and answered 500,
/// so it cannot end every stream of the connection.
struct OneAtATime(std::sync::Mutex<App>);

type Called = futures_util::future::Either<
    futures_util::future::Either<
        <App as tower::Service<Request>>::Future,
        tower::util::Oneshot<App, Request>,
    >,
    std::future::Ready<Result<axum::response::Response, std::convert::Infallible>>,
>;

impl OneAtATime {
    fn new(app: &App) -> Self {
        Self(std::sync::Mutex::new(app.clone()))
    }

    fn call(&self, request: Request) -> Called {
        use futures_util::future::Either;
        use std::task::{Context, Poll, Waker};
        use tower::Service;
        let mut app = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // The stack is always ready (every layer defers to axum's router, which is).
            // A layer that someday is not: the request takes the copy that is waiting,
            // with whatever it reserved, and the connection keeps a fresh one.
            match app.poll_ready(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(Ok(())) => Either::Left(app.call(request)),
                Poll::Pending => {
                    Either::Right(crate::middleware::take_ready(&mut *app).oneshot(request))
                }
            }
        }));
        match called {
            Ok(future) => Either::Left(future),
            Err(_) => {
                tracing::error!("a layer panicked before the request's guards; answered 500");
                let mut answer = axum::response::Response::default();
                *answer.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                Either::Right(std::future::ready(Ok(answer)))
            }
        }
    }
}

/// Accept failures (descriptors exhausted, …): retried with a growing pause, logged when
/// they start and when they end, not once per attempt.
#[derive(Default)]
struct AcceptErrors {
    failures: u64,
}

impl AcceptErrors {
    fn failed(&mut self, error: &std::io::Error) -> std::time::Duration {
        if self.failures == 0 {
            tracing::warn!(%error, "accept failed; backing off until connections can be accepted again");
        }
        self.failures += 1;
        let exponent = self.failures.min(7) as u32;
        std::time::Duration::from_millis(10 * 2u64.pow(exponent - 1))
    }

    fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::warn!(failures = self.failures, "accepting connections again");
            self.failures = 0;
        }
    }
}
