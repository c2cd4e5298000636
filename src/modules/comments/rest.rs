//! REST adapter: `/api/articles/{slug}/comments`.

use axum::{
    extract::{Path, State},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::service::{CommentService, CommentView};
use crate::{
    auth::{MaybePrincipal, Principal},
    error::{AppResult, GenericErrorModel},
    modules::profiles::rest::Profile,
    pagination::PageRequest,
    rest::{Field, Json, Query, timestamp},
    state::AppState,
    validation::Violations,
};

const TAG: &str = "Comments";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_comments, add_comment))
        .routes(routes!(delete_comment))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Comment {
    id: i64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    body: String,
    author: Profile,
}

impl From<CommentView> for Comment {
    fn from(c: CommentView) -> Self {
        Comment {
            id: c.id,
            created_at: timestamp(&c.created_at),
            updated_at: timestamp(&c.updated_at),
            body: c.body,
            author: c.author.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct SingleCommentResponse {
    comment: Comment,
}

#[derive(Serialize, ToSchema)]
struct MultipleCommentsResponse {
    comments: Vec<Comment>,
}

/// Comments come in pages; RealWorld clients, which send neither, get the newest 100.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CommentPageParams {
    /// Comments to skip, newest first (at most 10000).
    #[param(minimum = 0, maximum = 10000)]
    offset: Option<i64>,
    /// Comments to return (1 to 100).
    #[param(minimum = 1, maximum = 100, default = 100)]
    limit: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
struct NewComment {
    #[serde(default)]
    #[schema(value_type = String)]
    body: Field<String>,
}

#[derive(Deserialize, ToSchema)]
struct NewCommentRequest {
    comment: NewComment,
}

/// Get comments for an article
#[utoipa::path(get, path = "/articles/{slug}/comments", tag = TAG, operation_id = "GetArticleComments",
    params(("slug" = String, Path, description = "Slug of the article that you want to get comments for"), CommentPageParams),
    security((), ("Token" = [])),
    responses(
        (status = 200, description = "Comments, newest first", body = MultipleCommentsResponse),
        (status = 401, description = "Invalid token", body = GenericErrorModel),
        (status = 404, description = "No such article", body = GenericErrorModel),
        (status = 422, description = "`limit` or `offset` out of bounds", body = GenericErrorModel),
    ))]
async fn list_comments(
    State(state): State<AppState>,
    MaybePrincipal(viewer): MaybePrincipal,
    Path(slug): Path<String>,
    Query(params): Query<CommentPageParams>,
) -> AppResult<Json<MultipleCommentsResponse>> {
    let page = PageRequest {
        limit: params.limit,
        offset: params.offset,
    };
    let comments = CommentService::new(&state)
        .list(viewer, &slug, page)
        .await?;
    Ok(Json(MultipleCommentsResponse {
        comments: comments.into_iter().map(Into::into).collect(),
    }))
}

/// Create a comment for an article
#[utoipa::path(post, path = "/articles/{slug}/comments", tag = TAG, operation_id = "CreateArticleComment",
    params(("slug" = String, Path, description = "Slug of the article that you want to create a comment for")),
    request_body = NewCommentRequest,
    security(("Token" = [])),
    responses(
        (status = 201, description = "Comment", body = SingleCommentResponse),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
        (status = 404, description = "No such article", body = GenericErrorModel),
        (status = 422, description = "Validation failed", body = GenericErrorModel),
    ))]
async fn add_comment(
    State(state): State<AppState>,
    author: Principal,
    Path(slug): Path<String>,
    Json(request): Json<NewCommentRequest>,
) -> AppResult<(StatusCode, Json<SingleCommentResponse>)> {
    let mut nulls = Violations::new();
    let body = request.comment.body.non_null("body", &mut nulls);
    nulls.finish()?;
    let comment = CommentService::new(&state)
        .add(author, &slug, body.unwrap_or_default())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(SingleCommentResponse {
            comment: comment.into(),
        }),
    ))
}

/// Delete a comment for an article
#[utoipa::path(delete, path = "/articles/{slug}/comments/{id}", tag = TAG, operation_id = "DeleteArticleComment",
    params(
        ("slug" = String, Path, description = "Slug of the article that you want to delete a comment for"),
        ("id" = i64, Path, description = "ID of the comment you want to delete"),
    ),
    security(("Token" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
        (status = 403, description = "Not the author", body = GenericErrorModel),
        (status = 404, description = "No such article or comment", body = GenericErrorModel),
        (status = 422, description = "The id is not a number", body = GenericErrorModel),
    ))]
async fn delete_comment(
    State(state): State<AppState>,
    author: Principal,
    Path((slug, id)): Path<(String, String)>,
) -> AppResult<StatusCode> {
    let id: i64 = id
        .parse()
        .map_err(|_| crate::error::AppError::Validation(vec![("id", "must be a number".into())]))?;
    CommentService::new(&state)
        .delete(author, &slug, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
