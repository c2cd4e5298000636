//! The stack-cost pair: one trivial JSON handler behind conduit's whole middleware stack
//! (`--full`), or the same handler on the same server loop with no layers (`--bare`).
//! Both initialise telemetry as `conduit serve` does: without a subscriber, `tracing`
//! hands every span hyper and h2 open to `log`, a cost (some 5,000 instructions per
//! HTTP/2 request) conduit never pays. The difference is what every conduit request pays
//! before and after its handler.
//!
//! Configuration as for `conduit serve` (CONDUIT__* variables); prints the JSON
//! `listening` log line (full) or `listening <addr>` (bare).

use std::{future::pending, sync::Arc};

use axum::{Json, Router, routing::get};
use conduit::{
    config::{Settings, Sources},
    db,
    readiness::Readiness,
    server,
    state::AppState,
    telemetry,
};
use serde_json::{Value, json};
use tower::util::BoxCloneService;

async fn probe() -> Json<Value> {
    Json(json!({"status": "ok", "items": [1, 2, 3]}))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let full = match std::env::args().nth(1).as_deref() {
        Some("--full") => true,
        Some("--bare") => false,
        _ => anyhow::bail!("usage: stack-probe --full|--bare"),
    };
    let settings = Arc::new(Settings::load(Sources::from_process())?);
    let router = Router::new().route("/probe", get(probe));
    let listener;
    let _telemetry = Box::leak(Box::new(telemetry::init(&settings)?));
    let app = if full {
        let connection = db::connect(&settings.database).await?;
        let state = AppState::new(settings.clone(), connection, Readiness::new());
        listener = server::bind(&settings.server).await?;
        server::stack(router, &settings, &state)
    } else {
        listener = server::bind(&settings.server).await?;
        println!("listening {}", listener.local_addr()?);
        BoxCloneService::new(router)
    };
    let _threads = server::serve(
        listener,
        app,
        None,
        &settings.server,
        Readiness::new(),
        pending(),
    )
    .await;
    Ok(())
}
