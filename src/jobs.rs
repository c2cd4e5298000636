//! Background jobs that run once per interval across all replicas. Every replica ticks;
//! a tick runs the job only if it takes the job's lease row — due (its last run at least
//! the ticking replica's interval ago) and not held by a live holder (`held_until`
//! passed), both judged on the database's clock (Postgres). The holder releases the lease
//! and sets the next due time when done; a holder that dies loses the lease when
//! `held_until` passes. On SQLite (one node) the same rows serve one process.
//!
//! Each statement is autocommitted on its own (`Store::query`): a lease is one atomic
//! UPDATE, and these statements do not count as writes that invalidate the read cache on
//! every replica, as a write transaction would once per tick.

use std::{future::Future, time::Duration};

use chrono::Utc;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, Set, Statement,
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

/// Takes `job`'s lease for `holder` if the job is due — its last run at least the
/// *current* `interval` ago, so a changed interval takes effect at once — and nobody live
/// holds it. On Postgres every time is the database's (`now()`), so replicas whose clocks
/// disagree still agree on due and held; SQLite is one machine.
async fn take(
    store: &Store,
    job: &'static str,
    holder: String,
    interval: Duration,
    lease: Duration,
) -> AppResult<bool> {
    store
        .query(move |db| {
            Box::pin(async move {
                if db.get_database_backend() == DbBackend::Postgres {
                    db.execute_raw(Statement::from_sql_and_values(
                        DbBackend::Postgres,
                        "INSERT INTO job_leases (job, holder, held_until, next_run_at, last_run_at) \
                         VALUES ($1, NULL, NULL, now(), NULL) ON CONFLICT (job) DO NOTHING",
                        [job.into()],
                    ))
                    .await?;
                    let taken = db
                        .execute_raw(Statement::from_sql_and_values(
                            DbBackend::Postgres,
                            "UPDATE job_leases SET holder = $2, held_until = now() + make_interval(secs => $3) \
                             WHERE job = $1 \
                             AND (last_run_at IS NULL OR last_run_at + make_interval(secs => $4) <= now()) \
                             AND (held_until IS NULL OR held_until < now())",
                            [
                                job.into(),
                                holder.into(),
                                lease.as_secs_f64().into(),
                                interval.as_secs_f64().into(),
                            ],
                        ))
                        .await?;
                    return Ok(taken.rows_affected() == 1);
                }
                let now = Utc::now();
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
                    .filter(
                        job_leases::Column::LastRunAt
                            .is_null()
                            .or(job_leases::Column::LastRunAt.lte(now - chrono(interval))),
                    )
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

/// Gives the lease back; a run that did its work is recorded as the last run (the job is
/// due again an interval after it), a failed one is not (the next tick of any replica
/// retries). `next_run_at` records when this replica's interval makes it due.
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
                if db.get_database_backend() == DbBackend::Postgres {
                    db.execute_raw(Statement::from_sql_and_values(
                        DbBackend::Postgres,
                        "UPDATE job_leases SET holder = NULL, held_until = NULL, \
                         last_run_at = CASE WHEN $3 THEN now() ELSE last_run_at END, \
                         next_run_at = CASE WHEN $3 THEN now() + make_interval(secs => $4) ELSE now() END \
                         WHERE job = $1 AND holder = $2",
                        [
                            job.into(),
                            holder.into(),
                            done.into(),
                            interval.as_secs_f64().into(),
                        ],
                    ))
                    .await?;
                    return Ok(());
                }
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
    // A dead holder's lease runs out after one interval, so another replica takes the job
    // over within two. A run that outlasts its interval may be joined by another
    // replica's: jobs are idempotent (they delete what has ended).
    let lease = interval.max(Duration::from_secs(1));
    match take(store, job, holder.clone(), interval, lease).await {
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
            "job_name" => job,
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
