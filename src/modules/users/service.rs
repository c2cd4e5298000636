//! User registration, login and self-service updates: protocol-free, called by both the
//! REST and the gRPC adapter.

use std::sync::Arc;

use sea_orm::{DatabaseConnection, IntoActiveModel, Set};

use super::repo;
use crate::{
    auth::{Principal, TokenKeys, password},
    entities::users::{Column, Model},
    error::{AppError, AppResult},
    state::AppState,
    validation::{Violations, empty_as_none, looks_like_email},
};

pub const MAX_USERNAME_CHARS: usize = 64;
pub const MAX_EMAIL_CHARS: usize = 254;
/// Bounds the hashing work a request can ask for.
pub const MAX_PASSWORD_CHARS: usize = 256;
pub const MAX_BIO_CHARS: usize = 1_000;
pub const MAX_IMAGE_CHARS: usize = 2_048;

/// A user as shown to itself, with a fresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    pub email: String,
    pub token: String,
    pub username: String,
    pub bio: Option<String>,
    pub image: Option<String>,
}

pub struct Registration {
    pub username: String,
    pub email: String,
    pub password: String,
}

pub struct Credentials {
    pub email: String,
    pub password: String,
}

/// `None` leaves a field as it is. For bio and image, `Some(None)` clears it.
#[derive(Default)]
pub struct UserChanges {
    pub email: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub bio: Option<Option<String>>,
    pub image: Option<Option<String>>,
}

#[derive(Clone)]
pub struct UserService {
    db: DatabaseConnection,
    tokens: Arc<TokenKeys>,
}

impl UserService {
    pub fn new(state: &AppState) -> Self {
        Self {
            db: state.db.clone(),
            tokens: state.tokens.clone(),
        }
    }

    pub async fn register(&self, input: Registration) -> AppResult<AuthenticatedUser> {
        Violations::new()
            .not_blank("username", &input.username)
            .max_chars("username", Some(&input.username), MAX_USERNAME_CHARS)
            .not_blank("email", &input.email)
            .max_chars("email", Some(&input.email), MAX_EMAIL_CHARS)
            .check(
                input.email.trim().is_empty() || looks_like_email(&input.email),
                "email",
                "is invalid",
            )
            .not_blank("password", &input.password)
            .max_chars("password", Some(&input.password), MAX_PASSWORD_CHARS)
            .finish()?;
        let username = input.username.trim().to_string();
        let email = input.email.trim().to_string();
        self.ensure_free(Column::Username, &username, None, "username")
            .await?;
        self.ensure_free(Column::Email, &email, None, "email")
            .await?;

        let password_hash = password::hash(input.password).await?;
        let user = repo::insert(
            &self.db,
            repo::NewRow {
                username,
                email,
                password_hash,
            },
        )
        .await?;
        self.authenticated(user)
    }

    pub async fn login(&self, input: Credentials) -> AppResult<AuthenticatedUser> {
        Violations::new()
            .not_blank("email", &input.email)
            .not_blank("password", &input.password)
            .finish()?;
        let user = repo::find_by_email(&self.db, input.email.trim()).await?;
        // Verified even when no user matched (against a dummy hash), so response time does
        // not reveal which emails are registered.
        let matched = password::verify(
            input.password,
            user.as_ref().map(|u| u.password_hash.clone()),
        )
        .await?;
        match user {
            Some(user) if matched => self.authenticated(user),
            _ => Err(AppError::Unauthorized("credentials", "invalid")),
        }
    }

    pub async fn current(&self, principal: Principal) -> AppResult<AuthenticatedUser> {
        let user = self.load(principal).await?;
        self.authenticated(user)
    }

    pub async fn update(
        &self,
        principal: Principal,
        changes: UserChanges,
    ) -> AppResult<AuthenticatedUser> {
        let bio = changes.bio.as_ref().and_then(|b| b.as_deref());
        let image = changes.image.as_ref().and_then(|i| i.as_deref());
        Violations::new()
            .not_blank_if_set("username", changes.username.as_deref())
            .max_chars("username", changes.username.as_deref(), MAX_USERNAME_CHARS)
            .not_blank_if_set("email", changes.email.as_deref())
            .max_chars("email", changes.email.as_deref(), MAX_EMAIL_CHARS)
            .max_chars("bio", bio, MAX_BIO_CHARS)
            .max_chars("image", image, MAX_IMAGE_CHARS)
            .check(
                changes
                    .email
                    .as_deref()
                    .is_none_or(|e| e.trim().is_empty() || looks_like_email(e)),
                "email",
                "is invalid",
            )
            .not_blank_if_set("password", changes.password.as_deref())
            .max_chars("password", changes.password.as_deref(), MAX_PASSWORD_CHARS)
            .finish()?;

        let user = self.load(principal).await?;
        let mut row = user.clone().into_active_model();
        if let Some(username) = changes.username.map(|u| u.trim().to_string())
            && username != user.username
        {
            self.ensure_free(Column::Username, &username, Some(user.id), "username")
                .await?;
            row.username = Set(username);
        }
        if let Some(email) = changes.email.map(|e| e.trim().to_string())
            && email != user.email
        {
            self.ensure_free(Column::Email, &email, Some(user.id), "email")
                .await?;
            row.email = Set(email);
        }
        if let Some(new_password) = changes.password {
            row.password_hash = Set(password::hash(new_password).await?);
        }
        if let Some(bio) = changes.bio {
            row.bio = Set(empty_as_none(bio));
        }
        if let Some(image) = changes.image {
            row.image = Set(empty_as_none(image));
        }
        let updated = repo::save(&self.db, row).await?;
        self.authenticated(updated)
    }

    /// The principal's user; a valid token for a user that no longer exists is refused.
    async fn load(&self, principal: Principal) -> AppResult<Model> {
        repo::find_by_id(&self.db, principal.user_id)
            .await?
            .ok_or(AppError::Unauthorized("token", "invalid"))
    }

    async fn ensure_free(
        &self,
        column: Column,
        value: &str,
        except: Option<i64>,
        field: &'static str,
    ) -> AppResult<()> {
        if repo::is_taken(&self.db, column, value, except).await? {
            return Err(AppError::Conflict(field));
        }
        Ok(())
    }

    fn authenticated(&self, user: Model) -> AppResult<AuthenticatedUser> {
        Ok(AuthenticatedUser {
            token: self.tokens.issue(user.id)?,
            email: user.email,
            username: user.username,
            bio: user.bio,
            image: user.image,
        })
    }
}
