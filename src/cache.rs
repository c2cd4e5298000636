//! Read-mostly answers kept in memory (moka): article reads (list and feed pages, single
//! articles, as each viewer sees them), the tag list and the totals of REST list pages.
//! All are keyed by a *generation*
//! that every committed write advances, so a cached answer is never served after a write
//! that could change it:
//!
//! - in this process, `Store::write` advances it right after its commit;
//! - across replicas on Postgres, each write transaction also sends
//!   `NOTIFY conduit_changes` (delivered only if it commits), and every replica's
//!   `cache-invalidation` worker advances its generation when one arrives — or when its
//!   listening connection was lost, since notifications may have been missed then.
//!
//! A read that started before a write may still store what it read, under the old
//! generation, where nobody looks any more. SQLite is the single-process default and needs
//! no cross-process signal.

use std::{
    any::Any,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use moka::sync::Cache;

use crate::{config::CacheSettings, error::AppResult};

/// The channel replicas signal committed writes on.
pub const CHANNEL: &str = "conduit_changes";

pub const LOOKUPS: &str = "conduit_cache_lookups_total";

pub struct ReadCache {
    /// Names this process in its change notifications (hex: safe inside SQL quotes).
    replica: String,
    generation: AtomicU64,
    tags: Cache<u64, Arc<Vec<String>>>,
    totals: Cache<(u64, String), u64>,
    answers: Cache<AnswerKey, Weighed>,
    /// `cache.max_bytes = 0`: answers are always loaded, never kept.
    answers_enabled: bool,
}

/// (generation, kind, what was asked): kinds keep different answer types apart.
type AnswerKey = (u64, &'static str, String);

#[derive(Clone)]
struct Weighed {
    /// Estimated bytes held, for the cache's memory bound.
    weight: u32,
    answer: Arc<dyn Any + Send + Sync>,
}

impl ReadCache {
    pub fn new(settings: &CacheSettings) -> Self {
        Self {
            replica: uuid::Uuid::new_v4().simple().to_string(),
            generation: AtomicU64::new(0),
            tags: Cache::builder()
                .max_capacity(4)
                .time_to_live(settings.ttl)
                .build(),
            // One entry per filter combination in use; bounded whatever callers send.
            totals: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(settings.ttl)
                .build(),
            // Bounded by estimated bytes, not entries: a single article may carry a body
            // of up to the request body limit, a list page up to 100 summaries.
            answers: Cache::builder()
                .max_capacity(settings.max_bytes)
                .weigher(|key: &AnswerKey, value: &Weighed| {
                    value.weight.saturating_add(key.2.len() as u32)
                })
                .time_to_live(settings.ttl)
                .build(),
            answers_enabled: settings.max_bytes > 0,
        }
    }
}

impl ReadCache {
    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// After a committed write here, or a signal that one was committed elsewhere.
    pub fn advance(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The tags in use, loaded by `load` when this generation has none yet.
    pub async fn tags<F>(&self, load: F) -> AppResult<Arc<Vec<String>>>
    where
        F: Future<Output = AppResult<Vec<String>>>,
    {
        let generation = self.generation();
        if let Some(tags) = self.tags.get(&generation) {
            metrics::counter!(LOOKUPS, "cache" => "tags", "result" => "hit").increment(1);
            return Ok(tags);
        }
        metrics::counter!(LOOKUPS, "cache" => "tags", "result" => "miss").increment(1);
        let tags = Arc::new(load.await?);
        self.tags.insert(generation, tags.clone());
        Ok(tags)
    }

    /// The answer of kind `kind` to `key` for this generation, loaded by `load` (and kept,
    /// weighed by `weight` in estimated bytes) when there is none. A load that raced a
    /// write is kept under the generation it started in, where nobody looks any more.
    pub async fn answer<T, F>(
        &self,
        kind: &'static str,
        key: String,
        weight: impl FnOnce(&T) -> usize,
        load: F,
    ) -> AppResult<Arc<T>>
    where
        T: Send + Sync + 'static,
        F: Future<Output = AppResult<T>>,
    {
        if !self.answers_enabled {
            return Ok(Arc::new(load.await?));
        }
        let key = (self.generation(), kind, key);
        if let Some(found) = self
            .answers
            .get(&key)
            .and_then(|found| found.answer.downcast::<T>().ok())
        {
            metrics::counter!(LOOKUPS, "cache" => kind, "result" => "hit").increment(1);
            return Ok(found);
        }
        metrics::counter!(LOOKUPS, "cache" => kind, "result" => "miss").increment(1);
        let answer = Arc::new(load.await?);
        let weight = u32::try_from(weight(&answer)).unwrap_or(u32::MAX);
        self.answers.insert(
            key,
            Weighed {
                weight,
                answer: answer.clone(),
            },
        );
        Ok(answer)
    }

    /// The cached total of the list `scope` names, for this generation.
    pub fn total(&self, scope: &str) -> Option<u64> {
        let found = self.totals.get(&(self.generation(), scope.to_string()));
        let result = if found.is_some() { "hit" } else { "miss" };
        metrics::counter!(LOOKUPS, "cache" => "totals", "result" => result).increment(1);
        found
    }

    /// Keeps a total read at `generation` (taken before the read).
    pub fn keep_total(&self, generation: u64, scope: String, total: u64) {
        self.totals.insert((generation, scope), total);
    }
}

/// Listens for other replicas' writes on Postgres until `stop`; advances the generation
/// on each, and whenever the listening connection had to be re-established.
pub async fn follow_other_replicas(
    url: crate::config::Secret,
    cache: Arc<ReadCache>,
    stop: tokio_util::sync::CancellationToken,
) {
    use sea_orm::sqlx::postgres::PgListener;
    let mut delay = Duration::from_millis(100);
    loop {
        let listener = async {
            let mut listener = PgListener::connect(url.expose()).await?;
            listener.listen(CHANNEL).await?;
            anyhow::Ok(listener)
        };
        let mut listener = tokio::select! {
            () = stop.cancelled() => return,
            connected = listener => match connected {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::warn!(error = %e, "cache invalidation: cannot listen; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        delay = Duration::from_millis(100);
        // Whatever was committed while we were not listening is unknown: start afresh.
        cache.advance();
        loop {
            let received = tokio::select! {
                () = stop.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                // Our own writes advanced the generation when they committed; their echo
                // would only throw away what was cached since.
                Ok(Some(notification)) if notification.payload() == cache.replica() => {}
                Ok(Some(_)) => cache.advance(),
                // The connection was lost and is being re-established: anything may have
                // been committed in between.
                Ok(None) => cache.advance(),
                Err(e) => {
                    tracing::warn!(error = %e, "cache invalidation: listener failed; reconnecting");
                    cache.advance();
                    break;
                }
            }
        }
    }
}
