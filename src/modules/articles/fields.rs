//! What an article's fields may hold: limits on titles, descriptions, bodies and tags,
//! and tags normalised as names are.

use crate::{
    error::AppResult,
    validation::{Violations, lookup_name, normalize_name},
};

pub const MAX_TITLE_CHARS: usize = 255;

pub const MAX_DESCRIPTION_CHARS: usize = 1_000;

pub const MAX_TAG_CHARS: usize = 32;

/// `Some` fields must not be blank and must fit; tags are bounded in number
/// (`max_tags`) and length.
pub(super) fn validate_fields(
    max_tags: usize,
    title: Option<&str>,
    description: Option<&str>,
    body: Option<&str>,
    tags: Option<&Vec<String>>,
) -> AppResult<()> {
    let tags = tags.map(Vec::as_slice).unwrap_or_default();
    Violations::new()
        .name("title", title)
        .not_blank_if_set("title", title)
        .max_chars("title", title, MAX_TITLE_CHARS)
        .text("description", description)
        .not_blank_if_set("description", description)
        .max_chars("description", description, MAX_DESCRIPTION_CHARS)
        .text("body", body)
        .not_blank_if_set("body", body)
        .check(
            tags.iter().all(|t| lookup_name(t).is_some()),
            "tagList",
            "must not contain control characters",
        )
        .check(
            tags.len() <= max_tags,
            "tagList",
            &format!("is too long (maximum is {max_tags} tags)"),
        )
        .check(
            tags.iter()
                .all(|t| normalize_name(t).chars().count() <= MAX_TAG_CHARS),
            "tagList",
            &format!("has a tag that is too long (maximum is {MAX_TAG_CHARS} characters)"),
        )
        .finish()
}

/// Normalised as names are (NFC, trimmed), without blanks or duplicates, sorted — which
/// is also the order tag rows are locked in.
pub(super) fn normalize_tags(tags: Vec<String>) -> Vec<String> {
    let unique: std::collections::BTreeSet<String> = tags
        .iter()
        .map(|t| normalize_name(t))
        .filter(|t| !t.is_empty())
        .collect();
    unique.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_trimmed_deduplicated_sorted() {
        let tags = normalize_tags(vec![
            "dragons".into(),
            " training ".into(),
            "dragons".into(),
            "".into(),
        ]);
        assert_eq!(tags, ["dragons", "training"]);
    }

    #[test]
    fn field_limits() {
        let long = "x".repeat(MAX_TITLE_CHARS + 1);
        assert!(validate_fields(10, Some(&long), None, None, None).is_err());
        let many: Vec<String> = (0..=10).map(|i| format!("t{i}")).collect();
        assert!(validate_fields(10, None, None, None, Some(&many)).is_err());
        assert!(validate_fields(11, None, None, None, Some(&many)).is_ok());
        let wide = vec!["x".repeat(MAX_TAG_CHARS + 1)];
        assert!(validate_fields(10, None, None, None, Some(&wide)).is_err());
        assert!(
            validate_fields(
                10,
                Some("ok"),
                Some("ok"),
                Some("ok"),
                Some(&vec!["a".into()])
            )
            .is_ok()
        );
    }
}
