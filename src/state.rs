//! What request handlers may reach: handed out by the lifecycle manager, cheap to clone.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::{auth::TokenKeys, config::Settings, db::Store, lifecycle::Readiness};

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    /// The database: services run their work in its units.
    pub store: Store,
    pub readiness: Readiness,
    pub tokens: Arc<TokenKeys>,
}

impl AppState {
    pub fn new(settings: Arc<Settings>, db: DatabaseConnection, readiness: Readiness) -> Self {
        let tokens = Arc::new(TokenKeys::new(&settings.auth));
        let store = Store::new(db, settings.database.max_connections);
        Self {
            settings,
            store,
            readiness,
            tokens,
        }
    }

    /// The pool itself, for infrastructure (health checks, pool metrics, shutdown).
    pub fn db(&self) -> &DatabaseConnection {
        self.store.connection()
    }
}
