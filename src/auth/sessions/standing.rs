//! Whether a session still stands, checked on every authenticated request: kept per
//! session while nothing about it changed (the change log's topics) and within
//! `cache.max_staleness`, else read; an unused session's last use written now and then.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};
use uuid::Uuid;

use super::SessionPolicy;
use crate::{
    auth::token::Verified,
    cache::{Deps, Topic},
    db::Store,
    entities::sessions::{self, Entity as Sessions},
    error::AppResult,
};

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

/// What the auth layer needs to know about a session.
#[derive(Debug, Clone, Copy)]
pub(super) struct SessionState {
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

pub(super) struct Cached {
    state: Option<SessionState>,
    deps: Deps,
    read_at: std::time::Instant,
}

/// Sessions remembered at most; past it the map starts over (every session is one
/// statement away).
pub(super) const MAX_CACHED_SESSIONS: usize = 100_000;

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
pub(super) fn read_state(
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
pub(super) fn touch(store: &Store, session_id: Uuid, at: DateTime<Utc>) {
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
pub(super) async fn read_and_keep(
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
