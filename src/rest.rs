//! Helpers shared by the REST adapters.

use axum::extract::{FromRequest, FromRequestParts};
use serde::{Deserialize, Deserializer};

use crate::{error::AppError, validation::Violations};

/// `axum::Json`, but a malformed or oversized body is answered in the RealWorld error shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// A JSON body field that tells absent from explicit `null` (use with `#[serde(default)]`).
/// Absent means "leave it as it is"; `null` clears the nullable fields (bio, image) and is
/// a 422 naming the field everywhere else, so a client bug never reads as "unchanged".
#[derive(Debug, Default)]
pub enum Field<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(deserializer)? {
            Some(value) => Field::Value(value),
            None => Field::Null,
        })
    }
}

impl<T> Field<T> {
    /// A field that may be left out but not set to `null`: absent is `None`, `null` is
    /// recorded as a violation of `name`.
    pub fn non_null(self, name: &'static str, violations: &mut Violations) -> Option<T> {
        match self {
            Field::Absent => None,
            Field::Null => {
                violations.push(name, "can't be null");
                None
            }
            Field::Value(value) => Some(value),
        }
    }

    /// A nullable field: `None` leaves it, `Some(None)` clears it.
    pub fn nullable(self) -> Option<Option<T>> {
        match self {
            Field::Absent => None,
            Field::Null => Some(None),
            Field::Value(value) => Some(Some(value)),
        }
    }
}

/// `axum::extract::Query`, but a malformed query string is a RealWorld 422, naming the
/// parameter, rather than axum's plain-text 400.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);

impl From<axum::extract::rejection::QueryRejection> for AppError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        let detail = rejection.body_text();
        let detail = detail.trim_start_matches("Failed to deserialize query string: ");
        // serde_urlencoded says e.g. "limit: invalid digit found in string".
        match detail.split_once(": ") {
            Some((field, message)) if QUERY_PARAMS.contains(&field) => {
                let field = QUERY_PARAMS
                    .iter()
                    .find(|p| **p == field)
                    .copied()
                    .unwrap_or("query");
                AppError::Validation(vec![(field, format!("is invalid ({message})"))])
            }
            _ => AppError::Validation(vec![("query", detail.to_string())]),
        }
    }
}

/// Query parameters any REST endpoint takes; named in errors about them.
const QUERY_PARAMS: &[&str] = &["tag", "author", "favorited", "limit", "offset"];

/// RealWorld timestamps: RFC 3339, milliseconds, `Z`.
pub fn timestamp(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
