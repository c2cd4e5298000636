//! Field checks shared by every service, worded as RealWorld clients expect
//! (`can't be blank`, `is invalid`), collected so one response lists every bad field.

use crate::error::{AppError, AppResult, FieldError};

#[derive(Default)]
pub struct Violations(Vec<FieldError>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn not_blank(mut self, field: &'static str, value: &str) -> Self {
        if value.trim().is_empty() {
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

    /// Rails' wording, which RealWorld clients display as is.
    pub fn max_chars(self, field: &'static str, value: Option<&str>, max: usize) -> Self {
        let ok = value.is_none_or(|v| v.chars().count() <= max);
        self.check(
            ok,
            field,
            &format!("is too long (maximum is {max} characters)"),
        )
    }

    pub fn check(mut self, ok: bool, field: &'static str, message: &str) -> Self {
        if !ok && !self.0.iter().any(|(f, _)| *f == field) {
            self.0.push((field, message.into()));
        }
        self
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
    value.filter(|v| !v.trim().is_empty())
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
    fn email_shape() {
        assert!(looks_like_email("jake@jake.jake"));
        assert!(!looks_like_email("jake"));
        assert!(!looks_like_email("@jake"));
        assert!(!looks_like_email("ja ke@jake"));
    }
}
