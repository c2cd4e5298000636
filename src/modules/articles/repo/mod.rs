//! Queries on articles, their tags and favorites. Every read of articles — a list page,
//! the feed, one article, the answer to a write — is one statement (`shown`, in
//! [`shown`](self::shown) with the lists' scopes and windows): the rows with their
//! author, tags, favorite count, the viewer's flags and, for REST pages, the total,
//! whatever the page size. Here: the writes.
//!
//! Lock order for writes: the article row first ([`lock`]), then the rows that hang off it
//! (tags, favorites, comments), tags in name order. SQLite ignores row locks; its writers
//! are serialised by `BEGIN IMMEDIATE` instead.

mod shown;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QuerySelect, QueryTrait, Set, Statement, TryInsertResult, sea_query::LockType,
};

use crate::entities::{
    article_tags::{self, Entity as ArticleTags},
    articles::{self, Entity as Articles},
    comments::{self, Entity as Comments},
    favorites::{self, Entity as Favorites},
    tags::{self, Entity as Tags},
    users::{self, Entity as Users},
};
use crate::{cache::Topic, db::changed};

pub use shown::{Scope, Shown, Window, count, shown, shown_statement, user_id_named};

pub type ArticleRow = (articles::Model, users::Model);

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

pub struct NewRow {
    pub slug: String,
    pub title: String,
    pub description: String,
    pub body: String,
    pub author_id: i64,
}

pub async fn insert(db: &impl ConnectionTrait, row: NewRow) -> Result<articles::Model, DbErr> {
    let now = chrono::Utc::now();
    let article = articles::ActiveModel {
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
    .await?;
    for topic in [
        Topic::Article(article.id),
        Topic::Slug(&article.slug),
        Topic::ListAll,
        Topic::ListAuthor(article.author_id),
    ] {
        changed(topic);
    }
    Ok(article)
}

/// Saves changes to a locked row. `updatedAt` never goes backwards, even when this
/// replica's clock is behind the one that wrote last.
pub async fn save(
    db: &impl ConnectionTrait,
    previous: &articles::Model,
    mut row: articles::ActiveModel,
) -> Result<articles::Model, DbErr> {
    row.updated_at = Set(Ord::max(chrono::Utc::now(), previous.updated_at));
    let saved = row.update(db).await?;
    changed(Topic::Article(saved.id));
    if saved.slug != previous.slug {
        changed(Topic::Slug(&previous.slug));
        changed(Topic::Slug(&saved.slug));
    }
    Ok(saved)
}

/// The names of an article's tags.
async fn tag_names(db: &impl ConnectionTrait, article_id: i64) -> Result<Vec<String>, DbErr> {
    let tag_ids = ArticleTags::find()
        .select_only()
        .column(article_tags::Column::TagId)
        .filter(article_tags::Column::ArticleId.eq(article_id))
        .into_query();
    Tags::find()
        .select_only()
        .column(tags::Column::Name)
        .filter(tags::Column::Id.in_subquery(tag_ids))
        .into_tuple()
        .all(db)
        .await
}

/// Replaces an article's tags, creating tag rows that do not exist yet. `fresh`: the
/// article was just created and has none yet.
pub async fn set_tags(
    db: &impl ConnectionTrait,
    article_id: i64,
    names: &[String],
    fresh: bool,
) -> Result<(), DbErr> {
    let previous = if fresh {
        Vec::new()
    } else {
        tag_names(db, article_id).await?
    };
    if !fresh && previous.len() == names.len() && previous.iter().all(|t| names.contains(t)) {
        return Ok(());
    }
    for tag in previous.iter().chain(names) {
        changed(Topic::ListTag(tag));
    }
    if !names.is_empty() || !previous.is_empty() {
        changed(Topic::Tags);
        changed(Topic::Article(article_id));
    }
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
pub async fn delete(db: &impl ConnectionTrait, article: &articles::Model) -> Result<bool, DbErr> {
    let article_id = article.id;
    for tag in tag_names(db, article_id).await? {
        changed(Topic::ListTag(&tag));
    }
    for topic in [
        Topic::Article(article_id),
        Topic::Slug(&article.slug),
        Topic::ListAll,
        Topic::ListAuthor(article.author_id),
        Topic::ArticleFavorites(article_id),
        Topic::ArticleGone,
        Topic::Tags,
    ] {
        changed(topic);
    }
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

/// Serialises one user's favourite and unfavourite of one article (Postgres; SQLite's
/// writers take turns already), so each answer — read after the change, in the same
/// transaction — shows the state that request produced, not a twin's that committed in
/// between. Other users' favourites of the article do not wait.
pub async fn lock_favorite(
    db: &impl ConnectionTrait,
    user: i64,
    article: i64,
) -> Result<(), DbErr> {
    if db.get_database_backend() == DbBackend::Postgres {
        let key = (user << 32) ^ article;
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [key.into()],
        ))
        .await?;
    }
    Ok(())
}

/// Idempotent.
pub async fn favorite(db: &impl ConnectionTrait, user: i64, article: i64) -> Result<(), DbErr> {
    let inserted = Favorites::insert(favorites::ActiveModel {
        user_id: Set(user),
        article_id: Set(article),
        created_at: Set(chrono::Utc::now()),
    })
    .on_conflict_do_nothing()
    .exec_without_returning(db)
    .await?;
    if matches!(inserted, TryInsertResult::Inserted(n) if n > 0) {
        favorites_changed(user, article);
    }
    Ok(())
}

pub async fn unfavorite(db: &impl ConnectionTrait, user: i64, article: i64) -> Result<(), DbErr> {
    let deleted = Favorites::delete_many()
        .filter(favorites::Column::UserId.eq(user))
        .filter(favorites::Column::ArticleId.eq(article))
        .exec(db)
        .await?;
    if deleted.rows_affected > 0 {
        favorites_changed(user, article);
    }
    Ok(())
}

/// A favourite changes one count, one user's favourite set (and the lists filtered by
/// it), and nothing else.
fn favorites_changed(user: i64, article: i64) {
    changed(Topic::ArticleFavorites(article));
    changed(Topic::UserFavorites(user));
}

fn with_authors(rows: Vec<(articles::Model, Option<users::Model>)>) -> Vec<ArticleRow> {
    // The foreign key guarantees an author; a row without one is skipped, not a panic.
    rows.into_iter()
        .filter_map(|(article, author)| author.map(|a| (article, a)))
        .collect()
}
