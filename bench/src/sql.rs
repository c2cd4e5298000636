//! The hand-written SQL of the minimal peer, which is also what the database-alone
//! ceiling runs: one statement per read, over conduit's schema (Postgres).

use std::sync::LazyLock;

pub const TAGS: &str = "SELECT name FROM tags t WHERE EXISTS \
     (SELECT 1 FROM article_tags at WHERE at.tag_id = t.id) ORDER BY name";

/// The article columns, its author, tags, favorite count, the viewer's flags and the
/// total; `$1` is the viewer (or null).
const ARTICLES: &str = "\
SELECT a.slug, a.title, a.description, a.created_at, a.updated_at,
       u.username, u.bio, u.image,
       COALESCE((SELECT array_agg(t.name ORDER BY t.name) FROM article_tags at
                 JOIN tags t ON t.id = at.tag_id WHERE at.article_id = a.id), '{}') AS tag_list,
       (SELECT count(*) FROM favorites f WHERE f.article_id = a.id) AS favorites_count,
       EXISTS (SELECT 1 FROM favorites f WHERE f.article_id = a.id AND f.user_id = $1) AS favorited,
       EXISTS (SELECT 1 FROM follows fo WHERE fo.followee_id = a.author_id AND fo.follower_id = $1) AS following,
       count(*) OVER () AS total
FROM articles a JOIN users u ON u.id = a.author_id";

/// `$1` viewer, `$2` limit, `$3` offset, `$4` tag (or null).
pub fn list() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{ARTICLES} WHERE ($4::text IS NULL OR a.id IN (SELECT at.article_id FROM article_tags at \
         JOIN tags t ON t.id = at.tag_id WHERE t.name = $4)) \
         ORDER BY a.created_at DESC, a.id DESC LIMIT $2 OFFSET $3"
        )
    });
    &SQL
}

/// `$1` viewer (required), `$2` limit, `$3` offset.
pub fn feed() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{ARTICLES} WHERE a.author_id IN (SELECT followee_id FROM follows WHERE follower_id = $1) \
             ORDER BY a.created_at DESC, a.id DESC LIMIT $2 OFFSET $3"
        )
    });
    &SQL
}

/// `$1` viewer (or null), `$2` slug; with the body.
pub fn article() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{} WHERE a.slug = $2",
            ARTICLES.replace("a.description,", "a.description, a.body,")
        )
    });
    &SQL
}
