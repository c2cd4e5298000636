//! Queries on articles, their tags and favorites. List queries run a fixed number of
//! statements whatever the page size: one for the page (authors joined), one for the
//! total, then one each for tags, favorite counts and the viewer's favorites.
//!
//! Lock order for writes: the article row first ([`lock`]), then the rows that hang off it
//! (tags, favorites, comments), tags in name order. SQLite ignores row locks; its writers
//! are serialised by `BEGIN IMMEDIATE` instead.

use std::collections::{BTreeSet, HashMap, HashSet};

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, JoinType, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, RelationTrait, Select, Set,
    sea_query::{LockType, SelectStatement},
};

use crate::entities::{
    article_tags::{self, Entity as ArticleTags},
    articles::{self, Entity as Articles},
    comments::{self, Entity as Comments},
    favorites::{self, Entity as Favorites},
    follows::{self, Entity as Follows},
    tags::{self, Entity as Tags},
    users::{self, Entity as Users},
};
use crate::pagination::Cursor;

pub type ArticleRow = (articles::Model, users::Model);

/// Which articles a list shows.
pub enum Scope<'a> {
    /// Everything, narrowed by whichever filters are set.
    Filtered {
        tag: Option<&'a str>,
        author: Option<&'a str>,
        favorited_by: Option<&'a str>,
    },
    /// Articles by the users this user follows.
    FeedOf(i64),
}

fn user_ids_named(username: &str) -> SelectStatement {
    Users::find()
        .select_only()
        .column(users::Column::Id)
        .filter(users::same_name(users::Column::Username, username))
        .into_query()
}

fn scoped(scope: &Scope<'_>) -> Select<Articles> {
    let mut query = Articles::find();
    match scope {
        Scope::Filtered {
            tag,
            author,
            favorited_by,
        } => {
            if let Some(tag) = tag {
                let tag_ids = Tags::find()
                    .select_only()
                    .column(tags::Column::Id)
                    .filter(tags::Column::Name.eq(*tag))
                    .into_query();
                let tagged = ArticleTags::find()
                    .select_only()
                    .column(article_tags::Column::ArticleId)
                    .filter(article_tags::Column::TagId.in_subquery(tag_ids))
                    .into_query();
                query = query.filter(articles::Column::Id.in_subquery(tagged));
            }
            if let Some(author) = author {
                query =
                    query.filter(articles::Column::AuthorId.in_subquery(user_ids_named(author)));
            }
            if let Some(username) = favorited_by {
                let favorited = Favorites::find()
                    .select_only()
                    .column(favorites::Column::ArticleId)
                    .filter(favorites::Column::UserId.in_subquery(user_ids_named(username)))
                    .into_query();
                query = query.filter(articles::Column::Id.in_subquery(favorited));
            }
        }
        Scope::FeedOf(follower) => {
            let followed = Follows::find()
                .select_only()
                .column(follows::Column::FolloweeId)
                .filter(follows::Column::FollowerId.eq(*follower))
                .into_query();
            query = query.filter(articles::Column::AuthorId.in_subquery(followed));
        }
    }
    query
}

/// One page, newest first, with each article's author, and the total matching.
pub async fn page(
    db: &impl ConnectionTrait,
    scope: &Scope<'_>,
    limit: u64,
    offset: u64,
) -> Result<(Vec<ArticleRow>, u64), DbErr> {
    let total = scoped(scope).count(db).await?;
    let rows = scoped(scope)
        .order_by_desc(articles::Column::CreatedAt)
        .order_by_desc(articles::Column::Id)
        .limit(limit)
        .offset(offset)
        .find_also_related(Users)
        .all(db)
        .await?;
    Ok((with_authors(rows), total))
}

/// Up to `limit` rows after `keyset.after`, newest first, with authors; no total.
pub async fn keyset(
    db: &impl ConnectionTrait,
    scope: &Scope<'_>,
    limit: u64,
    after: Option<Cursor>,
) -> Result<Vec<ArticleRow>, DbErr> {
    let mut query = scoped(scope);
    if let Some(after) = after {
        query = query.filter(after.follows(articles::Column::CreatedAt, articles::Column::Id));
    }
    let rows = query
        .order_by_desc(articles::Column::CreatedAt)
        .order_by_desc(articles::Column::Id)
        .limit(limit)
        .find_also_related(Users)
        .all(db)
        .await?;
    Ok(with_authors(rows))
}

fn with_authors(rows: Vec<(articles::Model, Option<users::Model>)>) -> Vec<ArticleRow> {
    // The foreign key guarantees an author; a row without one is skipped, not a panic.
    rows.into_iter()
        .filter_map(|(article, author)| author.map(|a| (article, a)))
        .collect()
}

pub async fn find_by_slug(
    db: &impl ConnectionTrait,
    slug: &str,
) -> Result<Option<ArticleRow>, DbErr> {
    let rows = Articles::find()
        .filter(articles::Column::Slug.eq(slug))
        .find_also_related(Users)
        .all(db)
        .await?;
    Ok(with_authors(rows).into_iter().next())
}

pub async fn find_by_id(db: &impl ConnectionTrait, id: i64) -> Result<Option<ArticleRow>, DbErr> {
    let rows = Articles::find_by_id(id)
        .find_also_related(Users)
        .all(db)
        .await?;
    Ok(with_authors(rows).into_iter().next())
}

/// How a write holds the article it acts on until its transaction ends.
#[derive(Clone, Copy)]
pub enum Hold {
    /// Changing or deleting the article itself.
    Exclusive,
    /// Adding or removing what hangs off it (favorites, comments): the article cannot be
    /// deleted or renamed meanwhile, and such writers do not block each other.
    Shared,
}

/// The article by slug, locked as `hold` says. A writer that waited for the lock sees
/// the row as the previous holder left it: renamed or deleted means `None`.
pub async fn lock(
    db: &impl ConnectionTrait,
    slug: &str,
    hold: Hold,
) -> Result<Option<articles::Model>, DbErr> {
    let lock = match hold {
        Hold::Exclusive => LockType::Update,
        Hold::Shared => LockType::KeyShare,
    };
    Articles::find()
        .filter(articles::Column::Slug.eq(slug))
        .lock(lock)
        .one(db)
        .await
}

pub async fn slug_taken(db: &impl ConnectionTrait, slug: &str) -> Result<bool, DbErr> {
    Ok(Articles::find()
        .filter(articles::Column::Slug.eq(slug))
        .count(db)
        .await?
        > 0)
}

/// Tag names per article, sorted.
pub async fn tags_of(
    db: &impl ConnectionTrait,
    ids: &[i64],
) -> Result<HashMap<i64, Vec<String>>, DbErr> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let pairs: Vec<(i64, String)> = ArticleTags::find()
        .select_only()
        .column(article_tags::Column::ArticleId)
        .column(tags::Column::Name)
        .join(JoinType::InnerJoin, article_tags::Relation::Tag.def())
        .filter(article_tags::Column::ArticleId.is_in(ids.iter().copied()))
        .into_tuple()
        .all(db)
        .await?;
    let mut grouped: HashMap<i64, BTreeSet<String>> = HashMap::new();
    for (article, name) in pairs {
        grouped.entry(article).or_default().insert(name);
    }
    Ok(grouped
        .into_iter()
        .map(|(id, names)| (id, names.into_iter().collect()))
        .collect())
}

pub async fn favorite_counts(
    db: &impl ConnectionTrait,
    ids: &[i64],
) -> Result<HashMap<i64, i64>, DbErr> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let counts: Vec<(i64, i64)> = Favorites::find()
        .select_only()
        .column(favorites::Column::ArticleId)
        .column_as(favorites::Column::UserId.count(), "favorites")
        .filter(favorites::Column::ArticleId.is_in(ids.iter().copied()))
        .group_by(favorites::Column::ArticleId)
        .into_tuple()
        .all(db)
        .await?;
    Ok(counts.into_iter().collect())
}

pub async fn favorited_among(
    db: &impl ConnectionTrait,
    user: i64,
    ids: &[i64],
) -> Result<HashSet<i64>, DbErr> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let favorited: Vec<i64> = Favorites::find()
        .select_only()
        .column(favorites::Column::ArticleId)
        .filter(favorites::Column::UserId.eq(user))
        .filter(favorites::Column::ArticleId.is_in(ids.iter().copied()))
        .into_tuple()
        .all(db)
        .await?;
    Ok(favorited.into_iter().collect())
}

pub struct NewRow {
    pub slug: String,
    pub title: String,
    pub description: String,
    pub body: String,
    pub author_id: i64,
}

pub async fn insert(db: &impl ConnectionTrait, row: NewRow) -> Result<articles::Model, DbErr> {
    let now = chrono::Utc::now();
    articles::ActiveModel {
        slug: Set(row.slug),
        title: Set(row.title),
        description: Set(row.description),
        body: Set(row.body),
        author_id: Set(row.author_id),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// Saves changes to a locked row. `updatedAt` never goes backwards, even when this
/// replica's clock is behind the one that wrote last.
pub async fn save(
    db: &impl ConnectionTrait,
    previous: &articles::Model,
    mut row: articles::ActiveModel,
) -> Result<articles::Model, DbErr> {
    row.updated_at = Set(chrono::Utc::now().max(previous.updated_at));
    row.update(db).await
}

/// Replaces an article's tags, creating tag rows that do not exist yet.
pub async fn set_tags(
    db: &impl ConnectionTrait,
    article_id: i64,
    names: &[String],
) -> Result<(), DbErr> {
    ArticleTags::delete_many()
        .filter(article_tags::Column::ArticleId.eq(article_id))
        .exec(db)
        .await?;
    if names.is_empty() {
        return Ok(());
    }
    Tags::insert_many(names.iter().map(|name| tags::ActiveModel {
        name: Set(name.clone()),
        ..Default::default()
    }))
    .on_conflict_do_nothing_on([tags::Column::Name])
    .exec_without_returning(db)
    .await?;
    let ids: Vec<i64> = Tags::find()
        .select_only()
        .column(tags::Column::Id)
        .filter(tags::Column::Name.is_in(names.iter().cloned()))
        .into_tuple()
        .all(db)
        .await?;
    ArticleTags::insert_many(ids.into_iter().map(|tag_id| article_tags::ActiveModel {
        article_id: Set(article_id),
        tag_id: Set(tag_id),
    }))
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Removes the article with everything that hangs off it. Explicit rather than left to
/// ON DELETE CASCADE, so it holds even where foreign keys are not enforced. False when
/// the article was already gone.
pub async fn delete(db: &impl ConnectionTrait, article_id: i64) -> Result<bool, DbErr> {
    Comments::delete_many()
        .filter(comments::Column::ArticleId.eq(article_id))
        .exec(db)
        .await?;
    Favorites::delete_many()
        .filter(favorites::Column::ArticleId.eq(article_id))
        .exec(db)
        .await?;
    ArticleTags::delete_many()
        .filter(article_tags::Column::ArticleId.eq(article_id))
        .exec(db)
        .await?;
    let deleted = Articles::delete_by_id(article_id).exec(db).await?;
    Ok(deleted.rows_affected == 1)
}

/// Idempotent.
pub async fn favorite(db: &impl ConnectionTrait, user: i64, article: i64) -> Result<(), DbErr> {
    Favorites::insert(favorites::ActiveModel {
        user_id: Set(user),
        article_id: Set(article),
        created_at: Set(chrono::Utc::now()),
    })
    .on_conflict_do_nothing()
    .exec_without_returning(db)
    .await?;
    Ok(())
}

pub async fn unfavorite(db: &impl ConnectionTrait, user: i64, article: i64) -> Result<(), DbErr> {
    Favorites::delete_many()
        .filter(favorites::Column::UserId.eq(user))
        .filter(favorites::Column::ArticleId.eq(article))
        .exec(db)
        .await?;
    Ok(())
}
