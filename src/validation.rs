//! Field checks shared by every service, worded as RealWorld clients expect
//! (`can't be blank`, `is invalid`), collected so one response lists every bad field; and
//! the text hygiene every string obeys before it reaches a query.
//!
//! Text rules: no string holds a control character (Postgres refuses NUL outright, and
//! SQLite would store it, so `"x\u{0}"` could shadow `"x"`); free text may keep tab, line
//! feed and carriage return, names may not. Names (usernames, emails, tags, slugs) are
//! compared in Unicode NFC with surrounding white space and invisible characters removed,
//! so `é` and `e\u{301}` are one name and a zero-width-only name is blank.

use unicode_normalization::UnicodeNormalization;

use crate::error::{AppError, AppResult, FieldError};

const CONTROL_MESSAGE: &str = "must not contain control characters";

/// Format characters that render as nothing: a name made only of them looks blank.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
    )
}

fn is_blank(value: &str) -> bool {
    value.chars().all(|c| c.is_whitespace() || is_invisible(c))
}

/// Control characters other than tab, line feed and carriage return.
fn has_control(value: &str) -> bool {
    value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

fn has_any_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

/// The canonical form of a name: NFC, without surrounding white space or invisible
/// characters. What is stored and what lookups compare.
pub fn normalize_name(value: &str) -> String {
    value
        .trim_matches(|c: char| c.is_whitespace() || is_invisible(c))
        .nfc()
        .collect()
}

/// A name taken from a path or query for a lookup: `None` when it cannot name anything
/// (it holds a control character), so the caller answers NOT_FOUND without a query.
pub fn lookup_name(value: &str) -> Option<String> {
    (!has_any_control(value)).then(|| normalize_name(value))
}

#[derive(Default)]
pub struct Violations(Vec<FieldError>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn not_blank(mut self, field: &'static str, value: &str) -> Self {
        if is_blank(value) {
            self.0.push((field, "can't be blank".into()));
        }
        self
    }

    /// For optional updates: absent is fine, present must not be blank.
    pub fn not_blank_if_set(self, field: &'static str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.not_blank(field, v),
            None => self,
        }
    }

    /// Rails' wording, which RealWorld clients display as is. Characters, not bytes.
    pub fn min_chars(self, field: &'static str, value: Option<&str>, min: usize) -> Self {
        let ok = value.is_none_or(|v| v.chars().count() >= min);
        self.check(
            ok,
            field,
            &format!("is too short (minimum is {min} characters)"),
        )
    }

    /// Rails' wording, which RealWorld clients display as is.
    pub fn max_chars(self, field: &'static str, value: Option<&str>, max: usize) -> Self {
        let ok = value.is_none_or(|v| v.chars().count() <= max);
        self.check(
            ok,
            field,
            &format!("is too long (maximum is {max} characters)"),
        )
    }

    /// Free text (bodies, descriptions, bios, passwords): no control characters but
    /// tab, line feed and carriage return.
    pub fn text(self, field: &'static str, value: Option<&str>) -> Self {
        self.check(
            value.is_none_or(|v| !has_control(v)),
            field,
            CONTROL_MESSAGE,
        )
    }

    /// Names and other one-line values: no control characters at all.
    pub fn name(self, field: &'static str, value: Option<&str>) -> Self {
        self.check(
            value.is_none_or(|v| !has_any_control(v)),
            field,
            CONTROL_MESSAGE,
        )
    }

    pub fn check(mut self, ok: bool, field: &'static str, message: &str) -> Self {
        if !ok {
            self.push(field, message);
        }
        self
    }

    /// Records a violation; a field keeps only its first one.
    pub fn push(&mut self, field: &'static str, message: &str) {
        if !self.0.iter().any(|(f, _)| *f == field) {
            self.0.push((field, message.into()));
        }
    }

    pub fn finish(self) -> AppResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AppError::Validation(self.0))
        }
    }
}

/// Deliberately loose: one `@` with text on both sides and no whitespace. Deliverability
/// is proven by mail, not by a pattern.
pub fn looks_like_email(value: &str) -> bool {
    let value = value.trim();
    match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !value.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// RealWorld treats an empty bio or image as no bio or image.
pub fn empty_as_none(value: Option<String>) -> Option<String> {
    value.filter(|v| !is_blank(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_violation() {
        let err = Violations::new()
            .not_blank("username", " ")
            .not_blank("email", "")
            .not_blank("password", "x")
            .finish()
            .expect_err("two blank fields");
        match err {
            AppError::Validation(v) => assert_eq!(
                v.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
                ["username", "email"]
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn names_compare_in_nfc_without_invisible_edges() {
        assert_eq!(normalize_name("e\u{301}"), "\u{e9}");
        assert_eq!(normalize_name(" \u{200B}bob\u{FEFF} "), "bob");
        assert_eq!(lookup_name("a\u{0}b"), None);
        assert_eq!(lookup_name("a\tb"), None);
        assert_eq!(lookup_name("Caf\u{e9}").as_deref(), Some("Caf\u{e9}"));
    }

    #[test]
    fn control_characters_and_invisible_blanks() {
        let err = Violations::new()
            .name("username", Some("a\u{0}"))
            .text("body", Some("line\nnext\tcell"))
            .text("bio", Some("bell\u{7}"))
            .not_blank("title", "\u{200B}\u{200D} ")
            .finish()
            .expect_err("three bad fields");
        match err {
            AppError::Validation(v) => assert_eq!(
                v.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
                ["username", "bio", "title"]
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn email_shape() {
        assert!(looks_like_email("jake@jake.jake"));
        assert!(!looks_like_email("jake"));
        assert!(!looks_like_email("@jake"));
        assert!(!looks_like_email("ja ke@jake"));
    }
}
