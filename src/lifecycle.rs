//! The lifecycle manager: the single owner of long-lived resources (the database
//! connection, readiness, background workers) and of the order in which they start and stop.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{config::Settings, db, readiness::Readiness, state::AppState};

pub struct Lifecycle {
    /// The settings, the database connection and readiness, built once and shared with
    /// every handler (one set of token keys).
    state: AppState,
    workers: TaskTracker,
    stop_workers: CancellationToken,
    /// Cancelled when the drain delay is over: long-lived streams we own end then, so they
    /// do not hold connections open until `server.shutdown_timeout`.
    streams_closing: CancellationToken,
}

impl Lifecycle {
    /// Startup hooks, in order; any failure aborts startup with the reason.
    pub async fn start(settings: Arc<Settings>) -> anyhow::Result<Lifecycle> {
        let db = db::connect(&settings.database).await?;
        tracing::info!(backend = ?db.get_database_backend(), "database connected");
        if settings.database.migrate_on_start {
            db::migrate(&db, &settings.database).await?;
            tracing::info!("migrations applied");
        }
        // Left to a migration job, the schema may not be there yet: serve nothing that
        // needs it (not ready, with the reason) until it is — the database watch checks
        // again on every tick — rather than answer every request 500.
        let readiness = Readiness::new();
        let schema = db::schema_state(&db).await?;
        if !schema.pending.is_empty() {
            tracing::error!(
                pending = ?schema.pending,
                "database schema is behind this binary; not ready until `conduit migrate up` has run"
            );
            readiness.update(|s| s.schema_behind = true);
        }
        if !schema.unknown.is_empty() {
            // Migrations are additive (expand, then contract in a later release), so a
            // binary whose migrations are all applied can serve a newer schema.
            tracing::warn!(
                unknown = ?schema.unknown,
                "database has migrations this binary does not know (a rolled-back deployment?); serving, since every migration it needs is applied"
            );
        }
        let lifecycle = Lifecycle {
            state: AppState::new(settings, db, readiness),
            workers: TaskTracker::new(),
            stop_workers: CancellationToken::new(),
            streams_closing: CancellationToken::new(),
        };
        lifecycle.spawn_database_watch();
        lifecycle.spawn_idempotency_purge();
        lifecycle.spawn_cleanup();
        lifecycle.spawn_rate_limit_upkeep();
        lifecycle.spawn_change_log();
        // Warm: the first visitors get the tag list from memory too. Not fatal: with
        // migrations left to a job the tables may not exist yet, and readiness says so.
        if let Err(e) = crate::modules::tags::service::TagService::new(&lifecycle.state)
            .list()
            .await
        {
            tracing::warn!(error = %e, "tag cache not warmed");
        }
        Ok(lifecycle)
    }

    /// On Postgres, other replicas' writes reach this one's read cache through the change
    /// log (`db::changes`): a follower polls it, a listener wakes the follower early, a
    /// notifier wakes the other replicas after local commits, and a leased job prunes
    /// it. SQLite is one process: its own commits are all there is.
    fn spawn_change_log(&self) {
        if self.state.db().get_database_backend() != sea_orm::DbBackend::Postgres {
            return;
        }
        let settings = &self.state.settings;
        let store = self.state.store.clone();
        let poll_interval = settings.cache.poll_interval;
        self.spawn_worker("change-log-follow", move |stop| {
            crate::db::changes::follow(store, poll_interval, stop)
        });
        let url = settings
            .database
            .listen_url
            .clone()
            .unwrap_or_else(|| settings.database.url.clone());
        let cache = self.state.store.cache().clone();
        self.spawn_worker("change-log-listen", move |stop| {
            crate::db::changes::listen(url, cache, stop)
        });
        let store = self.state.store.clone();
        self.spawn_worker("change-log-announce", move |stop| {
            crate::db::changes::announce(store, stop)
        });
        let store = self.state.store.clone();
        self.spawn_worker("changes-prune", move |stop| {
            crate::jobs::run_leased(
                store,
                "changes-prune",
                std::time::Duration::from_secs(30),
                stop,
                crate::db::changes::prune,
            )
        });
    }

    pub fn app_state(&self) -> AppState {
        self.state.clone()
    }

    /// Runs `job` until shutdown; the lifecycle waits for it before closing the database.
    pub fn spawn_worker<F>(&self, name: &'static str, job: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let future = job(self.stop_workers.child_token());
        self.workers.spawn(async move {
            future.await;
            tracing::debug!(worker = name, "worker stopped");
        });
    }

    /// Periodic database check that drives readiness, so probes and gRPC health report
    /// NOT_SERVING within seconds of losing the database, and recover on their own.
    /// A failed check counts at once, and so does one without an answer while the pool had
    /// room (a refused or unreachable server). Only a check that found every connection
    /// checked out counts as "busy", and only after it keeps happening, so a saturated
    /// pool does not take every replica out of rotation at the same moment.
    fn spawn_database_watch(&self) {
        const INCONCLUSIVE_CHECKS_TOLERATED: u32 = 3;
        let db = self.state.db().clone();
        let readiness = self.state.readiness.clone();
        let interval = self.state.settings.database.health_check_interval;
        let check_timeout = self.state.settings.database.health_check_timeout;
        let max_connections = self.state.settings.database.max_connections;
        self.spawn_worker("database-watch", move |stop| async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut inconclusive = 0u32;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                let up = match tokio::time::timeout(check_timeout, db.ping()).await {
                    Ok(Ok(())) => {
                        inconclusive = 0;
                        true
                    }
                    Ok(Err(sea_orm::DbErr::ConnectionAcquire(
                        sea_orm::error::ConnAcquireErr::Timeout,
                    )))
                    | Err(_)
                        if crate::db::pool_saturated(&db, max_connections) =>
                    {
                        inconclusive += 1;
                        inconclusive < INCONCLUSIVE_CHECKS_TOLERATED
                            && readiness.current().database_up
                    }
                    Err(_) => {
                        tracing::warn!("database check got no answer");
                        false
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "database check failed");
                        false
                    }
                };
                crate::metrics::job_run("database-watch", up);
                if up && readiness.current().schema_behind {
                    match db::schema_state(&db).await {
                        Ok(schema) if schema.pending.is_empty() => {
                            tracing::info!("database schema is up to date; ready");
                            readiness.update(|s| s.schema_behind = false);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "schema check failed"),
                    }
                }
                if up != readiness.current().database_up {
                    if up {
                        tracing::info!("database reachable again");
                    } else {
                        tracing::error!("database unreachable; reporting not ready");
                    }
                }
                readiness.update(|s| s.database_up = up);
            }
        });
    }

    /// Deletes expired idempotency keys every `idempotency.purge_interval`.
    /// Forgets rate-limit keys whose limits have recovered, so addresses and accounts
    /// seen once do not stay in memory.
    fn spawn_rate_limit_upkeep(&self) {
        let attempts = self.state.attempts.clone();
        self.spawn_every(
            "rate-limit-upkeep",
            std::time::Duration::from_secs(60),
            move || attempts.sweep(),
        );
    }

    /// Runs a quick synchronous chore every `interval` until shutdown.
    fn spawn_every(
        &self,
        name: &'static str,
        interval: std::time::Duration,
        mut chore: impl FnMut() + Send + 'static,
    ) {
        self.spawn_worker(name, move |stop| async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = ticker.tick() => chore(),
                }
            }
        });
    }

    /// The `cleanup` job (`jobs::cleanup`), run once per `jobs.cleanup_interval` across
    /// all replicas.
    fn spawn_cleanup(&self) {
        let store = self.state.store.clone();
        let interval = self.state.settings.jobs.cleanup_interval;
        let idle_timeout = self.state.authenticator.policy.idle_timeout;
        self.spawn_worker("cleanup", move |stop| {
            crate::jobs::run_leased(store, "cleanup", interval, stop, move |store| {
                crate::jobs::cleanup(store, idle_timeout)
            })
        });
    }

    fn spawn_idempotency_purge(&self) {
        let store = self.state.store.clone();
        let interval = self.state.settings.idempotency.purge_interval;
        self.spawn_worker("idempotency-purge", move |stop| async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                let outcome = crate::idempotency::purge_expired(&store).await;
                match &outcome {
                    Ok(0) => {}
                    Ok(purged) => tracing::debug!(purged, "expired idempotency keys deleted"),
                    Err(e) => tracing::warn!(error = %e, "purging idempotency keys failed"),
                }
                crate::metrics::job_run("idempotency-purge", outcome.is_ok());
            }
        });
    }

    /// The Prometheus recorder keeps histogram samples until something drains them: a
    /// scrape, or this upkeep. Without it an unscraped process grows with its traffic
    /// (19 → 37 MB in 30 s of load, measured).
    pub fn spawn_metrics_upkeep(&self, handle: metrics_exporter_prometheus::PrometheusHandle) {
        self.spawn_every(
            "metrics-upkeep",
            std::time::Duration::from_secs(5),
            move || handle.run_upkeep(),
        );
    }

    /// Mirrors readiness into gRPC health for the overall status ("") and each service.
    /// When the drain delay is over the statuses are removed, which ends every open
    /// `Health/Watch` stream (after it has reported NOT_SERVING); otherwise each watcher
    /// would hold its connection until the shutdown timeout.
    pub fn mirror_health(&self, (mut reporter, services): (HealthReporter, Vec<&'static str>)) {
        let mut changes = self.state.readiness.subscribe();
        let closing = self.streams_closing.clone();
        self.spawn_worker("grpc-health", move |stop| async move {
            let names: Vec<&'static str> = std::iter::once("").chain(services).collect();
            loop {
                let status = if changes.borrow_and_update().is_ready() {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                for service in &names {
                    reporter.set_service_status(*service, status).await;
                }
                crate::metrics::job_run("grpc-health", true);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = closing.cancelled() => {
                        // NOT_SERVING first, unless already sent (this wakeup may have won
                        // the race with the readiness change), then end the streams.
                        for service in &names {
                            if status != ServingStatus::NotServing {
                                reporter.set_service_status(*service, ServingStatus::NotServing).await;
                            }
                            reporter.clear_service_status(service).await;
                        }
                        break;
                    }
                    changed = changes.changed() => if changed.is_err() { break },
                }
            }
        });
    }

    /// First step of shutdown: report not ready (HTTP and gRPC health), then give load
    /// balancers `server.drain_delay` to stop sending before the listener closes.
    pub async fn begin_drain(&self) {
        self.state.readiness.update(|s| s.draining = true);
        tracing::info!(drain_delay = ?self.state.settings.server.drain_delay, "draining");
        tokio::time::sleep(self.state.settings.server.drain_delay).await;
        self.streams_closing.cancel();
    }

    /// Last step: stop workers, then close the database. Called after the server drained.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop_workers.cancel();
        self.workers.close();
        if tokio::time::timeout(TEARDOWN_STEP_TIMEOUT, self.workers.wait())
            .await
            .is_err()
        {
            tracing::warn!("background workers did not stop in time");
        }
        // Units of database work run on after their requests were cut off; let them commit
        // or roll back before the pool closes.
        if tokio::time::timeout(TEARDOWN_STEP_TIMEOUT, self.state.store.finish_units())
            .await
            .is_err()
        {
            tracing::warn!("database work still running at shutdown");
        }
        // Closing waits for checked-out connections; one stuck on a lock must not hold the
        // process past its grace period.
        match tokio::time::timeout(TEARDOWN_STEP_TIMEOUT, self.state.db().clone().close()).await {
            Ok(closed) => closed.context("closing the database")?,
            Err(_) => tracing::warn!("database connections still busy; leaving them to the OS"),
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// Upper bound for each teardown step after the server has drained (workers, database).
const TEARDOWN_STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C). The handlers are installed when
/// this is called, not when the future is first polled: call it before the port opens, so
/// a SIGTERM that arrives right after startup drains instead of killing the process.
/// A second signal during the drain exits at once (an operator who means it, or a
/// supervisor that gave up waiting), with 128 + the signal's number.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        let (mut terminate, mut interrupt) = match (terminate, interrupt) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot listen for shutdown signals; stop with SIGKILL");
                return std::future::pending().await;
            }
        };
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received; draining (send it again to exit at once)"),
            _ = interrupt.recv() => tracing::info!("SIGINT received; draining (send it again to exit at once)"),
        }
        tokio::spawn(async move {
            let code = tokio::select! {
                _ = terminate.recv() => 128 + 15,
                _ = interrupt.recv() => 128 + 2,
            };
            tracing::warn!(
                exit_code = code,
                "second shutdown signal; exiting now without draining"
            );
            // The log writer batches lines: give it one interval to write this one.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            std::process::exit(code);
        });
    }
}
