//! The change log: every write transaction appends the topics it changed
//! (`article:42`, `favorites:user:7`, …) in the same transaction, and every replica
//! reads the rows committed since it last looked, to invalidate exactly what they name.
//! `xid` is the writing transaction's id (`pg_current_xact_id()`): rows are read in
//! transaction-id windows below the oldest transaction still running, so a transaction
//! that commits after one with a later id is never skipped. Old rows are pruned by a
//! leased job. Only Postgres writes rows; SQLite serves one process.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Changes {
    Table,
    Id,
    Xid,
    Topic,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Changes::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Changes::Id))
                    .col(big_integer(Changes::Xid).default(0))
                    .col(text(Changes::Topic))
                    .col(timestamp_with_time_zone(Changes::CreatedAt))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("changes_xid_idx", Changes::Xid),
            ("changes_created_at_idx", Changes::CreatedAt),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Changes::Table)
                        .col(column)
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Changes::Table).to_owned())
            .await
    }
}
