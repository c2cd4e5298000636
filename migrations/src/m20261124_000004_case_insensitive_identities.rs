//! Emails and usernames become unique regardless of case: `Jake@Example.io` and
//! `jake@example.io` are one account. Enforced by unique indexes on `lower(...)` (the
//! same expression, and so the same folding, that lookups use), replacing the
//! case-sensitive ones. Existing rows that differ only in case are never merged silently:
//! the migration stops and lists them, for an operator to resolve.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (column, case-sensitive index it replaces, case-insensitive index). Index names keep
/// the column's name: the service tells which field collided from them.
const IDENTITIES: [(&str, &str, &str); 2] = [
    ("email", "users_email_key", "users_email_lower_key"),
    ("username", "users_username_key", "users_username_lower_key"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let mut conflicts = Vec::new();
        for (column, _, _) in IDENTITIES {
            conflicts.extend(case_duplicates(db, column).await?);
        }
        if !conflicts.is_empty() {
            return Err(DbErr::Migration(format!(
                "cannot make emails and usernames unique regardless of case: these users differ \
                 only in case ({}). Rename or merge them, then migrate again; nothing was changed.",
                conflicts.join("; ")
            )));
        }
        for (column, old, new) in IDENTITIES {
            db.execute_unprepared(&format!(
                r#"CREATE UNIQUE INDEX IF NOT EXISTS "{new}" ON "users" (lower("{column}"))"#
            ))
            .await?;
            db.execute_unprepared(&format!(r#"DROP INDEX IF EXISTS "{old}""#))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for (column, old, new) in IDENTITIES {
            db.execute_unprepared(&format!(
                r#"CREATE UNIQUE INDEX IF NOT EXISTS "{old}" ON "users" ("{column}")"#
            ))
            .await?;
            db.execute_unprepared(&format!(r#"DROP INDEX IF EXISTS "{new}""#))
                .await?;
        }
        Ok(())
    }
}

/// Rows of `users` whose `column` equals another row's ignoring case, described as
/// `email "jake@example.io": user 3 "Jake@Example.io", user 7 "jake@example.io"`.
async fn case_duplicates(
    db: &impl ConnectionTrait,
    column: &'static str,
) -> Result<Vec<String>, DbErr> {
    let sql = format!(
        r#"SELECT lower("{column}") AS folded, "id", "{column}" AS value FROM "users"
           WHERE lower("{column}") IN
             (SELECT lower("{column}") FROM "users" GROUP BY lower("{column}") HAVING count(*) > 1)
           ORDER BY folded, "id""#
    );
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?;
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for row in rows {
        let folded: String = row.try_get("", "folded")?;
        let id: i64 = row.try_get("", "id")?;
        let value: String = row.try_get("", "value")?;
        let member = format!("user {id} {value:?}");
        match groups.last_mut() {
            Some((key, members)) if *key == folded => members.push(member),
            _ => groups.push((folded, vec![member])),
        }
    }
    Ok(groups
        .into_iter()
        .map(|(folded, members)| format!("{column} {folded:?}: {}", members.join(", ")))
        .collect())
}
