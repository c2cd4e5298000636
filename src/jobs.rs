//! Background jobs that run once per interval across all replicas. Every replica ticks;
//! a tick runs the job only if it takes the job's lease row — due (`next_run_at` passed)
//! and not held by a live holder (`held_until` passed). The holder releases the lease
//! and sets the next due time when done; a holder that dies loses the lease when
//! `held_until` passes. On SQLite (one node) the same rows serve one process.
//!
//! Each statement is autocommitted on its own (`Store::query`): a lease is one atomic
//! UPDATE, and these statements do not count as writes that invalidate the read cache on
//! every replica, as a write transaction would once per tick.

use std::{future::Future, time::Duration};

use chrono::Utc;
use sea_orm::{
    ColumnTrait, EntityTrait, QueryFilter, Set,
    sea_query::{Expr, ExprTrait, OnConflict},
};
use tokio_util::sync::CancellationToken;

use crate::{
    db::Store,
    entities::{
        job_leases::{self, Entity as JobLeases},
        recovery_codes::{self, Entity as RecoveryCodes},
    },
    error::AppResult,
};

/// The jobs this binary runs; lease rows of other names are stale.
pub const JOBS: &[&str] = &["cleanup", "changes-prune"];

/// What one tick came to, as `conduit_job_runs_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This replica did the work.
    Ok,
    /// Not due, or another replica holds the lease.
    Skipped,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Skipped => "skipped",
            Outcome::Error => "error",
        }
    }
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Takes `job`'s lease for `holder` if the job is due and nobody live holds it.
async fn take(
    store: &Store,
    job: &'static str,
    holder: String,
    lease: Duration,
) -> AppResult<bool> {
    store
        .query(move |db| {
            Box::pin(async move {
                let now = Utc::now();
                // The row exists from the first tick of any replica on: due at once.
                JobLeases::insert(job_leases::ActiveModel {
                    job: Set(job.to_string()),
                    holder: Set(None),
                    held_until: Set(None),
                    next_run_at: Set(now),
                    last_run_at: Set(None),
                })
                .on_conflict(
                    OnConflict::column(job_leases::Column::Job)
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(db)
                .await?;
                let taken = JobLeases::update_many()
                    .col_expr(job_leases::Column::Holder, Expr::val(holder))
                    .col_expr(
                        job_leases::Column::HeldUntil,
                        Expr::val(now + chrono(lease)),
                    )
                    .filter(job_leases::Column::Job.eq(job))
                    .filter(job_leases::Column::NextRunAt.lte(now))
                    .filter(
                        job_leases::Column::HeldUntil
                            .is_null()
                            .or(job_leases::Column::HeldUntil.lt(now)),
                    )
                    .exec(db)
                    .await?;
                Ok(taken.rows_affected == 1)
            })
        })
        .await
}

/// Gives the lease back; after a run that did its work the job is next due an interval
/// later, after a failed one at once (the next tick of any replica retries).
async fn release(
    store: &Store,
    job: &'static str,
    holder: String,
    interval: Duration,
    done: bool,
) -> AppResult<()> {
    store
        .query(move |db| {
            Box::pin(async move {
                let now = Utc::now();
                let mut update = JobLeases::update_many()
                    .col_expr(job_leases::Column::Holder, Expr::val(None::<String>))
                    .col_expr(
                        job_leases::Column::HeldUntil,
                        Expr::val(None::<chrono::DateTime<Utc>>),
                    );
                if done {
                    update = update
                        .col_expr(
                            job_leases::Column::NextRunAt,
                            Expr::val(now + chrono(interval)),
                        )
                        .col_expr(job_leases::Column::LastRunAt, Expr::val(now));
                }
                update
                    .filter(job_leases::Column::Job.eq(job))
                    .filter(job_leases::Column::Holder.eq(holder))
                    .exec(db)
                    .await?;
                Ok(())
            })
        })
        .await
}

/// One tick: take the lease, run, release.
pub async fn tick<F, Fut>(store: &Store, job: &'static str, interval: Duration, work: F) -> Outcome
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = AppResult<()>>,
{
    let holder = store.cache().replica().to_string();
    // Long enough for any run; a dead holder's lease runs out after it.
    let lease = interval.max(Duration::from_secs(30));
    match take(store, job, holder.clone(), lease).await {
        Ok(false) => return Outcome::Skipped,
        Ok(true) => {}
        Err(e) => {
            tracing::warn!(job, error = %e, "job lease not taken");
            return Outcome::Error;
        }
    }
    let outcome = work().await;
    if let Err(e) = &outcome {
        tracing::warn!(job, error = %e, "job failed");
    }
    if let Err(e) = release(store, job, holder, interval, outcome.is_ok()).await {
        tracing::warn!(job, error = %e, "job lease not released; it runs out by itself");
    }
    if outcome.is_ok() {
        Outcome::Ok
    } else {
        Outcome::Error
    }
}

/// Ticks every `interval` until `stop`, counting outcomes in `conduit_job_runs_total`.
pub async fn run_leased<F, Fut>(
    store: Store,
    job: &'static str,
    interval: Duration,
    stop: CancellationToken,
    work: F,
) where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = AppResult<()>>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let outcome = tick(&store, job, interval, || work(store.clone())).await;
        metrics::counter!(
            crate::metrics::JOB_RUNS,
            "job" => job,
            "outcome" => outcome.as_str()
        )
        .increment(1);
    }
}

/// The `cleanup` job: ended sessions with their refresh tokens, spent recovery codes,
/// and lease rows of jobs this binary no longer has.
pub async fn cleanup(store: Store, session_idle_timeout: chrono::Duration) -> AppResult<()> {
    let sessions = crate::auth::sessions::purge_ended(&store, session_idle_timeout).await?;
    let (codes, leases) = store
        .query(|db| {
            Box::pin(async move {
                let codes = RecoveryCodes::delete_many()
                    .filter(recovery_codes::Column::UsedAt.is_not_null())
                    .exec(db)
                    .await?;
                let leases = JobLeases::delete_many()
                    .filter(job_leases::Column::Job.is_not_in(JOBS.iter().copied()))
                    .exec(db)
                    .await?;
                Ok((codes.rows_affected, leases.rows_affected))
            })
        })
        .await?;
    if sessions + codes + leases > 0 {
        tracing::debug!(sessions, codes, leases, "cleanup deleted ended records");
    }
    Ok(())
}
