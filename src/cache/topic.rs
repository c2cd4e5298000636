//! What a write changes, named so that reads can say what they depend on. A topic is a
//! short text key (`article:42`, `favorites:user:7`, `list:tag:rust`): the form the
//! change log stores, hashed into a version stripe by every replica (`versions`).

use std::fmt;

/// A fact a cached part was read from; a write that may change it names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    /// An article's own fields and tags (its document and body).
    Article(i64),
    /// Who favourited an article: its favourite count.
    ArticleFavorites(i64),
    /// What a user favourited: their favourite set, lists filtered by their favourites.
    UserFavorites(i64),
    /// Whom a user follows: their follow set, their feed's authors.
    UserFollows(i64),
    /// A user's profile as authors are shown (username, bio, image).
    User(i64),
    /// Which article a slug names.
    Slug(&'a str),
    /// Which articles exist, newest first.
    ListAll,
    /// Which articles carry a tag.
    ListTag(&'a str),
    /// Which articles an author wrote.
    ListAuthor(i64),
    /// Some article was deleted (lists that hold ids of their own, such as a user's
    /// favourites, may hold it).
    ArticleGone,
    /// The tags in use.
    Tags,
    /// One session's standing (ended, version).
    Session(uuid::Uuid),
    /// Every session of a user (a password change ends the others).
    UserSessions(i64),
}

impl fmt::Display for Topic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Article(id) => write!(f, "article:{id}"),
            Topic::ArticleFavorites(id) => write!(f, "favorites:article:{id}"),
            Topic::UserFavorites(id) => write!(f, "favorites:user:{id}"),
            Topic::UserFollows(id) => write!(f, "follows:user:{id}"),
            Topic::User(id) => write!(f, "user:{id}"),
            Topic::Slug(slug) => write!(f, "slug:{slug}"),
            Topic::ListAll => f.write_str("list:all"),
            Topic::ListTag(tag) => write!(f, "list:tag:{tag}"),
            Topic::ListAuthor(id) => write!(f, "list:author:{id}"),
            Topic::ArticleGone => f.write_str("articles:gone"),
            Topic::Tags => f.write_str("tags"),
            Topic::Session(id) => write!(f, "session:{}", id.simple()),
            Topic::UserSessions(id) => write!(f, "sessions:user:{id}"),
        }
    }
}
