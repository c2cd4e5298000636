//! Articles, the feed and favorites, protocol-free.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, IntoActiveModel, Set, SqlErr};

pub use super::reads::{ArticleList, Flags, Rendered};
pub use super::repo::Hold;
use super::{
    fields::{normalize_tags, validate_fields},
    reads::{self, Listed, Slice},
    repo::{self, ArticleRow, Scope, Window},
    slug::{free_slug, slug_taken, slugify, with_slug_retries},
};
use crate::{
    auth::Principal,
    db::Store,
    entities::articles,
    error::{AppError, AppResult, Reason},
    modules::{profiles::service::ProfileView, users::repo::caller_or},
    pagination::{PageQuery, PageRequest, PageScope, PageTokens},
    state::AppState,
    validation::{Violations, normalize_name},
    values::Slug,
};

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

#[derive(Debug, Default, Clone)]
pub struct ArticleFilter {
    pub tag: Option<String>,
    pub author: Option<String>,
    pub favorited: Option<String>,
}

/// A page by offset (REST): the list's total with it.
pub struct ArticlePage {
    pub articles: ArticleList,
    pub total: u64,
}

/// A page by keyset (gRPC): no total, a token for the next page (empty on the last).
pub struct ArticleKeysetPage {
    pub articles: ArticleList,
    pub next_page_token: String,
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
    store: Store,
    pages: Arc<PageTokens>,
    /// `articles.max_tags`.
    max_tags: usize,
}

impl ArticleService {
    pub fn new(state: &AppState) -> Self {
        Self {
            store: state.store.clone(),
            pages: state.pages.clone(),
            max_tags: state.settings.articles.max_tags,
        }
    }

    /// [`list`](Self::list) by keyset pages (AIP-158): no total, a token for the next page.
    pub async fn list_page(
        &self,
        viewer: Option<Principal>,
        filter: ArticleFilter,
        query: PageQuery,
    ) -> AppResult<ArticleKeysetPage> {
        let filter = filter.normalized()?;
        let scope = PageScope::new("articles")
            .with(filter.tag.as_deref())
            .with(filter.author.as_deref())
            .with(filter.favorited.as_deref());
        let keyset = self.pages.open(&scope, &query)?;
        let page = reads::page(
            &self.store,
            Listed::Filtered(filter),
            viewer,
            Slice::Keyset(keyset),
        )
        .await?;
        Ok(ArticleKeysetPage {
            articles: page.articles,
            next_page_token: self.pages.next(&scope, page.next),
        })
    }

    /// [`feed`](Self::feed) by keyset pages; a token only walks its own viewer's feed.
    pub async fn feed_page(
        &self,
        viewer: Principal,
        query: PageQuery,
    ) -> AppResult<ArticleKeysetPage> {
        let scope = PageScope::new("feed").with(Some(&viewer.user_id.to_string()));
        let keyset = self.pages.open(&scope, &query)?;
        let page = reads::page(
            &self.store,
            Listed::FeedOf(viewer.user_id),
            Some(viewer),
            Slice::Keyset(keyset),
        )
        .await?;
        Ok(ArticleKeysetPage {
            articles: page.articles,
            next_page_token: self.pages.next(&scope, page.next),
        })
    }

    pub async fn list(
        &self,
        viewer: Option<Principal>,
        filter: ArticleFilter,
        page: PageRequest,
    ) -> AppResult<ArticlePage> {
        let (limit, offset) = page.validate()?;
        let filter = filter.normalized()?;
        let page = reads::page(
            &self.store,
            Listed::Filtered(filter),
            viewer,
            Slice::Offset { limit, offset },
        )
        .await?;
        Ok(ArticlePage {
            articles: page.articles,
            total: page.total,
        })
    }

    pub async fn feed(&self, viewer: Principal, page: PageRequest) -> AppResult<ArticlePage> {
        let (limit, offset) = page.validate()?;
        let page = reads::page(
            &self.store,
            Listed::FeedOf(viewer.user_id),
            Some(viewer),
            Slice::Offset { limit, offset },
        )
        .await?;
        Ok(ArticlePage {
            articles: page.articles,
            total: page.total,
        })
    }

    pub async fn get(&self, viewer: Option<Principal>, slug: &str) -> AppResult<ArticleView> {
        let slug = Slug::lookup(slug)?;
        reads::one(&self.store, slug.as_str(), viewer).await
    }

    pub async fn create(&self, author: Principal, input: NewArticle) -> AppResult<ArticleView> {
        validate_fields(
            self.max_tags,
            Some(&input.title),
            Some(&input.description),
            Some(&input.body),
            Some(&input.tag_list),
        )?;
        let input = Arc::new(NewArticle {
            title: normalize_name(&input.title),
            tag_list: normalize_tags(input.tag_list),
            ..input
        });
        with_slug_retries(|suffixed| {
            let input = input.clone();
            self.store.write(move |txn| {
                let input = input.clone();
                Box::pin(async move {
                    let row = repo::NewRow {
                        slug: free_slug(txn, &input.title, suffixed).await?,
                        title: input.title.clone(),
                        description: input.description.clone(),
                        body: input.body.clone(),
                        author_id: author.user_id,
                    };
                    let article = match repo::insert(txn, row).await {
                        Ok(article) => article,
                        Err(e) => {
                            return Err(caller_or(txn, author.user_id, e, slug_taken).await);
                        }
                    };
                    repo::set_tags(txn, article.id, &input.tag_list, true).await?;
                    reload_in(txn, author, article.id).await
                })
            })
        })
        .await
    }

    pub async fn update(
        &self,
        author: Principal,
        slug: &str,
        changes: ArticleChanges,
    ) -> AppResult<ArticleView> {
        validate_fields(
            self.max_tags,
            changes.title.as_deref(),
            changes.description.as_deref(),
            changes.body.as_deref(),
            changes.tag_list.as_ref(),
        )?;
        let slug = Slug::lookup(slug)?;
        let changes = Arc::new(ArticleChanges {
            title: changes.title.as_deref().map(normalize_name),
            tag_list: changes.tag_list.map(normalize_tags),
            ..changes
        });
        with_slug_retries(|suffixed| {
            let (slug, changes) = (slug.clone(), changes.clone());
            self.store.write(move |txn| {
                let (slug, changes) = (slug.clone(), changes.clone());
                Box::pin(async move {
                    // The row is locked from here to commit: what we check is what we
                    // change, and a concurrent rename or delete makes this one 404.
                    let article = held(txn, &slug, Hold::Exclusive).await?;
                    owned(&article, author)?;
                    let mut row = article.clone().into_active_model();
                    if let Some(title) = changes.title.as_deref()
                        && title != article.title
                    {
                        if slugify(title) != slugify(&article.title) {
                            row.slug = Set(free_slug(txn, title, suffixed).await?);
                        }
                        row.title = Set(title.to_string());
                    }
                    if let Some(description) = &changes.description {
                        row.description = Set(description.clone());
                    }
                    if let Some(body) = &changes.body {
                        row.body = Set(body.clone());
                    }
                    let saved = repo::save(txn, &article, row).await.map_err(slug_taken)?;
                    if let Some(tags) = &changes.tag_list {
                        repo::set_tags(txn, saved.id, tags, false).await?;
                    }
                    reload_in(txn, author, saved.id).await
                })
            })
        })
        .await
    }

    pub async fn delete(&self, author: Principal, slug: &str) -> AppResult<()> {
        let slug = Slug::lookup(slug)?;
        self.store
            .write(move |txn| {
                let slug = slug.clone();
                Box::pin(async move {
                    let article = held(txn, &slug, Hold::Exclusive).await?;
                    owned(&article, author)?;
                    if !repo::delete(txn, &article).await? {
                        return Err(AppError::NotFound(Reason::ArticleNotFound));
                    }
                    Ok(())
                })
            })
            .await
    }

    pub async fn favorite(&self, viewer: Principal, slug: &str) -> AppResult<ArticleView> {
        self.set_favorite(viewer, slug, true).await
    }

    pub async fn unfavorite(&self, viewer: Principal, slug: &str) -> AppResult<ArticleView> {
        self.set_favorite(viewer, slug, false).await
    }

    /// The answer is read in the same transaction as the change, so it shows this
    /// request's outcome (`favorited` and a count that includes it).
    async fn set_favorite(
        &self,
        viewer: Principal,
        slug: &str,
        favorite: bool,
    ) -> AppResult<ArticleView> {
        let slug = Slug::lookup(slug)?;
        self.store
            .write(move |txn| {
                let slug = slug.clone();
                Box::pin(async move {
                    let article = held(txn, &slug, Hold::Shared).await?;
                    repo::lock_favorite(txn, viewer.user_id, article.id).await?;
                    if favorite {
                        if let Err(e) = repo::favorite(txn, viewer.user_id, article.id).await {
                            return Err(caller_or(txn, viewer.user_id, e, article_gone).await);
                        }
                    } else {
                        repo::unfavorite(txn, viewer.user_id, article.id).await?;
                    }
                    reload_in(txn, viewer, article.id).await
                })
            })
            .await
    }
}

impl ArticleFilter {
    /// Filters obey the rules names were stored under: a tag filter is trimmed and
    /// normalised exactly as tags are when articles are written.
    fn normalized(self) -> AppResult<Self> {
        Violations::new()
            .name("tag", self.tag.as_deref())
            .name("author", self.author.as_deref())
            .name("favorited", self.favorited.as_deref())
            .finish()?;
        let normalize = |value: Option<String>| value.as_deref().map(normalize_name);
        Ok(ArticleFilter {
            tag: normalize(self.tag),
            author: normalize(self.author),
            favorited: normalize(self.favorited),
        })
    }
}

/// The article a write just changed, read in the write's transaction: the answer shows
/// the state this write produced.
async fn reload_in(
    db: &impl ConnectionTrait,
    viewer: Principal,
    id: i64,
) -> AppResult<ArticleView> {
    repo::shown(db, &Scope::Id(id), Window::One, Some(viewer.user_id))
        .await?
        .pop()
        .map(reads::view_of)
        .ok_or(AppError::NotFound(Reason::ArticleNotFound))
}

/// The article by slug with its author, for reads.
pub async fn find_in(db: &impl ConnectionTrait, slug: &Slug) -> AppResult<ArticleRow> {
    repo::find_by_slug(db, slug.as_str())
        .await?
        .ok_or(AppError::NotFound(Reason::ArticleNotFound))
}

/// The article by slug, locked for the rest of the transaction (see `repo::lock`): what
/// every write on an article or on what hangs off it takes first.
pub async fn held(
    db: &impl ConnectionTrait,
    slug: &Slug,
    hold: Hold,
) -> AppResult<articles::Model> {
    repo::lock(db, slug.as_str(), hold)
        .await?
        .ok_or(AppError::NotFound(Reason::ArticleNotFound))
}

fn owned(article: &articles::Model, author: Principal) -> AppResult<()> {
    if article.author_id != author.user_id {
        return Err(AppError::Forbidden("article"));
    }
    Ok(())
}

/// A write that references an article deleted meanwhile: the foreign key says NOT_FOUND.
pub fn article_gone(e: sea_orm::DbErr) -> AppError {
    match e.sql_err() {
        Some(SqlErr::ForeignKeyConstraintViolation(_)) => {
            AppError::NotFound(Reason::ArticleNotFound)
        }
        _ => AppError::from(e),
    }
}
