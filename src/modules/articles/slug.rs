//! Slugs: made from titles (kebab-case, suffixed when taken or reserved) and kept unique
//! against concurrent writers. A slug to look up is a `values::Slug`.

use std::future::Future;

use sea_orm::{ConnectionTrait, SqlErr};

use super::repo;
use crate::error::{AppError, AppResult, Reason};

/// Runs a write that picks a slug until it does not lose that slug to a concurrent writer
/// (the unique index answers `Conflict("slug")`); each attempt is a transaction of its own,
/// since Postgres aborts one that hit a unique violation. `suffixed` from the second on.
pub(super) async fn with_slug_retries<T, W>(mut write: impl FnMut(bool) -> W) -> AppResult<T>
where
    W: Future<Output = AppResult<T>>,
{
    for attempt in 0..SLUG_ATTEMPTS {
        match write(attempt > 0).await {
            Err(AppError::Conflict(Reason::SlugTaken)) => continue,
            outcome => return outcome,
        }
    }
    Err(AppError::Conflict(Reason::SlugTaken))
}

/// Attempts at a unique slug before answering 409: the first is the kebab-case title when
/// free; a concurrent writer taking it sends the next attempt to a suffixed one.
pub(super) const SLUG_ATTEMPTS: usize = 4;

/// Path segments under `/api/articles/` that are routes, not slugs.
pub(super) const RESERVED_SLUGS: &[&str] = &["feed"];

/// A unique-index violation on insert or rename: another writer took the slug.
pub(super) fn slug_taken(e: sea_orm::DbErr) -> AppError {
    if is_unique_violation(&e) {
        AppError::Conflict(Reason::SlugTaken)
    } else if matches!(e, sea_orm::DbErr::RecordNotUpdated) {
        AppError::NotFound(Reason::ArticleNotFound)
    } else {
        e.into()
    }
}

/// The kebab-case title, or with a random suffix when it is taken, reserved, or
/// `force_suffix` is set (a concurrent writer won the plain one).
pub(super) async fn free_slug(
    db: &impl ConnectionTrait,
    title: &str,
    force_suffix: bool,
) -> AppResult<String> {
    let base = slugify(title);
    if !force_suffix
        && !RESERVED_SLUGS.contains(&base.as_str())
        && !repo::slug_taken(db, &base).await?
    {
        return Ok(base);
    }
    for _ in 0..5 {
        let candidate = format!("{base}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        if !repo::slug_taken(db, &candidate).await? {
            return Ok(candidate);
        }
    }
    Err(AppError::Conflict(Reason::SlugTaken))
}

pub(super) fn is_unique_violation(e: &sea_orm::DbErr) -> bool {
    matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

pub fn slugify(title: &str) -> String {
    let mut slug = String::with_capacity(title.len());
    for c in title.trim().chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        "article".to_string()
    } else {
        slug.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_kebab_case() {
        assert_eq!(
            slugify("How to train your dragon"),
            "how-to-train-your-dragon"
        );
        assert_eq!(slugify("  Hello,   World!! "), "hello-world");
        assert_eq!(slugify("Ünïcode Tîtle"), "ünïcode-tîtle");
        assert_eq!(slugify("!!!"), "article");
    }

    #[test]
    fn feed_is_not_a_slug() {
        assert!(RESERVED_SLUGS.contains(&slugify("Feed").as_str()));
    }
}
