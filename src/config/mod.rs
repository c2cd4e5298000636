//! Typed settings, layered: built-in defaults → `config/default.toml` →
//! `config/{APP_ENV}.toml` → environment (`CONDUIT__SECTION__KEY`, plus `*_FILE` secret
//! mounts). Both profiles are compiled into the binary; copies on disk (in `config/` under
//! the working directory) are optional overrides.
//!
//! Every section denies unknown keys so that a typo fails at startup, naming the key,
//! instead of silently running with a default.

mod load;
mod model;
mod secrets;
mod validate;

pub use load::Sources;
pub use model::*;
pub use secrets::{Secret, redact_url};

#[cfg(test)]
mod tests;
