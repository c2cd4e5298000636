//! Queries on idempotency keys. Each runs as a unit of its own: claiming is one
//! transaction (insert, or lock and read the row that is there), so two requests with one
//! key cannot both own it. A claim is a fencing token: recording, releasing and the
//! request's own writes (`fence`) act only while the row still carries it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait,
    QueryFilter, QuerySelect, Set, Statement,
    sea_query::{Expr, OnConflict},
};

use crate::{
    db::{Fence, Store},
    entities::idempotency_keys::{ActiveModel, Column, Entity as Keys},
    error::{AppError, AppResult, Reason},
};

/// Which request a key belongs to.
#[derive(Clone)]
pub struct KeyRef {
    pub scope: Arc<str>,
    pub key: Arc<str>,
    pub fingerprint: Arc<str>,
}

/// The answer kept for replay.
pub struct Stored {
    pub status: i32,
    pub headers: Option<String>,
    pub body: Vec<u8>,
}

pub enum Claim {
    /// This request runs under this fencing token; record or release the key afterwards.
    Owned(String),
    /// An earlier request with this key and body finished: answer what it answered.
    Replay(Stored),
    /// The key was first used with another request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

/// Claims the key for this request, or says why not. `lease`: a claim older than this
/// belongs to a request that died without recording, and may be taken over — unless its
/// write committed, since running the operation again would apply it twice. A new key
/// beyond the caller's `max_keys` live ones is refused, and nothing is stored.
pub async fn claim(
    store: &Store,
    key: &KeyRef,
    ttl: chrono::Duration,
    lease: chrono::Duration,
    max_keys: u64,
) -> AppResult<Claim> {
    let key = key.clone();
    store
        .write(move |txn| {
            let key = key.clone();
            Box::pin(async move {
                let now = Utc::now();
                let token = uuid::Uuid::new_v4().simple().to_string();
                lock_scope(txn, &key.scope).await?;
                let inserted = Keys::insert(fresh(&key, &token, now, ttl))
                    .on_conflict(
                        OnConflict::columns([Column::Scope, Column::Key])
                            .do_nothing()
                            .to_owned(),
                    )
                    .exec_without_returning(txn)
                    .await?;
                if inserted == 1 {
                    let live = Keys::find()
                        .filter(Column::Scope.eq(key.scope.to_string()))
                        .filter(Column::ExpiresAt.gt(now))
                        .count(txn)
                        .await?;
                    if live > max_keys {
                        // Rolls the insert back.
                        return Err(AppError::Exhausted(Reason::IdempotencyKeyQuota));
                    }
                    return Ok(Claim::Owned(token));
                }
                let existing = Keys::find_by_id((key.scope.to_string(), key.key.to_string()))
                    .lock_exclusive()
                    .one(txn)
                    .await?
                    // Purged between our insert and our read: try again.
                    .ok_or(AppError::Contention(Reason::IdempotencyKeyInUse))?;
                let take_over = existing.expires_at <= now
                    || (existing.status.is_none()
                        && existing.committed_at.is_none()
                        && existing.fingerprint == *key.fingerprint
                        && existing.locked_at + lease <= now);
                if take_over {
                    let mut row = fresh(&key, &token, now, ttl);
                    row.scope = sea_orm::ActiveValue::Unchanged(key.scope.to_string());
                    row.key = sea_orm::ActiveValue::Unchanged(key.key.to_string());
                    row.update(txn).await?;
                    return Ok(Claim::Owned(token));
                }
                if existing.fingerprint != *key.fingerprint {
                    return Ok(Claim::Mismatch);
                }
                Ok(match existing.status {
                    Some(status) => Claim::Replay(Stored {
                        status,
                        headers: existing.response_headers,
                        body: existing.response_body.unwrap_or_default(),
                    }),
                    None => Claim::InProgress,
                })
            })
        })
        .await
}

/// Postgres: one caller's claims take turns, so counting its live keys and adding one is
/// atomic. SQLite's writers take turns already.
async fn lock_scope(txn: &impl ConnectionTrait, scope: &str) -> AppResult<()> {
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))",
            [scope.into()],
        ))
        .await?;
    }
    Ok(())
}

fn fresh(key: &KeyRef, claim: &str, now: DateTime<Utc>, ttl: chrono::Duration) -> ActiveModel {
    ActiveModel {
        scope: Set(key.scope.to_string()),
        key: Set(key.key.to_string()),
        fingerprint: Set(key.fingerprint.to_string()),
        status: Set(None),
        response_headers: Set(None),
        response_body: Set(None),
        locked_at: Set(now),
        expires_at: Set(now + ttl),
        claim: Set(Some(claim.to_string())),
        committed_at: Set(None),
    }
}

/// The fence the claimed request's writes commit under: the claim must still be this
/// request's, and it is marked as having committed, in the writing transaction itself.
pub fn fence(key: &KeyRef, claim: &str) -> std::sync::Arc<Fence> {
    let (key, claim) = (key.clone(), std::sync::Arc::<str>::from(claim));
    Fence::new(move |txn| {
        let condition = owned_by(&key, &claim);
        Box::pin(async move {
            let marked = Keys::update_many()
                .col_expr(Column::CommittedAt, Expr::value(Utc::now()))
                .filter(condition)
                .exec(txn)
                .await?;
            Ok(marked.rows_affected == 1)
        })
    })
}

/// Keeps the first answer for the key's retries.
pub async fn record(store: &Store, key: &KeyRef, claim: &str, answer: Stored) -> AppResult<()> {
    let (key, answer, claim) = (key.clone(), Arc::new(answer), Arc::<str>::from(claim));
    store
        .write(move |txn| {
            let (key, answer, claim) = (key.clone(), answer.clone(), claim.clone());
            Box::pin(async move {
                Keys::update_many()
                    .col_expr(Column::Status, Expr::value(answer.status))
                    .col_expr(Column::ResponseHeaders, Expr::value(answer.headers.clone()))
                    .col_expr(Column::ResponseBody, Expr::value(answer.body.clone()))
                    .filter(owned_by(&key, &claim))
                    .exec(txn)
                    .await?;
                Ok(())
            })
        })
        .await
}

/// Gives the key up after an answer not worth replaying (nothing was written), so a
/// retry runs afresh. A claim whose write committed is kept.
pub async fn release(store: &Store, key: &KeyRef, claim: &str) -> AppResult<()> {
    let (key, claim) = (key.clone(), Arc::<str>::from(claim));
    store
        .write(move |txn| {
            let (key, claim) = (key.clone(), claim.clone());
            Box::pin(async move {
                Keys::delete_many()
                    .filter(owned_by(&key, &claim))
                    .filter(Column::CommittedAt.is_null())
                    .exec(txn)
                    .await?;
                Ok(())
            })
        })
        .await
}

/// The key's row while `claim` holds it and no answer is recorded.
fn owned_by(key: &KeyRef, claim: &str) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(Column::Scope.eq(key.scope.to_string()))
        .add(Column::Key.eq(key.key.to_string()))
        .add(Column::Claim.eq(claim))
        .add(Column::Status.is_null())
}

/// Deletes expired keys; how many.
pub async fn purge_expired(store: &Store) -> AppResult<u64> {
    store
        .write(|txn| {
            Box::pin(async move {
                let purged = Keys::delete_many()
                    .filter(Column::ExpiresAt.lte(Utc::now()))
                    .exec(txn)
                    .await?;
                Ok(purged.rows_affected)
            })
        })
        .await
}
