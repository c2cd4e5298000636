//! Authentication shared by both protocols: the stack's auth layer turns the
//! `authorization` header (REST) or metadata (gRPC) into an [`Auth`] request extension;
//! adapters then ask for a required or optional [`Principal`].

pub mod attempts;
pub mod password;
pub mod token;

use std::sync::Arc;

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{HeaderMap, header::AUTHORIZATION, request::Parts},
    middleware::Next,
    response::Response,
};

pub use token::TokenKeys;

use crate::error::{AppError, Reason};

/// The authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub user_id: i64,
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
    /// A genuine token past its expiry: refused like an invalid one, with its own reason
    /// so clients know to log in again.
    Expired,
}

impl Auth {
    pub fn from_headers(headers: &HeaderMap, keys: &TokenKeys) -> Self {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Auth::Anonymous;
        };
        let token = value.to_str().ok().and_then(|v| {
            v.strip_prefix("Token ")
                .or_else(|| v.strip_prefix("Bearer "))
                .map(str::trim)
        });
        match token.map(|t| keys.verify(t)) {
            Some(Ok(user_id)) => Auth::Authenticated(Principal { user_id }),
            Some(Err(token::Rejected::Expired)) => Auth::Expired,
            Some(Err(token::Rejected::Invalid)) | None => Auth::Invalid,
        }
    }

    pub fn required(self) -> Result<Principal, AppError> {
        match self {
            Auth::Authenticated(p) => Ok(p),
            Auth::Anonymous => Err(AppError::Unauthorized(Reason::TokenMissing)),
            Auth::Invalid => Err(AppError::Unauthorized(Reason::TokenInvalid)),
            Auth::Expired => Err(AppError::Unauthorized(Reason::TokenExpired)),
        }
    }

    pub fn optional(self) -> Result<Option<Principal>, AppError> {
        match self {
            Auth::Authenticated(p) => Ok(Some(p)),
            Auth::Anonymous => Ok(None),
            Auth::Invalid => Err(AppError::Unauthorized(Reason::TokenInvalid)),
            Auth::Expired => Err(AppError::Unauthorized(Reason::TokenExpired)),
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

/// Tower layer body (via `axum::middleware::from_fn_with_state`): resolves the caller once
/// per request for every protocol.
pub async fn resolve(
    State(keys): State<Arc<TokenKeys>>,
    mut request: Request,
    next: Next,
) -> Response {
    let auth = Auth::from_headers(request.headers(), &keys);
    if let Auth::Authenticated(principal) = auth {
        crate::middleware::observe::record_principal(&request, principal.user_id);
    }
    request.extensions_mut().insert(auth);
    next.run(request).await
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
