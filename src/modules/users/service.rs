//! User registration, login and self-service updates: protocol-free, called by both the
//! REST and the gRPC adapter.

use std::sync::Arc;

use sea_orm::{ConnectionTrait, IntoActiveModel, Set};

use super::repo;
use crate::{
    auth::{
        Principal, TokenKeys,
        attempts::Attempts,
        otp,
        password::Hasher,
        sessions::{self, Client, Minted, SessionPolicy},
    },
    db::Store,
    entities::users::{Column, Model},
    error::{AppError, AppResult, Reason},
    state::AppState,
    validation::{Violations, empty_as_none},
    values::{Email, Password, Username},
};

pub const MAX_BIO_CHARS: usize = 1_000;
pub const MAX_IMAGE_CHARS: usize = 2_048;

/// A user as shown to itself, with a fresh access token (and, when a session was opened,
/// refreshed or restarted, its new refresh token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    pub email: String,
    pub token: String,
    pub refresh_token: Option<String>,
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
    /// A TOTP code or a recovery code, for accounts with a second factor.
    pub otp: Option<String>,
}

/// `None` leaves a field as it is. For bio and image, `Some(None)` clears it.
#[derive(Default)]
pub struct UserChanges {
    pub email: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub bio: Option<Option<String>>,
    pub image: Option<Option<String>>,
    /// With TOTP on, a current code (or an unused recovery code): changing the email or
    /// the password needs one.
    pub otp: Option<String>,
}

#[derive(Clone)]
pub struct UserService {
    store: Store,
    tokens: Arc<TokenKeys>,
    hasher: Hasher,
    attempts: Attempts,
    policy: Arc<SessionPolicy>,
}

impl UserService {
    pub fn new(state: &AppState) -> Self {
        Self {
            store: state.store.clone(),
            tokens: state.tokens.clone(),
            hasher: state.hasher.clone(),
            attempts: state.attempts.clone(),
            policy: state.authenticator.policy.clone(),
        }
    }

    /// Creates the user and opens its first session.
    pub async fn register(
        &self,
        input: Registration,
        client: Client,
    ) -> AppResult<AuthenticatedUser> {
        let mut violations = Violations::new();
        let username = violations.take("username", Username::parse(&input.username));
        let email = violations.take("email", Email::parse(&input.email));
        let password = violations.take("password", Password::parse(input.password));
        let ((username, email), password) =
            violations.finish_with(username.zip(email).zip(password))?;
        self.attempts
            .check(&format!("register:{}", email.as_str().to_lowercase()))?;
        // Checked before the costly hash so a taken name fails fast; the unique indexes
        // still decide races at insert.
        let (u, e) = (username.clone(), email.clone());
        self.store
            .read(move |txn| {
                let (username, email) = (u.clone(), e.clone());
                Box::pin(async move {
                    ensure_username_free(txn, username.as_str(), None).await?;
                    ensure_free(txn, Column::Email, email.as_str(), None, Reason::EmailTaken).await
                })
            })
            .await?;

        let row = Arc::new(repo::NewRow {
            username: username.into_inner(),
            email: email.into_inner(),
            password_hash: self.hasher.hash(password.expose()).await?,
        });
        let minted = Arc::new(Minted::new_session()?);
        let (client, lifetime) = (Arc::new(client), self.policy.lifetime);
        let opened = minted.clone();
        let (user, ends) = self
            .store
            .write(move |txn| {
                let (row, minted, client) = (row.clone(), opened.clone(), client.clone());
                Box::pin(async move {
                    let user = repo::insert(txn, &row).await?;
                    let ends = sessions::open(txn, user.id, &client, lifetime, &minted).await?;
                    Ok((user, ends))
                })
            })
            .await?;
        self.with_new_session(user, &minted, ends)
    }

    /// Checks the credentials (and the second factor, when the account has one) and
    /// opens a session.
    pub async fn login(&self, input: Credentials, client: Client) -> AppResult<AuthenticatedUser> {
        let mut violations = Violations::new();
        let email = violations.take("email", Email::presented(&input.email));
        let password = violations.take("password", Password::presented(input.password));
        let (email, password) = violations.finish_with(email.zip(password))?;
        let email = email.into_inner();
        let folded = email.to_lowercase();
        let user = self
            .store
            .query(move |db| Box::pin(async move { Ok(repo::find_by_email(db, &email).await?) }))
            .await?;
        // Counted against the account the database matched, so every spelling of its
        // email it treats as equal is one account here too.
        let account = match &user {
            Some(user) => format!("user:{}", user.id),
            None => format!("email:{folded}"),
        };
        self.attempts.check(&account)?;
        // Verified even when no user matched (against a dummy hash), so response time does
        // not reveal which emails are registered.
        let matched = self
            .hasher
            .verify(
                password.expose(),
                user.as_ref().map(|u| u.password_hash.clone()),
            )
            .await?;
        let user = match user {
            Some(user) if matched => user,
            _ => return Err(AppError::Unauthorized(Reason::InvalidCredentials)),
        };
        let minted = Arc::new(Minted::new_session()?);
        let (client, lifetime) = (Arc::new(client), self.policy.lifetime);
        let (opened, user_id) = (minted.clone(), user.id);
        let otp = Arc::new(input.otp.filter(|code| !code.trim().is_empty()));
        let ends = self
            .store
            .write(move |txn| {
                let (minted, client, otp) = (opened.clone(), client.clone(), otp.clone());
                Box::pin(async move {
                    // Only after the password matched, so the answer does not tell
                    // strangers which accounts have a second factor.
                    if let Some(row) = otp::lock_enabled(txn, user_id).await? {
                        let code = otp
                            .as_deref()
                            .ok_or(AppError::Unauthorized(Reason::OtpRequired))?;
                        if !otp::spend(txn, &row, code, true).await? {
                            return Err(AppError::Unauthorized(Reason::OtpInvalid));
                        }
                    }
                    Ok(sessions::open(txn, user_id, &client, lifetime, &minted).await?)
                })
            })
            .await?;
        self.with_new_session(user, &minted, ends)
    }

    pub async fn current(&self, principal: Principal) -> AppResult<AuthenticatedUser> {
        let user = self
            .store
            .query(move |db| Box::pin(async move { load(db, principal).await }))
            .await?;
        self.authenticated(user, principal)
    }

    /// Changes the caller's profile. Changing the email or the password is a credential
    /// change: it needs a recent login in this session (`auth.reauth_window`) and, with
    /// TOTP on, a current code, so a stolen access token alone cannot take the account
    /// over. A new password ends every other session; this one goes on, its token with it.
    pub async fn update(
        &self,
        principal: Principal,
        changes: UserChanges,
    ) -> AppResult<AuthenticatedUser> {
        let bio = changes.bio.as_ref().and_then(|b| b.as_deref());
        let image = changes.image.as_ref().and_then(|i| i.as_deref());
        let mut violations = Violations::new();
        let username =
            violations.take_if_set("username", changes.username.as_deref(), Username::parse);
        let email = violations.take_if_set("email", changes.email.as_deref(), Email::parse);
        let mut violations = violations
            .text("bio", bio)
            .max_chars("bio", bio, MAX_BIO_CHARS)
            .name("image", image)
            .max_chars("image", image, MAX_IMAGE_CHARS)
            .http_url("image", image);
        let password = violations.take_if_set("password", changes.password.as_deref(), |raw| {
            Password::parse(raw.to_string())
        });
        let ((username, email), password) =
            violations.finish_with(username.zip(email).zip(password))?;

        // Refused before the costly hash when the session could not change it anyway; the
        // transaction below decides.
        if password.is_some() {
            let session_id = principal.session_id;
            let at = self
                .store
                .query(move |db| {
                    Box::pin(async move { Ok(sessions::authenticated_at(db, session_id).await?) })
                })
                .await?;
            if !self.policy.is_recent(at) {
                return Err(AppError::Unauthorized(Reason::ReauthenticationRequired));
            }
        }
        // Hashed before the transaction: a unit may run twice and must not hold locks
        // through seconds of hashing.
        let password_hash = match password {
            Some(new_password) => Some(self.hasher.hash(new_password.expose()).await?),
            None => None,
        };
        let minted = match password_hash {
            Some(_) => Some(Arc::new(Minted::for_session(principal.session_id)?)),
            None => None,
        };
        let restarted = minted.clone();
        let changes = Arc::new(UserChanges {
            username: username.map(Username::into_inner),
            email: email.map(Email::into_inner),
            password: None,
            otp: changes.otp.filter(|code| !code.trim().is_empty()),
            ..changes
        });
        let password_hash = Arc::new(password_hash);
        let policy = self.policy.clone();
        let (updated, ends) = self
            .store
            .write(move |txn| {
                let (changes, password_hash) = (changes.clone(), password_hash.clone());
                let (restarted, policy) = (restarted.clone(), policy.clone());
                Box::pin(async move {
                    // Locked: concurrent updates of one user apply one after the other.
                    let user = repo::lock(txn, principal.user_id)
                        .await?
                        .ok_or(AppError::Unauthorized(Reason::TokenInvalid))?;
                    let mut row = user.clone().into_active_model();
                    let new_email = changes
                        .email
                        .as_deref()
                        .filter(|email| *email != user.email);
                    if new_email.is_some() || password_hash.is_some() {
                        step_up(txn, &policy, principal, changes.otp.as_deref()).await?;
                    }
                    if let Some(username) = changes.username.as_deref()
                        && username != user.username
                    {
                        ensure_username_free(txn, username, Some(user.id)).await?;
                        row.username = Set(username.to_string());
                    }
                    if let Some(email) = new_email {
                        ensure_free(txn, Column::Email, email, Some(user.id), Reason::EmailTaken)
                            .await?;
                        row.email = Set(email.to_string());
                    }
                    if let Some(password_hash) = password_hash.as_ref() {
                        row.password_hash = Set(password_hash.clone());
                    }
                    if let Some(bio) = &changes.bio {
                        row.bio = Set(empty_as_none(bio.clone()));
                    }
                    if let Some(image) = &changes.image {
                        row.image = Set(empty_as_none(image.clone()));
                    }
                    let saved = repo::save(txn, &user, row).await?;
                    let ends = match restarted.as_deref() {
                        Some(minted) => {
                            sessions::end_other_sessions(txn, user.id, principal.session_id, minted)
                                .await?
                        }
                        None => principal.session_ends,
                    };
                    Ok((saved, ends))
                })
            })
            .await?;
        let mut answer = self.authenticated(
            updated,
            Principal {
                session_ends: ends,
                ..principal
            },
        )?;
        answer.refresh_token = minted.map(|m| m.token.clone());
        Ok(answer)
    }

    fn with_new_session(
        &self,
        user: Model,
        minted: &Minted,
        ends: chrono::DateTime<chrono::Utc>,
    ) -> AppResult<AuthenticatedUser> {
        let session = Principal {
            user_id: user.id,
            session_id: minted.session_id,
            session_version: 0,
            session_ends: ends,
        };
        let mut answer = self.authenticated(user, session)?;
        answer.refresh_token = Some(minted.token.clone());
        Ok(answer)
    }

    /// The user with an access token for `session` (its id, version and end).
    pub(crate) fn authenticated(
        &self,
        user: Model,
        session: Principal,
    ) -> AppResult<AuthenticatedUser> {
        Ok(AuthenticatedUser {
            token: self.tokens.issue(
                user.id,
                session.session_id,
                session.session_version,
                session.session_ends,
            )?,
            refresh_token: None,
            email: user.email,
            username: user.username,
            bio: user.bio,
            image: user.image,
        })
    }
}

/// The proof a credential change needs, checked in the changing transaction: a login in
/// this session within `auth.reauth_window` and, with TOTP on, a current code (spent).
pub(crate) async fn step_up(
    txn: &impl ConnectionTrait,
    policy: &SessionPolicy,
    principal: Principal,
    otp_code: Option<&str>,
) -> AppResult<()> {
    let at = sessions::authenticated_at(txn, principal.session_id).await?;
    if !policy.is_recent(at) {
        return Err(AppError::Unauthorized(Reason::ReauthenticationRequired));
    }
    if let Some(row) = otp::lock_enabled(txn, principal.user_id).await? {
        let code = otp_code.ok_or(AppError::Unauthorized(Reason::OtpRequired))?;
        if !otp::spend(txn, &row, code, true).await? {
            return Err(AppError::Unauthorized(Reason::OtpInvalid));
        }
    }
    Ok(())
}

/// The principal's user; a valid token for a user that no longer exists is refused.
pub(crate) async fn load(db: &impl ConnectionTrait, principal: Principal) -> AppResult<Model> {
    repo::find_by_id(db, principal.user_id)
        .await?
        .ok_or(AppError::Unauthorized(Reason::TokenInvalid))
}

async fn ensure_username_free(
    db: &impl ConnectionTrait,
    username: &str,
    except: Option<i64>,
) -> AppResult<()> {
    if repo::is_username_taken(db, username, except).await? {
        return Err(AppError::Conflict(Reason::UsernameTaken));
    }
    Ok(())
}

async fn ensure_free(
    db: &impl ConnectionTrait,
    column: Column,
    value: &str,
    except: Option<i64>,
    taken: Reason,
) -> AppResult<()> {
    if repo::is_taken(db, column, value, except).await? {
        return Err(AppError::Conflict(taken));
    }
    Ok(())
}
