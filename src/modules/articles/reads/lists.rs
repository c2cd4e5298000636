//! What a page lists: the list's users resolved to ids, the page's ids (its window), the
//! list's total, and a viewer's favourites and follows; each kept as a part.

use std::{collections::HashSet, sync::Arc};

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use super::{Listed, Resolved, Slice, parts::keep_parts};
use crate::modules::articles::repo::{self, Window};
use crate::{
    cache::{Found, Topic},
    db::Store,
    error::{AppError, AppResult},
    pagination::Cursor,
};

/// What a viewer favourited and whom they follow.
#[derive(Debug, Default)]
pub(super) struct ViewerSets {
    pub(super) favorites: HashSet<i64>,
    pub(super) follows: HashSet<i64>,
}

/// A page's ids, and where the next keyset page starts.
#[derive(Debug, Clone)]
pub(super) struct WindowIds {
    pub(super) ids: Vec<i64>,
    pub(super) next: Option<Cursor>,
}

/// The list's users resolved to ids (`None`: a filter names a user who does not exist).
pub(super) async fn resolve(store: &Store, listed: Listed) -> AppResult<Option<Resolved>> {
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
pub(super) async fn user_named(store: &Store, username: &str) -> AppResult<Option<i64>> {
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
pub(super) async fn load_window(
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
pub(super) async fn count(store: &Store, resolved: &Arc<Resolved>) -> AppResult<u64> {
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
pub(super) async fn viewer_sets(store: &Store, user: i64) -> AppResult<Found<ViewerSets>> {
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
