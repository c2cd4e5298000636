//! REST adapter: `/api/users/refresh`, `/api/users/logout`, `/api/user/sessions` and
//! `/api/user/totp`.

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::service::{IdentityService, SessionView};
use crate::{
    auth::Principal,
    error::{AppResult, GenericErrorModel},
    modules::users::rest::{UserResponse, client},
    rest::{Field, Json, timestamp},
    state::AppState,
    validation::Violations,
};

const TAG: &str = "User and Authentication";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(list_sessions))
        .routes(routes!(revoke_session))
        .routes(routes!(enroll_totp, disable_totp))
        .routes(routes!(confirm_totp))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RefreshRequest {
    #[serde(default)]
    #[schema(value_type = String)]
    refresh_token: Field<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Session {
    id: String,
    #[schema(required = true)]
    user_agent: Option<String>,
    #[schema(required = true)]
    ip: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    last_used_at: String,
    #[schema(format = DateTime)]
    expires_at: String,
    /// Whether the token of this request belongs to this session.
    current: bool,
}

impl From<SessionView> for Session {
    fn from(s: SessionView) -> Self {
        Session {
            id: s.id,
            user_agent: s.user_agent,
            ip: s.ip,
            created_at: timestamp(&s.created_at),
            last_used_at: timestamp(&s.last_used_at),
            expires_at: timestamp(&s.expires_at),
            current: s.current,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct SessionsResponse {
    sessions: Vec<Session>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct TotpEnrollment {
    /// Base32, for typing into an authenticator app.
    secret: String,
    /// `otpauth://totp/...`, for a QR code.
    otpauth_uri: String,
}

#[derive(Deserialize, ToSchema)]
struct TotpCode {
    /// A current 6-digit code (to disable TOTP, an unused recovery code also works).
    #[serde(default)]
    #[schema(value_type = String)]
    code: Field<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RecoveryCodes {
    /// Single-use codes that stand in for a TOTP code; shown only this once.
    recovery_codes: Vec<String>,
}

fn required(field: Field<String>, name: &'static str) -> AppResult<String> {
    let mut nulls = Violations::new();
    let value = field.non_null(name, &mut nulls).unwrap_or_default();
    nulls.finish()?;
    Ok(value)
}

/// Exchange a refresh token for a new token pair
///
/// The refresh token works once. Presenting one that was already exchanged ends its
/// session: the newest refresh token of that session stops working too.
#[utoipa::path(post, path = "/users/refresh", tag = TAG, operation_id = "RefreshToken",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "User with a new token and refreshToken", body = UserResponse),
        (status = 401, description = "Unknown, ended or already used refresh token", body = GenericErrorModel),
        (status = 422, description = "Validation failed", body = GenericErrorModel),
    ))]
async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<RefreshRequest>,
) -> AppResult<Json<UserResponse>> {
    let token = required(body.refresh_token, "refreshToken")?;
    let user = IdentityService::new(&state)
        .refresh(token, client(&headers))
        .await?;
    Ok(Json(user.into()))
}

/// Log out: end this token's session
#[utoipa::path(post, path = "/users/logout", tag = TAG, operation_id = "Logout",
    security(("Token" = [])),
    responses(
        (status = 204, description = "Session ended"),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
    ))]
async fn logout(State(state): State<AppState>, principal: Principal) -> AppResult<StatusCode> {
    IdentityService::new(&state).logout(principal).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List the current user's sessions
#[utoipa::path(get, path = "/user/sessions", tag = TAG, operation_id = "ListSessions",
    security(("Token" = [])),
    responses(
        (status = 200, description = "Standing sessions, most recently used first", body = SessionsResponse),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
    ))]
async fn list_sessions(
    State(state): State<AppState>,
    principal: Principal,
) -> AppResult<Json<SessionsResponse>> {
    let sessions = IdentityService::new(&state).sessions(principal).await?;
    Ok(Json(SessionsResponse {
        sessions: sessions.into_iter().map(Session::from).collect(),
    }))
}

/// End one of the current user's sessions
#[utoipa::path(delete, path = "/user/sessions/{id}", tag = TAG, operation_id = "RevokeSession",
    security(("Token" = [])),
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 204, description = "Session ended"),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
        (status = 404, description = "No such standing session", body = GenericErrorModel),
    ))]
async fn revoke_session(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> AppResult<StatusCode> {
    IdentityService::new(&state)
        .revoke_session(principal, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start a TOTP enrollment
///
/// Returns a new secret; it takes effect once confirmed at `/user/totp/confirm`.
#[utoipa::path(post, path = "/user/totp", tag = TAG, operation_id = "EnrollTotp",
    security(("Token" = [])),
    responses(
        (status = 200, description = "The secret and its otpauth URI", body = TotpEnrollment),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
        (status = 409, description = "TOTP is already enabled", body = GenericErrorModel),
    ))]
async fn enroll_totp(
    State(state): State<AppState>,
    principal: Principal,
) -> AppResult<Json<TotpEnrollment>> {
    let enrollment = IdentityService::new(&state).enroll_totp(principal).await?;
    Ok(Json(TotpEnrollment {
        secret: enrollment.secret,
        otpauth_uri: enrollment.otpauth_uri,
    }))
}

/// Confirm the TOTP enrollment
///
/// With a current code. From then on login needs `otp`.
#[utoipa::path(post, path = "/user/totp/confirm", tag = TAG, operation_id = "ConfirmTotp",
    security(("Token" = [])),
    request_body = TotpCode,
    responses(
        (status = 200, description = "Enabled; the recovery codes", body = RecoveryCodes),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
        (status = 409, description = "No enrollment awaits confirmation", body = GenericErrorModel),
        (status = 422, description = "Wrong code", body = GenericErrorModel),
    ))]
async fn confirm_totp(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<TotpCode>,
) -> AppResult<Json<RecoveryCodes>> {
    let code = required(body.code, "code")?;
    let recovery_codes = IdentityService::new(&state)
        .confirm_totp(principal, code)
        .await?;
    Ok(Json(RecoveryCodes { recovery_codes }))
}

/// Turn TOTP off
///
/// With a current code or an unused recovery code.
#[utoipa::path(delete, path = "/user/totp", tag = TAG, operation_id = "DisableTotp",
    security(("Token" = [])),
    request_body = TotpCode,
    responses(
        (status = 204, description = "Disabled"),
        (status = 401, description = "Missing or invalid token", body = GenericErrorModel),
        (status = 409, description = "TOTP is not enabled", body = GenericErrorModel),
        (status = 422, description = "Wrong code", body = GenericErrorModel),
    ))]
async fn disable_totp(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<TotpCode>,
) -> AppResult<StatusCode> {
    let code = required(body.code, "code")?;
    IdentityService::new(&state)
        .disable_totp(principal, code)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
