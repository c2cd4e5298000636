//! Reads of articles, composed per request from cached parts (`cache`):
//!
//! - a page's ids (`window`), by list and window, with the list's total (`total`);
//! - each article's document (`article`) and body (`body`), its author as shown
//!   (`author`) and its favourite count (`count`);
//! - the viewer's favourites and follows (`viewer`), for the flags;
//! - which article a slug names (`slug`), which user a username names (`username`).
//!
//! Each part is stamped with the topics it was read from, so a write invalidates only
//! what it touched: a favourite, one count and one viewer's set; an edit, one document;
//! a new article, the lists it joins. A cold page costs one statement (the page with
//! everything it shows, which also fills the parts); a page whose id list is kept but
//! some parts are not, one statement for those; a viewer's sets, one more. A warm page
//! costs none.

use std::{collections::HashMap, collections::HashSet, sync::Arc};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use super::repo::{self, Scope, Shown, Window};
use super::service::{ArticleFilter, ArticleView};
use crate::{
    auth::Principal,
    cache::{Deps, Found, ReadCache, Since, Topic},
    db::Store,
    error::{AppError, AppResult, Reason},
    modules::profiles::service::ProfileView,
    pagination::{Cursor, Keyset},
};

/// An article's own fields, as every view of it shows them.
#[derive(Debug, Clone)]
struct Doc {
    author_id: i64,
    slug: String,
    title: String,
    description: String,
    tag_list: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A user as shown as an author.
#[derive(Debug, Clone)]
struct Author {
    username: String,
    bio: Option<String>,
    image: Option<String>,
}

/// What a viewer favourited and whom they follow.
#[derive(Debug, Default)]
struct ViewerSets {
    favorites: HashSet<i64>,
    follows: HashSet<i64>,
}

/// A page's ids, and where the next keyset page starts.
#[derive(Debug, Clone)]
struct WindowIds {
    ids: Vec<i64>,
    next: Option<Cursor>,
}

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
    pub articles: Vec<ArticleView>,
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
                    articles: rows.into_iter().map(view_of).collect(),
                    total,
                    next,
                })
            })
        })
        .await
}

fn empty() -> Composed {
    Composed {
        articles: Vec::new(),
        total: 0,
        next: None,
    }
}

/// The list's users resolved to ids (`None`: a filter names a user who does not exist).
async fn resolve(store: &Store, listed: Listed) -> AppResult<Option<Resolved>> {
    match listed {
        Listed::Filtered(filter) => {
            let author = match &filter.author {
                Some(name) => match user_named(store, name).await? {
                    Some(id) => Some(id),
                    None => return Ok(None),
                },
                None => None,
            };
            let favorited_by = match &filter.favorited {
                Some(name) => match user_named(store, name).await? {
                    Some(id) => Some(id),
                    None => return Ok(None),
                },
                None => None,
            };
            Ok(Some(Resolved {
                key: format!("a\u{0}{:?}\u{0}{author:?}\u{0}{favorited_by:?}", filter.tag),
                tag: filter.tag,
                author,
                favorited_by,
                authors: None,
                follower: None,
            }))
        }
        Listed::FeedOf(user) => {
            let sets = viewer_sets(store, user).await?;
            let mut authors: Vec<i64> = sets.value.follows.iter().copied().collect();
            authors.sort_unstable();
            Ok(Some(Resolved {
                key: format!("f\u{0}{user}"),
                tag: None,
                author: None,
                favorited_by: None,
                authors: Some(authors),
                follower: Some(user),
            }))
        }
    }
}

/// The id of the user `username` names (in any case), kept while that user is unchanged.
async fn user_named(store: &Store, username: &str) -> AppResult<Option<i64>> {
    let cache = store.cache();
    let key = username.to_lowercase();
    if let Some(id) = cache.get::<i64>("username", key.clone()) {
        return Ok(Some(*id.value));
    }
    let since = cache.since();
    let name = username.to_string();
    let id = store
        .query(move |db| Box::pin(async move { Ok(repo::user_id_named(db, &name).await?) }))
        .await?;
    // Only a user that exists is kept: its rename or removal changes `user:<id>`.
    if let Some(id) = id {
        let deps = cache.stamp([Topic::User(id)]);
        cache.put(
            "username",
            key.clone(),
            Arc::new(id),
            Arc::new(deps),
            since,
            key.len() + 16,
        );
    }
    Ok(id)
}

/// The page's ids: kept, or read with everything the page shows (which fills the parts,
/// and the list's total when it is not kept).
async fn load_window(
    store: &Store,
    resolved: &Arc<Resolved>,
    key: String,
    slice: Slice,
) -> AppResult<Found<WindowIds>> {
    let (store_for_load, resolved) = (store.clone(), resolved.clone());
    store
        .cache()
        .load(
            "window",
            key.clone(),
            move |w: &WindowIds| key.len() + 8 * w.ids.len() + 32,
            move || async move {
                let store = store_for_load;
                let cache = store.cache().clone();
                let since = cache.since();
                let with_total = matches!(slice, Slice::Offset { .. })
                    && cache.get::<u64>("total", resolved.key.clone()).is_none();
                let window = match slice {
                    Slice::Offset { limit, offset } => Window::Offset {
                        limit,
                        offset,
                        with_total,
                    },
                    Slice::Keyset(keyset) => Window::Keyset {
                        limit: keyset.fetch(),
                        after: keyset.after,
                    },
                };
                let read = resolved.clone();
                let mut rows = store
                    .query(move |db| {
                        Box::pin(
                            async move { Ok(repo::shown(db, &read.scope(), window, None).await?) },
                        )
                    })
                    .await?;
                let next = match slice {
                    Slice::Keyset(keyset) => keyset.cut(&mut rows, |row| Cursor {
                        created_at: row.created_at,
                        id: row.id,
                    }),
                    Slice::Offset { .. } => None,
                };
                let deps = cache.stamp(resolved.topics());
                if with_total && let Some(total) = rows.first().and_then(|row| row.total) {
                    cache.put(
                        "total",
                        resolved.key.clone(),
                        Arc::new(total.max(0) as u64),
                        Arc::new(deps.clone()),
                        since,
                        resolved.key.len() + 16,
                    );
                }
                let ids = rows.iter().map(|row| row.id).collect();
                keep_parts(&cache, since, &rows);
                Ok((WindowIds { ids, next }, deps))
            },
        )
        .await
}

/// The list's total when no kept window carried it (a page past the end, or the total
/// evicted): one count, kept.
async fn count(store: &Store, resolved: &Arc<Resolved>) -> AppResult<u64> {
    let cache = store.cache();
    let since = cache.since();
    let read = resolved.clone();
    let total = store
        .query(move |db| Box::pin(async move { Ok(repo::count(db, &read.scope()).await?) }))
        .await?;
    let deps = cache.stamp(resolved.topics());
    cache.put(
        "total",
        resolved.key.clone(),
        Arc::new(total),
        Arc::new(deps),
        since,
        resolved.key.len() + 16,
    );
    Ok(total)
}

/// What a viewer favourited and whom they follow: kept, or one statement.
async fn viewer_sets(store: &Store, user: i64) -> AppResult<Found<ViewerSets>> {
    let loading = store.clone();
    store
        .cache()
        .load(
            "viewer",
            user,
            |sets: &ViewerSets| 16 * (sets.favorites.len() + sets.follows.len()) + 64,
            move || async move {
                let store = loading;
                let rows = store
                    .query(move |db| {
                        Box::pin(async move {
                            let backend = db.get_database_backend();
                            let p = if backend == DbBackend::Postgres { "$1" } else { "?1" };
                            let sql = format!(
                                "SELECT 0 AS kind, article_id AS id FROM favorites WHERE user_id = {p} \
                                 UNION ALL SELECT 1 AS kind, followee_id AS id FROM follows WHERE follower_id = {p}"
                            );
                            Ok(db
                                .query_all_raw(Statement::from_sql_and_values(
                                    backend,
                                    sql,
                                    [user.into()],
                                ))
                                .await?)
                        })
                    })
                    .await?;
                let mut sets = ViewerSets::default();
                for row in rows {
                    let kind: i32 = row.try_get("", "kind").map_err(AppError::from)?;
                    let id: i64 = row.try_get("", "id").map_err(AppError::from)?;
                    if kind == 0 {
                        sets.favorites.insert(id);
                    } else {
                        sets.follows.insert(id);
                    }
                }
                let deps = store
                    .cache()
                    .stamp([Topic::UserFavorites(user), Topic::UserFollows(user)]);
                Ok((sets, deps))
            },
        )
        .await
}

/// Keeps the parts rows read at `since` carry: documents (and bodies), authors, counts.
/// Returns, per row, what it was read from (the versions its parts were stamped with).
fn keep_parts(cache: &ReadCache, since: Since, rows: &[Shown]) -> HashMap<i64, Deps> {
    let mut read_from = HashMap::with_capacity(rows.len());
    for row in rows {
        let doc = doc_of(row);
        let weight = doc_weight(&doc);
        let deps = Arc::new(cache.stamp([Topic::Article(row.id)]));
        let mut all = Deps::default();
        all.extend(&deps);
        if let Some(body) = &row.body {
            cache.put(
                "body",
                row.id,
                Arc::new(body.clone()),
                deps.clone(),
                since,
                body.len() + 16,
            );
        }
        cache.put("article", row.id, Arc::new(doc), deps, since, weight);
        let author = Author {
            username: row.username.clone(),
            bio: row.bio.clone(),
            image: row.image.clone(),
        };
        let weight = author_weight(&author);
        let deps = cache.stamp([Topic::User(row.author_id)]);
        all.extend(&deps);
        cache.put(
            "author",
            row.author_id,
            Arc::new(author),
            Arc::new(deps),
            since,
            weight,
        );
        let deps = cache.stamp([Topic::ArticleFavorites(row.id)]);
        all.extend(&deps);
        cache.put(
            "count",
            row.id,
            Arc::new(row.favorites_count),
            Arc::new(deps),
            since,
            16,
        );
        read_from.insert(row.id, all);
    }
    read_from
}

fn doc_of(row: &Shown) -> Doc {
    // Aggregated without an order (the backends differ in how to ask); sorted here.
    let mut tag_list: Vec<String> = row
        .tags
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    tag_list.sort_unstable();
    Doc {
        author_id: row.author_id,
        slug: row.slug.clone(),
        title: row.title.clone(),
        description: row.description.clone(),
        tag_list,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

fn doc_weight(doc: &Doc) -> usize {
    std::mem::size_of::<Doc>()
        + doc.slug.len()
        + doc.title.len()
        + doc.description.len()
        + doc.tag_list.iter().map(|t| t.len() + 24).sum::<usize>()
}

fn author_weight(author: &Author) -> usize {
    std::mem::size_of::<Author>()
        + author.username.len()
        + author.bio.as_ref().map_or(0, String::len)
        + author.image.as_ref().map_or(0, String::len)
}

/// The parts of one article, as found.
struct Parts {
    doc: Arc<Doc>,
    author: Arc<Author>,
    count: i64,
    body: Option<Arc<String>>,
}

/// Articles as anyone sees them (no viewer flags), with what each was read from: the
/// outer part a page is kept as.
struct Shared {
    items: Vec<(i64, i64, ArticleView)>,
}

/// The articles `ids` names, in that order, as anyone sees them, and what they were read
/// from: from kept parts, with one statement for the articles any part of which is
/// missing. Ids of articles that no longer exist are left out.
async fn compose_shared(store: &Store, ids: &[i64], with_body: bool) -> AppResult<(Shared, Deps)> {
    let cache = store.cache();
    let mut found: HashMap<i64, Parts> = HashMap::with_capacity(ids.len());
    let mut deps = Deps::default();
    let mut missing = Vec::new();
    for &id in ids {
        let mut read_from = Deps::default();
        let parts = (|| {
            let doc = cache.get::<Doc>("article", id)?;
            let author = cache.get::<Author>("author", doc.value.author_id)?;
            let count = cache.get::<i64>("count", id)?;
            let body = if with_body {
                let body = cache.get::<String>("body", id)?;
                read_from.extend(&body.deps);
                Some(body.value)
            } else {
                None
            };
            read_from.extend(&doc.deps);
            read_from.extend(&author.deps);
            read_from.extend(&count.deps);
            Some(Parts {
                doc: doc.value,
                author: author.value,
                count: *count.value,
                body,
            })
        })();
        match parts {
            Some(parts) => {
                deps.extend(&read_from);
                found.insert(id, parts);
            }
            None => missing.push(id),
        }
    }
    if !missing.is_empty() {
        let since = cache.since();
        let window = if with_body { Window::One } else { Window::All };
        let rows = store
            .query(move |db| {
                Box::pin(async move {
                    let scope = match missing.as_slice() {
                        [one] => Scope::Id(*one),
                        many => Scope::Ids(many),
                    };
                    Ok(repo::shown(db, &scope, window, None).await?)
                })
            })
            .await?;
        let read_from = keep_parts(cache, since, &rows);
        for row in rows {
            if let Some(row_deps) = read_from.get(&row.id) {
                deps.extend(row_deps);
            }
            let body = row.body.clone().map(Arc::new);
            found.insert(
                row.id,
                Parts {
                    doc: Arc::new(doc_of(&row)),
                    author: Arc::new(Author {
                        username: row.username,
                        bio: row.bio,
                        image: row.image,
                    }),
                    count: row.favorites_count,
                    body,
                },
            );
        }
    }
    let items = ids
        .iter()
        .filter_map(|id| {
            let parts = found.remove(id)?;
            let author_id = parts.doc.author_id;
            Some((*id, author_id, view(parts, false, false)))
        })
        .collect();
    Ok((Shared { items }, deps))
}

/// The articles `ids` names as `viewer` sees them. As anyone sees them they are kept as
/// one part under `key` (a page), read from its window and its articles' parts, so a
/// page costs one lookup and one check of what it depends on; concurrent misses compose
/// it once. The viewer's flags are laid over from the viewer's sets.
async fn compose(
    store: &Store,
    key: Option<(String, &Found<WindowIds>)>,
    ids: &[i64],
    viewer: Option<Principal>,
    with_body: bool,
) -> AppResult<Vec<ArticleView>> {
    let cache = store.cache();
    let shared = match key {
        Some((key, window)) => {
            let (store, ids, window_deps) = (store.clone(), ids.to_vec(), window.deps.clone());
            cache
                .load(
                    "page",
                    key,
                    |page: &Shared| {
                        page.items
                            .iter()
                            .map(|(_, _, v)| view_weight(v))
                            .sum::<usize>()
                    },
                    move || async move {
                        let (shared, mut deps) = compose_shared(&store, &ids, with_body).await?;
                        deps.extend(&window_deps);
                        Ok((shared, deps))
                    },
                )
                .await?
                .value
        }
        None => Arc::new(compose_shared(store, ids, with_body).await?.0),
    };
    let sets = match viewer_id(viewer) {
        Some(user) => Some(viewer_sets(store, user).await?.value),
        None => None,
    };
    Ok(shared
        .items
        .iter()
        .map(|(id, author_id, view)| {
            let mut view = view.clone();
            if let Some(sets) = &sets {
                view.favorited = sets.favorites.contains(id);
                view.author.following = sets.follows.contains(author_id);
            }
            view
        })
        .collect())
}

fn view_weight(view: &ArticleView) -> usize {
    std::mem::size_of::<ArticleView>()
        + view.slug.len()
        + view.title.len()
        + view.description.len()
        + view.body.as_ref().map_or(0, String::len)
        + view.tag_list.iter().map(|t| t.len() + 24).sum::<usize>()
        + view.author.username.len()
        + view.author.bio.as_ref().map_or(0, String::len)
        + view.author.image.as_ref().map_or(0, String::len)
}

fn view(parts: Parts, favorited: bool, following: bool) -> ArticleView {
    let doc = &parts.doc;
    ArticleView {
        slug: doc.slug.clone(),
        title: doc.title.clone(),
        description: doc.description.clone(),
        body: parts.body.map(|b| b.as_ref().clone()),
        tag_list: doc.tag_list.clone(),
        created_at: doc.created_at,
        updated_at: doc.updated_at,
        favorited,
        favorites_count: parts.count,
        author: ProfileView {
            username: parts.author.username.clone(),
            bio: parts.author.bio.clone(),
            image: parts.author.image.clone(),
            following,
        },
    }
}

/// The rows a write's answer shows, as the writer sees them (read in its transaction).
pub(super) fn view_of(row: Shown) -> ArticleView {
    let doc = doc_of(&row);
    ArticleView {
        slug: doc.slug,
        title: doc.title,
        description: doc.description,
        body: row.body,
        tag_list: doc.tag_list,
        created_at: doc.created_at,
        updated_at: doc.updated_at,
        favorited: row.favorited,
        favorites_count: row.favorites_count,
        author: ProfileView {
            username: row.username,
            bio: row.bio,
            image: row.image,
            following: row.following,
        },
    }
}
