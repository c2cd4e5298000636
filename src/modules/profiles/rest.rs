//! REST adapter: `/api/profiles/{username}` and its `/follow`.

use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::service::{ProfileService, ProfileView};
use crate::{
    auth::{MaybePrincipal, Principal},
    error::{AppResult, GenericErrorModel},
    rest::Json,
    state::AppState,
};

const TAG: &str = "Profile";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_profile))
        .routes(routes!(follow, unfollow))
}

#[derive(Serialize, ToSchema)]
#[schema(as = Profile)]
pub struct Profile {
    username: String,
    #[schema(required = true)]
    bio: Option<String>,
    #[schema(required = true)]
    image: Option<String>,
    following: bool,
}

impl From<ProfileView> for Profile {
    fn from(p: ProfileView) -> Self {
        Profile {
            username: p.username,
            bio: p.bio,
            image: p.image,
            following: p.following,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct ProfileResponse {
    profile: Profile,
}

fn respond(p: ProfileView) -> Json<ProfileResponse> {
    Json(ProfileResponse { profile: p.into() })
}

/// Get a profile
#[utoipa::path(get, path = "/profiles/{username}", tag = TAG, operation_id = "GetProfileByUsername",
    params(("username" = String, Path, description = "Username of the profile to get")),
    security((), ("Token" = [])),
    responses(
        (status = 200, description = "Profile", body = ProfileResponse),
        (status = 401, description = "Invalid token", body = GenericErrorModel),
        (status = 404, description = "No such user", body = GenericErrorModel),
    ))]
async fn get_profile(
    State(state): State<AppState>,
    MaybePrincipal(viewer): MaybePrincipal,
    Path(username): Path<String>,
) -> AppResult<Json<ProfileResponse>> {
    Ok(respond(
        ProfileService::new(&state).get(viewer, &username).await?,
    ))
}

/// Follow a user
#[utoipa::path(post, path = "/profiles/{username}/follow", tag = TAG, operation_id = "FollowUserByUsername",
    params(("username" = String, Path, description = "Username of the profile you want to follow")),
    security(("Token" = [])),
    responses(
        (status = 200, description = "Profile", body = ProfileResponse),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
        (status = 404, description = "No such user", body = GenericErrorModel),
    ))]
async fn follow(
    State(state): State<AppState>,
    viewer: Principal,
    Path(username): Path<String>,
) -> AppResult<Json<ProfileResponse>> {
    Ok(respond(
        ProfileService::new(&state)
            .follow(viewer, &username)
            .await?,
    ))
}

/// Unfollow a user
#[utoipa::path(delete, path = "/profiles/{username}/follow", tag = TAG, operation_id = "UnfollowUserByUsername",
    params(("username" = String, Path, description = "Username of the profile you want to unfollow")),
    security(("Token" = [])),
    responses(
        (status = 200, description = "Profile", body = ProfileResponse),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
        (status = 404, description = "No such user", body = GenericErrorModel),
    ))]
async fn unfollow(
    State(state): State<AppState>,
    viewer: Principal,
    Path(username): Path<String>,
) -> AppResult<Json<ProfileResponse>> {
    Ok(respond(
        ProfileService::new(&state)
            .unfollow(viewer, &username)
            .await?,
    ))
}
