//! What `Store::query` units run their statements on: the pool as it is, or behind a
//! transaction-mode pooler a transaction of their own (there a statement's parse and its
//! execution may otherwise reach different server connections).

use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction};

use super::work::Unit;
use crate::error::AppResult;

/// Runs autocommitted statements: on the pool as they are, or behind a transaction-mode
/// pooler inside one transaction (there a statement's parse and its execution may
/// otherwise reach different server connections).
pub(super) async fn statements<T, F>(
    connection: &DatabaseConnection,
    pooled: bool,
    unit: F,
) -> AppResult<T>
where
    F: for<'c> FnOnce(&'c Conn<'c>) -> Unit<'c, T>,
{
    use sea_orm::TransactionTrait;
    if !pooled {
        return unit(&Conn::Pool(connection)).await;
    }
    let txn = connection.begin().await?;
    let outcome = unit(&Conn::Txn(&txn)).await;
    match outcome {
        Ok(value) => {
            txn.commit().await?;
            Ok(value)
        }
        Err(e) => {
            let _ = txn.rollback().await;
            Err(e)
        }
    }
}

/// What `Store::query` units run their statements on: the pool itself, or (behind a
/// transaction-mode pooler) a transaction of their own.
pub enum Conn<'a> {
    Pool(&'a DatabaseConnection),
    Txn(&'a DatabaseTransaction),
}

#[async_trait::async_trait]
impl ConnectionTrait for Conn<'_> {
    fn get_database_backend(&self) -> sea_orm::DbBackend {
        match self {
            Conn::Pool(db) => db.get_database_backend(),
            Conn::Txn(txn) => txn.get_database_backend(),
        }
    }

    async fn execute_raw(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<sea_orm::ExecResult, sea_orm::DbErr> {
        match self {
            Conn::Pool(db) => db.execute_raw(stmt).await,
            Conn::Txn(txn) => txn.execute_raw(stmt).await,
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<sea_orm::ExecResult, sea_orm::DbErr> {
        match self {
            Conn::Pool(db) => db.execute_unprepared(sql).await,
            Conn::Txn(txn) => txn.execute_unprepared(sql).await,
        }
    }

    async fn query_one_raw(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<Option<sea_orm::QueryResult>, sea_orm::DbErr> {
        match self {
            Conn::Pool(db) => db.query_one_raw(stmt).await,
            Conn::Txn(txn) => txn.query_one_raw(stmt).await,
        }
    }

    async fn query_all_raw(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<Vec<sea_orm::QueryResult>, sea_orm::DbErr> {
        match self {
            Conn::Pool(db) => db.query_all_raw(stmt).await,
            Conn::Txn(txn) => txn.query_all_raw(stmt).await,
        }
    }

    fn support_returning(&self) -> bool {
        match self {
            Conn::Pool(db) => db.support_returning(),
            Conn::Txn(txn) => txn.support_returning(),
        }
    }
}
