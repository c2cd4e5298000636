//! The one statement every read of articles is: a list page, the feed, one article, the
//! answer to a write — the rows with their author, tags, favorite count, the viewer's
//! flags and, for REST pages, the total — and the scopes and windows it is read over.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Select, Statement,
    prelude::DateTimeUtc,
    sea_query::{Expr, ExprTrait, SubQueryStatement},
};

use crate::entities::{
    article_tags::{self, Entity as ArticleTags},
    articles::{self, Entity as Articles},
    favorites::{self, Entity as Favorites},
    follows::{self, Entity as Follows},
    tags::{self, Entity as Tags},
    users::{self, Entity as Users},
};
use crate::pagination::Cursor;

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
