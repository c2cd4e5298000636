//! Field checks shared by every service, worded as RealWorld clients expect
//! (`can't be blank`, `is invalid`), collected so one response lists every bad field; and
//! the text hygiene every string obeys before it reaches a query.
//!
//! Text rules: no string holds a control character (Postgres refuses NUL outright, and
//! SQLite would store it, so `"x\u{0}"` could shadow `"x"`); free text may keep tab, line
//! feed and carriage return, names may not. Names (usernames, emails, tags, slugs) are
//! compared in Unicode NFC with surrounding white space and invisible characters removed,
//! so `é` and `e\u{301}` are one name and a zero-width-only name is blank.

use unicode_normalization::{UnicodeNormalization, char::is_combining_mark};
use unicode_security::{GeneralSecurityProfile, RestrictionLevel, RestrictionLevelDetection};

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

/// What is wrong with a (normalized) username under the identifier profile, if anything:
/// UTS #39's General Security Profile (letters, digits and `' - . : _ ·` that are
/// `Identifier_Status=Allowed`, so no invisible, bidi-control, symbol or compatibility
/// characters), plus the space RealWorld's own demo names use; it starts with no
/// combining mark and has a letter or digit; and it stays within one script or a common
/// combination of them (Moderately Restrictive), so `kеlvins` with a Cyrillic `е` is
/// refused. Look-alikes of names that exist are refused by the unique skeleton.
pub fn username_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return None;
    }
    if !name.chars().all(|c| c == ' ' || c.identifier_allowed()) {
        return Some("may only contain letters, digits, spaces and ' - . : _");
    }
    if name.chars().next().is_some_and(is_combining_mark)
        || !name.chars().any(char::is_alphanumeric)
    {
        return Some("must start with a letter or digit");
    }
    // The space is outside the identifier profile, which would make any name with one
    // "unrestricted": judge the scripts of the rest.
    let without_spaces: String = name.chars().filter(|c| *c != ' ').collect();
    match without_spaces.detect_restriction_level() {
        RestrictionLevel::MinimallyRestrictive | RestrictionLevel::Unrestricted => {
            Some("mixes scripts that look alike")
        }
        _ => None,
    }
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

    /// A username under the identifier profile (`username_problem`).
    pub fn username(self, field: &'static str, value: Option<&str>) -> Self {
        match value
            .map(normalize_name)
            .as_deref()
            .and_then(username_problem)
        {
            Some(problem) => self.check(false, field, problem),
            None => self,
        }
    }

    /// An `http(s)://` URL, the only kind a browser may safely load as an image.
    pub fn http_url(self, field: &'static str, value: Option<&str>) -> Self {
        let ok = value.is_none_or(|v| {
            let v = v.trim();
            v.is_empty() || is_http_url(v)
        });
        self.check(ok, field, "must be an http:// or https:// URL")
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

    /// The first problem recorded, for parsers that check one value (`values`).
    pub fn first_problem(self) -> Option<String> {
        self.0.into_iter().next().map(|(_, problem)| problem)
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

fn is_http_url(value: &str) -> bool {
    let scheme_end = value.find("://").unwrap_or(0);
    let scheme = &value[..scheme_end];
    let rest = &value[(scheme_end + 3).min(value.len())..];
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
        && !rest.is_empty()
        && !rest.starts_with('/')
        && !value.contains(char::is_whitespace)
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
    fn usernames_follow_the_identifier_profile() {
        for fine in [
            "jake",
            "Jake_99",
            "o'brien",
            "anne-marie.x",
            "Anah Bene\u{161}ov\u{e1}",
            "e\u{301}cole",
            "\u{41c}\u{430}\u{448}\u{430}",
        ] {
            assert_eq!(username_problem(&normalize_name(fine)), None, "{fine:?}");
        }
        for bad in [
            "k\u{435}lvins",
            "\u{ff4b}elvins",
            "\u{3164}",
            "\u{2800}",
            "\u{301}\u{301}",
            "ab\u{202e}cd",
            "a\u{200b}b",
            "a\u{2066}b",
            "jake!",
            "___",
        ] {
            assert!(username_problem(&normalize_name(bad)).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn images_are_http_urls() {
        let ok = |v: &str| {
            Violations::new()
                .http_url("image", Some(v))
                .finish()
                .is_ok()
        };
        assert!(ok("https://example.com/a.png"));
        assert!(ok("HTTP://example.com/a.png"));
        assert!(ok(""));
        for bad in [
            "javascript:alert(1)",
            "data:image/png;base64,AAAA",
            "//example.com/x",
            "https://",
            "ftp://x/y",
            "https:///x",
        ] {
            assert!(!ok(bad), "{bad}");
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
