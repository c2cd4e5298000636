//! Tags, protocol-free.

use std::sync::Arc;

use super::repo;
use crate::{db::Store, error::AppResult, state::AppState};

#[derive(Clone)]
pub struct TagService {
    store: Store,
}

impl TagService {
    pub fn new(state: &AppState) -> Self {
        Self {
            store: state.store.clone(),
        }
    }

    /// From the cache; one statement (no transaction) when a write invalidated it.
    pub async fn list(&self) -> AppResult<Arc<Vec<String>>> {
        let store = self.store.clone();
        self.store
            .cache()
            .tags(async move {
                store
                    .query(|db| Box::pin(async move { Ok(repo::in_use(db).await?) }))
                    .await
            })
            .await
    }
}
