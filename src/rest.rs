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

/// RealWorld timestamps: RFC 3339, milliseconds, `Z` (`2026-12-05T21:29:33.811Z`).
/// Written digit by digit: a list answer carries forty, and chrono's general formatter
/// cost a tenth of the request. Years chrono writes otherwise (before 0, after 9999) and
/// leap seconds are left to it.
pub fn timestamp(t: &chrono::DateTime<chrono::Utc>) -> String {
    use chrono::{Datelike, Timelike};
    // Read once: each accessor of a `DateTime` converts it to local time again.
    let (date, time) = (t.date_naive(), t.time());
    let nanos = time.nanosecond();
    let Ok(year @ 0..=9999) = u32::try_from(date.year()) else {
        return t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    };
    if nanos >= 1_000_000_000 {
        return t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    }
    let mut text = *b"0000-00-00T00:00:00.000Z";
    for (at, width, value) in [
        (0, 4, year),
        (5, 2, date.month()),
        (8, 2, date.day()),
        (11, 2, time.hour()),
        (14, 2, time.minute()),
        (17, 2, time.second()),
        (20, 3, nanos / 1_000_000),
    ] {
        let mut value = value;
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    // ASCII digits and separators only.
    std::str::from_utf8(&text).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod timestamp_tests {
    use chrono::{DateTime, TimeZone, Utc};

    use super::timestamp;

    #[test]
    fn written_as_chrono_writes_rfc3339_with_milliseconds() {
        let chrono = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut seconds: i64 = -62_135_596_800; // 0001-01-01
        while seconds < 253_402_300_799 {
            // 9999-12-31T23:59:59
            for nanos in [0, 1_000_000, 999_999_999, 123_456_789, 500_000] {
                let t = Utc.timestamp_opt(seconds, nanos).single().expect("a time");
                assert_eq!(timestamp(&t), chrono(&t), "{seconds} {nanos}");
            }
            seconds += 86_400 * 37 + 3_671;
        }
        let now = Utc::now();
        assert_eq!(timestamp(&now), chrono(&now));
        let far = Utc
            .with_ymd_and_hms(12_000, 1, 1, 0, 0, 0)
            .single()
            .expect("year 12000");
        assert_eq!(timestamp(&far), chrono(&far), "left to chrono");
    }
}
