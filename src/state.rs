//! What request handlers may reach: handed out by the lifecycle manager, cheap to clone.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::{
    auth::{
        Authenticator, TokenKeys, attempts::Attempts, password::Hasher, sessions::SessionPolicy,
    },
    cache::ReadCache,
    config::Settings,
    db::Store,
    pagination::PageTokens,
    readiness::Readiness,
};

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    /// The database: services run their work in its units.
    pub store: Store,
    pub readiness: Readiness,
    pub tokens: Arc<TokenKeys>,
    /// Checks access tokens and their sessions for the auth layer.
    pub authenticator: Arc<Authenticator>,
    /// Signs the gRPC lists' page tokens.
    pub pages: Arc<PageTokens>,
    /// Password hashing, bounded in concurrency.
    pub hasher: Hasher,
    /// Rate limits on attempts at credentials.
    pub attempts: Attempts,
}

impl AppState {
    pub fn new(settings: Arc<Settings>, db: DatabaseConnection, readiness: Readiness) -> Self {
        let tokens = Arc::new(TokenKeys::new(&settings.auth));
        let pages = Arc::new(PageTokens::new(
            settings.auth.jwt_secret.expose().as_bytes(),
        ));
        let store = Store::new(
            db,
            settings.database.max_connections,
            ReadCache::new(&settings.cache),
            settings.database.pooler == crate::config::Pooler::Transaction,
        );
        let authenticator = Arc::new(Authenticator {
            keys: tokens.clone(),
            store: store.clone(),
            sessions: Default::default(),
            policy: Arc::new(SessionPolicy::new(&settings.auth)),
        });
        let hasher = Hasher::new(&settings.auth);
        let attempts = Attempts::new(&settings.rate_limit);
        Self {
            settings,
            store,
            readiness,
            tokens,
            authenticator,
            pages,
            hasher,
            attempts,
        }
    }

    /// The pool itself, for infrastructure (health checks, pool metrics, shutdown).
    pub fn db(&self) -> &DatabaseConnection {
        self.store.connection()
    }
}
