//! Server-side sessions. Login and registration open one; it lives until its absolute
//! end (`auth.session_ttl` after it opened) unless it sits unused for
//! `auth.session_idle_timeout`, and the auth layer checks both on every request
//! (`standing`), so an access token can live as long as its session: revocation never
//! needed short tokens. Logout, revocation, a password change (for the *other* sessions)
//! and refresh-token reuse end a session at once, on every replica.
//!
//! Its refresh token (random, stored as a SHA-256 digest) is exchanged for a new one on
//! every refresh, and the old one is remembered as rotated. Presenting it again within
//! `auth.refresh_reuse_grace` (two tabs refreshing at once, a retry after a lost answer)
//! answers the same successor again: the successor is derived from the presented token
//! with a server key, so nothing secret is stored to hand it out twice. Later, a rotated
//! token means it was copied, so the whole session ends — the thief's copy and the
//! owner's newest token alike (RFC 9700 §4.14.2).

mod rotation;
mod standing;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect,
    Set,
    sea_query::{Expr, ExprTrait},
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    cache::Topic,
    config::AuthSettings,
    db::{Store, changed},
    entities::{
        refresh_tokens::{self, Entity as RefreshTokens},
        sessions::{self, Entity as Sessions},
    },
    error::{AppError, AppResult},
};

pub use rotation::{Rotation, rotate};
pub use standing::{Refused, SessionCache, standing, standing_of};

/// Longest user agent kept with a session.
const MAX_USER_AGENT_CHARS: usize = 256;

/// Who opened or refreshed a session, for the owner's session list.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

impl Client {
    /// The caller's user agent (from the request) and address (from the request scope).
    pub fn new(user_agent: Option<&str>) -> Self {
        Client {
            user_agent: user_agent
                .filter(|ua| !ua.trim().is_empty())
                .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect()),
            ip: crate::context::client_ip().map(|ip| ip.to_string()),
        }
    }
}

/// A refresh token minted for a session, before it is stored: made outside the write
/// unit, which may run more than once.
pub struct Minted {
    pub session_id: Uuid,
    pub token: String,
    digest: String,
}

impl Minted {
    pub fn for_session(session_id: Uuid) -> AppResult<Self> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| AppError::internal(anyhow::anyhow!("{e}")))?;
        let token = format!("{}.{}", session_id.simple(), URL_SAFE_NO_PAD.encode(secret));
        Ok(Minted {
            session_id,
            digest: digest(&token),
            token,
        })
    }

    pub fn new_session() -> AppResult<Self> {
        Self::for_session(Uuid::new_v4())
    }

    fn from_secret(session_id: Uuid, secret: &[u8]) -> Self {
        let token = format!("{}.{}", session_id.simple(), URL_SAFE_NO_PAD.encode(secret));
        Minted {
            session_id,
            digest: digest(&token),
            token,
        }
    }
}

/// How long sessions live and how their edges behave, from `auth.*`.
pub struct SessionPolicy {
    /// From opening to the absolute end; refresh does not extend it.
    pub lifetime: chrono::Duration,
    /// Unused this long, a session ends.
    pub idle_timeout: chrono::Duration,
    /// Credential changes need an authentication at most this old.
    pub reauth_window: chrono::Duration,
    /// A rotated refresh token presented again within this gets its successor again.
    pub refresh_grace: chrono::Duration,
    /// Keys the derivation of a refresh token's successor.
    successor_key: [u8; 32],
}

fn chrono_duration(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl SessionPolicy {
    pub fn new(settings: &AuthSettings) -> Self {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = Hmac::<Sha256>::new_from_slice(settings.jwt_secret.expose().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(b"conduit refresh successor v1");
        Self {
            lifetime: chrono_duration(settings.session_ttl),
            idle_timeout: chrono_duration(settings.session_idle_timeout),
            reauth_window: chrono_duration(settings.reauth_window),
            refresh_grace: chrono_duration(settings.refresh_reuse_grace),
            successor_key: mac.finalize().into_bytes().into(),
        }
    }

    /// The refresh token that replaces `presented`: the same every time it is asked for,
    /// and unguessable without the server's key.
    pub fn successor(&self, presented: &str, session_id: Uuid) -> Minted {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.successor_key).expect("HMAC takes any key length");
        mac.update(presented.as_bytes());
        Minted::from_secret(session_id, &mac.finalize().into_bytes())
    }

    /// How stale a session's `last_used_at` may get before a request writes it again:
    /// often enough that the idle timeout is judged to within a quarter of itself, rarely
    /// enough that authenticated traffic does not write on every request.
    fn touch_every(&self) -> chrono::Duration {
        (self.idle_timeout / 4).min(chrono::Duration::hours(1))
    }

    /// Whether an authentication at `at` is recent enough for a credential change.
    pub fn is_recent(&self, at: Option<DateTime<Utc>>) -> bool {
        at.is_some_and(|at| Utc::now() - at <= self.reauth_window)
    }
}

pub fn digest(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The session a refresh token claims to belong to (not yet checked).
pub fn session_of(refresh_token: &str) -> Option<Uuid> {
    let (session, secret) = refresh_token.split_once('.')?;
    (secret.len() == 43)
        .then(|| Uuid::try_parse(session).ok())
        .flatten()
}

/// Opens a session for `user_id`, who has just authenticated, with `minted` as its first
/// refresh token; returns when it ends at the latest.
pub async fn open(
    db: &impl ConnectionTrait,
    user_id: i64,
    client: &Client,
    lifetime: chrono::Duration,
    minted: &Minted,
) -> Result<DateTime<Utc>, DbErr> {
    let now = Utc::now();
    let ends = now + lifetime;
    sessions::ActiveModel {
        id: Set(minted.session_id.to_string()),
        user_id: Set(user_id),
        version: Set(0),
        user_agent: Set(client.user_agent.clone()),
        ip: Set(client.ip.clone()),
        created_at: Set(now),
        last_used_at: Set(now),
        expires_at: Set(ends),
        revoked_at: Set(None),
        authenticated_at: Set(Some(now)),
    }
    .insert(db)
    .await?;
    store_refresh_token(db, minted, now).await?;
    Ok(ends)
}

async fn store_refresh_token(
    db: &impl ConnectionTrait,
    minted: &Minted,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    RefreshTokens::insert(refresh_tokens::ActiveModel {
        digest: Set(minted.digest.clone()),
        session_id: Set(minted.session_id.to_string()),
        created_at: Set(now),
        rotated_at: Set(None),
    })
    .exec_without_returning(db)
    .await
    .map(drop)
}

/// After a password change: every other session of the user ends, and this one goes on —
/// its access tokens keep working (RealWorld clients keep the token they have) — with a
/// new refresh token. Its earlier refresh tokens are forgotten rather than marked
/// rotated: a client that still holds one was superseded, not copied, and presenting it
/// must not end the session. Returns when this session ends.
pub async fn end_other_sessions(
    db: &impl ConnectionTrait,
    user_id: i64,
    session_id: Uuid,
    minted: &Minted,
) -> Result<DateTime<Utc>, DbErr> {
    let now = Utc::now();
    let current = session_id.to_string();
    Sessions::update_many()
        .col_expr(sessions::Column::RevokedAt, Expr::val(now))
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(sessions::Column::Id.ne(current.clone()))
        .filter(sessions::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    changed(Topic::UserSessions(user_id));
    RefreshTokens::delete_many()
        .filter(refresh_tokens::Column::SessionId.eq(current.clone()))
        .exec(db)
        .await?;
    store_refresh_token(db, minted, now).await?;
    Ok(Sessions::find_by_id(current)
        .one(db)
        .await?
        .map_or(now, |s| s.expires_at))
}

/// When the session's owner last authenticated, read under a lock so a concurrent
/// credential change waits for this one.
pub async fn authenticated_at(
    db: &impl ConnectionTrait,
    session_id: Uuid,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    Ok(Sessions::find_by_id(session_id.to_string())
        .lock_exclusive()
        .one(db)
        .await?
        .and_then(|s| s.authenticated_at))
}

async fn end(db: &impl ConnectionTrait, session_id: &str, now: DateTime<Utc>) -> Result<(), DbErr> {
    if let Ok(id) = Uuid::try_parse(session_id) {
        changed(Topic::Session(id));
    }
    Sessions::update_many()
        .col_expr(sessions::Column::RevokedAt, Expr::val(now))
        .filter(sessions::Column::Id.eq(session_id))
        .filter(sessions::Column::RevokedAt.is_null())
        .exec(db)
        .await
        .map(drop)
}

/// Ends the user's session `session_id`; false when the user has no such standing session.
pub async fn revoke(
    db: &impl ConnectionTrait,
    user_id: i64,
    session_id: &str,
    idle_timeout: chrono::Duration,
) -> Result<bool, DbErr> {
    if let Ok(id) = Uuid::try_parse(session_id) {
        changed(Topic::Session(id));
    }
    let ended = Sessions::update_many()
        .col_expr(sessions::Column::RevokedAt, Expr::val(Utc::now()))
        .filter(sessions::Column::Id.eq(session_id))
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(sessions::Column::RevokedAt.is_null())
        .filter(sessions::Column::ExpiresAt.gt(Utc::now()))
        .filter(sessions::Column::LastUsedAt.gt(Utc::now() - idle_timeout))
        .exec(db)
        .await?;
    Ok(ended.rows_affected == 1)
}

/// Deletes sessions that ended (revoked, past their end, or idle too long) with their
/// refresh tokens.
pub async fn purge_ended(store: &Store, idle_timeout: chrono::Duration) -> AppResult<u64> {
    store
        .query(move |db| {
            Box::pin(async move {
                let now = Utc::now();
                let ended = Sessions::find()
                    .select_only()
                    .column(sessions::Column::Id)
                    .filter(
                        sessions::Column::RevokedAt
                            .is_not_null()
                            .or(sessions::Column::ExpiresAt.lte(now))
                            .or(sessions::Column::LastUsedAt.lte(now - idle_timeout)),
                    )
                    .limit(10_000)
                    .into_tuple::<String>()
                    .all(db)
                    .await?;
                if ended.is_empty() {
                    return Ok(0);
                }
                RefreshTokens::delete_many()
                    .filter(refresh_tokens::Column::SessionId.is_in(ended.clone()))
                    .exec(db)
                    .await?;
                let deleted = Sessions::delete_many()
                    .filter(sessions::Column::Id.is_in(ended))
                    .exec(db)
                    .await?;
                Ok(deleted.rows_affected)
            })
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_name_their_session() {
        let minted = Minted::new_session().expect("mint");
        assert_eq!(session_of(&minted.token), Some(minted.session_id));
        assert_eq!(minted.digest, digest(&minted.token));
        assert_eq!(minted.digest.len(), 64);
        assert_eq!(session_of("garbage"), None);
        assert_eq!(
            session_of(&format!("{}.short", minted.session_id.simple())),
            None
        );
        assert_ne!(
            Minted::for_session(minted.session_id).expect("mint").token,
            minted.token
        );
    }
}
