//! Articles, the feed and favorites, protocol-free.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, IntoActiveModel, Set, SqlErr, TransactionTrait};

use super::repo::{self, ArticleRow, Scope};
use crate::{
    auth::Principal,
    error::{AppError, AppResult},
    modules::profiles::service::{ProfileView, author_views},
    state::AppState,
    validation::Violations,
};

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArticleView {
    pub slug: String,
    pub title: String,
    pub description: String,
    /// `None` in lists, which leave the body out.
    pub body: Option<String>,
    pub tag_list: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub favorited: bool,
    pub favorites_count: i64,
    pub author: ProfileView,
}

#[derive(Debug, Default)]
pub struct ArticleFilter {
    pub tag: Option<String>,
    pub author: Option<String>,
    pub favorited: Option<String>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PageRequest {
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl PageRequest {
    fn validate(self) -> AppResult<(u64, u64)> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        let offset = self.offset.unwrap_or(0);
        Violations::new()
            .check(
                (1..=MAX_LIMIT).contains(&limit),
                "limit",
                &format!("must be between 1 and {MAX_LIMIT}"),
            )
            .check(offset >= 0, "offset", "must be 0 or more")
            .finish()?;
        Ok((limit as u64, offset as u64))
    }
}

#[derive(Debug)]
pub struct ArticlePage {
    pub articles: Vec<ArticleView>,
    pub total: u64,
}

pub struct NewArticle {
    pub title: String,
    pub description: String,
    pub body: String,
    pub tag_list: Vec<String>,
}

#[derive(Default)]
pub struct ArticleChanges {
    pub title: Option<String>,
    pub description: Option<String>,
    pub body: Option<String>,
    /// `Some` replaces the tags (an empty list removes them all).
    pub tag_list: Option<Vec<String>>,
}

#[derive(Clone)]
pub struct ArticleService {
    db: DatabaseConnection,
}

impl ArticleService {
    pub fn new(state: &AppState) -> Self {
        Self {
            db: state.db.clone(),
        }
    }

    pub async fn list(
        &self,
        viewer: Option<Principal>,
        filter: ArticleFilter,
        page: PageRequest,
    ) -> AppResult<ArticlePage> {
        let (limit, offset) = page.validate()?;
        let scope = Scope::Filtered {
            tag: filter.tag.as_deref(),
            author: filter.author.as_deref(),
            favorited_by: filter.favorited.as_deref(),
        };
        self.page(viewer, &scope, limit, offset).await
    }

    pub async fn feed(&self, viewer: Principal, page: PageRequest) -> AppResult<ArticlePage> {
        let (limit, offset) = page.validate()?;
        self.page(Some(viewer), &Scope::FeedOf(viewer.user_id), limit, offset)
            .await
    }

    async fn page(
        &self,
        viewer: Option<Principal>,
        scope: &Scope<'_>,
        limit: u64,
        offset: u64,
    ) -> AppResult<ArticlePage> {
        let (rows, total) = repo::page(&self.db, scope, limit, offset).await?;
        let articles = self.views(viewer, rows, false).await?;
        Ok(ArticlePage { articles, total })
    }

    pub async fn get(&self, viewer: Option<Principal>, slug: &str) -> AppResult<ArticleView> {
        let row = self.find(slug).await?;
        self.view(viewer, row).await
    }

    pub async fn create(&self, author: Principal, input: NewArticle) -> AppResult<ArticleView> {
        Violations::new()
            .not_blank("title", &input.title)
            .not_blank("description", &input.description)
            .not_blank("body", &input.body)
            .finish()?;
        let tags = normalize_tags(input.tag_list);
        let slug = self.free_slug(&input.title).await?;
        let txn = self.db.begin().await?;
        let article = repo::insert(
            &txn,
            repo::NewRow {
                slug,
                title: input.title.trim().to_string(),
                description: input.description,
                body: input.body,
                author_id: author.user_id,
            },
        )
        .await
        .map_err(slug_conflict)?;
        repo::set_tags(&txn, article.id, &tags).await?;
        txn.commit().await?;
        let row = repo::find_by_id(&self.db, article.id)
            .await?
            .ok_or(AppError::NotFound("article"))?;
        self.view(Some(author), row).await
    }

    pub async fn update(
        &self,
        author: Principal,
        slug: &str,
        changes: ArticleChanges,
    ) -> AppResult<ArticleView> {
        Violations::new()
            .not_blank_if_set("title", changes.title.as_deref())
            .not_blank_if_set("description", changes.description.as_deref())
            .not_blank_if_set("body", changes.body.as_deref())
            .finish()?;
        let (article, _) = self.find_own(author, slug).await?;
        let mut row = article.clone().into_active_model();
        if let Some(title) = changes.title.map(|t| t.trim().to_string())
            && title != article.title
        {
            if slugify(&title) != slugify(&article.title) {
                row.slug = Set(self.free_slug(&title).await?);
            }
            row.title = Set(title);
        }
        if let Some(description) = changes.description {
            row.description = Set(description);
        }
        if let Some(body) = changes.body {
            row.body = Set(body);
        }
        let txn = self.db.begin().await?;
        let saved = repo::save(&txn, row).await.map_err(slug_conflict)?;
        if let Some(tags) = changes.tag_list {
            repo::set_tags(&txn, saved.id, &normalize_tags(tags)).await?;
        }
        txn.commit().await?;
        let row = repo::find_by_id(&self.db, saved.id)
            .await?
            .ok_or(AppError::NotFound("article"))?;
        self.view(Some(author), row).await
    }

    pub async fn delete(&self, author: Principal, slug: &str) -> AppResult<()> {
        let (article, _) = self.find_own(author, slug).await?;
        let txn = self.db.begin().await?;
        repo::delete(&txn, article.id).await?;
        txn.commit().await?;
        Ok(())
    }

    pub async fn favorite(&self, viewer: Principal, slug: &str) -> AppResult<ArticleView> {
        let row = self.find(slug).await?;
        repo::favorite(&self.db, viewer.user_id, row.0.id).await?;
        self.view(Some(viewer), row).await
    }

    pub async fn unfavorite(&self, viewer: Principal, slug: &str) -> AppResult<ArticleView> {
        let row = self.find(slug).await?;
        repo::unfavorite(&self.db, viewer.user_id, row.0.id).await?;
        self.view(Some(viewer), row).await
    }

    /// The article by slug; NOT_FOUND otherwise. Also what comments use to find theirs.
    pub async fn find(&self, slug: &str) -> AppResult<ArticleRow> {
        repo::find_by_slug(&self.db, slug)
            .await?
            .ok_or(AppError::NotFound("article"))
    }

    async fn find_own(&self, author: Principal, slug: &str) -> AppResult<ArticleRow> {
        let row = self.find(slug).await?;
        if row.0.author_id != author.user_id {
            return Err(AppError::Forbidden("article"));
        }
        Ok(row)
    }

    async fn view(&self, viewer: Option<Principal>, row: ArticleRow) -> AppResult<ArticleView> {
        self.views(viewer, vec![row], true)
            .await?
            .pop()
            .ok_or(AppError::NotFound("article"))
    }

    /// Completes rows into views with a fixed number of statements, whatever their number.
    async fn views(
        &self,
        viewer: Option<Principal>,
        rows: Vec<ArticleRow>,
        with_body: bool,
    ) -> AppResult<Vec<ArticleView>> {
        let ids: Vec<i64> = rows.iter().map(|(a, _)| a.id).collect();
        let mut tags = repo::tags_of(&self.db, &ids).await?;
        let counts = repo::favorite_counts(&self.db, &ids).await?;
        let favorited = match viewer {
            Some(p) => repo::favorited_among(&self.db, p.user_id, &ids).await?,
            None => HashSet::new(),
        };
        let authors = author_views(&self.db, viewer, rows.iter().map(|(_, u)| u)).await?;
        Ok(rows
            .into_iter()
            .map(|(article, author)| ArticleView {
                tag_list: tags.remove(&article.id).unwrap_or_default(),
                favorited: favorited.contains(&article.id),
                favorites_count: counts.get(&article.id).copied().unwrap_or(0),
                author: authors
                    .get(&author.id)
                    .cloned()
                    .unwrap_or_else(|| ProfileView::of(&author, false)),
                body: with_body.then_some(article.body),
                slug: article.slug,
                title: article.title,
                description: article.description,
                created_at: article.created_at,
                updated_at: article.updated_at,
            })
            .collect())
    }

    /// The title in kebab case, with a random suffix when another article has it already.
    async fn free_slug(&self, title: &str) -> AppResult<String> {
        let base = slugify(title);
        if !repo::slug_taken(&self.db, &base).await? {
            return Ok(base);
        }
        for _ in 0..5 {
            let candidate = format!("{base}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
            if !repo::slug_taken(&self.db, &candidate).await? {
                return Ok(candidate);
            }
        }
        Err(AppError::Conflict("slug"))
    }
}

/// A concurrent writer took the slug between our check and our insert.
fn slug_conflict(e: sea_orm::DbErr) -> AppError {
    match e.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => AppError::Conflict("slug"),
        _ => AppError::from(e),
    }
}

/// Trimmed, without blanks or duplicates, sorted.
fn normalize_tags(tags: Vec<String>) -> Vec<String> {
    let unique: std::collections::BTreeSet<String> = tags
        .into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    unique.into_iter().collect()
}

pub fn slugify(title: &str) -> String {
    let mut slug = String::with_capacity(title.len());
    for c in title.trim().chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        "article".to_string()
    } else {
        slug.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_kebab_case() {
        assert_eq!(
            slugify("How to train your dragon"),
            "how-to-train-your-dragon"
        );
        assert_eq!(slugify("  Hello,   World!! "), "hello-world");
        assert_eq!(slugify("Ünïcode Tîtle"), "ünïcode-tîtle");
        assert_eq!(slugify("!!!"), "article");
    }

    #[test]
    fn tags_are_trimmed_deduplicated_sorted() {
        let tags = normalize_tags(vec![
            "dragons".into(),
            " training ".into(),
            "dragons".into(),
            "".into(),
        ]);
        assert_eq!(tags, ["dragons", "training"]);
    }

    #[test]
    fn page_bounds() {
        assert_eq!(
            PageRequest::default().validate().expect("defaults"),
            (20, 0)
        );
        assert!(
            PageRequest {
                limit: Some(0),
                offset: None
            }
            .validate()
            .is_err()
        );
        assert!(
            PageRequest {
                limit: Some(101),
                offset: None
            }
            .validate()
            .is_err()
        );
        assert!(
            PageRequest {
                limit: None,
                offset: Some(-1)
            }
            .validate()
            .is_err()
        );
    }
}
