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
    /// Exit 0 when the server at `server.addr` answers `GET /readyz` with 200, else 1: a
    /// container HEALTHCHECK that needs no curl in the image.
    Healthcheck,
}

#[derive(Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up {
        /// Then refresh the planner's statistics (ANALYZE): a freshly loaded database
        /// has none, and Postgres plans lists 20× slower without them until autovacuum
        /// gets there.
        #[arg(long)]
        analyze: bool,
    },
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
        Command::Healthcheck => healthcheck(&settings.server.addr).await,
        Command::Migrate { action } => {
            let db = db::connect(&settings.database).await?;
            match action {
                MigrateAction::Up { analyze } => {
                    db::migrate(&db, &settings.database).await?;
                    if analyze {
                        use sea_orm::ConnectionTrait;
                        db.execute_unprepared("ANALYZE").await?;
                        println!("statistics refreshed (ANALYZE)");
                    }
                }
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

/// One `GET /readyz` over a plain TCP connection to the configured address (an unspecified
/// one such as `0.0.0.0` is asked on loopback), bounded to 3 s.
async fn healthcheck(addr: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut target = tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolving server.addr {addr}"))?
        .next()
        .with_context(|| format!("server.addr {addr} names no address"))?;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(target)
            .await
            .with_context(|| format!("connecting to {target}"))?;
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        let status_line = String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        if status_line.starts_with("HTTP/1.1 200") {
            println!("ready");
            Ok(())
        } else {
            anyhow::bail!("not ready: {status_line}")
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), check)
        .await
        .context("no answer from /readyz within 3s")?
}
