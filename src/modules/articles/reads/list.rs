//! A page's articles as handed to the adapters: the page as anyone sees it (kept, shared
//! by every viewer) and the two flags this viewer sees on each article. An adapter either
//! takes the views, or renders the shared page once per kept page (`Shared::renders`) and
//! lays each viewer's flags over the rendering, so a cached page is not re-encoded per
//! request.

use std::sync::Arc;

use super::parts::Shared;
use crate::modules::articles::service::ArticleView;

/// What one viewer sees on an article beyond what anyone sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub favorited: bool,
    pub following: bool,
}

pub struct ArticleList {
    shared: Arc<Shared>,
    flags: Vec<Flags>,
}

impl ArticleList {
    pub(super) fn new(shared: Arc<Shared>, flags: Vec<Flags>) -> Self {
        debug_assert_eq!(shared.views.len(), flags.len());
        Self { shared, flags }
    }

    /// Views that carry their flags (a page read straight from the database, a write's
    /// answer): the flags are taken out, the rest is the page as anyone sees it.
    pub fn from_views(views: Vec<ArticleView>) -> Self {
        let mut shared = Shared::default();
        let mut flags = Vec::with_capacity(views.len());
        for mut view in views {
            flags.push(Flags {
                favorited: std::mem::take(&mut view.favorited),
                following: std::mem::take(&mut view.author.following),
            });
            shared.views.push(view);
        }
        Self::new(Arc::new(shared), flags)
    }

    pub fn len(&self) -> usize {
        self.flags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// The articles as this viewer sees them, each its own copy.
    pub fn into_views(self) -> Vec<ArticleView> {
        self.shared
            .views
            .iter()
            .zip(&self.flags)
            .map(|(view, flags)| {
                let mut view = view.clone();
                view.favorited = flags.favorited;
                view.author.following = flags.following;
                view
            })
            .collect()
    }

    /// The page as `render` renders it as anyone sees it (every flag false), made once
    /// per kept page and type of rendering, with this viewer's flags to lay over it.
    pub fn render<R: Send + Sync + 'static>(
        self,
        render: impl FnOnce(&[ArticleView]) -> R,
    ) -> Rendered<R> {
        let page = self
            .shared
            .renders
            .get_or_make(|| render(&self.shared.views));
        Rendered {
            page,
            flags: self.flags,
        }
    }
}

/// A rendered page and the flags of its articles, in order.
pub struct Rendered<R> {
    pub page: Arc<R>,
    pub flags: Vec<Flags>,
}

impl<R> Rendered<R> {
    /// This viewer sees no flag set (anyone signed out, most who are signed in): the
    /// page as anyone sees it is the answer, if the rendering keeps it.
    pub fn seen_as_anyone(&self) -> bool {
        self.flags.iter().all(|&flags| flags == Flags::default())
    }
}
