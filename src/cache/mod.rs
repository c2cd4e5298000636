//! The read cache: parts of answers kept in memory, each with the versions of the topics
//! it was read from (`versions`), served only while those are unchanged — key-based
//! expiry, as Rails' "Russian doll" caching does it. A write names the topics it
//! changes (`topic`); they get new versions at once on the replica that wrote, and on
//! every other replica as soon as it reads them from the change log (`log`), so a
//! favourite invalidates one count, one viewer's set and the lists filtered by that
//! viewer's favourites, and nothing else.
//!
//! - **No stale set.** A load notes the version clock before it reads; a part whose
//!   topics changed after that is handed to its caller but not kept (`put`).
//! - **One load per key.** Concurrent misses on one key wait for one load (`load`).
//! - **Bounded staleness.** On Postgres a replica trusts its cache only while it has
//!   read the change log within `cache.max_staleness`; past that it serves every read
//!   from the database until it has caught up (`Freshness`). SQLite is one process: its
//!   own writes are all there is.
//! - **Bounded memory.** Parts are weighed in estimated bytes (`cache.max_bytes`) and
//!   expire after `cache.ttl` whatever happens.

mod renders;
pub mod topic;
mod versions;

use std::{
    any::Any,
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{FutureExt, future::Shared};
use moka::sync::Cache;

pub(crate) use self::versions::Versions;
pub use self::{renders::Renders, topic::Topic, versions::Deps};
use crate::{config::CacheSettings, error::AppResult, metrics::handles::Kept};

pub const LOOKUPS: &str = "conduit_cache_lookups_total";
pub const STALENESS: &str = "conduit_cache_staleness_seconds";

/// What a part is keyed by within its kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyId {
    Int(i64),
    Text(Box<str>),
}

impl From<i64> for KeyId {
    fn from(id: i64) -> Self {
        KeyId::Int(id)
    }
}

impl From<String> for KeyId {
    fn from(text: String) -> Self {
        KeyId::Text(text.into_boxed_str())
    }
}

type PartKey = (&'static str, KeyId);
type AnyPart = Arc<dyn Any + Send + Sync>;

#[derive(Clone)]
struct Stamped {
    /// Estimated bytes held, for the memory bound.
    weight: u32,
    deps: Arc<Deps>,
    value: AnyPart,
}

/// A part and the versions it was read at (for composing: what it is built from).
pub struct Found<T> {
    pub value: Arc<T>,
    pub deps: Arc<Deps>,
}

impl<T> Clone for Found<T> {
    fn clone(&self) -> Self {
        Found {
            value: self.value.clone(),
            deps: self.deps.clone(),
        }
    }
}

/// Where a load started: a part read from then on is kept only if nothing it depends on
/// changed since.
#[derive(Debug, Clone, Copy)]
pub struct Since {
    clock: u64,
    epoch: u64,
}

type Inflight = Shared<futures_util::future::BoxFuture<'static, Option<(AnyPart, Arc<Deps>)>>>;

pub struct ReadCache {
    /// Names this process (hex: safe inside SQL quotes); also the job-lease holder.
    replica: String,
    versions: Versions,
    parts: Cache<PartKey, Stamped, ahash::RandomState>,
    /// `cache.max_bytes = 0`: parts are always loaded, never kept.
    enabled: bool,
    inflight: Mutex<HashMap<PartKey, Inflight>>,
    freshness: Freshness,
    /// Set by commits that named topics; the change log's notifier wakes other replicas.
    announce: tokio::sync::Notify,
    announced: AtomicBool,
    /// Wakes this replica's change-log follower before its next poll.
    wake: tokio::sync::Notify,
    /// Transaction ids of this replica's own commits the follower has not passed yet:
    /// their topics were invalidated at commit and need not be again.
    own: Mutex<std::collections::BTreeSet<i64>>,
}

impl ReadCache {
    pub fn new(settings: &CacheSettings) -> Self {
        describe_metrics();
        Self {
            replica: uuid::Uuid::new_v4().simple().to_string(),
            versions: Versions::default(),
            // Bounded by estimated bytes, not entries: a single article may carry a body
            // of up to the request body limit, a list page a hundred ids.
            parts: Cache::builder()
                .max_capacity(settings.max_bytes)
                .weigher(|_: &PartKey, value: &Stamped| value.weight)
                .time_to_live(settings.ttl)
                // aHash rather than SipHash: keys hold what callers typed (slugs, names,
                // tags), so the hash stays keyed per process, at a fraction of the cost.
                .build_with_hasher(ahash::RandomState::new()),
            enabled: settings.max_bytes > 0,
            inflight: Mutex::new(HashMap::new()),
            freshness: Freshness::new(settings.max_staleness),
            announce: tokio::sync::Notify::new(),
            announced: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            own: Mutex::new(std::collections::BTreeSet::new()),
        }
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Whether cached parts may be served: the cache is on and, where other replicas
    /// write, the change log was read recently enough.
    pub fn usable(&self) -> bool {
        self.enabled && self.freshness.trusted()
    }

    /// The versions of `topics` now: what a part read from them is stamped with.
    pub fn stamp<'t>(&self, topics: impl IntoIterator<Item = Topic<'t>>) -> Deps {
        self.versions.stamp(topics)
    }

    /// Where a load starts.
    pub fn since(&self) -> Since {
        Since {
            clock: self.versions.now(),
            epoch: self.versions.epoch(),
        }
    }

    /// Whether `deps` (a part's, or a session's) is still current.
    pub fn valid(&self, deps: &Deps) -> bool {
        self.versions.valid(deps)
    }

    /// Whether what was read from `since` on, stamped `deps`, is still current.
    pub fn unchanged_since(&self, deps: &Deps, since: Since) -> bool {
        self.versions
            .unchanged_since(deps, since.clock, since.epoch)
            && self.versions.valid(deps)
    }

    /// Topics a commit here changed (or another replica's, read from the log).
    pub fn changed(&self, topics: &[String]) {
        for topic in topics {
            self.versions.bump(topic);
        }
    }

    /// After a local commit with changes (transaction `xid`): remember it as ours and
    /// wake the notifier (other replicas).
    pub fn committed_here(&self, xid: i64) {
        self.own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(xid);
        self.announced.store(true, Ordering::Release);
        self.announce.notify_one();
    }

    pub(crate) fn is_own(&self, xid: i64) -> bool {
        self.own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&xid)
    }

    pub(crate) fn forget_own_below(&self, frontier: i64) {
        let mut own = self.own.lock().unwrap_or_else(|e| e.into_inner());
        *own = own.split_off(&frontier);
    }

    /// Asks the change-log follower to read the log now.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// The part `kind`/`id`, if kept and current.
    pub fn get<T: Send + Sync + 'static>(
        &self,
        kind: &'static str,
        id: impl Into<KeyId>,
    ) -> Option<Found<T>> {
        if !self.usable() {
            return None;
        }
        let found = self
            .parts
            .get(&(kind, id.into()))
            .filter(|part| self.versions.valid(&part.deps))
            .and_then(|part| {
                Some(Found {
                    value: part.value.downcast::<T>().ok()?,
                    deps: part.deps,
                })
            });
        let result = if found.is_some() { "hit" } else { "miss" };
        static COUNTERS: Kept<(&str, &str), metrics::Counter> = Kept::new();
        COUNTERS
            .get(
                (kind, result),
                || metrics::counter!(LOOKUPS, "cache" => kind, "result" => result),
            )
            .increment(1);
        found
    }

    /// Keeps a part read from `since` on, unless one of its topics changed meanwhile: a
    /// load that began before a write never installs what it read after that write.
    pub fn put<T: Send + Sync + 'static>(
        &self,
        kind: &'static str,
        id: impl Into<KeyId>,
        value: Arc<T>,
        deps: Arc<Deps>,
        since: Since,
        weight: usize,
    ) {
        if !self.usable() || !self.unchanged_since(&deps, since) {
            return;
        }
        let weight = u32::try_from(weight + 16 * deps.len()).unwrap_or(u32::MAX);
        self.parts.insert(
            (kind, id.into()),
            Stamped {
                weight,
                deps,
                value,
            },
        );
    }

    /// The part `kind`/`id`: kept, or loaded by `load` — once for all concurrent misses on
    /// the key — and kept. `load` reads and stamps (`stamp` after its reads); `weight`
    /// estimates the bytes it holds.
    pub async fn load<T, F, Fut>(
        &self,
        kind: &'static str,
        id: impl Into<KeyId>,
        weight: impl Fn(&T) -> usize,
        load: F,
    ) -> AppResult<Found<T>>
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = AppResult<(T, Deps)>> + Send + 'static,
    {
        let id = id.into();
        if let Some(found) = self.get::<T>(kind, id.clone()) {
            return Ok(found);
        }
        if !self.usable() {
            let (value, deps) = load().await?;
            return Ok(Found {
                value: Arc::new(value),
                deps: Arc::new(deps),
            });
        }
        let key = (kind, id.clone());
        // Either wait for the load already under way, or lead one that others wait for.
        let lead = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match inflight.get(&key) {
                Some(waiting) => Err(waiting.clone()),
                None => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let shared: Inflight = async move { rx.await.ok().flatten() }.boxed().shared();
                    inflight.insert(key.clone(), shared);
                    Ok((self.since(), tx))
                }
            }
        };
        let (since, tx) = match lead {
            Ok(lead) => lead,
            Err(waiting) => {
                if let Some((value, deps)) = waiting.await
                    && let Ok(value) = value.downcast::<T>()
                {
                    return Ok(Found { value, deps });
                }
                // The leader failed or went away: load for ourselves, keeping nothing.
                let (value, deps) = load().await?;
                return Ok(Found {
                    value: Arc::new(value),
                    deps: Arc::new(deps),
                });
            }
        };
        // Removes the key however this ends (a dropped request included); waiters of a
        // failed or dropped load then load for themselves.
        let _leading = Leading { cache: self, key };
        let (value, deps) = load().await?;
        let (value, deps) = (Arc::new(value), Arc::new(deps));
        self.put(kind, id, value.clone(), deps.clone(), since, weight(&value));
        let shared: AnyPart = value.clone();
        let _ = tx.send(Some((shared, deps.clone())));
        Ok(Found { value, deps })
    }

    pub(crate) fn freshness(&self) -> &Freshness {
        &self.freshness
    }

    pub(crate) fn versions(&self) -> &Versions {
        &self.versions
    }

    /// Waits until a commit here named topics since the last call.
    pub(crate) async fn announced(&self) {
        loop {
            if self.announced.swap(false, Ordering::AcqRel) {
                return;
            }
            self.announce.notified().await;
        }
    }
}

/// The key of a load in flight, removed from the map when the load ends or is dropped.
struct Leading<'c> {
    cache: &'c ReadCache,
    key: PartKey,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.cache
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// How current this replica's view of the change log is. Where nobody else writes
/// (SQLite), always.
pub struct Freshness {
    /// Set once a change-log follower runs: from then on, trust has to be earned.
    followed: AtomicBool,
    origin: Instant,
    /// When (ms after `origin`, plus one) the last complete read of the log began; 0:
    /// never, and a replica that has never read the log trusts nothing.
    caught_up_ms: AtomicU64,
    max_staleness: Duration,
}

impl Freshness {
    fn new(max_staleness: Duration) -> Self {
        Self {
            followed: AtomicBool::new(false),
            origin: Instant::now(),
            caught_up_ms: AtomicU64::new(0),
            max_staleness,
        }
    }

    fn trusted(&self) -> bool {
        !self.followed.load(Ordering::Acquire) || self.staleness() <= self.max_staleness
    }

    /// How long ago the last complete read of the change log began.
    pub fn staleness(&self) -> Duration {
        match self.caught_up_ms.load(Ordering::Acquire) {
            0 => Duration::MAX,
            ms => self
                .origin
                .elapsed()
                .saturating_sub(Duration::from_millis(ms - 1)),
        }
    }

    pub(crate) fn follow(&self) {
        self.followed.store(true, Ordering::Release);
    }

    /// A read of the log that began at `at` saw everything committed before it.
    pub(crate) fn caught_up(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.origin).as_millis() as u64 + 1;
        self.caught_up_ms.fetch_max(ms, Ordering::AcqRel);
    }

    pub fn max_staleness(&self) -> Duration {
        self.max_staleness
    }
}

/// Describes this module's metrics to the recorder (a no-op until one is installed).
pub fn describe_metrics() {
    metrics::describe_counter!(
        LOOKUPS,
        "Read-cache lookups, by part (window, total, article, body, author, count, viewer, slug, username, tags) and result (hit, miss)"
    );
    metrics::describe_gauge!(
        STALENESS,
        "Seconds since this replica's last complete read of the change log began (Postgres); past cache.max_staleness it serves no cached part"
    );
}
