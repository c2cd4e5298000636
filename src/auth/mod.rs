//! Authentication shared by both protocols: the stack's auth layer
//! (`middleware::authenticate`) turns the `authorization` header (REST) or metadata (gRPC)
//! into an [`Auth`] request extension; adapters then ask for a required or optional
//! [`Principal`].

pub mod attempts;
pub mod otp;
pub mod password;
pub mod sessions;
pub mod token;

use std::sync::Arc;

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, header::AUTHORIZATION, request::Parts},
};

pub use token::TokenKeys;

use crate::{
    db::Store,
    error::{AppError, Reason},
};

/// The authenticated caller, and the session its token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub user_id: i64,
    pub session_id: uuid::Uuid,
    pub session_version: i32,
    /// The session's absolute end: tokens issued in it expire then at the latest.
    pub session_ends: chrono::DateTime<chrono::Utc>,
}

/// What the auth layer concluded about a request.
#[derive(Debug, Clone, Copy, Default)]
pub enum Auth {
    #[default]
    Anonymous,
    Authenticated(Principal),
    /// A credential was sent but is malformed or forged. Even endpoints with optional
    /// authentication refuse it, so a client learns its token went bad.
    Invalid,
    /// A genuine token past its expiry (or its session's): refused like an invalid one,
    /// with its own reason so clients know to refresh or log in again.
    Expired,
    /// A genuine token whose session has ended (logout, revocation, password change).
    Revoked,
    /// The session could not be checked (database unavailable).
    Unverified,
}

impl Auth {
    /// Reads the `authorization` header (`Token <jwt>`, or `Bearer <jwt>`; the scheme in
    /// any case, RFC 9110 §11.1) and checks the token and then its session.
    pub async fn from_headers(headers: &HeaderMap, authenticator: &Authenticator) -> Self {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Auth::Anonymous;
        };
        let token = value.to_str().ok().and_then(credentials);
        let verified = match token.map(|t| authenticator.keys.verify(t)) {
            Some(Ok(verified)) => verified,
            Some(Err(token::Rejected::Expired)) => return Auth::Expired,
            Some(Err(token::Rejected::Invalid)) | None => return Auth::Invalid,
        };
        let standing = sessions::standing(
            &authenticator.store,
            &authenticator.sessions,
            &authenticator.policy,
            verified,
        );
        match standing.await {
            Ok(Ok(session_ends)) => Auth::Authenticated(Principal {
                user_id: verified.user_id,
                session_id: verified.session_id,
                session_version: verified.session_version,
                session_ends,
            }),
            Ok(Err(sessions::Refused::Expired)) => Auth::Expired,
            Ok(Err(sessions::Refused::Ended)) => Auth::Revoked,
            Err(_) => Auth::Unverified,
        }
    }

    pub fn required(self) -> Result<Principal, AppError> {
        match self.optional()? {
            Some(p) => Ok(p),
            None => Err(AppError::Unauthorized(Reason::TokenMissing)),
        }
    }

    pub fn optional(self) -> Result<Option<Principal>, AppError> {
        match self {
            Auth::Authenticated(p) => Ok(Some(p)),
            Auth::Anonymous => Ok(None),
            Auth::Invalid => Err(AppError::Unauthorized(Reason::TokenInvalid)),
            Auth::Expired => Err(AppError::Unauthorized(Reason::TokenExpired)),
            Auth::Revoked => Err(AppError::Unauthorized(Reason::TokenRevoked)),
            Auth::Unverified => Err(AppError::Unavailable(Reason::DatabaseUnavailable)),
        }
    }

    /// For gRPC adapters: tonic carries the HTTP request's extensions over.
    pub fn of<T>(request: &tonic::Request<T>) -> Auth {
        request
            .extensions()
            .get::<Auth>()
            .copied()
            .unwrap_or_default()
    }
}

/// The token of an `authorization` value: `Token <jwt>` or `Bearer <jwt>`, the scheme
/// matched without regard to case.
fn credentials(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    let known = scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer");
    known.then(|| token.trim()).filter(|t| !t.is_empty())
}

/// What the auth layer checks credentials with.
pub struct Authenticator {
    pub keys: Arc<TokenKeys>,
    pub store: Store,
    pub sessions: sessions::SessionCache,
    pub policy: Arc<sessions::SessionPolicy>,
}

fn auth_of(parts: &Parts) -> Auth {
    parts.extensions.get::<Auth>().copied().unwrap_or_default()
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        auth_of(parts).required()
    }
}

/// REST extractor for endpoints where authentication is optional.
pub struct MaybePrincipal(pub Option<Principal>);

impl<S: Send + Sync> FromRequestParts<S> for MaybePrincipal {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        auth_of(parts).optional().map(MaybePrincipal)
    }
}

#[cfg(test)]
mod tests {
    use super::credentials;

    #[test]
    fn the_scheme_is_matched_in_any_case() {
        for value in [
            "Token abc",
            "token abc",
            "TOKEN abc",
            "Bearer abc",
            "bearer  abc ",
        ] {
            assert_eq!(credentials(value), Some("abc"), "{value:?}");
        }
        for value in ["Basic abc", "Tokenabc", "Token ", "abc", ""] {
            assert_eq!(credentials(value), None, "{value:?}");
        }
    }
}
