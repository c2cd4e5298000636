//! The entrypoint orchestrates; it does no work of its own. Read it as the table of
//! contents of the service: configuration, telemetry, lifecycle, routes, stack, serve,
//! drain, shutdown.

use std::{process::ExitCode, sync::Arc};

use clap::Parser;
use conduit::{
    cli::{self, Cli, Command},
    config::{Settings, Sources},
    lifecycle::{self, Lifecycle},
    server,
    telemetry::{self, Telemetry},
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(Sources::from_process()) {
        Ok(settings) => Arc::new(settings),
        Err(e) => {
            eprintln!("conduit: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        command => cli::run(command, &settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conduit: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Arc<Settings>) -> anyhow::Result<()> {
    let telemetry = telemetry::init(&settings)?; // logs, traces, metrics, error tracking
    let result = run(&settings, &telemetry).await;
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "conduit stopped"); // reaches error tracking
    }
    telemetry.shutdown(); // flush spans and error events last
    result
}

async fn run(settings: &Arc<Settings>, telemetry: &Telemetry) -> anyhow::Result<()> {
    let lifecycle = Lifecycle::start(settings.clone()).await?; // db, migrations, workers
    let served = async {
        let routers = server::routers(settings, &lifecycle.app_state(), telemetry.metrics())?; // modules, health, reflection, probes, docs, metrics
        lifecycle.mirror_health(routers.health.clone()); // gRPC health follows readiness
        lifecycle.spawn_metrics_upkeep(telemetry.metrics()); // histogram upkeep
        let app = server::stack(routers.api, settings, &lifecycle.app_state()); // the one middleware stack
        let shutdown = lifecycle::shutdown_signal(); // handlers in place before the port opens
        let listener = server::bind(&settings.server).await?;
        let admin = server::bind_admin(&settings.server, routers.admin).await?;
        let readiness = lifecycle.app_state().readiness; // keep-alive ends while draining
        let threads = server::serve(listener, app, admin, &settings.server, readiness, async {
            shutdown.await;
            lifecycle.begin_drain().await; // NOT_SERVING first, then stop accepting
        })
        .await;
        anyhow::Ok(threads)
    }
    .await;
    let stopped = lifecycle.shutdown().await; // workers, then the database, even if serving failed
    served.map(drop).and(stopped) // per-core serving runtimes end last: connections they opened stay usable until the database closes
}
