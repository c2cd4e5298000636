//! Queries on idempotency keys. Each runs as a unit of its own: claiming is one
//! transaction (insert, or lock and read the row that is there), so two requests with one
//! key cannot both own it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QuerySelect, Set,
    sea_query::{Expr, OnConflict},
};

use crate::{
    db::Store,
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
    /// This request runs; record or release the key afterwards.
    Owned,
    /// An earlier request with this key and body finished: answer what it answered.
    Replay(Stored),
    /// The key was first used with another request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

/// Claims the key for this request, or says why not. `lease`: a claim older than this
/// belongs to a request that died without recording, and may be taken over.
pub async fn claim(
    store: &Store,
    key: &KeyRef,
    ttl: chrono::Duration,
    lease: chrono::Duration,
) -> AppResult<Claim> {
    let key = key.clone();
    store
        .write(move |txn| {
            let key = key.clone();
            Box::pin(async move {
                let now = Utc::now();
                let inserted = Keys::insert(fresh(&key, now, ttl))
                    .on_conflict(
                        OnConflict::columns([Column::Scope, Column::Key])
                            .do_nothing()
                            .to_owned(),
                    )
                    .exec_without_returning(txn)
                    .await?;
                if inserted == 1 {
                    return Ok(Claim::Owned);
                }
                let existing = Keys::find_by_id((key.scope.to_string(), key.key.to_string()))
                    .lock_exclusive()
                    .one(txn)
                    .await?
                    // Purged between our insert and our read: try again.
                    .ok_or(AppError::Contention(Reason::IdempotencyKeyInUse))?;
                let take_over = existing.expires_at <= now
                    || (existing.status.is_none()
                        && existing.fingerprint == *key.fingerprint
                        && existing.locked_at + lease <= now);
                if take_over {
                    let mut row = fresh(&key, now, ttl);
                    row.scope = sea_orm::ActiveValue::Unchanged(key.scope.to_string());
                    row.key = sea_orm::ActiveValue::Unchanged(key.key.to_string());
                    row.update(txn).await?;
                    return Ok(Claim::Owned);
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

fn fresh(key: &KeyRef, now: DateTime<Utc>, ttl: chrono::Duration) -> ActiveModel {
    ActiveModel {
        scope: Set(key.scope.to_string()),
        key: Set(key.key.to_string()),
        fingerprint: Set(key.fingerprint.to_string()),
        status: Set(None),
        response_headers: Set(None),
        response_body: Set(None),
        locked_at: Set(now),
        expires_at: Set(now + ttl),
    }
}

/// Keeps the first answer for the key's retries.
pub async fn record(store: &Store, key: &KeyRef, answer: Stored) -> AppResult<()> {
    let (key, answer) = (key.clone(), Arc::new(answer));
    store
        .write(move |txn| {
            let (key, answer) = (key.clone(), answer.clone());
            Box::pin(async move {
                Keys::update_many()
                    .col_expr(Column::Status, Expr::value(answer.status))
                    .col_expr(Column::ResponseHeaders, Expr::value(answer.headers.clone()))
                    .col_expr(Column::ResponseBody, Expr::value(answer.body.clone()))
                    .filter(owned_by(&key))
                    .exec(txn)
                    .await?;
                Ok(())
            })
        })
        .await
}

/// Gives the key up after an answer not worth replaying (nothing was written), so a
/// retry runs afresh.
pub async fn release(store: &Store, key: &KeyRef) -> AppResult<()> {
    let key = key.clone();
    store
        .write(move |txn| {
            let key = key.clone();
            Box::pin(async move {
                Keys::delete_many().filter(owned_by(&key)).exec(txn).await?;
                Ok(())
            })
        })
        .await
}

fn owned_by(key: &KeyRef) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(Column::Scope.eq(key.scope.to_string()))
        .add(Column::Key.eq(key.key.to_string()))
        .add(Column::Fingerprint.eq(key.fingerprint.to_string()))
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
