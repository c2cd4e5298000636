//! Identity at its edges:
//! - `sessions.authenticated_at`: when the session's owner last proved who they are
//!   (password, plus a second factor when on). Credential changes need it to be recent;
//!   refresh does not renew it. Existing sessions count from when they were opened.
//! - `users.username_skeleton`: the UTS #39 confusable skeleton of the lower-cased
//!   username, unique, so `kеlvins` (Cyrillic `е`) cannot register beside `kelvins`.
//!   Existing rows get theirs here; where two existing users already share one, the later
//!   keeps `NULL` (grandfathered: nobody is renamed by a migration).
//! - `idempotency_keys.claim` and `.committed_at`: the fencing token of the request that
//!   holds the key, and when that request's write committed under it. A write commits
//!   only while its claim still holds, and a claim whose write committed is never taken
//!   over, so one key's operation commits at most once.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, Statement};

use crate::skeleton::username_skeleton;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sessions {
    Table,
    AuthenticatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    UsernameSkeleton,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Claim,
    CommittedAt,
}

const SKELETON_INDEX: &str = "users_username_skeleton_key";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Sessions::Table)
                    .add_column(timestamp_with_time_zone_null(Sessions::AuthenticatedAt))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            r#"UPDATE "sessions" SET "authenticated_at" = "created_at" WHERE "authenticated_at" IS NULL"#,
        )
        .await?;

        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(string_null(Users::UsernameSkeleton))
                    .to_owned(),
            )
            .await?;
        let backend = db.get_database_backend();
        let rows = db
            .query_all_raw(Statement::from_string(
                backend,
                r#"SELECT "id", "username" FROM "users" ORDER BY "id""#,
            ))
            .await?;
        let mut seen = std::collections::HashSet::new();
        for row in rows {
            let id: i64 = row.try_get("", "id")?;
            let username: String = row.try_get("", "username")?;
            let skeleton = username_skeleton(&username);
            if !seen.insert(skeleton.clone()) {
                continue;
            }
            db.execute_raw(Statement::from_sql_and_values(
                backend,
                match backend {
                    sea_orm_migration::sea_orm::DbBackend::Postgres => {
                        r#"UPDATE "users" SET "username_skeleton" = $1 WHERE "id" = $2"#
                    }
                    _ => r#"UPDATE "users" SET "username_skeleton" = ? WHERE "id" = ?"#,
                },
                [skeleton.into(), id.into()],
            ))
            .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(SKELETON_INDEX)
                    .table(Users::Table)
                    .col(Users::UsernameSkeleton)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        for column in [
            ColumnDef::new(IdempotencyKeys::Claim)
                .string_len(32)
                .null()
                .to_owned(),
            timestamp_with_time_zone_null(IdempotencyKeys::CommittedAt),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(IdempotencyKeys::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(SKELETON_INDEX)
                    .table(Users::Table)
                    .to_owned(),
            )
            .await?;
        for (table, column) in [
            (
                IdempotencyKeys::Table.into_iden(),
                IdempotencyKeys::CommittedAt.into_iden(),
            ),
            (
                IdempotencyKeys::Table.into_iden(),
                IdempotencyKeys::Claim.into_iden(),
            ),
            (
                Users::Table.into_iden(),
                Users::UsernameSkeleton.into_iden(),
            ),
            (
                Sessions::Table.into_iden(),
                Sessions::AuthenticatedAt.into_iden(),
            ),
        ] {
            manager
                .alter_table(Table::alter().table(table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
