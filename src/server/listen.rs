//! The listeners: the API port's sockets in either runtime layout, the admin port, and
//! serving them until the drain (each accept loop: `accept`).

use std::{future::Future, sync::Arc};

use anyhow::Context;
use axum::Router;
use hyper_util::{rt::TokioExecutor, server::conn::auto};
use tokio::net::TcpListener;

use tokio_util::sync::CancellationToken;

use crate::config::{RuntimeLayout, ServerSettings};

use super::{
    App,
    accept::{Lane, accept, connection_builder},
    balance::Workers,
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
pub(super) struct Shared {
    pub(super) builder: auto::Builder<TokioExecutor>,
    pub(super) slots: Arc<tokio::sync::Semaphore>,
    pub(super) trusted_proxies: Arc<[ipnet::IpNet]>,
    pub(super) readiness: crate::readiness::Readiness,
    pub(super) settings: ServerSettings,
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
