//! Tags, protocol-free.

use std::sync::Arc;

use super::repo;
use crate::{cache::Topic, db::Store, error::AppResult, state::AppState};

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

    /// From the cache; one statement (no transaction) when a write changed the tags in
    /// use (an article created, deleted, or retagged).
    pub async fn list(&self) -> AppResult<Arc<Vec<String>>> {
        let store = self.store.clone();
        let weigh = |tags: &Vec<String>| tags.iter().map(|t| t.len() + 24).sum::<usize>();
        let found = self
            .store
            .cache()
            .load("tags", 0, weigh, move || async move {
                let tags = store
                    .query(|db| Box::pin(async move { Ok(repo::in_use(db).await?) }))
                    .await?;
                Ok((tags, store.cache().stamp([Topic::Tags])))
            })
            .await?;
        Ok(found.value)
    }
}
