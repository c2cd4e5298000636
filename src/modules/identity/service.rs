//! Sessions and second factors, protocol-free: called by the REST and gRPC adapters.

use std::sync::Arc;

use crate::{
    auth::{
        Principal,
        attempts::Attempts,
        otp,
        sessions::{self, Client, Rotation, SessionPolicy},
    },
    db::Store,
    error::{AppError, AppResult, Reason},
    modules::users::{
        self,
        service::{AuthenticatedUser, UserService},
    },
    state::AppState,
    validation::Violations,
};
use chrono::{DateTime, Utc};

/// A session as its owner sees it.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub id: String,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub current: bool,
}

#[derive(Clone)]
pub struct IdentityService {
    store: Store,
    users: UserService,
    attempts: Attempts,
    policy: Arc<SessionPolicy>,
    issuer: String,
}

impl IdentityService {
    pub fn new(state: &AppState) -> Self {
        Self {
            store: state.store.clone(),
            users: UserService::new(state),
            attempts: state.attempts.clone(),
            policy: state.authenticator.policy.clone(),
            issuer: state.settings.auth.jwt_issuer.clone(),
        }
    }

    /// Exchanges a refresh token for a new access token and refresh token.
    pub async fn refresh(
        &self,
        refresh_token: String,
        client: Client,
    ) -> AppResult<AuthenticatedUser> {
        Violations::new()
            .not_blank("refreshToken", &refresh_token)
            .finish()?;
        let session_id = sessions::session_of(refresh_token.trim())
            .ok_or(AppError::Unauthorized(Reason::RefreshTokenInvalid))?;
        // Per client address and per session: guessing at one session's tokens is slow.
        self.attempts.check(&format!("session:{session_id}"))?;
        let presented = refresh_token.trim().to_string();
        let minted = Arc::new(self.policy.successor(&presented, session_id));
        let (presented, client, policy) =
            (Arc::new(presented), Arc::new(client), self.policy.clone());
        let replacement = minted.clone();
        let outcome = self
            .store
            .write(move |txn| {
                let (presented, minted, client, policy) = (
                    presented.clone(),
                    replacement.clone(),
                    client.clone(),
                    policy.clone(),
                );
                Box::pin(async move {
                    match sessions::rotate(txn, &presented, &minted, &client, &policy).await? {
                        Rotation::Rotated {
                            user_id,
                            version,
                            ends,
                        } => {
                            let user = users::repo::find_by_id(txn, user_id)
                                .await?
                                .ok_or(AppError::Unauthorized(Reason::RefreshTokenInvalid))?;
                            Ok(Some((user, version, ends)))
                        }
                        Rotation::Unknown => {
                            Err(AppError::Unauthorized(Reason::RefreshTokenInvalid))
                        }
                        // Committed: the session ends even though this request fails.
                        Rotation::Reused => Ok(None),
                    }
                })
            })
            .await?;
        let Some((user, version, ends)) = outcome else {
            tracing::warn!(
                session = %session_id,
                "refresh token presented again after rotation; session ended"
            );
            return Err(AppError::Unauthorized(Reason::RefreshTokenReused));
        };
        let session = Principal {
            user_id: user.id,
            session_id,
            session_version: version,
            session_ends: ends,
        };
        let mut answer = self.users.authenticated(user, session)?;
        answer.refresh_token = Some(minted.token.clone());
        Ok(answer)
    }

    /// Ends the caller's current session.
    pub async fn logout(&self, principal: Principal) -> AppResult<()> {
        self.end_session(principal, principal.session_id.to_string())
            .await
    }

    /// Ends one of the caller's sessions.
    pub async fn revoke_session(&self, principal: Principal, id: String) -> AppResult<()> {
        self.end_session(principal, id).await
    }

    async fn end_session(&self, principal: Principal, id: String) -> AppResult<()> {
        let (id, idle) = (Arc::new(id), self.policy.idle_timeout);
        let ended = self
            .store
            .write(move |txn| {
                let id = id.clone();
                Box::pin(
                    async move { Ok(sessions::revoke(txn, principal.user_id, &id, idle).await?) },
                )
            })
            .await?;
        if ended {
            Ok(())
        } else {
            Err(AppError::NotFound(Reason::SessionNotFound))
        }
    }

    pub async fn sessions(&self, principal: Principal) -> AppResult<Vec<SessionView>> {
        let idle = self.policy.idle_timeout;
        let rows = self
            .store
            .query(move |db| {
                Box::pin(
                    async move { Ok(sessions::standing_of(db, principal.user_id, idle).await?) },
                )
            })
            .await?;
        let current = principal.session_id.to_string();
        Ok(rows
            .into_iter()
            .map(|s| SessionView {
                current: s.id == current,
                id: s.id,
                user_agent: s.user_agent,
                ip: s.ip,
                created_at: s.created_at,
                last_used_at: s.last_used_at,
                expires_at: s.expires_at,
            })
            .collect())
    }

    /// A second-factor change needs a recent login in this session, as credential
    /// changes do: a stolen access token alone must not switch TOTP on (locking the owner
    /// out) or off.
    async fn require_recent_login(&self, principal: Principal) -> AppResult<()> {
        let session_id = principal.session_id;
        let at = self
            .store
            .query(move |db| {
                Box::pin(async move { Ok(sessions::authenticated_at(db, session_id).await?) })
            })
            .await?;
        if self.policy.is_recent(at) {
            Ok(())
        } else {
            Err(AppError::Unauthorized(Reason::ReauthenticationRequired))
        }
    }

    /// Starts a TOTP enrollment; it takes effect once confirmed with a code.
    pub async fn enroll_totp(&self, principal: Principal) -> AppResult<otp::Enrollment> {
        self.require_recent_login(principal).await?;
        let issuer = self.issuer.clone();
        let user_id = principal.user_id;
        let email = self
            .store
            .query(move |db| {
                Box::pin(async move {
                    Ok(users::repo::find_by_id(db, user_id)
                        .await?
                        .ok_or(AppError::Unauthorized(Reason::TokenInvalid))?
                        .email)
                })
            })
            .await?;
        let enrollment = otp::enrollment(&issuer, &email)?;
        let secret = Arc::new(enrollment.secret.clone());
        self.store
            .write(move |txn| {
                let secret = secret.clone();
                Box::pin(async move {
                    if otp::lock_enabled(txn, user_id).await?.is_some() {
                        return Err(AppError::Precondition(Reason::TotpAlreadyEnabled));
                    }
                    otp::begin(txn, user_id, &secret).await?;
                    Ok(())
                })
            })
            .await?;
        Ok(enrollment)
    }

    /// Confirms the pending enrollment with a current code; returns the recovery codes.
    pub async fn confirm_totp(&self, principal: Principal, code: String) -> AppResult<Vec<String>> {
        Violations::new().not_blank("code", &code).finish()?;
        self.attempts
            .check(&format!("user:{}", principal.user_id))?;
        self.require_recent_login(principal).await?;
        let codes = Arc::new(otp::recovery_codes()?);
        let (kept, code) = (codes.clone(), Arc::new(code));
        self.store
            .write(move |txn| {
                let (codes, code) = (kept.clone(), code.clone());
                Box::pin(async move {
                    let row = otp::lock(txn, principal.user_id)
                        .await?
                        .filter(|t| t.confirmed_at.is_none())
                        .ok_or(AppError::Precondition(Reason::TotpNotPending))?;
                    if !otp::spend(txn, &row, &code, false).await? {
                        return Err(AppError::Invalid(Reason::OtpInvalid, "is invalid".into()));
                    }
                    otp::confirm(txn, principal.user_id, &codes).await?;
                    Ok(())
                })
            })
            .await?;
        Ok(codes.to_vec())
    }

    /// Turns TOTP off, given a current code or an unused recovery code.
    pub async fn disable_totp(&self, principal: Principal, code: String) -> AppResult<()> {
        Violations::new().not_blank("code", &code).finish()?;
        self.attempts
            .check(&format!("user:{}", principal.user_id))?;
        self.require_recent_login(principal).await?;
        let code = Arc::new(code);
        self.store
            .write(move |txn| {
                let code = code.clone();
                Box::pin(async move {
                    let row = otp::lock_enabled(txn, principal.user_id)
                        .await?
                        .ok_or(AppError::Precondition(Reason::TotpNotEnabled))?;
                    if !otp::spend(txn, &row, &code, true).await? {
                        return Err(AppError::Invalid(Reason::OtpInvalid, "is invalid".into()));
                    }
                    otp::remove(txn, principal.user_id).await?;
                    Ok(())
                })
            })
            .await?;
        Ok(())
    }
}
