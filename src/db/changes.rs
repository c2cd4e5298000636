//! The change log (`changes`, Postgres): what each write transaction changed, appended in
//! that transaction, read by every replica to invalidate exactly those parts of its read
//! cache (`cache`).
//!
//! **Writing.** Repositories name what they change with [`changed`] while a write unit
//! runs; the unit appends those topics as rows, with its transaction id, just before it
//! commits (`work`). After the commit the writing replica invalidates them at once, so
//! its own next read sees the write. Nothing is sent inside the transaction: a `NOTIFY`
//! there would make every committing writer queue for Postgres' one notification lock.
//!
//! **Reading** ([`follow`]). Each replica polls the log every `cache.poll_interval`, and
//! sooner when woken: a coalesced `NOTIFY` sent after commits ([`announce`]) reaches
//! the others' `LISTEN` ([`listen`]). Transaction ids commit out of order, so a poll reads,
//! in one snapshot, the oldest transaction still running (`pg_snapshot_xmin`) and every
//! row at or above the last such frontier: rows of transactions below it are complete,
//! rows above it that are already visible are taken early and remembered, and the
//! frontier then moves up. No row is skipped, whatever order transactions commit in.
//!
//! **Bounded staleness.** A replica trusts its cache only while its last complete read of
//! the log began within `cache.max_staleness`; otherwise every read goes to the database.
//! When it catches up again it forgets everything cached (rows may have been pruned
//! meanwhile) and trusts it again. Polls use the pool, so a silent or killed `LISTEN`
//! connection — or a pooler where `LISTEN` does not work — only costs the wake-ups.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};
use tokio_util::sync::CancellationToken;

use super::Store;
use crate::{
    cache::{ReadCache, STALENESS, Topic},
    config::Secret,
    error::AppResult,
};

/// The channel wake-ups are sent on (no payload: the log says what changed).
pub const CHANNEL: &str = "conduit_changes";

/// Rows older than this are pruned; a replica cut off for longer forgets its cache anyway.
pub const RETENTION: Duration = Duration::from_secs(60);

tokio::task_local! {
    static CHANGES: Arc<Mutex<Vec<String>>>;
}

/// Names what the running write unit changes. Outside a write unit it does nothing:
/// only writes through `Store::write` change what the cache holds.
pub fn changed(topic: Topic<'_>) {
    let _ = CHANGES.try_with(|changes| {
        changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(topic.to_string());
    });
}

/// Runs one attempt of a write unit, collecting the topics it names.
pub(super) async fn collecting<F: Future>(future: F) -> (F::Output, Vec<String>) {
    let changes = Arc::new(Mutex::new(Vec::new()));
    let output = CHANGES.scope(changes.clone(), future).await;
    let mut topics = std::mem::take(&mut *changes.lock().unwrap_or_else(|e| e.into_inner()));
    topics.sort_unstable();
    topics.dedup();
    (output, topics)
}

/// Appends `topics` in the writing transaction; its transaction id (Postgres).
pub(super) async fn append(txn: &impl ConnectionTrait, topics: &[String]) -> Result<i64, DbErr> {
    let rows: Vec<String> = (1..=topics.len())
        .map(|i| format!("(pg_current_xact_id()::text::bigint, ${i}, clock_timestamp())"))
        .collect();
    let sql = format!(
        "INSERT INTO changes (xid, topic, created_at) VALUES {} RETURNING xid",
        rows.join(", ")
    );
    let values: Vec<Value> = topics.iter().map(|t| t.as_str().into()).collect();
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotInserted)?;
    row.try_get::<i64>("", "xid")
}

/// One read of the log: the frontier below which every transaction is complete, and the
/// visible rows at or above `from`.
struct Batch {
    xmin: i64,
    rows: Vec<(i64, i64, String)>,
}

async fn read(db: &impl ConnectionTrait, from: i64) -> Result<Batch, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT s.xmin, c.id, c.xid, c.topic \
             FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin) s \
             LEFT JOIN changes c ON c.xid >= $1 \
             ORDER BY c.id",
            [from.into()],
        ))
        .await?;
    let mut batch = Batch {
        xmin: 0,
        rows: Vec::with_capacity(rows.len()),
    };
    for row in rows {
        batch.xmin = row.try_get("", "xmin")?;
        let id: Option<i64> = row.try_get("", "id")?;
        if let Some(id) = id {
            batch
                .rows
                .push((id, row.try_get("", "xid")?, row.try_get("", "topic")?));
        }
    }
    Ok(batch)
}

/// What a follower knows of the log.
struct Follower {
    cache: Arc<ReadCache>,
    /// Below it every transaction has ended and its rows were applied; `None` until the
    /// first read, which applies nothing (the cache starts empty, and is not trusted
    /// before that read).
    frontier: Option<i64>,
    /// Rows at or above the frontier already applied (id → xid).
    applied: HashMap<i64, i64>,
    /// Whether the cache was trusted when last looked at; a replica that stopped
    /// trusting it forgets everything before trusting it again.
    trusted: bool,
    stale_since: Option<Instant>,
}

impl Follower {
    /// Applies a read of the log that began at `started`.
    fn apply(&mut self, read: Result<AppResult<Batch>, tokio::task::JoinError>, started: Instant) {
        let batch = match read {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => return tracing::debug!(error = %e, "reading the change log failed"),
            Err(e) => return tracing::debug!(error = %e, "change-log read task failed"),
        };
        let from = self.frontier.unwrap_or(i64::MAX);
        for (id, xid, topic) in batch.rows {
            if xid >= from && !self.applied.contains_key(&id) {
                self.applied.insert(id, xid);
                if !self.cache.is_own(xid) {
                    self.cache.changed(std::slice::from_ref(&topic));
                }
            }
        }
        let next = self.frontier.map_or(batch.xmin, |f| f.max(batch.xmin));
        self.frontier = Some(next);
        self.applied.retain(|_, xid| *xid >= next);
        self.cache.forget_own_below(next);
        if !self.trusted {
            // Whatever was loaded before this read may predate changes it will never
            // apply (below the frontier, or pruned meanwhile).
            self.cache.versions().flush();
            self.trusted = true;
        }
        self.cache.freshness().caught_up(started);
    }

    /// Reports staleness, and logs an episode past the bound when it starts and ends.
    fn judge(&mut self, max_staleness: Duration) {
        let staleness = self.cache.freshness().staleness();
        if self.frontier.is_some() {
            metrics::gauge!(STALENESS).set(staleness.as_secs_f64());
        }
        match (staleness > max_staleness, self.stale_since) {
            (true, None) if self.trusted => {
                tracing::warn!(
                    staleness_ms = staleness.as_millis() as u64,
                    "change log not read within cache.max_staleness; serving reads from the database until caught up"
                );
                self.stale_since = Some(Instant::now());
                self.trusted = false;
            }
            (false, Some(since)) => {
                tracing::info!(
                    episode_ms = since.elapsed().as_millis() as u64,
                    "change log caught up; cache trusted again"
                );
                self.stale_since = None;
            }
            _ => {}
        }
    }
}

/// Follows the log until `stop` (Postgres): applies other replicas' changes to `cache`,
/// keeps its freshness, and reports staleness in `conduit_cache_staleness_seconds`.
pub async fn follow(store: Store, poll_interval: Duration, stop: CancellationToken) {
    let cache = store.cache().clone();
    cache.freshness().follow();
    let max_staleness = cache.freshness().max_staleness();
    let mut ticker = tokio::time::interval(poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut follower = Follower {
        cache: cache.clone(),
        frontier: None,
        applied: HashMap::new(),
        trusted: false,
        stale_since: None,
    };
    // A read still under way (a slow or silent connection), and when it began: waited
    // for, never doubled.
    let mut pending: Option<(tokio::task::JoinHandle<AppResult<Batch>>, Instant)> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
            () = cache.woken() => {}
        }
        if let Some((read, started)) = pending.take() {
            if read.is_finished() {
                follower.apply(read.await, started);
            } else {
                pending = Some((read, started));
                follower.judge(max_staleness);
                continue;
            }
        }
        let started = Instant::now();
        let from = follower.frontier.unwrap_or(i64::MAX);
        let reading = store.clone();
        let mut read = store.spawn_tracked(async move {
            reading
                .query(move |db| Box::pin(async move { Ok(read(db, from).await?) }))
                .await
        });
        // Most reads take a millisecond: apply them now, not at the next tick.
        match tokio::time::timeout(poll_interval, &mut read).await {
            Ok(done) => follower.apply(done, started),
            Err(_) => pending = Some((read, started)),
        }
        follower.judge(max_staleness);
    }
}

/// Wakes this replica's follower whenever a notification arrives on [`CHANNEL`], over a
/// connection of its own (`database.listen_url`, else `database.url`), reconnecting
/// with backoff; until stop.
pub async fn listen(url: Secret, cache: Arc<ReadCache>, stop: CancellationToken) {
    use sea_orm::sqlx::postgres::PgListener;
    let mut delay = Duration::from_millis(100);
    loop {
        let connect = async {
            let mut listener = PgListener::connect(url.expose()).await?;
            listener.listen(CHANNEL).await?;
            anyhow::Ok(listener)
        };
        let mut listener = tokio::select! {
            () = stop.cancelled() => return,
            connected = connect => match connected {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::debug!(error = %e, "change-log wake-ups: cannot listen; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        delay = Duration::from_millis(100);
        cache.wake();
        loop {
            let received = tokio::select! {
                () = stop.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(_)) => cache.wake(),
                // Reconnecting: anything may have been missed; the next poll reads it.
                Ok(None) => cache.wake(),
                Err(e) => {
                    tracing::debug!(error = %e, "change-log wake-ups: listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}

/// Sends one wake-up (`NOTIFY`, no payload) after local commits that changed something,
/// coalescing those that come while one is being sent; until stop. Outside the writing
/// transactions, so writers never queue for the notification lock.
pub async fn announce(store: Store, stop: CancellationToken) {
    let cache = store.cache().clone();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = cache.announced() => {}
        }
        let sent = store
            .query(|db| {
                Box::pin(async move {
                    db.execute_unprepared(&format!("NOTIFY {CHANNEL}")).await?;
                    Ok(())
                })
            })
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "change-log wake-up not sent; replicas poll anyway");
        }
    }
}

/// Deletes rows every replica has had `RETENTION` to read (the `changes-prune` job).
pub async fn prune(store: Store) -> AppResult<()> {
    store
        .query(|db| {
            Box::pin(async move {
                db.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "DELETE FROM changes WHERE created_at < clock_timestamp() - make_interval(secs => $1) \
                     AND xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
                    [(RETENTION.as_secs_f64()).into()],
                ))
                .await?;
                Ok(())
            })
        })
        .await
}
