//! Versions of topics, for key-based expiry: every cached part records the versions of
//! the topics it was read from, and is served only while they are unchanged. A change
//! to a topic (a local commit, or another replica's seen in the change log) gives it a
//! new version, so everything read from it stops being served at once — and nothing else.
//!
//! Topics are hashed into a fixed array of version stripes: memory is bounded whatever
//! the number of topics, and two topics sharing a stripe only ever cost extra misses.
//! Versions come from one counter, so a load can tell whether anything it depends on
//! changed after it began (`unchanged_since`): a load that raced a write is not kept.

use std::{
    hash::{BuildHasher, BuildHasherDefault, DefaultHasher},
    sync::atomic::{AtomicU64, Ordering},
};

use smallvec::SmallVec;

use super::topic::Topic;

const STRIPES: usize = 1 << 16;

pub struct Versions {
    /// The last version handed out.
    clock: AtomicU64,
    stripes: Box<[AtomicU64]>,
    /// Raised to forget everything at once (an outage of the change log).
    epoch: AtomicU64,
}

/// The versions a part was read at: its topics' stripes, and the epoch.
#[derive(Debug, Clone, Default)]
pub struct Deps {
    epoch: u64,
    stamps: SmallVec<[(u32, u64); 4]>,
}

impl Deps {
    pub fn extend(&mut self, other: &Deps) {
        self.stamps.extend(other.stamps.iter().copied());
    }

    pub fn len(&self) -> usize {
        self.stamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stamps.is_empty()
    }
}

impl Default for Versions {
    fn default() -> Self {
        Self {
            clock: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
        }
    }
}

fn stripe(topic: &str) -> u32 {
    (BuildHasherDefault::<DefaultHasher>::default().hash_one(topic) as usize % STRIPES) as u32
}

impl Versions {
    /// Where loads start: anything changed after this is newer.
    pub fn now(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }

    /// `topic` (its text form) changed.
    pub fn bump(&self, topic: &str) {
        let version = self.clock.fetch_add(1, Ordering::SeqCst) + 1;
        self.stripes[stripe(topic) as usize].fetch_max(version, Ordering::SeqCst);
    }

    #[cfg(test)]
    pub fn bump_topic(&self, topic: Topic<'_>) {
        self.bump(&topic.to_string());
    }

    /// Forgets everything read so far.
    pub fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The current versions of `topics`.
    pub fn stamp<'t>(&self, topics: impl IntoIterator<Item = Topic<'t>>) -> Deps {
        let mut deps = Deps {
            epoch: self.epoch.load(Ordering::SeqCst),
            stamps: SmallVec::new(),
        };
        for topic in topics {
            let stripe = stripe(&topic.to_string());
            let version = self.stripes[stripe as usize].load(Ordering::SeqCst);
            deps.stamps.push((stripe, version));
        }
        deps
    }

    /// Whether nothing `deps` names has changed since it was stamped.
    pub fn valid(&self, deps: &Deps) -> bool {
        deps.epoch == self.epoch.load(Ordering::Acquire)
            && deps.stamps.iter().all(|(stripe, version)| {
                self.stripes[*stripe as usize].load(Ordering::Acquire) == *version
            })
    }

    /// Whether every version `deps` holds is no newer than `since` (`now()` before a
    /// load), and no flush came between: then what the load read is still current.
    pub fn unchanged_since(&self, deps: &Deps, since: u64, epoch: u64) -> bool {
        deps.epoch == epoch && deps.stamps.iter().all(|(_, version)| *version <= since)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_invalidates_what_depends_on_it_only() {
        let versions = Versions::default();
        let a = versions.stamp([Topic::Article(1)]);
        let b = versions.stamp([Topic::Article(2), Topic::ListAll]);
        versions.bump_topic(Topic::Article(1));
        assert!(!versions.valid(&a));
        assert!(versions.valid(&b));
        versions.flush();
        assert!(!versions.valid(&b));
    }

    #[test]
    fn a_load_that_raced_a_change_is_told() {
        let versions = Versions::default();
        let (since, epoch) = (versions.now(), versions.epoch());
        versions.bump_topic(Topic::Article(1));
        let deps = versions.stamp([Topic::Article(1)]);
        assert!(!versions.unchanged_since(&deps, since, epoch));
        let deps = versions.stamp([Topic::Article(2)]);
        assert!(versions.unchanged_since(&deps, since, epoch));
    }
}
