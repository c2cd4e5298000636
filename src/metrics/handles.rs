//! Instrument handles kept per label set. `metrics::counter!(name, labels…)` builds its
//! key, allocates it and looks it up in the recorder's registry on every call: about a
//! thousand instructions, several times per request. A kept handle costs a read lock, a
//! hash of the labels and a clone.

use std::{
    hash::Hash,
    sync::{LazyLock, RwLock},
};

// aHash, not SipHash: looked up on every request, with label sets of our own.
use ahash::HashMap;

/// Handles by label set. Only for labels from a bounded set: each one is kept for good.
pub struct Kept<L, H>(LazyLock<RwLock<HashMap<L, H>>>);

impl<L: Eq + Hash, H: Clone> Kept<L, H> {
    pub const fn new() -> Self {
        Self(LazyLock::new(Default::default))
    }

    /// The handle for `labels`: kept, or registered by `register` and kept.
    pub fn get(&self, labels: L, register: impl FnOnce() -> H) -> H {
        if let Some(kept) = self.0.read().ok().and_then(|k| k.get(&labels).cloned()) {
            return kept;
        }
        let made = register();
        if let Ok(mut kept) = self.0.write() {
            kept.insert(labels, made.clone());
        }
        made
    }
}

impl<L: Eq + Hash, H: Clone> Default for Kept<L, H> {
    fn default() -> Self {
        Self::new()
    }
}
