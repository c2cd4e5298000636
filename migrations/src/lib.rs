//! Schema migrations, applied in order by `conduit migrate up` or at startup when
//! `database.migrate_on_start` is set. A new migration is a new file here plus one line in
//! `Migrator::migrations`; an applied migration is never edited.

pub use sea_orm_migration::{MigrationStatus, prelude::*};

mod m20261124_000001_create_users;
mod m20261124_000002_create_content;
mod m20261124_000003_create_idempotency_keys;
mod m20261124_000004_case_insensitive_identities;
mod m20261124_000005_create_sessions;
mod m20261124_000006_create_job_leases;
mod m20261204_000007_identity_edges;
mod m20261204_000008_create_changes;
pub mod skeleton;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_create_users::Migration),
            Box::new(m20261124_000002_create_content::Migration),
            Box::new(m20261124_000003_create_idempotency_keys::Migration),
            Box::new(m20261124_000004_case_insensitive_identities::Migration),
            Box::new(m20261124_000005_create_sessions::Migration),
            Box::new(m20261124_000006_create_job_leases::Migration),
            Box::new(m20261204_000007_identity_edges::Migration),
            Box::new(m20261204_000008_create_changes::Migration),
        ]
    }
}
