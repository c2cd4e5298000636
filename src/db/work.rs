//! Units of database work: how every service touches the database.
//!
//! **Cancellation.** A request future can be dropped at any await point (client gone,
//! HTTP/2 reset, gRPC deadline, our timeout layer, shutdown). sqlx is not cancellation-safe
//! at every point: a `BEGIN` dropped while its answer is in flight leaves the server inside
//! a transaction while sqlx believes there is none, and the pool hands that connection to
//! the next request, whose autocommit writes then never commit. Rather than guard every
//! await, a unit never runs in the request's future: [`Store::read`] and [`Store::write`]
//! spawn it (begin → work → commit or rollback) on a task tracked by the lifecycle, and the
//! request only awaits its outcome. A dropped request drops the wait, never the unit, so a
//! connection always goes back to the pool outside any transaction and a write is either
//! whole or absent. Shutdown waits for the tracked units before it closes the pool.
//!
//! Units queue for one of `database.max_connections` slots before they touch the pool. A
//! unit whose request is abandoned while it queues never starts, so a storm of abandoned
//! requests leaves no backlog of work nobody waits for; once started, it finishes.
//!
//! **Races.** Writers take row locks in one order — the article row first (`lock_*` in the
//! repositories), then what hangs off it — and a deadlock or serialization failure that
//! still happens is retried a bounded number of times on a fresh transaction. What remains
//! after the retries is [`AppError::Contention`] (409 / ABORTED), never a 500.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use super::{
    changes,
    conn::{Conn, statements},
};
use crate::{
    cache::ReadCache,
    context,
    error::{AppError, AppResult, Reason},
};

/// What a unit returns: a future borrowing the unit's transaction (or connection).
pub type Unit<'t, T> = Pin<Box<dyn Future<Output = AppResult<T>> + Send + 't>>;

/// Attempts of one unit before a deadlock or serialization failure is given to the caller.
const ATTEMPTS: u32 = 4;

/// What a fence's guard runs in the writing transaction, just before its commit.
type Guard = dyn for<'t> Fn(&'t DatabaseTransaction) -> Unit<'t, bool> + Send + Sync;

/// A condition every write of the current request commits under. The guard runs as the
/// last statement of each write transaction; when it answers false the transaction rolls
/// back instead of committing (`Contention(IdempotencyKeyInUse)`, not retried). Set
/// around a request with [`Fence::scope`]; units started inside it carry it along.
/// Idempotency keys use it so that a request whose claim was taken over cannot commit.
pub struct Fence {
    guard: Box<Guard>,
    committed: AtomicBool,
}

tokio::task_local! {
    static FENCE: Arc<Fence>;
}

impl Fence {
    pub fn new(
        guard: impl for<'t> Fn(&'t DatabaseTransaction) -> Unit<'t, bool> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Fence {
            guard: Box::new(guard),
            committed: AtomicBool::new(false),
        })
    }

    /// Runs `future` with this fence around its writes.
    pub async fn scope<F: Future>(self: &Arc<Self>, future: F) -> F::Output {
        FENCE.scope(self.clone(), future).await
    }

    /// Whether a write committed under this fence.
    pub fn committed(&self) -> bool {
        self.committed.load(Ordering::Acquire)
    }

    fn current() -> Option<Arc<Fence>> {
        FENCE.try_with(Clone::clone).ok()
    }
}

/// The database as services see it: a connection pool plus the tracker that keeps units
/// running to completion. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    connection: DatabaseConnection,
    units: TaskTracker,
    /// One per pooled connection: a unit holds one from start to finish.
    slots: Arc<Semaphore>,
    /// Parts read from this database; a committed write invalidates what it names.
    cache: Arc<ReadCache>,
    /// Behind a transaction-mode pooler: no statement outside a transaction.
    pooled: bool,
}

#[derive(Clone, Copy)]
enum Mode {
    Snapshot,
    Write,
}

impl Store {
    /// `pooled`: the database is reached through a pooler in transaction mode (PgBouncer),
    /// where a statement outside a transaction may run on one server connection and its
    /// prepared form on another: every statement then runs inside a transaction.
    pub fn new(
        connection: DatabaseConnection,
        max_connections: u32,
        cache: ReadCache,
        pooled: bool,
    ) -> Self {
        Self {
            connection,
            units: TaskTracker::new(),
            slots: Arc::new(Semaphore::new(max_connections.max(1) as usize)),
            cache: Arc::new(cache),
            pooled,
        }
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.connection
    }

    pub fn cache(&self) -> &Arc<ReadCache> {
        &self.cache
    }

    /// Waits until every unit still running has finished (shutdown, before the pool closes).
    pub async fn finish_units(&self) {
        self.units.close();
        self.units.wait().await;
    }

    /// One statement, outside any transaction (autocommit): for reads whose answer is a
    /// single query, where a transaction would only add round trips.
    pub async fn query<T, F>(&self, unit: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Conn<'c>) -> Unit<'c, T> + Send + 'static,
    {
        let (connection, pooled) = (self.connection.clone(), self.pooled);
        self.detached(async move { statements(&connection, pooled, unit).await })
            .await
    }

    /// Runs `work` on a task the lifecycle tracks (shutdown waits for it before the pool
    /// closes): request work that must finish even when its caller goes away.
    pub fn spawn_tracked<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.units.spawn(work)
    }

    /// Runs `unit` as autocommitted statements on a tracked task without waiting for it:
    /// bookkeeping a request need not wait for (shutdown still lets it finish). Failures
    /// are logged at debug as `what`.
    pub fn spawn_query<F>(&self, what: &'static str, unit: F)
    where
        F: for<'c> FnOnce(&'c Conn<'c>) -> Unit<'c, ()> + Send + 'static,
    {
        let (connection, slots, pooled) =
            (self.connection.clone(), self.slots.clone(), self.pooled);
        self.units.spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            if let Err(e) = statements(&connection, pooled, unit).await {
                tracing::debug!(error = %e, what, "background statement failed");
            }
        });
    }

    /// Reads in one snapshot (REPEATABLE READ, read-only on Postgres), so every statement
    /// of the unit sees the same data.
    pub async fn read<T, F>(&self, unit: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: for<'t> Fn(&'t DatabaseTransaction) -> Unit<'t, T> + Send + Sync + 'static,
    {
        self.run(Mode::Snapshot, unit).await
    }

    /// Writes in one transaction (SQLite: `BEGIN IMMEDIATE`), committed only if the unit
    /// succeeds. The unit may run more than once (see the module notes), so it must not
    /// have effects outside the transaction.
    pub async fn write<T, F>(&self, unit: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: for<'t> Fn(&'t DatabaseTransaction) -> Unit<'t, T> + Send + Sync + 'static,
    {
        self.run(Mode::Write, unit).await
    }

    async fn run<T, F>(&self, mode: Mode, unit: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: for<'t> Fn(&'t DatabaseTransaction) -> Unit<'t, T> + Send + Sync + 'static,
    {
        let connection = self.connection.clone();
        let cache = self.cache.clone();
        let fence = Fence::current().filter(|_| matches!(mode, Mode::Write));
        let work = async move {
            let mut attempt = 1;
            loop {
                let outcome = once(&connection, mode, fence.as_deref(), &unit).await;
                if let Ok((_, committed)) = &outcome {
                    // Before the answer leaves: the writer's next read sees its write.
                    cache.changed(&committed.topics);
                    if let Some(xid) = committed.xid {
                        cache.committed_here(xid);
                    }
                    if let Some(fence) = &fence {
                        fence.committed.store(true, Ordering::Release);
                    }
                }
                match outcome {
                    Err(AppError::Contention(what))
                        if attempt < ATTEMPTS && what != Reason::IdempotencyKeyInUse =>
                    {
                        tracing::debug!(
                            attempt,
                            what = what.as_str(),
                            "transaction lost a race; retrying"
                        );
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                    }
                    outcome => return outcome.map(|(value, _)| value),
                }
            }
        };
        self.detached(work).await
    }

    /// Runs `work` on its own tracked task and waits for its outcome: dropping the wait
    /// does not drop the work.
    async fn detached<T: Send + 'static>(
        &self,
        work: impl Future<Output = AppResult<T>> + Send + 'static,
    ) -> AppResult<T> {
        // Cancelled when the request stops waiting (the guard is dropped with its future).
        let abandoned = CancellationToken::new();
        let _waiting = abandoned.clone().drop_guard();
        let slots = self.slots.clone();
        let work = async move {
            let _slot = tokio::select! {
                biased;
                () = abandoned.cancelled() => return None,
                slot = slots.acquire_owned() => slot.ok()?,
            };
            Some(work.await)
        }
        .in_current_span();
        // The request's ids stay with the unit's log lines.
        let handle = self.units.spawn(context::carry(work));
        match handle.await {
            Ok(Some(outcome)) => outcome,
            // Only when the slots are closed, which they never are while we wait.
            Ok(None) => Err(AppError::Unavailable(Reason::DatabaseUnavailable)),
            // A panic inside the unit is the request's panic: the stack's panic layer
            // answers it as it would any other.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(AppError::internal(e)),
        }
    }
}

/// What a committed write changed: the topics it named, and on Postgres the transaction
/// that appended them to the change log.
#[derive(Default)]
struct Committed {
    topics: Vec<String>,
    xid: Option<i64>,
}

async fn once<T, F>(
    connection: &DatabaseConnection,
    mode: Mode,
    fence: Option<&Fence>,
    unit: &F,
) -> AppResult<(T, Committed)>
where
    F: for<'t> Fn(&'t DatabaseTransaction) -> Unit<'t, T>,
{
    let txn = match mode {
        Mode::Snapshot => super::begin_snapshot(connection).await?,
        Mode::Write => super::begin_write(connection).await?,
    };
    let (outcome, topics) = changes::collecting(unit(&txn)).await;
    let outcome = match outcome {
        Ok(value) => finish_write(&txn, mode, fence, topics)
            .await
            .map(|committed| (value, committed)),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(value) => {
            txn.commit().await?;
            Ok(value)
        }
        Err(e) => {
            // Dropping would roll back too; doing it here returns the connection at once.
            if let Err(rollback) = txn.rollback().await {
                tracing::debug!(error = %rollback, "rollback after a failed unit");
            }
            Err(e)
        }
    }
}

/// The last statements of a write before its commit: its topics into the change log
/// (Postgres; SQLite's one process needs no log), then the fence's guard.
async fn finish_write(
    txn: &DatabaseTransaction,
    mode: Mode,
    fence: Option<&Fence>,
    topics: Vec<String>,
) -> AppResult<Committed> {
    if !matches!(mode, Mode::Write) {
        return Ok(Committed::default());
    }
    let xid = if !topics.is_empty() && txn.get_database_backend() == sea_orm::DbBackend::Postgres {
        Some(changes::append(txn, &topics).await?)
    } else {
        None
    };
    if let Some(fence) = fence
        && !(fence.guard)(txn).await?
    {
        return Err(AppError::Contention(Reason::IdempotencyKeyInUse));
    }
    Ok(Committed { topics, xid })
}

/// 5, 10, 20 ms, plus up to as much again of jitter so racing retries spread out.
fn backoff(attempt: u32) -> Duration {
    let base = 5u64 << (attempt - 1).min(4);
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default(),
    ) % (base * 1_000);
    Duration::from_micros(base * 1_000 + jitter)
}
