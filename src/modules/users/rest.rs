//! REST adapter: the RealWorld `/api/users`, `/api/users/login` and `/api/user` endpoints.

use axum::{extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::service::{AuthenticatedUser, Credentials, Registration, UserChanges, UserService};
use crate::{
    auth::Principal,
    error::{AppError, AppResult, GenericErrorModel},
    rest::{Json, double_option},
    state::AppState,
};

const TAG: &str = "User and Authentication";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(current_user, update_user))
}

/// Missing fields deserialize as empty so the service can answer `can't be blank`.
#[derive(Deserialize, ToSchema)]
#[schema(as = NewUser)]
struct NewUser {
    #[serde(default)]
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    #[schema(format = Password)]
    password: String,
}

#[derive(Deserialize, ToSchema)]
struct NewUserRequest {
    user: NewUser,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = LoginUser)]
struct LoginUser {
    #[serde(default)]
    email: String,
    #[serde(default)]
    #[schema(format = Password)]
    password: String,
}

#[derive(Deserialize, ToSchema)]
struct LoginUserRequest {
    user: LoginUser,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = UpdateUser)]
struct UpdateUser {
    email: Option<String>,
    username: Option<String>,
    password: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    bio: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    image: Option<Option<String>>,
}

#[derive(Deserialize, ToSchema)]
struct UpdateUserRequest {
    user: UpdateUser,
}

#[derive(Serialize, ToSchema)]
#[schema(as = User)]
struct User {
    email: String,
    token: String,
    username: String,
    #[schema(required = true)]
    bio: Option<String>,
    #[schema(required = true)]
    image: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct UserResponse {
    user: User,
}

impl From<AuthenticatedUser> for UserResponse {
    fn from(u: AuthenticatedUser) -> Self {
        UserResponse {
            user: User {
                email: u.email,
                token: u.token,
                username: u.username,
                bio: u.bio,
                image: u.image,
            },
        }
    }
}

/// The RealWorld spec answers a taken username or email with 409 on registration but 422
/// on update (UpdateCurrentUser lists no 409). gRPC keeps ALREADY_EXISTS for both.
fn taken_is_invalid(e: AppError) -> AppError {
    match e {
        AppError::Conflict(field) => {
            AppError::Validation(vec![(field, "has already been taken".into())])
        }
        other => other,
    }
}

/// Register a new user
#[utoipa::path(post, path = "/users", tag = TAG, operation_id = "CreateUser",
    request_body = NewUserRequest,
    responses(
        (status = 201, description = "User", body = UserResponse),
        (status = 409, description = "Username or email already taken", body = GenericErrorModel),
        (status = 422, description = "Validation failed", body = GenericErrorModel),
    ))]
async fn register(
    State(state): State<AppState>,
    Json(body): Json<NewUserRequest>,
) -> AppResult<(StatusCode, Json<UserResponse>)> {
    let u = body.user;
    let user = UserService::new(&state)
        .register(Registration {
            username: u.username,
            email: u.email,
            password: u.password,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// Existing user login
#[utoipa::path(post, path = "/users/login", tag = TAG, operation_id = "Login",
    request_body = LoginUserRequest,
    responses(
        (status = 200, description = "User", body = UserResponse),
        (status = 401, description = "Wrong email or password", body = GenericErrorModel),
        (status = 422, description = "Validation failed", body = GenericErrorModel),
    ))]
async fn login(
    State(state): State<AppState>,
    Json(body): Json<LoginUserRequest>,
) -> AppResult<Json<UserResponse>> {
    let u = body.user;
    let user = UserService::new(&state)
        .login(Credentials {
            email: u.email,
            password: u.password,
        })
        .await?;
    Ok(Json(user.into()))
}

/// Get current user
#[utoipa::path(get, path = "/user", tag = TAG, operation_id = "GetCurrentUser",
    security(("Token" = [])),
    responses(
        (status = 200, description = "User", body = UserResponse),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
    ))]
async fn current_user(
    State(state): State<AppState>,
    principal: Principal,
) -> AppResult<Json<UserResponse>> {
    let user = UserService::new(&state).current(principal).await?;
    Ok(Json(user.into()))
}

/// Update current user
#[utoipa::path(put, path = "/user", tag = TAG, operation_id = "UpdateCurrentUser",
    security(("Token" = [])),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, description = "User", body = UserResponse),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
        (status = 422, description = "Validation failed, or username / email already taken", body = GenericErrorModel),
    ))]
async fn update_user(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<UpdateUserRequest>,
) -> AppResult<Json<UserResponse>> {
    let u = body.user;
    let changes = UserChanges {
        email: u.email,
        username: u.username,
        password: u.password,
        bio: u.bio,
        image: u.image,
    };
    let user = UserService::new(&state)
        .update(principal, changes)
        .await
        .map_err(taken_is_invalid)?;
    Ok(Json(user.into()))
}
