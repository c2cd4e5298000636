//! Comments on articles, protocol-free.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;

use super::repo;
use crate::{
    auth::Principal,
    db::Store,
    error::{AppError, AppResult, Reason},
    modules::{
        articles::service::{Hold, article_gone, find_in, held},
        profiles::service::{ProfileView, author_views, user_by_id},
        users::repo::caller_or,
    },
    pagination::{Cursor, Page, PageQuery, PageRequest, PageScope, PageTokens},
    state::AppState,
    validation::Violations,
    values::Slug,
};

pub const MAX_BODY_CHARS: usize = 10_000;
/// Comments in a REST page when the client names no `limit`: every comment of almost any
/// article, as RealWorld clients (which never page comments) expect.
pub const DEFAULT_LIMIT: i64 = 100;

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
    store: Store,
    pages: Arc<PageTokens>,
}

impl CommentService {
    pub fn new(state: &AppState) -> Self {
        Self {
            store: state.store.clone(),
            pages: state.pages.clone(),
        }
    }

    /// [`list`](Self::list) by keyset pages (AIP-158); a token only walks its own article.
    pub async fn list_page(
        &self,
        viewer: Option<Principal>,
        slug: &str,
        query: PageQuery,
    ) -> AppResult<Page<CommentView>> {
        let slug = Slug::lookup(slug)?;
        let scope = PageScope::new("comments").with(Some(slug.as_str()));
        let keyset = self.pages.open(&scope, &query)?;
        let (items, last) = self
            .store
            .read(move |txn| {
                let slug = slug.clone();
                Box::pin(async move {
                    let (article, _) = find_in(txn, &slug).await?;
                    let start = repo::Start::After(keyset.after);
                    let mut rows = repo::newest(txn, article.id, keyset.fetch(), start).await?;
                    let next = keyset.cut(&mut rows, |(comment, _)| Cursor {
                        created_at: comment.created_at,
                        id: comment.id,
                    });
                    Ok((views(txn, viewer, rows).await?, next))
                })
            })
            .await?;
        Ok(Page {
            items,
            next_page_token: self.pages.next(&scope, last),
        })
    }

    /// A page of comments, newest first: `limit` (default [`DEFAULT_LIMIT`], at most
    /// `MAX_LIMIT`) after skipping `offset` (at most `MAX_OFFSET`); a fixed number of
    /// statements whatever the number of comments.
    pub async fn list(
        &self,
        viewer: Option<Principal>,
        slug: &str,
        page: PageRequest,
    ) -> AppResult<Vec<CommentView>> {
        let (limit, offset) = page.bounded(DEFAULT_LIMIT)?;
        let slug = Slug::lookup(slug)?;
        self.store
            .read(move |txn| {
                let slug = slug.clone();
                Box::pin(async move {
                    let (article, _) = find_in(txn, &slug).await?;
                    let rows =
                        repo::newest(txn, article.id, limit, repo::Start::Skip(offset)).await?;
                    views(txn, viewer, rows).await
                })
            })
            .await
    }

    pub async fn add(&self, author: Principal, slug: &str, body: String) -> AppResult<CommentView> {
        Violations::new()
            .text("body", Some(&body))
            .not_blank("body", &body)
            .max_chars("body", Some(&body), MAX_BODY_CHARS)
            .finish()?;
        let slug = Slug::lookup(slug)?;
        let body = Arc::new(body);
        self.store
            .write(move |txn| {
                let (slug, body) = (slug.clone(), body.clone());
                Box::pin(async move {
                    // Held so the article cannot be deleted between our check and insert.
                    let article = held(txn, &slug, Hold::Shared).await?;
                    let user = user_by_id(txn, author.user_id)
                        .await?
                        .ok_or(AppError::Unauthorized(Reason::TokenInvalid))?;
                    let comment = match repo::insert(
                        txn,
                        article.id,
                        author.user_id,
                        (*body).clone(),
                    )
                    .await
                    {
                        Ok(comment) => comment,
                        Err(e) => {
                            return Err(caller_or(txn, author.user_id, e, article_gone).await);
                        }
                    };
                    views(txn, Some(author), vec![(comment, user)])
                        .await?
                        .pop()
                        .ok_or(AppError::NotFound(Reason::CommentNotFound))
                })
            })
            .await
    }

    /// Of two concurrent deletes of one comment, one answers NOT_FOUND.
    pub async fn delete(&self, author: Principal, slug: &str, id: i64) -> AppResult<()> {
        let slug = Slug::lookup(slug)?;
        self.store
            .write(move |txn| {
                let slug = slug.clone();
                Box::pin(async move {
                    let article = held(txn, &slug, Hold::Shared).await?;
                    let comment = repo::lock(txn, article.id, id)
                        .await?
                        .ok_or(AppError::NotFound(Reason::CommentNotFound))?;
                    if comment.author_id != author.user_id {
                        return Err(AppError::Forbidden("comment"));
                    }
                    if !repo::delete(txn, comment.id).await? {
                        return Err(AppError::NotFound(Reason::CommentNotFound));
                    }
                    Ok(())
                })
            })
            .await
    }
}

async fn views(
    db: &impl ConnectionTrait,
    viewer: Option<Principal>,
    rows: Vec<repo::CommentRow>,
) -> AppResult<Vec<CommentView>> {
    let authors = author_views(db, viewer, rows.iter().map(|(_, u)| u)).await?;
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
