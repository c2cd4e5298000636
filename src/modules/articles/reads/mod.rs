//! Reads of articles, composed per request from cached parts (`cache`):
//!
//! - a page's ids (`window`), by list and window, with the list's total (`total`);
//! - each article's document (`article`) and body (`body`), its author as shown
//!   (`author`) and its favourite count (`count`);
//! - the viewer's favourites and follows (`viewer`), for the flags;
//! - which article a slug names (`slug`), which user a username names (`username`);
//! - a page as anyone sees it (`page`), composed of the above, with what its answers are
//!   encoded to (`list`): an answer writes those bytes with the viewer's flags, so a warm
//!   page is not encoded again per request.
//!
//! Each part is stamped with the topics it was read from, so a write invalidates only
//! what it touched: a favourite, one count and one viewer's set; an edit, one document;
//! a new article, the lists it joins. A cold page costs one statement (the page with
//! everything it shows, which also fills the parts); a page whose id list is kept but
//! some parts are not, one statement for those; a viewer's sets, one more. A warm page
//! costs none.

use std::sync::Arc;

use super::repo::{self, Scope, Window};
use super::service::{ArticleFilter, ArticleView};
use crate::{
    auth::Principal,
    cache::Topic,
    db::Store,
    error::{AppError, AppResult, Reason},
    pagination::{Cursor, Keyset},
};

mod list;
mod lists;
mod parts;

pub use list::{ArticleList, Flags, Rendered};
use lists::{count, load_window, resolve, user_named};
pub(super) use parts::view_of;
use parts::{compose, keep_parts};

/// Which list a page comes from.
pub(super) enum Listed {
    Filtered(ArticleFilter),
    FeedOf(i64),
}

/// Which rows of the list.
#[derive(Debug, Clone, Copy)]
pub(super) enum Slice {
    Offset { limit: u64, offset: u64 },
    Keyset(Keyset),
}

/// A page as composed: the articles, the list's total (offset pages), the next cursor
/// (keyset pages).
pub(super) struct Composed {
    pub articles: ArticleList,
    pub total: u64,
    pub next: Option<Cursor>,
}

/// A list with its users resolved to ids: what its statement filters on, what it is
/// keyed by, and the topics it is read from.
struct Resolved {
    key: String,
    tag: Option<String>,
    author: Option<i64>,
    favorited_by: Option<i64>,
    /// A feed: the authors the viewer follows.
    authors: Option<Vec<i64>>,
    follower: Option<i64>,
}

impl Resolved {
    fn scope(&self) -> Scope<'_> {
        match &self.authors {
            Some(authors) => Scope::AuthorsIn(authors),
            None => Scope::Filtered {
                tag: self.tag.as_deref(),
                author: self.author,
                favorited_by: self.favorited_by,
            },
        }
    }

    fn topics(&self) -> Vec<Topic<'_>> {
        let mut topics = Vec::new();
        if let Some(authors) = &self.authors {
            topics.extend(self.follower.map(Topic::UserFollows));
            topics.extend(authors.iter().copied().map(Topic::ListAuthor));
            return topics;
        }
        topics.extend(self.tag.as_deref().map(Topic::ListTag));
        topics.extend(self.author.map(Topic::ListAuthor));
        if let Some(user) = self.favorited_by {
            topics.push(Topic::UserFavorites(user));
            topics.push(Topic::ArticleGone);
        }
        if topics.is_empty() {
            topics.push(Topic::ListAll);
        }
        topics
    }
}

fn viewer_id(viewer: Option<Principal>) -> Option<i64> {
    viewer.map(|p| p.user_id)
}

/// A page of `listed` as `viewer` sees it.
pub(super) async fn page(
    store: &Store,
    listed: Listed,
    viewer: Option<Principal>,
    slice: Slice,
) -> AppResult<Composed> {
    if !store.cache().usable() {
        return uncached_page(store, listed, viewer, slice).await;
    }
    let Some(resolved) = resolve(store, listed).await? else {
        // A filter naming a user who does not exist: nothing matches.
        return Ok(empty());
    };
    let resolved = Arc::new(resolved);
    let cache = store.cache();
    let (window, total, window_key) = match slice {
        Slice::Offset { limit, offset } => {
            let key = format!("{}\u{0}o{limit}\u{0}{offset}", resolved.key);
            let window = load_window(store, &resolved, key.clone(), slice).await?;
            let total = match cache.get::<u64>("total", resolved.key.clone()) {
                Some(total) => *total.value,
                None => count(store, &resolved).await?,
            };
            (window, total, key)
        }
        Slice::Keyset(keyset) => {
            let key = format!(
                "{}\u{0}k{}\u{0}{:?}",
                resolved.key, keyset.size, keyset.after
            );
            let window = load_window(store, &resolved, key.clone(), slice).await?;
            (window, 0, key)
        }
    };
    let articles = compose(
        store,
        Some((window_key.clone(), &window)),
        &window.value.ids,
        viewer,
        false,
    )
    .await?;
    Ok(Composed {
        articles,
        total,
        next: window.value.next,
    })
}

/// One article by slug, with its body, as `viewer` sees it.
pub(super) async fn one(
    store: &Store,
    slug: &str,
    viewer: Option<Principal>,
) -> AppResult<ArticleView> {
    let cache = store.cache();
    if !cache.usable() {
        // The cache off, or this replica behind the change log: one statement.
        let slug = slug.to_string();
        let viewer = viewer_id(viewer);
        return store
            .query(move |db| {
                Box::pin(async move {
                    Ok(repo::shown(db, &Scope::Slug(&slug), Window::One, viewer)
                        .await?
                        .pop())
                })
            })
            .await?
            .map(view_of)
            .ok_or(AppError::NotFound(Reason::ArticleNotFound));
    }
    let id = match cache.get::<i64>("slug", slug.to_string()) {
        Some(id) => *id.value,
        None => {
            // The article with everything, which also fills its parts.
            let since = cache.since();
            let slug = slug.to_string();
            let row = store
                .query(move |db| {
                    Box::pin(async move {
                        Ok(repo::shown(db, &Scope::Slug(&slug), Window::One, None)
                            .await?
                            .pop())
                    })
                })
                .await?
                .ok_or(AppError::NotFound(Reason::ArticleNotFound))?;
            let deps = cache.stamp([Topic::Slug(&row.slug), Topic::Article(row.id)]);
            let id = row.id;
            cache.put(
                "slug",
                row.slug.clone(),
                Arc::new(id),
                Arc::new(deps),
                since,
                row.slug.len() + 16,
            );
            keep_parts(cache, since, &[row]);
            id
        }
    };
    compose(store, None, &[id], viewer, true)
        .await?
        .into_views()
        .pop()
        .ok_or(AppError::NotFound(Reason::ArticleNotFound))
}

/// A page straight from the database, when no part may be served (the cache off, or this
/// replica behind the change log): one statement with everything, as `viewer` sees it,
/// plus a count for a page past the end.
async fn uncached_page(
    store: &Store,
    listed: Listed,
    viewer: Option<Principal>,
    slice: Slice,
) -> AppResult<Composed> {
    let (tag, author, favorited_by, feed) = match listed {
        Listed::Filtered(filter) => {
            let author = match &filter.author {
                Some(name) => match user_named(store, name).await? {
                    Some(id) => Some(id),
                    None => return Ok(empty()),
                },
                None => None,
            };
            let favorited_by = match &filter.favorited {
                Some(name) => match user_named(store, name).await? {
                    Some(id) => Some(id),
                    None => return Ok(empty()),
                },
                None => None,
            };
            (filter.tag, author, favorited_by, None)
        }
        Listed::FeedOf(user) => (None, None, None, Some(user)),
    };
    let viewer = viewer_id(viewer);
    store
        .query(move |db| {
            Box::pin(async move {
                let scope = match feed {
                    Some(user) => Scope::FeedOf(user),
                    None => Scope::Filtered {
                        tag: tag.as_deref(),
                        author,
                        favorited_by,
                    },
                };
                let window = match slice {
                    Slice::Offset { limit, offset } => Window::Offset {
                        limit,
                        offset,
                        with_total: true,
                    },
                    Slice::Keyset(keyset) => Window::Keyset {
                        limit: keyset.fetch(),
                        after: keyset.after,
                    },
                };
                let mut rows = repo::shown(db, &scope, window, viewer).await?;
                let (total, next) = match slice {
                    Slice::Offset { .. } => match rows.first().and_then(|row| row.total) {
                        Some(total) => (total.max(0) as u64, None),
                        None => (repo::count(db, &scope).await?, None),
                    },
                    Slice::Keyset(keyset) => (
                        0,
                        keyset.cut(&mut rows, |row| Cursor {
                            created_at: row.created_at,
                            id: row.id,
                        }),
                    ),
                };
                Ok(Composed {
                    articles: ArticleList::from_views(rows.into_iter().map(view_of).collect()),
                    total,
                    next,
                })
            })
        })
        .await
}

fn empty() -> Composed {
    Composed {
        articles: ArticleList::from_views(Vec::new()),
        total: 0,
        next: None,
    }
}
