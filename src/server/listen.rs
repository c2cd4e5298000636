//! The listeners: one socket for HTTP/1.1 and h2c, connection limits and hygiene, and
//! the drain.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    Router,
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
use tower::ServiceExt;

use tokio_util::sync::CancellationToken;

use crate::config::{RuntimeLayout, ServerSettings};

use super::{
    App,
    balance::{Handoff, Load, Placed, Workers},
};

/// The API port's sockets, bound before serving (so a port taken fails at startup): one
/// in the `multi` layout; one per serving thread in `per-core`, all on one address with
/// `SO_REUSEPORT`, the kernel spreading new connections over them.
pub struct Listeners {
    layout: RuntimeLayout,
    sockets: Vec<std::net::TcpListener>,
}

impl Listeners {
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match self.sockets.first() {
            Some(socket) => socket.local_addr(),
            None => Err(std::io::Error::other("no socket bound")),
        }
    }
}

pub async fn bind(settings: &ServerSettings) -> anyhow::Result<Listeners> {
    let binding = || format!("binding {}", settings.addr);
    let sockets = match settings.runtime {
        RuntimeLayout::Multi => {
            let listener = TcpListener::bind(&settings.addr)
                .await
                .with_context(binding)?;
            vec![listener.into_std().with_context(binding)?]
        }
        RuntimeLayout::PerCore => {
            let addr = tokio::net::lookup_host(&settings.addr)
                .await
                .with_context(binding)?
                .next()
                .with_context(|| format!("{} names no address", settings.addr))?;
            // The first socket settles the port (port 0 picks one); the others join it.
            let first = reuse_port_socket(addr).with_context(binding)?;
            let addr = first.local_addr()?;
            let mut sockets = vec![first];
            for _ in 1..settings.serving_threads() {
                sockets.push(reuse_port_socket(addr).with_context(binding)?);
            }
            sockets
        }
    };
    let listeners = Listeners {
        layout: settings.runtime,
        sockets,
    };
    tracing::info!(
        addr = %listeners.local_addr()?,
        sockets = listeners.sockets.len(),
        "listening"
    );
    Ok(listeners)
}

fn reuse_port_socket(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // tokio's backlog for its own listeners.
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The admin listener (metrics and probes), when `server.admin_addr` is set.
pub async fn bind_admin(
    settings: &ServerSettings,
    router: Option<Router>,
) -> anyhow::Result<Option<(TcpListener, Router)>> {
    let (Some(addr), Some(router)) = (&settings.admin_addr, router) else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin port {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "admin listening");
    Ok(Some((listener, router)))
}

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge, as gRPC uses) on one port until
/// `shutdown` resolves, then stops accepting and lets open requests finish within
/// `server.shutdown_timeout`.
/// While `readiness` reports draining, HTTP/1.1 responses carry `Connection: close`, so
/// keep-alive clients reconnect (to a replica that is not going away) before the
/// listener closes rather than have an idle connection closed under a request they are
/// sending. HTTP/2 connections get GOAWAY when the listener closes.
///
/// In the `per-core` layout each socket is served by a thread of its own running a
/// single-thread runtime; the returned [`ServingThreads`] keeps those runtimes (and
/// whatever they registered, such as pool connections opened there) alive until it is
/// dropped, after the lifecycle has closed the database.
pub async fn serve(
    listeners: Listeners,
    app: App,
    admin: Option<(TcpListener, Router)>,
    settings: &ServerSettings,
    readiness: crate::readiness::Readiness,
    shutdown: impl Future<Output = ()>,
) -> ServingThreads {
    // The admin port stays up through the drain delay (probes report the drain), then
    // closes with the API port.
    let admin_stop = CancellationToken::new();
    let admin_task = admin.map(|(listener, router)| {
        let stop = admin_stop.clone();
        tokio::spawn(async move {
            let served =
                axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = served.await {
                tracing::warn!(error = %e, "admin listener failed");
            }
        })
    });
    let shared = Arc::new(Shared {
        builder: connection_builder(settings),
        // One limit for the port, whichever thread accepts.
        slots: Arc::new(tokio::sync::Semaphore::new(settings.max_connections)),
        // Validated with the settings; an entry that does not parse cannot get here.
        trusted_proxies: settings.trusted_proxy_nets().unwrap_or_default().into(),
        readiness,
        settings: settings.clone(),
    });
    let stop = CancellationToken::new();
    let mut threads = ServingThreads::default();
    let mut sockets = listeners.sockets;
    let done = match listeners.layout {
        RuntimeLayout::PerCore => threads.start(std::mem::take(&mut sockets), &app, &shared, &stop),
        RuntimeLayout::Multi => Vec::new(),
    };
    let accepting = async {
        // The multi layout's one socket, on this runtime.
        for socket in sockets {
            match TcpListener::from_std(socket) {
                Ok(listener) => {
                    accept(listener, app.clone(), shared.clone(), stop.clone(), None).await
                }
                Err(e) => tracing::error!(error = %e, "listener unusable"),
            }
        }
        for finished in done {
            // An error means the thread is gone; either way it serves no more.
            let _ = finished.await;
        }
    };
    tokio::pin!(accepting);
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut accepting => {}
        () = &mut shutdown => {
            stop.cancel();
            accepting.await;
        }
    }
    admin_stop.cancel();
    if let Some(task) = admin_task {
        let waited = tokio::time::timeout(settings.shutdown_timeout, async {
            let _ = (&mut *Box::pin(task)).await;
        });
        if waited.await.is_err() {
            tracing::warn!("admin listener still open at the shutdown timeout");
        }
    }
    threads
}

/// What every accept loop shares, whichever thread it runs on (the app is cloned into
/// each: it is `Send`, not `Sync`).
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    slots: Arc<tokio::sync::Semaphore>,
    trusted_proxies: Arc<[ipnet::IpNet]>,
    readiness: crate::readiness::Readiness,
    settings: ServerSettings,
}

/// The per-core serving threads, each with its single-thread runtime. Dropping this
/// releases and joins them.
#[derive(Default)]
pub struct ServingThreads {
    release: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl ServingThreads {
    /// One thread per socket; each answers on its channel once its loop has drained.
    fn start(
        &mut self,
        sockets: Vec<std::net::TcpListener>,
        app: &App,
        shared: &Arc<Shared>,
        stop: &CancellationToken,
    ) -> Vec<tokio::sync::oneshot::Receiver<()>> {
        let mut done = Vec::new();
        let (workers, inboxes) = Workers::new(sockets.len());
        for ((index, socket), inbox) in sockets.into_iter().enumerate().zip(inboxes) {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!(error = %e, "a serving runtime could not start");
                    continue;
                }
            };
            let (finished, finish) = tokio::sync::oneshot::channel();
            let (app, shared) = (app.clone(), shared.clone());
            let (stop, release) = (stop.clone(), self.release.clone());
            let lane = Lane {
                me: index,
                workers: workers.clone(),
                inbox,
            };
            let thread = std::thread::Builder::new()
                .name(format!("conduit-serve-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        match TcpListener::from_std(socket) {
                            Ok(listener) => accept(listener, app, shared, stop, Some(lane)).await,
                            Err(e) => tracing::error!(error = %e, "listener unusable"),
                        }
                        let _ = finished.send(());
                        release.cancelled().await;
                    });
                });
            match thread {
                Ok(thread) => {
                    self.threads.push(thread);
                    done.push(finish);
                }
                Err(e) => tracing::error!(error = %e, "a serving thread could not start"),
            }
        }
        done
    }
}

impl Drop for ServingThreads {
    fn drop(&mut self) {
        self.release.cancel();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Serving tonic through axum loses tonic Server's transport settings; restore them.
fn connection_builder(settings: &ServerSettings) -> auto::Builder<TokioExecutor> {
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
struct Lane {
    me: usize,
    workers: Arc<Workers>,
    inbox: tokio::sync::mpsc::UnboundedReceiver<Handoff>,
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
async fn accept(
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
        let (app, shared, started) = (app.clone(), shared.clone(), progress.clone());
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
            app.clone().oneshot(request).map_ok(move |response| {
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
