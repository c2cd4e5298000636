//! Tags, protocol-free.

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

    /// One statement: no transaction needed.
    pub async fn list(&self) -> AppResult<Vec<String>> {
        self.store
            .query(|db| Box::pin(async move { Ok(repo::in_use(db).await?) }))
            .await
    }
}
