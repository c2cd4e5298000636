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
    cache::{Deps, Topic},
    config::AuthSettings,
    db::{Store, changed},
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

/// What presenting a refresh token came to.
pub enum Rotation {
    /// Exchanged (or, within the grace period, exchanged again): the session's successor
    /// refresh token is the one derived from the presented token.
    Rotated {
        user_id: i64,
        version: i32,
        ends: DateTime<Utc>,
    },
    /// Not a token of any standing session.
    Unknown,
    /// Already exchanged, past the grace period: the session has just been ended.
    Reused,
}

/// Exchanges `presented` for `successor` (`SessionPolicy::successor` of it) in one
/// transaction. The token row is locked first, so two exchanges of one token run one
/// after the other: the second finds it rotated, within the grace period, and answers
/// the same successor.
pub async fn rotate(
    db: &impl ConnectionTrait,
    presented: &str,
    successor: &Minted,
    client: &Client,
    policy: &SessionPolicy,
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
            s.id == successor.session_id.to_string()
                && s.revoked_at.is_none()
                && s.expires_at > now
                && s.last_used_at + policy.idle_timeout > now
        })
    else {
        return Ok(Rotation::Unknown);
    };
    match found.rotated_at {
        None => {
            RefreshTokens::update_many()
                .col_expr(refresh_tokens::Column::RotatedAt, Expr::val(now))
                .filter(refresh_tokens::Column::Digest.eq(found.digest))
                .exec(db)
                .await?;
            store_refresh_token(db, successor, now).await?;
        }
        Some(rotated) if now - rotated <= policy.refresh_grace => {
            // The successor handed out then must still be the session's live token: one
            // that was itself exchanged since is not handed out again.
            let live = RefreshTokens::find_by_id(successor.digest.clone())
                .one(db)
                .await?
                .is_some_and(|t| t.rotated_at.is_none());
            if !live {
                end(db, &session.id, now).await?;
                return Ok(Rotation::Reused);
            }
        }
        Some(_) => {
            end(db, &session.id, now).await?;
            return Ok(Rotation::Reused);
        }
    }
    let (user_id, version, ends) = (session.user_id, session.version, session.expires_at);
    let mut row: sessions::ActiveModel = session.into();
    row.last_used_at = Set(now);
    if client.user_agent.is_some() {
        row.user_agent = Set(client.user_agent.clone());
    }
    if client.ip.is_some() {
        row.ip = Set(client.ip.clone());
    }
    row.update(db).await?;
    Ok(Rotation::Rotated {
        user_id,
        version,
        ends,
    })
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

/// The user's standing sessions, most recently used first.
pub async fn standing_of(
    db: &impl ConnectionTrait,
    user_id: i64,
    idle_timeout: chrono::Duration,
) -> Result<Vec<sessions::Model>, DbErr> {
    Sessions::find()
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(sessions::Column::RevokedAt.is_null())
        .filter(sessions::Column::ExpiresAt.gt(Utc::now()))
        .filter(sessions::Column::LastUsedAt.gt(Utc::now() - idle_timeout))
        .order_by_desc(sessions::Column::LastUsedAt)
        .order_by_desc(sessions::Column::Id)
        // A user with more sessions than this has bigger problems than a long list.
        .limit(1_000)
        .all(db)
        .await
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

/// What the auth layer needs to know about a session.
#[derive(Debug, Clone, Copy)]
struct SessionState {
    user_id: i64,
    version: i32,
    ended: bool,
    /// The absolute end.
    expires_at: DateTime<Utc>,
    /// As last read or written by this replica; another replica may have moved it on.
    last_used_at: DateTime<Utc>,
}

/// Session states as last read, each stamped with the versions of its topics (its own,
/// and its user's sessions): an ending committed here, or read from the change log
/// elsewhere, makes the next request read it again, so an ended session is refused at
/// once here and within `cache.max_staleness` on every replica. Entries also expire
/// after `cache.max_staleness` whatever happens, a second line of defence.
/// A plain map under a read-write lock rather than the read cache's parts: this lookup
/// is on every authenticated request, and a shared lock plus one hash probe costs a
/// fraction of the general cache's bookkeeping.
#[derive(Default)]
pub struct SessionCache {
    entries: std::sync::RwLock<std::collections::HashMap<Uuid, Cached>>,
}

struct Cached {
    state: Option<SessionState>,
    deps: Deps,
    read_at: std::time::Instant,
}

/// Sessions remembered at most; past it the map starts over (every session is one
/// statement away).
const MAX_CACHED_SESSIONS: usize = 100_000;

impl SessionCache {
    fn get(&self, id: &Uuid, current: impl Fn(&Cached) -> bool) -> Option<Option<SessionState>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(id)
            .filter(|cached| current(cached))
            .map(|cached| cached.state)
    }

    fn keep(&self, id: Uuid, cached: Cached) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_CACHED_SESSIONS {
            entries.clear();
        }
        entries.insert(id, cached);
    }

    /// Records a use at `now` unless one at least as recent as `since` is recorded
    /// already; true when this caller should write it (so one request per interval does).
    fn claim_touch(&self, id: &Uuid, since: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        match entries.get_mut(id) {
            Some(Cached {
                state: Some(state), ..
            }) if state.last_used_at < since => {
                state.last_used_at = now;
                true
            }
            _ => false,
        }
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
                    last_used_at: s.last_used_at,
                }))
        })
    }))
}

/// Writes a session's last use, outside any unit of work: an autocommitted statement that
/// changes nothing a cached answer shows, so it invalidates nothing. Never moves it back.
/// The request does not wait for it.
fn touch(store: &Store, session_id: Uuid, at: DateTime<Utc>) {
    let id = session_id.to_string();
    store.spawn_query("session last use", move |db| {
        Box::pin(async move {
            Sessions::update_many()
                .col_expr(sessions::Column::LastUsedAt, Expr::val(at))
                .filter(sessions::Column::Id.eq(id))
                .filter(sessions::Column::LastUsedAt.lt(at))
                .exec(db)
                .await?;
            Ok(())
        })
    });
}

/// Why a genuine access token does not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Logged out, revoked, ended by a password change or by refresh-token reuse.
    Ended,
    /// The session reached its end, or sat unused past the idle timeout.
    Expired,
}

/// Whether the session a verified access token names still stands for it; when it does,
/// its absolute end. A hit costs no statement; a miss (first use, a change to it, or an
/// entry older than `cache.max_staleness`) one. A use is recorded once per quarter idle
/// timeout (at most hourly).
pub async fn standing(
    store: &Store,
    cache: &SessionCache,
    policy: &SessionPolicy,
    token: Verified,
) -> AppResult<Result<DateTime<Utc>, Refused>> {
    let reads = store.cache();
    let usable = reads.usable();
    let ttl = reads.freshness().max_staleness();
    let found = usable
        .then(|| {
            cache.get(&token.session_id, |cached| {
                cached.read_at.elapsed() < ttl && reads.valid(&cached.deps)
            })
        })
        .flatten();
    let now = Utc::now();
    let state = match found {
        // Idle by this replica's record: another replica may have seen a later use.
        Some(Some(s)) if s.last_used_at + policy.idle_timeout <= now => {
            read_and_keep(store, cache, token.session_id).await?
        }
        Some(state) => state,
        None => read_and_keep(store, cache, token.session_id).await?,
    };
    let Some(s) = state
        .filter(|s| s.user_id == token.user_id && !s.ended && s.version == token.session_version)
    else {
        return Ok(Err(Refused::Ended));
    };
    if s.expires_at <= now || s.last_used_at + policy.idle_timeout <= now {
        return Ok(Err(Refused::Expired));
    }
    if cache.claim_touch(&token.session_id, now - policy.touch_every(), now) {
        touch(store, token.session_id, now);
    }
    Ok(Ok(s.expires_at))
}

/// Reads the session and keeps it, stamped as of before the read: a change committed
/// during the read leaves the entry stale at once.
async fn read_and_keep(
    store: &Store,
    cache: &SessionCache,
    session_id: Uuid,
) -> AppResult<Option<SessionState>> {
    let reads = store.cache();
    let since = reads.since();
    let read_at = std::time::Instant::now();
    let state = read_state(store, session_id).await?;
    let mut topics = vec![Topic::Session(session_id)];
    if let Some(s) = &state {
        topics.push(Topic::UserSessions(s.user_id));
    }
    let deps = reads.stamp(topics);
    if reads.usable() && reads.unchanged_since(&deps, since) {
        cache.keep(
            session_id,
            Cached {
                state,
                deps,
                read_at,
            },
        );
    }
    Ok(state)
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
