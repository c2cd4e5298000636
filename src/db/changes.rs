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

/// Follows the log until `stop` (Postgres): applies other replicas' changes to `cache`,
/// keeps its freshness, and reports staleness in `conduit_cache_staleness_seconds`.
pub async fn follow(store: Store, poll_interval: Duration, stop: CancellationToken) {
    let cache = store.cache().clone();
    cache.freshness().follow();
    let max_staleness = cache.freshness().max_staleness();
    let mut ticker = tokio::time::interval(poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Below it every transaction has ended and its rows were applied; `None` until the
    // first read, which applies nothing (the cache starts empty, and is not trusted
    // before that read).
    let mut frontier: Option<i64> = None;
    // Rows at or above the frontier already applied (id → xid).
    let mut applied: HashMap<i64, i64> = HashMap::new();
    let mut poll: Option<tokio::task::JoinHandle<AppResult<Batch>>> = None;
    let mut started = Instant::now();
    let mut trusted = false;
    let mut stale_since: Option<Instant> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
            () = cache.woken() => {}
        }
        // A read still running (a silent connection) is waited for, not doubled.
        if poll.as_ref().is_none_or(|p| p.is_finished()) {
            if let Some(done) = poll.take() {
                match done.await {
                    Ok(Ok(batch)) => {
                        let caught_up = started;
                        let from = frontier.unwrap_or(i64::MAX);
                        for (id, xid, topic) in batch.rows {
                            if xid >= from && !applied.contains_key(&id) {
                                applied.insert(id, xid);
                                if !cache.is_own(xid) {
                                    cache.changed(std::slice::from_ref(&topic));
                                }
                            }
                        }
                        let next = frontier.map_or(batch.xmin, |f| f.max(batch.xmin));
                        frontier = Some(next);
                        applied.retain(|_, xid| *xid >= next);
                        cache.forget_own_below(next);
                        if !trusted {
                            // Whatever was loaded before this read may predate changes
                            // it will never apply (before the frontier, or pruned).
                            cache.versions().flush();
                            trusted = true;
                        }
                        cache.freshness().caught_up(caught_up);
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "reading the change log failed"),
                    Err(e) => tracing::debug!(error = %e, "change-log read task failed"),
                }
            }
            started = Instant::now();
            let from = frontier.unwrap_or(i64::MAX);
            let reading = store.clone();
            poll = Some(store.spawn_tracked(async move {
                reading
                    .query(move |db| Box::pin(async move { Ok(read(db, from).await?) }))
                    .await
            }));
        }
        let staleness = cache.freshness().staleness();
        if frontier.is_some() {
            metrics::gauge!(STALENESS).set(staleness.as_secs_f64());
        }
        match (staleness > max_staleness && trusted, stale_since) {
            (true, None) => {
                tracing::warn!(
                    staleness_ms = staleness.as_millis() as u64,
                    "change log not read within cache.max_staleness; serving reads from the database until caught up"
                );
                stale_since = Some(Instant::now());
                // Caught up again, everything cached is forgotten first.
                trusted = false;
            }
            (false, Some(since)) if trusted => {
                tracing::info!(
                    episode_ms = since.elapsed().as_millis() as u64,
                    "change log caught up; cache trusted again"
                );
                stale_since = None;
            }
            _ => {}
        }
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
