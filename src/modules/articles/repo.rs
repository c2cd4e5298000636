//! Queries on articles, their tags and favorites. Every read of articles — a list page,
//! the feed, one article, the answer to a write — is one statement ([`shown`]): the rows
//! with their author, tags, favorite count, the viewer's flags and, for REST pages, the
//! total, whatever the page size.
//!
//! Lock order for writes: the article row first ([`lock`]), then the rows that hang off it
//! (tags, favorites, comments), tags in name order. SQLite ignores row locks; its writers
//! are serialised by `BEGIN IMMEDIATE` instead.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Select, Set, Statement,
    TryInsertResult,
    prelude::DateTimeUtc,
    sea_query::{Expr, ExprTrait, LockType, SubQueryStatement},
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
use crate::{cache::Topic, db::changed};

pub type ArticleRow = (articles::Model, users::Model);

/// Which articles a read shows.
pub enum Scope<'a> {
    /// The article with this slug.
    Slug(&'a str),
    /// The article with this id.
    Id(i64),
    /// These articles (in no order the caller relies on).
    Ids(&'a [i64]),
    /// Everything, narrowed by whichever filters are set (users by id).
    Filtered {
        tag: Option<&'a str>,
        author: Option<i64>,
        favorited_by: Option<i64>,
    },
    /// Articles by these authors (a feed, with its follows known).
    AuthorsIn(&'a [i64]),
    /// Articles by the users this user follows (a feed, follows read in the statement).
    FeedOf(i64),
}

/// The id of the user a username names, in any case.
pub async fn user_id_named(
    db: &impl ConnectionTrait,
    username: &str,
) -> Result<Option<i64>, DbErr> {
    Users::find()
        .select_only()
        .column(users::Column::Id)
        .filter(users::same_name(users::Column::Username, username))
        .into_tuple()
        .one(db)
        .await
}

fn scoped(scope: &Scope<'_>) -> Select<Articles> {
    let mut query = Articles::find();
    match scope {
        Scope::Slug(slug) => query = query.filter(articles::Column::Slug.eq(*slug)),
        Scope::Id(id) => query = query.filter(articles::Column::Id.eq(*id)),
        Scope::Ids(ids) => query = query.filter(articles::Column::Id.is_in(ids.iter().copied())),
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
                query = query.filter(articles::Column::AuthorId.eq(*author));
            }
            if let Some(user) = favorited_by {
                let favorited = Favorites::find()
                    .select_only()
                    .column(favorites::Column::ArticleId)
                    .filter(favorites::Column::UserId.eq(*user))
                    .into_query();
                query = query.filter(articles::Column::Id.in_subquery(favorited));
            }
        }
        Scope::AuthorsIn(authors) => {
            query = query.filter(articles::Column::AuthorId.is_in(authors.iter().copied()));
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

/// Which rows of a scope a read returns.
#[derive(Clone, Copy)]
pub enum Window {
    /// A REST page: `limit` rows after skipping `offset`, with the total matching
    /// unless the caller has it already.
    Offset {
        limit: u64,
        offset: u64,
        with_total: bool,
    },
    /// A keyset page: up to `limit` rows after `after`; no total.
    Keyset { limit: u64, after: Option<Cursor> },
    /// The one article a slug or id names, with its body.
    One,
    /// Every article the scope names, without bodies (`Scope::Ids`).
    All,
}

/// An article as shown, with everything a view needs, read in one statement.
#[derive(Debug, FromQueryResult)]
pub struct Shown {
    pub id: i64,
    pub author_id: i64,
    pub slug: String,
    pub title: String,
    pub description: String,
    /// Only for single articles; lists leave it out.
    pub body: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub username: String,
    pub bio: Option<String>,
    pub image: Option<String>,
    /// A JSON array of tag names (NULL when there are none, on Postgres).
    pub tags: Option<String>,
    pub favorites_count: i64,
    pub favorited: bool,
    pub following: bool,
    /// Offset pages only: how many articles the scope matches.
    pub total: Option<i64>,
}

/// Newest first, in one statement: the page and, per row, its author (joined), its tags
/// (aggregated as JSON), its favorite count, whether `viewer` favorited it and follows
/// its author (correlated subqueries over primary-key indexes, evaluated for the page's
/// rows only), and for offset pages the total (an uncorrelated count, evaluated once).
pub async fn shown(
    db: &impl ConnectionTrait,
    scope: &Scope<'_>,
    window: Window,
    viewer: Option<i64>,
) -> Result<Vec<Shown>, DbErr> {
    let statement = shown_statement(db.get_database_backend(), scope, window, viewer);
    Shown::find_by_statement(statement).all(db).await
}

/// The one statement of [`shown`]; public so the benchmark can run it against the
/// database alone.
pub fn shown_statement(
    backend: DbBackend,
    scope: &Scope<'_>,
    window: Window,
    viewer: Option<i64>,
) -> Statement {
    use sea_orm::sea_query::{Order, Query};
    let article_id = || Expr::col((Articles, articles::Column::Id));
    let tags = match backend {
        DbBackend::Postgres => {
            "(SELECT json_agg(t.name)::text FROM article_tags at \
             JOIN tags t ON t.id = at.tag_id WHERE at.article_id = \"articles\".\"id\")"
        }
        _ => {
            "(SELECT json_group_array(t.name) FROM article_tags at \
             JOIN tags t ON t.id = at.tag_id WHERE at.article_id = \"articles\".\"id\")"
        }
    };
    let favorites_count = Query::select()
        .expr(Expr::col((Favorites, favorites::Column::UserId)).count())
        .from(Favorites)
        .and_where(
            Expr::col((Favorites, favorites::Column::ArticleId))
                .equals((Articles, articles::Column::Id)),
        )
        .to_owned();
    let (favorited, following) = match viewer {
        Some(viewer) => (
            Expr::exists(
                Query::select()
                    .expr(Expr::val(1))
                    .from(Favorites)
                    .and_where(
                        Expr::col((Favorites, favorites::Column::ArticleId))
                            .equals((Articles, articles::Column::Id)),
                    )
                    .and_where(Expr::col((Favorites, favorites::Column::UserId)).eq(viewer))
                    .to_owned(),
            ),
            Expr::exists(
                Query::select()
                    .expr(Expr::val(1))
                    .from(Follows)
                    .and_where(
                        Expr::col((Follows, follows::Column::FolloweeId))
                            .equals((Articles, articles::Column::AuthorId)),
                    )
                    .and_where(Expr::col((Follows, follows::Column::FollowerId)).eq(viewer))
                    .to_owned(),
            ),
        ),
        None => (Expr::val(false), Expr::val(false)),
    };
    // The page is chosen first, in a derived table that keeps the table's name, so the
    // per-row subqueries run for the page's rows only whatever plan Postgres picks (a
    // generic plan cannot see the LIMIT's value and would otherwise be free to compute
    // them for every matching row before sorting).
    let mut page = scoped(scope).select_only().columns([
        articles::Column::Id,
        articles::Column::Slug,
        articles::Column::Title,
        articles::Column::Description,
        articles::Column::CreatedAt,
        articles::Column::UpdatedAt,
        articles::Column::AuthorId,
    ]);
    let (body, total) = match window {
        Window::One => {
            page = page.column(articles::Column::Body).limit(1);
            (
                Expr::col((Articles, articles::Column::Body)),
                Expr::cust("CAST(NULL AS BIGINT)"),
            )
        }
        Window::Offset {
            limit,
            offset,
            with_total,
        } => {
            page = page.limit(limit).offset(offset);
            let total = if with_total {
                let count = scoped(scope)
                    .select_only()
                    .column_as(article_id().count(), "total")
                    .into_query();
                Expr::SubQuery(None, Box::new(SubQueryStatement::SelectStatement(count)))
            } else {
                Expr::cust("CAST(NULL AS BIGINT)")
            };
            (Expr::cust("CAST(NULL AS TEXT)"), total)
        }
        Window::All => (
            Expr::cust("CAST(NULL AS TEXT)"),
            Expr::cust("CAST(NULL AS BIGINT)"),
        ),
        Window::Keyset { limit, after } => {
            if let Some(after) = after {
                page =
                    page.filter(after.follows(articles::Column::CreatedAt, articles::Column::Id));
            }
            page = page.limit(limit);
            (
                Expr::cust("CAST(NULL AS TEXT)"),
                Expr::cust("CAST(NULL AS BIGINT)"),
            )
        }
    };
    let page = page
        .order_by_desc(articles::Column::CreatedAt)
        .order_by_desc(articles::Column::Id)
        .into_query();
    let shown = Query::select()
        .columns([
            (Articles, articles::Column::Id),
            (Articles, articles::Column::AuthorId),
            (Articles, articles::Column::Slug),
            (Articles, articles::Column::Title),
            (Articles, articles::Column::Description),
            (Articles, articles::Column::CreatedAt),
            (Articles, articles::Column::UpdatedAt),
        ])
        .expr_as(body, "body")
        .expr_as(Expr::col((Users, users::Column::Username)), "username")
        .expr_as(Expr::col((Users, users::Column::Bio)), "bio")
        .expr_as(Expr::col((Users, users::Column::Image)), "image")
        .expr_as(Expr::cust(tags), "tags")
        .expr_as(
            Expr::SubQuery(
                None,
                Box::new(SubQueryStatement::SelectStatement(favorites_count)),
            ),
            "favorites_count",
        )
        .expr_as(favorited, "favorited")
        .expr_as(following, "following")
        .expr_as(total, "total")
        .from_subquery(page, Articles)
        .inner_join(
            Users,
            Expr::col((Users, users::Column::Id)).equals((Articles, articles::Column::AuthorId)),
        )
        .order_by((Articles, articles::Column::CreatedAt), Order::Desc)
        .order_by((Articles, articles::Column::Id), Order::Desc)
        .to_owned();
    backend.build(&shown)
}

/// How many articles `scope` matches: for an offset page past the end, which has no row
/// to carry the total.
pub async fn count(db: &impl ConnectionTrait, scope: &Scope<'_>) -> Result<u64, DbErr> {
    scoped(scope).count(db).await
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
