//! What a kept part is rendered to (an answer's encoding of it: JSON, protobuf), made at
//! most once per part and kind of rendering, and held by the part itself. A rendering
//! goes when its part goes, so it is exactly as fresh as the part: nothing of its own to
//! invalidate, and the part's staleness bound is the rendering's.

use std::{
    any::{Any, TypeId},
    sync::{Arc, OnceLock},
};

/// Room for this many kinds of rendering per part (JSON and protobuf today); a further
/// kind is made on every call instead of kept.
const KINDS: usize = 2;

type Held = (TypeId, Arc<dyn Any + Send + Sync>);

#[derive(Default)]
pub struct Renders {
    slots: [OnceLock<Held>; KINDS],
}

impl Renders {
    /// The rendering of kind `R`: kept, or made by `make` and kept. Two callers that miss
    /// at once may both make it; the first kept is the one every later call gets.
    pub fn get_or_make<R: Any + Send + Sync>(&self, make: impl FnOnce() -> R) -> Arc<R> {
        let kind = TypeId::of::<R>();
        if let Some(kept) = self.kept::<R>(kind) {
            return kept;
        }
        let made = Arc::new(make());
        for slot in &self.slots {
            if slot.set((kind, made.clone())).is_ok() {
                break;
            }
            // Filled meanwhile: by this kind (a concurrent miss; ours is as good), or by
            // another, in which case the next slot may still be free.
            if slot.get().is_some_and(|(held, _)| *held == kind) {
                break;
            }
        }
        made
    }

    fn kept<R: Any + Send + Sync>(&self, kind: TypeId) -> Option<Arc<R>> {
        // Slots fill in order, so the first empty one ends the search.
        self.slots
            .iter()
            .map_while(OnceLock::get)
            .find(|(held, _)| *held == kind)
            .and_then(|(_, rendering)| rendering.clone().downcast::<R>().ok())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[derive(Debug, PartialEq)]
    struct Json(&'static str);
    #[derive(Debug, PartialEq)]
    struct Proto(u8);
    #[derive(Debug, PartialEq)]
    struct Third;

    #[test]
    fn each_kind_is_made_once_and_kept() {
        let renders = Renders::default();
        let made = Cell::new(0);
        let make_json = || {
            made.set(made.get() + 1);
            Json("{}")
        };
        let first = renders.get_or_make(make_json);
        let again = renders.get_or_make(|| -> Json { unreachable!("kept") });
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(made.get(), 1);
        assert_eq!(*renders.get_or_make(|| Proto(7)), Proto(7));
        assert_eq!(
            *renders.get_or_make(|| Proto(8)),
            Proto(7),
            "kept, not remade"
        );
        assert_eq!(*renders.get_or_make(|| Json("other")), Json("{}"));
    }

    #[test]
    fn a_kind_beyond_the_room_is_made_every_time() {
        let renders = Renders::default();
        renders.get_or_make(|| Json("{}"));
        renders.get_or_make(|| Proto(1));
        let made = Cell::new(0);
        for _ in 0..3 {
            renders.get_or_make(|| {
                made.set(made.get() + 1);
                Third
            });
        }
        assert_eq!(made.get(), 3);
        assert_eq!(*renders.get_or_make(|| Proto(2)), Proto(1));
    }
}
