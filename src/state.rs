//! What request handlers may reach: handed out by the lifecycle manager, cheap to clone.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::{auth::TokenKeys, config::Settings, lifecycle::Readiness};

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: DatabaseConnection,
    pub readiness: Readiness,
    pub tokens: Arc<TokenKeys>,
}

impl AppState {
    pub fn new(settings: Arc<Settings>, db: DatabaseConnection, readiness: Readiness) -> Self {
        let tokens = Arc::new(TokenKeys::new(&settings.auth));
        Self {
            settings,
            db,
            readiness,
            tokens,
        }
    }
}
