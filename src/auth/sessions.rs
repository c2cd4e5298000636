//! Server-side sessions. Login and registration open one; its refresh token (random,
//! stored as a SHA-256 digest) is exchanged for a new one on every refresh, and the old
//! one is remembered as rotated: presenting it again means it was copied, so the whole
//! session ends — the thief's copy and the owner's newest token alike (RFC 9700 §4.14.2).
//! Access tokens name their session and its version, and the auth layer checks both on
//! each request (`standing`, cached by write generation), so logout, revocation and a
//! password change take effect at once, on every replica.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
    sea_query::{Expr, ExprTrait},
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::token::Verified;
use crate::{
    db::Store,
    entities::{
        refresh_tokens::{self, Entity as RefreshTokens},
        sessions::{self, Entity as Sessions},
    },
    error::{AppError, AppResult},
};

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
            ip: crate::middleware::request_id::client_ip().map(|ip| ip.to_string()),
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

/// Opens a session for `user_id` with `minted` as its first refresh token.
pub async fn open(
    db: &impl ConnectionTrait,
    user_id: i64,
    client: &Client,
    ttl: chrono::Duration,
    minted: &Minted,
) -> Result<(), DbErr> {
    let now = Utc::now();
    sessions::ActiveModel {
        id: Set(minted.session_id.to_string()),
        user_id: Set(user_id),
        version: Set(0),
        user_agent: Set(client.user_agent.clone()),
        ip: Set(client.ip.clone()),
        created_at: Set(now),
        last_used_at: Set(now),
        expires_at: Set(now + ttl),
        revoked_at: Set(None),
    }
    .insert(db)
    .await?;
    store_refresh_token(db, minted, now).await
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

/// What presenting a refresh token came to.
pub enum Rotation {
    /// Exchanged: `minted` is the session's refresh token now.
    Rotated { user_id: i64, version: i32 },
    /// Not a token of any standing session.
    Unknown,
    /// Already exchanged before: the session has just been ended.
    Reused,
}

/// Exchanges `presented` for `minted` (a token of the same session) in one transaction.
pub async fn rotate(
    db: &impl ConnectionTrait,
    presented: &str,
    minted: &Minted,
    client: &Client,
    ttl: chrono::Duration,
) -> Result<Rotation, DbErr> {
    let now = Utc::now();
    let Some(found) = RefreshTokens::find_by_id(digest(presented))
        .lock_exclusive()
        .one(db)
        .await?
    else {
        return Ok(Rotation::Unknown);
    };
    let Some(session) = Sessions::find_by_id(found.session_id.clone())
        .lock_exclusive()
        .one(db)
        .await?
        .filter(|s| {
            s.id == minted.session_id.to_string() && s.revoked_at.is_none() && s.expires_at > now
        })
    else {
        return Ok(Rotation::Unknown);
    };
    if found.rotated_at.is_some() {
        end(db, &session.id, now).await?;
        return Ok(Rotation::Reused);
    }
    RefreshTokens::update_many()
        .col_expr(refresh_tokens::Column::RotatedAt, Expr::val(now))
        .filter(refresh_tokens::Column::Digest.eq(found.digest))
        .exec(db)
        .await?;
    store_refresh_token(db, minted, now).await?;
    let (user_id, version) = (session.user_id, session.version);
    let mut row: sessions::ActiveModel = session.into();
    row.last_used_at = Set(now);
    row.expires_at = Set(now + ttl);
    if client.user_agent.is_some() {
        row.user_agent = Set(client.user_agent.clone());
    }
    if client.ip.is_some() {
        row.ip = Set(client.ip.clone());
    }
    row.update(db).await?;
    Ok(Rotation::Rotated { user_id, version })
}

/// After a password change: every other session of the user ends, and this one gets a
/// new version (its access tokens issued so far stop working) and a new refresh token.
/// Its earlier refresh tokens are forgotten rather than marked rotated: a client that
/// still holds one was superseded, not copied, and presenting it must not end the
/// session. Returns the new version.
pub async fn restart_after_password_change(
    db: &impl ConnectionTrait,
    user_id: i64,
    session_id: Uuid,
    minted: &Minted,
) -> Result<i32, DbErr> {
    let now = Utc::now();
    let current = session_id.to_string();
    Sessions::update_many()
        .col_expr(sessions::Column::RevokedAt, Expr::val(now))
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(sessions::Column::Id.ne(current.clone()))
        .filter(sessions::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Sessions::update_many()
        .col_expr(
            sessions::Column::Version,
            Expr::col(sessions::Column::Version).add(1),
        )
        .col_expr(sessions::Column::LastUsedAt, Expr::val(now))
        .filter(sessions::Column::Id.eq(current.clone()))
        .exec(db)
        .await?;
    RefreshTokens::delete_many()
        .filter(refresh_tokens::Column::SessionId.eq(current.clone()))
        .exec(db)
        .await?;
    store_refresh_token(db, minted, now).await?;
    Ok(Sessions::find_by_id(current)
        .one(db)
        .await?
        .map_or(0, |s| s.version))
}

async fn end(db: &impl ConnectionTrait, session_id: &str, now: DateTime<Utc>) -> Result<(), DbErr> {
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
) -> Result<bool, DbErr> {
    let ended = Sessions::update_many()
        .col_expr(sessions::Column::RevokedAt, Expr::val(Utc::now()))
        .filter(sessions::Column::Id.eq(session_id))
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(sessions::Column::RevokedAt.is_null())
        .filter(sessions::Column::ExpiresAt.gt(Utc::now()))
        .exec(db)
        .await?;
    Ok(ended.rows_affected == 1)
}

/// The user's standing sessions, most recently used first.
pub async fn standing_of(
    db: &impl ConnectionTrait,
    user_id: i64,
) -> Result<Vec<sessions::Model>, DbErr> {
    Sessions::find()
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(sessions::Column::RevokedAt.is_null())
        .filter(sessions::Column::ExpiresAt.gt(Utc::now()))
        .order_by_desc(sessions::Column::LastUsedAt)
        .order_by_desc(sessions::Column::Id)
        // A user with more sessions than this has bigger problems than a long list.
        .limit(1_000)
        .all(db)
        .await
}

/// Deletes sessions that ended (revoked or expired) with their refresh tokens.
pub async fn purge_ended(store: &Store) -> AppResult<u64> {
    store
        .query(|db| {
            Box::pin(async move {
                let now = Utc::now();
                let ended = Sessions::find()
                    .select_only()
                    .column(sessions::Column::Id)
                    .filter(
                        sessions::Column::RevokedAt
                            .is_not_null()
                            .or(sessions::Column::ExpiresAt.lte(now)),
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

/// What the auth layer needs to know about a session.
#[derive(Debug, Clone, Copy)]
struct SessionState {
    user_id: i64,
    version: i32,
    ended: bool,
    expires_at: DateTime<Utc>,
}

/// Session states as last read, each with the write generation it was read in (see
/// `cache`): an entry from an older generation is read again, so a session ended by any
/// committed write — here or, on Postgres, on another replica — is refused at once.
/// A plain map under a read-write lock rather than the read cache: this lookup is on
/// every authenticated request, and a shared lock plus one hash probe costs a fraction of
/// the general cache's bookkeeping (measured: the general cache took a fifth of an
/// authenticated feed read's throughput).
#[derive(Default)]
pub struct SessionCache {
    entries: std::sync::RwLock<std::collections::HashMap<Uuid, (u64, Option<SessionState>)>>,
}

/// Sessions remembered at most; past it the map starts over (every session is one
/// statement away).
const MAX_CACHED_SESSIONS: usize = 100_000;

impl SessionCache {
    fn get(&self, id: &Uuid, generation: u64) -> Option<Option<SessionState>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(id)
            .filter(|(read_in, _)| *read_in == generation)
            .map(|(_, state)| *state)
    }

    fn keep(&self, id: Uuid, generation: u64, state: Option<SessionState>) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_CACHED_SESSIONS {
            entries.clear();
        }
        entries.insert(id, (generation, state));
    }
}

/// The session's state from the database. Boxed: the auth layer's future (moved on every
/// request) stays the size of the cache hit instead of carrying a database unit's.
fn read_state(
    store: &Store,
    session_id: Uuid,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = AppResult<Option<SessionState>>> + Send + '_>>
{
    let id = session_id.to_string();
    Box::pin(store.query(move |db| {
        Box::pin(async move {
            Ok(Sessions::find_by_id(id)
                .one(db)
                .await?
                .map(|s| SessionState {
                    user_id: s.user_id,
                    version: s.version,
                    ended: s.revoked_at.is_some(),
                    expires_at: s.expires_at,
                }))
        })
    }))
}

/// Why a genuine access token does not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Logged out, revoked, ended by a password change or by refresh-token reuse.
    Ended,
    /// The session expired.
    Expired,
}

/// Whether the session a verified access token names still stands for it. A hit costs
/// no statement; a miss (first use, or any committed write since) one.
pub async fn standing(
    store: &Store,
    cache: &SessionCache,
    token: Verified,
) -> AppResult<Result<(), Refused>> {
    // Taken before reading, so a write that lands during the read leaves this entry
    // under the older generation, where nobody looks.
    let generation = store.cache().generation();
    let state = match cache.get(&token.session_id, generation) {
        Some(state) => state,
        None => {
            let state = read_state(store, token.session_id).await?;
            cache.keep(token.session_id, generation, state);
            state
        }
    };
    Ok(match state {
        Some(s) if s.user_id == token.user_id && !s.ended && s.version == token.session_version => {
            if s.expires_at > Utc::now() {
                Ok(())
            } else {
                Err(Refused::Expired)
            }
        }
        _ => Err(Refused::Ended),
    })
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
