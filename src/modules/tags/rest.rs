//! REST adapter: `/api/tags`.

use std::sync::Arc;

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::service::TagService;
use crate::{error::AppResult, rest::Json, state::AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_tags))
}

#[derive(Serialize, ToSchema)]
struct TagsResponse {
    /// Shared with the cache: serialised without copying.
    #[schema(value_type = Vec<String>)]
    tags: Arc<Vec<String>>,
}

/// Get tags
#[utoipa::path(get, path = "/tags", tag = "Tags", operation_id = "GetTags",
    responses((status = 200, description = "Every tag in use, sorted", body = TagsResponse)))]
async fn list_tags(State(state): State<AppState>) -> AppResult<Json<TagsResponse>> {
    Ok(Json(TagsResponse {
        tags: TagService::new(&state).list().await?,
    }))
}
