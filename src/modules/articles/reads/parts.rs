//! The parts an article is shown from (its document, body, author and favourite count),
//! kept from the rows a statement read, and the views composed of them.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};

use super::{
    list::{ArticleList, Flags},
    lists::{WindowIds, viewer_sets},
    viewer_id,
};
use crate::modules::articles::{
    repo::{self, Scope, Shown, Window},
    service::ArticleView,
};
use crate::{
    auth::Principal,
    cache::{Deps, Found, ReadCache, Renders, Since, Topic},
    db::Store,
    error::AppResult,
    modules::profiles::service::ProfileView,
};

/// An article's own fields, as every view of it shows them.
#[derive(Debug, Clone)]
pub(super) struct Doc {
    pub(super) author_id: i64,
    pub(super) slug: String,
    pub(super) title: String,
    pub(super) description: String,
    pub(super) tag_list: Vec<String>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
}

/// A user as shown as an author.
#[derive(Debug, Clone)]
pub(super) struct Author {
    pub(super) username: String,
    pub(super) bio: Option<String>,
    pub(super) image: Option<String>,
}

/// Keeps the parts rows read at `since` carry: documents (and bodies), authors, counts.
/// Returns, per row, what it was read from (the versions its parts were stamped with).
pub(super) fn keep_parts(cache: &ReadCache, since: Since, rows: &[Shown]) -> HashMap<i64, Deps> {
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

pub(super) fn doc_of(row: &Shown) -> Doc {
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

pub(super) fn doc_weight(doc: &Doc) -> usize {
    std::mem::size_of::<Doc>()
        + doc.slug.len()
        + doc.title.len()
        + doc.description.len()
        + doc.tag_list.iter().map(|t| t.len() + 24).sum::<usize>()
}

pub(super) fn author_weight(author: &Author) -> usize {
    std::mem::size_of::<Author>()
        + author.username.len()
        + author.bio.as_ref().map_or(0, String::len)
        + author.image.as_ref().map_or(0, String::len)
}

/// The parts of one article, as found.
pub(super) struct Parts {
    pub(super) doc: Arc<Doc>,
    pub(super) author: Arc<Author>,
    pub(super) count: i64,
    pub(super) body: Option<Arc<String>>,
}

/// Articles as anyone sees them (no viewer flags): the outer part a page is kept as, with
/// what its answers render it to (kept with it, so exactly as fresh).
#[derive(Default)]
pub(super) struct Shared {
    /// Per article: its id and its author's, which the viewer's flags are looked up by.
    pub(super) ids: Vec<(i64, i64)>,
    pub(super) views: Vec<ArticleView>,
    pub(super) renders: Renders,
}

/// The articles `ids` names, in that order, as anyone sees them, and what they were read
/// from: from kept parts, with one statement for the articles any part of which is
/// missing. Ids of articles that no longer exist are left out.
pub(super) async fn compose_shared(
    store: &Store,
    ids: &[i64],
    with_body: bool,
) -> AppResult<(Shared, Deps)> {
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
    let mut shared = Shared::default();
    for id in ids {
        if let Some(parts) = found.remove(id) {
            shared.ids.push((*id, parts.doc.author_id));
            shared.views.push(view(parts, false, false));
        }
    }
    Ok((shared, deps))
}

/// The articles `ids` names as `viewer` sees them. As anyone sees them they are kept as
/// one part under `key` (a page), read from its window and its articles' parts, so a
/// page costs one lookup and one check of what it depends on; concurrent misses compose
/// it once. The viewer's flags are looked up in the viewer's sets.
pub(super) async fn compose(
    store: &Store,
    key: Option<(String, &Found<WindowIds>)>,
    ids: &[i64],
    viewer: Option<Principal>,
    with_body: bool,
) -> AppResult<ArticleList> {
    let cache = store.cache();
    let shared = match key {
        Some((key, window)) => {
            let (store, ids, window_deps) = (store.clone(), ids.to_vec(), window.deps.clone());
            cache
                .load(
                    "page",
                    key,
                    |page: &Shared| page_weight(&page.views),
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
    let flags = match viewer_id(viewer) {
        Some(user) => {
            let sets = viewer_sets(store, user).await?.value;
            shared
                .ids
                .iter()
                .map(|(id, author_id)| Flags {
                    favorited: sets.favorites.contains(id),
                    following: sets.follows.contains(author_id),
                })
                .collect()
        }
        None => vec![Flags::default(); shared.views.len()],
    };
    Ok(ArticleList::new(shared, flags))
}

/// A kept page weighs its views and what they are rendered to (`Shared::renders`): JSON
/// and protobuf, each kept twice (per article, and whole as anyone sees it), each copy
/// about as large as the views' text.
fn page_weight(views: &[ArticleView]) -> usize {
    5 * views.iter().map(view_weight).sum::<usize>()
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

pub(super) fn view(parts: Parts, favorited: bool, following: bool) -> ArticleView {
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
pub(in crate::modules::articles) fn view_of(row: Shown) -> ArticleView {
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
