//! Leases for background jobs that must run once per interval across all replicas: a
//! replica runs a job only after taking its row (due, and not held by a live holder).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum JobLeases {
    Table,
    Job,
    /// The replica running it now; NULL when nobody is.
    Holder,
    /// A holder that died is replaced after this.
    HeldUntil,
    /// The next run is due then.
    NextRunAt,
    LastRunAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(JobLeases::Table)
                    .if_not_exists()
                    .col(string_len(JobLeases::Job, 64).primary_key())
                    .col(string_len_null(JobLeases::Holder, 64))
                    .col(timestamp_with_time_zone_null(JobLeases::HeldUntil))
                    .col(timestamp_with_time_zone(JobLeases::NextRunAt))
                    .col(timestamp_with_time_zone_null(JobLeases::LastRunAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(JobLeases::Table).to_owned())
            .await
    }
}
