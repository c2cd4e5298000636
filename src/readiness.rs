//! Whether the service should get traffic, and why not: one watched state that the
//! lifecycle updates (database checks, schema version, drain) and that `/readyz`, gRPC
//! health, the keep-alive decision while draining and the readiness metrics read.

use std::sync::Arc;

use tokio::sync::watch;

/// What readiness depends on. Ready = the database answers, its schema has every
/// migration this binary needs, and we are not draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyState {
    pub database_up: bool,
    pub schema_behind: bool,
    pub draining: bool,
}

impl ReadyState {
    pub fn is_ready(self) -> bool {
        self.database_up && !self.schema_behind && !self.draining
    }

    /// Why the service is not ready, for `/readyz` bodies and logs.
    pub fn reason(self) -> Option<&'static str> {
        if self.draining {
            Some("draining: the service is shutting down")
        } else if !self.database_up {
            Some("database unreachable")
        } else if self.schema_behind {
            Some(
                "database schema behind this binary: migrations pending (run `conduit migrate up`)",
            )
        } else {
            None
        }
    }
}

#[derive(Clone)]
pub struct Readiness(Arc<watch::Sender<ReadyState>>);

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Ready until told otherwise.
    pub fn new() -> Self {
        Readiness(Arc::new(watch::Sender::new(ReadyState {
            database_up: true,
            schema_behind: false,
            draining: false,
        })))
    }

    pub fn current(&self) -> ReadyState {
        *self.0.borrow()
    }

    pub(crate) fn update(&self, change: impl FnOnce(&mut ReadyState)) {
        self.0.send_if_modified(|state| {
            let before = *state;
            change(state);
            before != *state
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<ReadyState> {
        self.0.subscribe()
    }
}
