//! Routes kept for old clients while they move on (progressive migration): each answers
//! like its successor, plus `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and a `Link` to
//! the successor, so clients and their operators see the end coming. Switched off with
//! `features.legacy_feed = false`, the route is gone (404) and out of the document.

use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::IntoResponse,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{GrpcServices, Module};
use crate::{
    auth::Principal,
    error::{AppResult, GenericErrorModel},
    modules::articles::rest::{ArticlesJson, MultipleArticlesResponse, PageParams, feed},
    operations::{Access::Required, Effect::Read, rest_only},
    rest::Query,
    state::AppState,
};

pub const MODULE: Module = Module {
    name: "legacy_feed",
    operations: &[rest_only("GET /api/feed", Required, Read)],
    // Deprecated for its callers; registering it is what this module is for.
    #[allow(deprecated)]
    rest: || OpenApiRouter::new().routes(routes!(legacy_feed)),
    grpc: |_| GrpcServices::default(),
};

/// When the feed's old path was deprecated (the `Deprecation` header's date).
const FEED_DEPRECATED_AT: i64 = 1_795_996_800; // 2026-12-01T00:00:00Z

/// Get recent articles from users you follow (deprecated path)
///
/// The feed's old path: use `GET /api/articles/feed`. Answers carry `Deprecation`,
/// `Sunset` and `Link: </api/articles/feed>; rel="successor-version"`.
#[utoipa::path(get, path = "/feed", tag = "Articles", operation_id = "GetArticlesFeedLegacy",
    params(PageParams),
    security(("Token" = [])),
    responses(
        (status = 200, description = "As `GET /api/articles/feed`", body = MultipleArticlesResponse),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
        (status = 422, description = "Invalid parameters", body = GenericErrorModel),
    ))]
// utoipa marks the operation `deprecated: true` from this attribute.
#[deprecated = "use GET /api/articles/feed"]
async fn legacy_feed(
    state: State<AppState>,
    viewer: Principal,
    params: Query<PageParams>,
) -> AppResult<impl IntoResponse> {
    let sunset = state.settings.features.legacy_sunset;
    let answer: ArticlesJson = feed(state, viewer, params).await?;
    Ok((deprecation_headers(sunset), answer))
}

fn deprecation_headers(sunset: chrono::DateTime<chrono::Utc>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let values = [
        ("deprecation", format!("@{FEED_DEPRECATED_AT}")),
        (
            "sunset",
            sunset.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        ),
    ];
    for (name, value) in values {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    headers.insert(
        header::LINK,
        HeaderValue::from_static("</api/articles/feed>; rel=\"successor-version\""),
    );
    headers
}
