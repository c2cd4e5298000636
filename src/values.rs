//! Values parsed once, where input enters the domain, so what follows takes values that
//! are already valid instead of checking strings again (parse, don't validate): a
//! [`Username`] or an [`Email`] is in its stored form, a [`Password`] within its bounds,
//! a [`Slug`] or a [`ProfileName`] one that could name an article or a user. Each parser
//! gives the field's first problem in the words RealWorld clients show;
//! [`Violations::take`] files it under the field, so a request still hears about every
//! field at once.

use crate::{
    error::{AppError, AppResult, Reason},
    validation::{Violations, looks_like_email, lookup_name, normalize_name},
};

pub const MAX_USERNAME_CHARS: usize = 64;
pub const MAX_EMAIL_CHARS: usize = 254;
/// NIST SP 800-63B §5.1.1.2: at least 8 characters, no composition rules, any Unicode
/// (counted in characters).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Bounds the hashing work a request can ask for (NIST asks for at least 64).
pub const MAX_PASSWORD_CHARS: usize = 256;

/// The stored form, for the repositories and the answers.
macro_rules! stored_form {
    ($($value:ident),*) => {$(
        impl $value {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }
    )*};
}

stored_form!(Username, Email, Slug, ProfileName);

/// The field name the parsers check under; `Violations::take` files the problem under
/// the real one.
const FIELD: &str = "value";

fn first_problem(checked: Violations) -> Result<(), String> {
    match checked.first_problem() {
        Some(problem) => Err(problem),
        None => Ok(()),
    }
}

/// A username as stored and compared: NFC, trimmed, 1 to 64 characters, within the
/// identifier profile (`validation::username_problem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, String> {
        first_problem(
            Violations::new()
                .name(FIELD, Some(raw))
                .not_blank(FIELD, raw)
                .max_chars(FIELD, Some(raw), MAX_USERNAME_CHARS)
                .username(FIELD, Some(raw)),
        )?;
        Ok(Self(normalize_name(raw)))
    }
}

/// An email as stored: NFC, trimmed, at most 254 characters, shaped like an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// An address to store (registration, a change).
    pub fn parse(raw: &str) -> Result<Self, String> {
        first_problem(
            Violations::new()
                .name(FIELD, Some(raw))
                .not_blank(FIELD, raw)
                .max_chars(FIELD, Some(raw), MAX_EMAIL_CHARS)
                .check(looks_like_email(raw), FIELD, "is invalid"),
        )?;
        Ok(Self(normalize_name(raw)))
    }

    /// An address presented to log in: only what a lookup needs (anything else simply
    /// matches no account, as a wrong address does).
    pub fn presented(raw: &str) -> Result<Self, String> {
        first_problem(
            Violations::new()
                .name(FIELD, Some(raw))
                .not_blank(FIELD, raw),
        )?;
        Ok(Self(normalize_name(raw)))
    }
}

/// A password: free text (no control characters but tab and line breaks), as typed.
pub struct Password(String);

impl Password {
    /// A password to set: 8 to 256 characters.
    pub fn parse(raw: String) -> Result<Self, String> {
        first_problem(
            Violations::new()
                .text(FIELD, Some(&raw))
                .not_blank(FIELD, &raw)
                .min_chars(FIELD, Some(&raw), MIN_PASSWORD_CHARS)
                .max_chars(FIELD, Some(&raw), MAX_PASSWORD_CHARS),
        )?;
        Ok(Self(raw))
    }

    /// A password presented to log in: checked against the stored hash, whatever its
    /// length (a short one is a wrong one, 401, not a malformed request).
    pub fn presented(raw: String) -> Result<Self, String> {
        first_problem(
            Violations::new()
                .text(FIELD, Some(&raw))
                .not_blank(FIELD, &raw),
        )?;
        Ok(Self(raw))
    }

    /// The secret itself, for hashing or verifying.
    pub fn expose(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(…)")
    }
}

/// A slug from a path or a request, as looked up: one that cannot name an article
/// (a control character) is NOT_FOUND without a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    pub fn lookup(raw: &str) -> AppResult<Self> {
        lookup_name(raw)
            .map(Self)
            .ok_or(AppError::NotFound(Reason::ArticleNotFound))
    }
}

/// A username from a path, as looked up: names stored before today's rules still match,
/// so only what cannot name anyone (a control character) is NOT_FOUND without a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileName(String);

impl ProfileName {
    pub fn lookup(raw: &str) -> AppResult<Self> {
        lookup_name(raw)
            .map(Self)
            .ok_or(AppError::NotFound(Reason::ProfileNotFound))
    }
}

impl Violations {
    /// A parsed value, or `None` with its problem filed under `field`.
    pub fn take<T>(&mut self, field: &'static str, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(problem) => {
                self.push(field, &problem);
                None
            }
        }
    }

    /// What was parsed, once every field has been heard: the request's violations if any
    /// (and `parsed` is then missing something), else the values.
    pub fn finish_with<T>(self, parsed: Option<T>) -> AppResult<T> {
        self.finish()?;
        // Each missing value filed a violation, so this is never reached; refusing is
        // the safe answer if it were.
        parsed.ok_or_else(|| AppError::Validation(vec![("request", "is invalid".into())]))
    }

    /// A value that is optional in the request (an update): absent stays absent.
    pub fn take_if_set<T>(
        &mut self,
        field: &'static str,
        raw: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<Option<T>> {
        match raw {
            None => Some(None),
            Some(raw) => self.take(field, parse(raw)).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_values_are_in_their_stored_form() {
        assert_eq!(
            Username::parse("  e\u{301}mile ").map(Username::into_inner),
            Ok("\u{e9}mile".into())
        );
        assert_eq!(
            Username::parse(" ").err().as_deref(),
            Some("can't be blank")
        );
        assert!(Username::parse("kеlvins").is_err(), "mixed scripts");
        assert_eq!(
            Email::parse("jake@example.com ").map(Email::into_inner),
            Ok("jake@example.com".into())
        );
        assert_eq!(Email::parse("jake").err().as_deref(), Some("is invalid"));
        assert!(Email::presented("jake").is_ok(), "a login only looks it up");
        assert_eq!(
            Password::parse("short".into()).err().as_deref(),
            Some("is too short (minimum is 8 characters)")
        );
        assert!(Password::presented("short".into()).is_ok());
        assert!(Slug::lookup("how-to\u{7}").is_err());
        assert_eq!(
            format!("{:?}", Password::presented("secret".into())),
            "Ok(Password(…))"
        );
    }

    #[test]
    fn every_field_is_heard_at_once() {
        let mut violations = Violations::new();
        let username = violations.take("username", Username::parse(""));
        let email = violations.take("email", Email::parse("x"));
        let password = violations.take("password", Password::parse("p".into()));
        assert!(username.is_none() && email.is_none() && password.is_none());
        let Err(AppError::Validation(fields)) = violations.finish() else {
            panic!("three problems");
        };
        let fields: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["username", "email", "password"]);
    }
}
