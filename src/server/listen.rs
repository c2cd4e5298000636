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

use crate::config::ServerSettings;

use super::App;

pub async fn bind(settings: &ServerSettings) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(&settings.addr)
        .await
        .with_context(|| format!("binding {}", settings.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    Ok(listener)
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

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge, as gRPC uses) on one socket until
/// `shutdown` resolves, then stops accepting and lets open requests finish within
/// `server.shutdown_timeout`.
/// While `readiness` reports draining, HTTP/1.1 responses carry `Connection: close`, so
/// keep-alive clients reconnect (to a replica that is not going away) before the
/// listener closes rather than have an idle connection closed under a request they are
/// sending. HTTP/2 connections get GOAWAY when the listener closes.
pub async fn serve(
    listener: TcpListener,
    app: App,
    admin: Option<(TcpListener, Router)>,
    settings: &ServerSettings,
    readiness: crate::readiness::Readiness,
    shutdown: impl Future<Output = ()>,
) {
    // The admin port stays up through the drain delay (probes report the drain), then
    // closes with the API port.
    let admin_stop = tokio_util::sync::CancellationToken::new();
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
    // Serving tonic through axum loses tonic Server's transport settings; restore them.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(settings.http2_keepalive_interval))
        .keep_alive_timeout(settings.http2_keepalive_timeout)
        .max_concurrent_streams(settings.http2_max_concurrent_streams)
        // What h2 buffers per stream for a client that is not reading: with the stream
        // limit, a bound on a connection's buffered bytes (hyper's default is 400 KiB).
        .max_send_buf_size(64 * 1024);
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(settings.handshake_timeout);

    let graceful = GracefulShutdown::new();
    // Connection tasks are kept so the ones still open at the shutdown timeout can be
    // aborted rather than outliving the server.
    let mut connections = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    let mut accept_errors = AcceptErrors::default();
    // Validated with the settings; an entry that does not parse cannot get here.
    let trusted_proxies: Arc<[ipnet::IpNet]> =
        settings.trusted_proxy_nets().unwrap_or_default().into();
    let mut at_limit = false;
    tokio::pin!(shutdown);
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
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            // Reap finished connections so the set stays the size of the open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    accept_errors.recovered();
                    conn
                }
                Err(e) => {
                    // e.g. EMFILE: back off instead of spinning; the listener stays usable.
                    tokio::time::sleep(accept_errors.failed(&e)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if settings.tcp_nodelay
            && let Err(e) = stream.set_nodelay(true)
        {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let progress = crate::connection::Progress::default();
        let app = app.clone();
        let started = progress.clone();
        let trusted = trusted_proxies.clone();
        let stalls = crate::connection::Stalls::default();
        let watched = stalls.clone();
        let readiness = readiness.clone();
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            started.mark();
            let mut request = request.map(Body::new);
            let client = crate::auth::attempts::client_ip(peer.ip(), request.headers(), &trusted);
            request
                .extensions_mut()
                .insert(crate::context::ClientIp(client));
            let watched = watched.clone();
            let http1 = request.version() < http::Version::HTTP_2;
            let readiness = readiness.clone();
            app.clone().oneshot(request).map_ok(move |response| {
                let mut response = response.map(|body| watched.watch(body));
                if http1 && readiness.current().draining {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            })
        });
        let io = crate::connection::Watched::new(stream, progress.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let handshake_timeout = settings.handshake_timeout;
        let send_timeout = settings.send_timeout;
        connections.spawn(async move {
            let _slot = slot;
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
    drop(listener);
    admin_stop.cancel();
    tracing::info!("listener closed; waiting for in-flight requests");
    let mut admin_task = admin_task;
    let drained = async {
        graceful.shutdown().await;
        if let Some(task) = admin_task.as_mut() {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(settings.shutdown_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?settings.shutdown_timeout, "requests still open at shutdown timeout; closing them");
        connections.abort_all();
        if let Some(task) = admin_task {
            task.abort();
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
