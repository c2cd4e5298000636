//! Comments on articles, protocol-free.

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;

use super::repo;
use crate::{
    auth::Principal,
    error::{AppError, AppResult},
    modules::{
        articles::service::{ArticleService, article_gone},
        profiles::service::{ProfileView, author_views, user_by_id},
    },
    state::AppState,
    validation::Violations,
};

pub const MAX_BODY_CHARS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentView {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub body: String,
    pub author: ProfileView,
}

#[derive(Clone)]
pub struct CommentService {
    db: DatabaseConnection,
    articles: ArticleService,
}

impl CommentService {
    pub fn new(state: &AppState) -> Self {
        Self {
            db: state.db.clone(),
            articles: ArticleService::new(state),
        }
    }

    /// Newest first; a fixed number of statements whatever the number of comments.
    pub async fn list(&self, viewer: Option<Principal>, slug: &str) -> AppResult<Vec<CommentView>> {
        let (article, _) = self.articles.find(slug).await?;
        let rows = repo::of_article(&self.db, article.id).await?;
        self.views(viewer, rows).await
    }

    pub async fn add(&self, author: Principal, slug: &str, body: String) -> AppResult<CommentView> {
        Violations::new()
            .not_blank("body", &body)
            .max_chars("body", Some(&body), MAX_BODY_CHARS)
            .finish()?;
        let (article, _) = self.articles.find(slug).await?;
        let user = user_by_id(&self.db, author.user_id)
            .await?
            .ok_or(AppError::Unauthorized("token", "invalid"))?;
        let comment = repo::insert(&self.db, article.id, author.user_id, body)
            .await
            .map_err(article_gone)?;
        self.views(Some(author), vec![(comment, user)])
            .await?
            .pop()
            .ok_or(AppError::NotFound("comment"))
    }

    pub async fn delete(&self, author: Principal, slug: &str, id: i64) -> AppResult<()> {
        let (article, _) = self.articles.find(slug).await?;
        let comment = repo::find(&self.db, article.id, id)
            .await?
            .ok_or(AppError::NotFound("comment"))?;
        if comment.author_id != author.user_id {
            return Err(AppError::Forbidden("comment"));
        }
        repo::delete(&self.db, comment.id).await?;
        Ok(())
    }

    async fn views(
        &self,
        viewer: Option<Principal>,
        rows: Vec<repo::CommentRow>,
    ) -> AppResult<Vec<CommentView>> {
        let authors = author_views(&self.db, viewer, rows.iter().map(|(_, u)| u)).await?;
        Ok(rows
            .into_iter()
            .map(|(comment, user)| CommentView {
                id: comment.id,
                created_at: comment.created_at,
                updated_at: comment.updated_at,
                body: comment.body,
                author: authors
                    .get(&user.id)
                    .cloned()
                    .unwrap_or_else(|| ProfileView::of(&user, false)),
            })
            .collect())
    }
}
