//! REST adapter: `/api/articles`, the feed, one article, and favorites.

use axum::{
    extract::{Path, State},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::service::{
    ArticleChanges, ArticleFilter, ArticlePage, ArticleService, ArticleView,
    NewArticle as NewArticleInput,
};
use crate::{
    auth::{MaybePrincipal, Principal},
    error::{AppResult, GenericErrorModel},
    modules::profiles::rest::Profile,
    pagination::PageRequest,
    rest::{Field, Json, Query, timestamp},
    state::AppState,
    validation::Violations,
};

mod list;

pub(crate) use list::ArticlesJson;

const TAG: &str = "Articles";
const FAVORITES: &str = "Favorites";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_articles, create_article))
        .routes(routes!(feed))
        .routes(routes!(get_article, update_article, delete_article))
        .routes(routes!(favorite, unfavorite))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Article {
    slug: String,
    title: String,
    description: String,
    body: String,
    tag_list: Vec<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    favorited: bool,
    favorites_count: i64,
    author: Profile,
}

/// An article in a list: everything but the body.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArticleSummary {
    slug: String,
    title: String,
    description: String,
    tag_list: Vec<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    favorited: bool,
    favorites_count: i64,
    author: Profile,
}

impl From<ArticleView> for Article {
    fn from(a: ArticleView) -> Self {
        Article {
            created_at: timestamp(&a.created_at),
            updated_at: timestamp(&a.updated_at),
            body: a.body.unwrap_or_default(),
            slug: a.slug,
            title: a.title,
            description: a.description,
            tag_list: a.tag_list,
            favorited: a.favorited,
            favorites_count: a.favorites_count,
            author: a.author.into(),
        }
    }
}

impl From<ArticleView> for ArticleSummary {
    fn from(a: ArticleView) -> Self {
        ArticleSummary {
            created_at: timestamp(&a.created_at),
            updated_at: timestamp(&a.updated_at),
            slug: a.slug,
            title: a.title,
            description: a.description,
            tag_list: a.tag_list,
            favorited: a.favorited,
            favorites_count: a.favorites_count,
            author: a.author.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct SingleArticleResponse {
    article: Article,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MultipleArticlesResponse {
    articles: Vec<ArticleSummary>,
    articles_count: u64,
}

/// The list answers' schema; `list::ArticlesJson` writes them, byte for byte what serde
/// writes from this (its tests compare the two).
impl From<ArticlePage> for MultipleArticlesResponse {
    fn from(page: ArticlePage) -> Self {
        MultipleArticlesResponse {
            articles: page
                .articles
                .into_views()
                .into_iter()
                .map(Into::into)
                .collect(),
            articles_count: page.total,
        }
    }
}

fn single(article: ArticleView) -> Json<SingleArticleResponse> {
    Json(SingleArticleResponse {
        article: article.into(),
    })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Filter by tag
    tag: Option<String>,
    /// Filter by author (username)
    author: Option<String>,
    /// Filter by favorites of a user (username)
    favorited: Option<String>,
    /// The number of items to skip before starting to collect the result set (at most
    /// 10000; page further with the gRPC lists' page tokens).
    #[param(minimum = 0, maximum = 10000)]
    offset: Option<i64>,
    /// The numbers of items to return (1 to 100).
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageParams {
    #[param(minimum = 0, maximum = 10000)]
    offset: Option<i64>,
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<i64>,
}

/// Missing fields read as empty so the service answers `can't be blank`; `null` is refused.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct NewArticle {
    #[serde(default)]
    #[schema(value_type = String)]
    title: Field<String>,
    #[serde(default)]
    #[schema(value_type = String)]
    description: Field<String>,
    #[serde(default)]
    #[schema(value_type = String)]
    body: Field<String>,
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    tag_list: Field<Vec<String>>,
}

#[derive(Deserialize, ToSchema)]
struct NewArticleRequest {
    article: NewArticle,
}

/// Absent fields are left as they are; none may be `null`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct UpdateArticle {
    #[serde(default)]
    #[schema(value_type = String)]
    title: Field<String>,
    #[serde(default)]
    #[schema(value_type = String)]
    description: Field<String>,
    #[serde(default)]
    #[schema(value_type = String)]
    body: Field<String>,
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    tag_list: Field<Vec<String>>,
}

#[derive(Deserialize, ToSchema)]
struct UpdateArticleRequest {
    article: UpdateArticle,
}

/// Get recent articles globally
#[utoipa::path(get, path = "/articles", tag = TAG, operation_id = "GetArticles",
    params(ListParams),
    security((), ("Token" = [])),
    responses(
        (status = 200, description = "Newest first, without bodies", body = MultipleArticlesResponse),
        (status = 401, description = "Invalid token", body = GenericErrorModel),
        (status = 422, description = "Invalid parameters", body = GenericErrorModel),
    ))]
async fn list_articles(
    State(state): State<AppState>,
    MaybePrincipal(viewer): MaybePrincipal,
    Query(params): Query<ListParams>,
) -> AppResult<ArticlesJson> {
    let filter = ArticleFilter {
        tag: params.tag,
        author: params.author,
        favorited: params.favorited,
    };
    let page = PageRequest {
        limit: params.limit,
        offset: params.offset,
    };
    Ok(ArticlesJson::new(
        ArticleService::new(&state)
            .list(viewer, filter, page)
            .await?,
    ))
}

/// Get recent articles from users you follow
#[utoipa::path(get, path = "/articles/feed", tag = TAG, operation_id = "GetArticlesFeed",
    params(PageParams),
    security(("Token" = [])),
    responses(
        (status = 200, description = "Newest first, without bodies", body = MultipleArticlesResponse),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
        (status = 422, description = "Invalid parameters", body = GenericErrorModel),
    ))]
pub(crate) async fn feed(
    State(state): State<AppState>,
    viewer: Principal,
    Query(params): Query<PageParams>,
) -> AppResult<ArticlesJson> {
    let page = PageRequest {
        limit: params.limit,
        offset: params.offset,
    };
    Ok(ArticlesJson::new(
        ArticleService::new(&state).feed(viewer, page).await?,
    ))
}

/// Get an article
#[utoipa::path(get, path = "/articles/{slug}", tag = TAG, operation_id = "GetArticle",
    params(("slug" = String, Path, description = "Slug of the article to get")),
    security((), ("Token" = [])),
    responses(
        (status = 200, description = "Article", body = SingleArticleResponse),
        (status = 401, description = "Invalid token (a token is optional, a bad one is refused)", body = GenericErrorModel),
        (status = 404, description = "No such article", body = GenericErrorModel),
    ))]
async fn get_article(
    State(state): State<AppState>,
    MaybePrincipal(viewer): MaybePrincipal,
    Path(slug): Path<String>,
) -> AppResult<Json<SingleArticleResponse>> {
    Ok(single(
        ArticleService::new(&state).get(viewer, &slug).await?,
    ))
}

/// Create an article
#[utoipa::path(post, path = "/articles", tag = TAG, operation_id = "CreateArticle",
    request_body = NewArticleRequest,
    security(("Token" = [])),
    responses(
        (status = 201, description = "Article", body = SingleArticleResponse),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
        (status = 409, description = "Slug taken by a concurrent request", body = GenericErrorModel),
        (status = 422, description = "Validation failed", body = GenericErrorModel),
    ))]
async fn create_article(
    State(state): State<AppState>,
    author: Principal,
    Json(request): Json<NewArticleRequest>,
) -> AppResult<(StatusCode, Json<SingleArticleResponse>)> {
    let a = request.article;
    let mut nulls = Violations::new();
    let input = NewArticleInput {
        title: a.title.non_null("title", &mut nulls).unwrap_or_default(),
        description: a
            .description
            .non_null("description", &mut nulls)
            .unwrap_or_default(),
        body: a.body.non_null("body", &mut nulls).unwrap_or_default(),
        tag_list: a
            .tag_list
            .non_null("tagList", &mut nulls)
            .unwrap_or_default(),
    };
    nulls.finish()?;
    Ok((
        StatusCode::CREATED,
        single(ArticleService::new(&state).create(author, input).await?),
    ))
}

/// Update an article
#[utoipa::path(put, path = "/articles/{slug}", tag = TAG, operation_id = "UpdateArticle",
    params(("slug" = String, Path, description = "Slug of the article to update")),
    request_body = UpdateArticleRequest,
    security(("Token" = [])),
    responses(
        (status = 200, description = "Article (a new title gives a new slug)", body = SingleArticleResponse),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
        (status = 403, description = "Not the author", body = GenericErrorModel),
        (status = 404, description = "No such article", body = GenericErrorModel),
        (status = 422, description = "Validation failed", body = GenericErrorModel),
    ))]
async fn update_article(
    State(state): State<AppState>,
    author: Principal,
    Path(slug): Path<String>,
    Json(request): Json<UpdateArticleRequest>,
) -> AppResult<Json<SingleArticleResponse>> {
    let a = request.article;
    let mut nulls = Violations::new();
    let changes = ArticleChanges {
        title: a.title.non_null("title", &mut nulls),
        description: a.description.non_null("description", &mut nulls),
        body: a.body.non_null("body", &mut nulls),
        tag_list: a.tag_list.non_null("tagList", &mut nulls),
    };
    nulls.finish()?;
    Ok(single(
        ArticleService::new(&state)
            .update(author, &slug, changes)
            .await?,
    ))
}

/// Delete an article
#[utoipa::path(delete, path = "/articles/{slug}", tag = TAG, operation_id = "DeleteArticle",
    params(("slug" = String, Path, description = "Slug of the article to delete")),
    security(("Token" = [])),
    responses(
        (status = 204, description = "Deleted, with its comments, favorites and tags"),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
        (status = 403, description = "Not the author", body = GenericErrorModel),
        (status = 404, description = "No such article", body = GenericErrorModel),
    ))]
async fn delete_article(
    State(state): State<AppState>,
    author: Principal,
    Path(slug): Path<String>,
) -> AppResult<StatusCode> {
    ArticleService::new(&state).delete(author, &slug).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Favorite an article
#[utoipa::path(post, path = "/articles/{slug}/favorite", tag = FAVORITES, operation_id = "CreateArticleFavorite",
    params(("slug" = String, Path, description = "Slug of the article that you want to favorite")),
    security(("Token" = [])),
    responses(
        (status = 200, description = "Article", body = SingleArticleResponse),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
        (status = 404, description = "No such article", body = GenericErrorModel),
    ))]
async fn favorite(
    State(state): State<AppState>,
    viewer: Principal,
    Path(slug): Path<String>,
) -> AppResult<Json<SingleArticleResponse>> {
    Ok(single(
        ArticleService::new(&state).favorite(viewer, &slug).await?,
    ))
}

/// Unfavorite an article
#[utoipa::path(delete, path = "/articles/{slug}/favorite", tag = FAVORITES, operation_id = "DeleteArticleFavorite",
    params(("slug" = String, Path, description = "Slug of the article that you want to unfavorite")),
    security(("Token" = [])),
    responses(
        (status = 200, description = "Article", body = SingleArticleResponse),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
        (status = 404, description = "No such article", body = GenericErrorModel),
    ))]
async fn unfavorite(
    State(state): State<AppState>,
    viewer: Principal,
    Path(slug): Path<String>,
) -> AppResult<Json<SingleArticleResponse>> {
    Ok(single(
        ArticleService::new(&state)
            .unfavorite(viewer, &slug)
            .await?,
    ))
}
