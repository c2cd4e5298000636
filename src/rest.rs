//! Helpers shared by the REST adapters.

use axum::extract::FromRequest;
use serde::{Deserialize, Deserializer};

use crate::error::AppError;

/// `axum::Json`, but a malformed or oversized body is answered in the RealWorld error shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`); use with
/// `#[serde(default, deserialize_with = "double_option")]`.
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
