//! REST adapter: the RealWorld `/api/users`, `/api/users/login` and `/api/user` endpoints.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, header::USER_AGENT},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::service::{AuthenticatedUser, Credentials, Registration, UserChanges, UserService};
use crate::{
    auth::{Principal, sessions::Client},
    error::{AppError, AppResult, GenericErrorModel},
    rest::{Field, Json},
    state::AppState,
    validation::Violations,
};

const TAG: &str = "User and Authentication";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(current_user, update_user))
}

/// Missing fields read as empty so the service answers `can't be blank`; `null` is refused.
#[derive(Deserialize, ToSchema)]
#[schema(as = NewUser)]
struct NewUser {
    #[serde(default)]
    #[schema(value_type = String)]
    username: Field<String>,
    #[serde(default)]
    #[schema(value_type = String)]
    email: Field<String>,
    #[serde(default)]
    #[schema(value_type = String, format = Password, min_length = 8)]
    password: Field<String>,
}

#[derive(Deserialize, ToSchema)]
struct NewUserRequest {
    user: NewUser,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = LoginUser)]
struct LoginUser {
    #[serde(default)]
    #[schema(value_type = String)]
    email: Field<String>,
    #[serde(default)]
    #[schema(value_type = String, format = Password)]
    password: Field<String>,
    /// Required once the account has TOTP on: a current 6-digit code (each is accepted
    /// once) or an unused recovery code.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    otp: Field<String>,
}

#[derive(Deserialize, ToSchema)]
struct LoginUserRequest {
    user: LoginUser,
}

/// Absent fields are left as they are; only `bio` and `image` may be `null` (clearing them).
#[derive(Deserialize, ToSchema)]
#[schema(as = UpdateUser)]
struct UpdateUser {
    #[serde(default)]
    #[schema(value_type = String)]
    email: Field<String>,
    #[serde(default)]
    #[schema(value_type = String)]
    username: Field<String>,
    #[serde(default)]
    #[schema(value_type = String, format = Password, min_length = 8)]
    password: Field<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    bio: Field<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    image: Field<String>,
    /// With TOTP on, changing `email` or `password` needs a current 6-digit code (or an
    /// unused recovery code) here.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    otp: Field<String>,
}

#[derive(Deserialize, ToSchema)]
struct UpdateUserRequest {
    user: UpdateUser,
}

#[derive(Serialize, ToSchema)]
#[schema(as = User)]
struct User {
    email: String,
    /// An access token, good as long as its session: send it as `Authorization: Token <jwt>`.
    token: String,
    /// From registration, login, refresh and a password change only: exchange it at
    /// `POST /api/users/refresh` for a new pair. Works once.
    #[serde(rename = "refreshToken", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    refresh_token: Option<String>,
    username: String,
    #[schema(required = true)]
    bio: Option<String>,
    #[schema(required = true)]
    image: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct UserResponse {
    user: User,
}

/// The client as the session list shows it.
pub(crate) fn client(headers: &HeaderMap) -> Client {
    Client::new(headers.get(USER_AGENT).and_then(|v| v.to_str().ok()))
}

impl From<AuthenticatedUser> for UserResponse {
    fn from(u: AuthenticatedUser) -> Self {
        UserResponse {
            user: User {
                email: u.email,
                token: u.token,
                refresh_token: u.refresh_token,
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
        AppError::Conflict(reason) => {
            AppError::Validation(vec![(reason.subject(), "has already been taken".into())])
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
    headers: HeaderMap,
    Json(body): Json<NewUserRequest>,
) -> AppResult<(StatusCode, Json<UserResponse>)> {
    let u = body.user;
    let mut nulls = Violations::new();
    let registration = Registration {
        username: u
            .username
            .non_null("username", &mut nulls)
            .unwrap_or_default(),
        email: u.email.non_null("email", &mut nulls).unwrap_or_default(),
        password: u
            .password
            .non_null("password", &mut nulls)
            .unwrap_or_default(),
    };
    nulls.finish()?;
    let user = UserService::new(&state)
        .register(registration, client(&headers))
        .await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// Existing user login
#[utoipa::path(post, path = "/users/login", tag = TAG, operation_id = "Login",
    request_body = LoginUserRequest,
    responses(
        (status = 200, description = "User", body = UserResponse),
        (status = 401, description = "Wrong email or password; or, with TOTP on, `otp` missing (`{\"errors\":{\"otp\":[\"is required\"]}}`), wrong or already used", body = GenericErrorModel),
        (status = 422, description = "Validation failed", body = GenericErrorModel),
    ))]
async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<LoginUserRequest>,
) -> AppResult<Json<UserResponse>> {
    let u = body.user;
    let mut nulls = Violations::new();
    let credentials = Credentials {
        email: u.email.non_null("email", &mut nulls).unwrap_or_default(),
        password: u
            .password
            .non_null("password", &mut nulls)
            .unwrap_or_default(),
        otp: u.otp.nullable().flatten(),
    };
    nulls.finish()?;
    let user = UserService::new(&state)
        .login(credentials, client(&headers))
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
        (status = 401, description = "Missing or invalid token; or a new email or password without a recent login in this session (`REAUTHENTICATION_REQUIRED`: log in again) or, with TOTP on, without a current `otp` (`{\"errors\":{\"otp\":[\"is required\"]}}`)", body = GenericErrorModel),
        (status = 422, description = "Validation failed, or username / email already taken", body = GenericErrorModel),
    ))]
async fn update_user(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<UpdateUserRequest>,
) -> AppResult<Json<UserResponse>> {
    let u = body.user;
    let mut nulls = Violations::new();
    let changes = UserChanges {
        email: u.email.non_null("email", &mut nulls),
        username: u.username.non_null("username", &mut nulls),
        password: u.password.non_null("password", &mut nulls),
        bio: u.bio.nullable(),
        image: u.image.nullable(),
        otp: u.otp.nullable().flatten(),
    };
    nulls.finish()?;
    let user = UserService::new(&state)
        .update(principal, changes)
        .await
        .map_err(taken_is_invalid)?;
    Ok(Json(user.into()))
}
