//! Tags, protocol-free.

use sea_orm::DatabaseConnection;

use super::repo;
use crate::{error::AppResult, state::AppState};

#[derive(Clone)]
pub struct TagService {
    db: DatabaseConnection,
}

impl TagService {
    pub fn new(state: &AppState) -> Self {
        Self {
            db: state.db.clone(),
        }
    }

    pub async fn list(&self) -> AppResult<Vec<String>> {
        Ok(repo::in_use(&self.db).await?)
    }
}
