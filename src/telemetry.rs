//! Logging: JSON lines in dev and prod (one object per event, span fields included so every
//! line carries its request id), human-readable locally. `RUST_LOG` overrides the
//! configured level.

use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{AppEnv, LogFormat, Settings};

pub fn init(settings: &Settings) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.telemetry.log_level))?;
    let json = match settings.telemetry.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => settings.app_env() != AppEnv::Local,
    };
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()?;
    } else {
        registry.with(fmt::layer().compact()).try_init()?;
    }
    Ok(())
}
