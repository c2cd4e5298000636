//! Command line: `serve` (the default) runs the service; the rest are operator tools.

use clap::{Parser, Subcommand};

use crate::{config::Settings, db, server};

#[derive(Parser)]
#[command(
    name = "conduit",
    version,
    about = "RealWorld API over gRPC, gRPC-Web and REST on one port"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply, roll back or list database migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print the OpenAPI document (JSON).
    Openapi,
}

#[derive(Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Roll back the most recent migration.
    Down,
    /// List migrations and whether each is applied.
    Status,
}

#[derive(Subcommand)]
pub enum ConfigAction {
    /// Print the effective configuration, secrets redacted. Invalid configuration never
    /// gets here: loading fails first, with a non-zero exit.
    Check,
}

/// Runs an operator command to completion.
pub async fn run(command: Command, settings: &Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => unreachable!("serve is orchestrated by main"),
        Command::Config {
            action: ConfigAction::Check,
        } => {
            print!("{}", settings.redacted_toml());
            Ok(())
        }
        Command::Openapi => {
            println!(
                "{}",
                serde_json::to_string_pretty(&server::openapi(settings))?
            );
            Ok(())
        }
        Command::Migrate { action } => {
            let db = db::connect(&settings.database).await?;
            match action {
                MigrateAction::Up => db::migrate(&db, &settings.database).await?,
                MigrateAction::Down => db::rollback_last(&db).await?,
                MigrateAction::Status => {
                    for (name, applied) in db::migration_status(&db).await? {
                        println!("{} {name}", if applied { "applied" } else { "pending" });
                    }
                }
            }
            db.close().await?;
            Ok(())
        }
    }
}
