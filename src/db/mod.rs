//! Database connection and migrations. Only the lifecycle manager and the `migrate` command
//! call these; feature modules receive a [`Store`] through `AppState` and do all their
//! database work in its units (`work`).

pub mod changes;
mod conn;
mod work;

pub use changes::changed;
pub use conn::Conn;
pub use work::{Fence, Store, Unit};

use std::{path::Path, time::Duration};

use anyhow::{Context, bail};
use conduit_migrations::{MigrationStatus, Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend,
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};
use tokio::time::{Instant, sleep};

use crate::config::DatabaseSettings;

/// Connects, retrying with backoff until `startup_deadline`, then gives up with the last
/// error so a misconfigured or unreachable database fails the process fast and clearly.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    ensure_sqlite_dir(settings.url.expose())?;
    let deadline = Instant::now() + settings.startup_deadline;
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 1u32;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt_timeout = settings
            .connect_timeout
            .min(remaining.max(Duration::from_millis(100)));
        let result =
            tokio::time::timeout(attempt_timeout, try_connect(settings, attempt_timeout)).await;
        let error = match result {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(e)) => format!("{e}"),
            Err(_) => format!("no answer within {attempt_timeout:?}"),
        };
        if Instant::now() + backoff >= deadline {
            bail!(
                "database unreachable at {} after {attempt} attempt(s) within {:?}: {error}",
                crate::config::redact_url(settings.url.expose()),
                settings.startup_deadline
            );
        }
        tracing::warn!(attempt, error = %error, url = crate::config::redact_url(settings.url.expose()), retry_in_ms = backoff.as_millis() as u64, "database not reachable yet");
        sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
        attempt += 1;
    }
}

async fn try_connect(
    settings: &DatabaseSettings,
    timeout: Duration,
) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(settings.url.expose());
    let busy_timeout = settings.sqlite_busy_timeout;
    let pooled = settings.pooler == crate::config::Pooler::Transaction;
    options
        .max_connections(settings.max_connections)
        .connect_timeout(timeout)
        .acquire_timeout(timeout.max(Duration::from_secs(5)))
        .sqlx_logging(false)
        // WAL lets readers proceed during a write; busy_timeout makes a writer wait for the
        // lock instead of failing with SQLITE_BUSY under concurrent requests.
        .map_sqlx_sqlite_opts(move |o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(busy_timeout)
                .foreign_keys(true)
        })
        // Defence in depth behind `Store`'s units: should a connection ever sit inside a
        // transaction with nothing running, Postgres ends that session instead of letting
        // it hold locks and hide writes.
        //
        // Generic plans: sqlx prepares each statement once per connection, but by default
        // Postgres still plans every execution afresh for its parameters while it judges
        // a custom plan cheaper — measured at ~1.8 ms of planning against ~0.7 ms of
        // execution for the feed. conduit's statements are key lookups and index-ordered
        // pages whose best plan does not depend on the values.
        //
        // Behind a transaction-mode pooler neither works: startup options are refused,
        // and a prepared statement kept on one server connection is missing (or named
        // twice) on the next; the pooler's own settings take their place.
        .map_sqlx_postgres_opts(move |o| {
            if pooled {
                o.statement_cache_capacity(0)
            } else {
                o.options([
                    ("idle_in_transaction_session_timeout", "60s"),
                    ("plan_cache_mode", "force_generic_plan"),
                ])
            }
        });
    let db = Database::connect(options).await?;
    db.ping().await?;
    Ok(db)
}

/// Applies pending migrations. On Postgres an advisory lock, held on a connection of its
/// own (not a pool: the lock belongs to the session that took it, and a pool could hand
/// the unlock to another), serialises replicas that start together so each migration
/// runs once. Behind a transaction-mode pooler run `conduit migrate up` with a direct URL.
pub async fn migrate(db: &DatabaseConnection, settings: &DatabaseSettings) -> anyhow::Result<()> {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            use sea_orm::sqlx::{Connection, Executor, PgConnection};
            let mut lock_conn = PgConnection::connect(settings.url.expose())
                .await
                .context("opening the migration lock connection")?;
            lock_conn
                .execute(sea_orm::sqlx::AssertSqlSafe(format!(
                    "SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"
                )))
                .await
                .context("taking the migration lock")?;
            let result = Migrator::up(db, None).await;
            let _ = lock_conn
                .execute(sea_orm::sqlx::AssertSqlSafe(format!(
                    "SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"
                )))
                .await;
            let _ = lock_conn.close().await;
            result.context("applying migrations")
        }
        _ => Migrator::up(db, None).await.context("applying migrations"),
    }
}

/// Arbitrary but fixed: every replica must use the same key.
const MIGRATION_LOCK_KEY: i64 = 0x0063_6f6e_6475_6974;

pub async fn rollback_last(db: &DatabaseConnection) -> anyhow::Result<()> {
    Migrator::down(db, Some(1))
        .await
        .context("rolling back the last migration")
}

/// How the database's schema compares with the migrations this binary carries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SchemaState {
    /// The binary's migrations not applied yet: the schema is behind.
    pub pending: Vec<String>,
    /// Applied migrations the binary does not know: the schema is ahead (an older binary,
    /// e.g. after a rollback of the deployment).
    pub unknown: Vec<String>,
}

/// Reads the applied migrations without creating anything (servers that do not migrate
/// must not write the schema).
pub async fn schema_state(db: &DatabaseConnection) -> anyhow::Result<SchemaState> {
    use sea_orm::TransactionTrait;
    // In a transaction of its own, which works behind a transaction-mode pooler too.
    let txn = db.begin().await.context("reading the applied migrations")?;
    let read = txn
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT version FROM seaql_migrations",
        ))
        .await;
    let _ = txn.rollback().await;
    let applied: Vec<String> = match read {
        Ok(rows) => rows
            .iter()
            .filter_map(|row| row.try_get::<String>("", "version").ok())
            .collect(),
        // An empty database: no migration table yet.
        Err(e) if e.to_string().contains("seaql_migrations") => Vec::new(),
        Err(e) => return Err(e).context("reading the applied migrations"),
    };
    let known: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    Ok(SchemaState {
        pending: known
            .iter()
            .filter(|name| !applied.contains(name))
            .cloned()
            .collect(),
        unknown: applied
            .iter()
            .filter(|name| !known.contains(name))
            .cloned()
            .collect(),
    })
}

/// `(name, applied)` for every migration the binary knows.
pub async fn migration_status(db: &DatabaseConnection) -> anyhow::Result<Vec<(String, bool)>> {
    let migrations = Migrator::get_migration_with_status(db).await?;
    Ok(migrations
        .iter()
        .map(|m| (m.name().to_string(), m.status() == MigrationStatus::Applied))
        .collect())
}

/// `sqlite://data/conduit.db` needs `data/` to exist before SQLite can create the file.
fn ensure_sqlite_dir(url: &str) -> anyhow::Result<()> {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Ok(());
    };
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// A transaction that will write. On SQLite it takes the write lock at BEGIN
/// (`IMMEDIATE`): a deferred transaction that reads first and writes later cannot wait
/// for the lock (SQLite answers SQLITE_BUSY at once to avoid a deadlock), whereas BEGIN
/// IMMEDIATE waits up to `database.sqlite_busy_timeout`. Other backends ignore the mode.
pub async fn begin_write(
    db: &DatabaseConnection,
) -> Result<sea_orm::DatabaseTransaction, sea_orm::DbErr> {
    use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// A read-only transaction whose statements all see one snapshot: REPEATABLE READ on
/// Postgres; on SQLite (WAL) any read transaction already does.
pub async fn begin_snapshot(
    db: &DatabaseConnection,
) -> Result<sea_orm::DatabaseTransaction, sea_orm::DbErr> {
    use sea_orm::{AccessMode, IsolationLevel, TransactionTrait};
    match db.get_database_backend() {
        DbBackend::Postgres => {
            db.begin_with_config(
                Some(IsolationLevel::RepeatableRead),
                Some(AccessMode::ReadOnly),
            )
            .await
        }
        _ => db.begin().await,
    }
}

/// `(open, idle)` connections of the pool.
pub fn pool_usage(db: &DatabaseConnection) -> (u32, usize) {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (pool.size(), pool.num_idle())
        }
        DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle())
        }
        _ => (0, 0),
    }
}

/// Whether every pooled connection is checked out: a ping that found no connection then
/// says "busy", not "down".
pub fn pool_saturated(db: &DatabaseConnection, max_connections: u32) -> bool {
    let (size, idle) = pool_usage(db);
    size >= max_connections && idle == 0
}
