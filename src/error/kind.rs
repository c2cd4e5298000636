//! The one domain error of the service layer, and what the errors of the layers under it
//! (the database, axum's body extractors) become.

use axum::{extract::rejection::JsonRejection, http::StatusCode};
use tonic::Code;

use super::{Reason, answer::Failure};

/// A field (or resource) name and what is wrong with it, as RealWorld words it.
pub type FieldError = (&'static str, String);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 422 / INVALID_ARGUMENT with one violation per field.
    #[error("validation failed: {0:?}")]
    Validation(Vec<FieldError>),
    /// 422 / INVALID_ARGUMENT for a cause clients branch on (e.g. `CANNOT_FOLLOW_SELF`),
    /// with the field it concerns and what is wrong with it.
    #[error("{0:?}: {1}")]
    Invalid(Reason, String),
    /// 401 / UNAUTHENTICATED: `TokenMissing`, `TokenInvalid`, `TokenExpired` or
    /// `InvalidCredentials`.
    #[error("unauthenticated: {0:?}")]
    Unauthorized(Reason),
    /// 403 / PERMISSION_DENIED on the named resource (only its author may change it).
    #[error("{0} forbidden")]
    Forbidden(&'static str),
    /// 409 / FAILED_PRECONDITION: the account is not in the state this operation needs
    /// (`TotpAlreadyEnabled`, `TotpNotPending`, `TotpNotEnabled`).
    #[error("precondition failed: {0:?}")]
    Precondition(Reason),
    /// 404 / NOT_FOUND: `ArticleNotFound`, `CommentNotFound`, `ProfileNotFound`.
    #[error("not found: {0:?}")]
    NotFound(Reason),
    /// 409 / ALREADY_EXISTS: `EmailTaken`, `UsernameTaken`, `SlugTaken`.
    #[error("already taken: {0:?}")]
    Conflict(Reason),
    /// 409 / ABORTED: lost a race with a concurrent request (a deadlock or serialization
    /// failure that bounded retries did not resolve, an idempotency key still in use).
    /// Nothing was written; the same request may simply be retried.
    #[error("concurrent request, retry: {0:?}")]
    Contention(Reason),
    /// 413 / RESOURCE_EXHAUSTED.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// 503 / UNAVAILABLE: a dependency is down; retrying later may succeed.
    #[error("unavailable: {0:?}")]
    Unavailable(Reason),
    /// 429 with `Retry-After` / RESOURCE_EXHAUSTED with `RetryInfo`: try again after this.
    #[error("rate limited for {0:?}")]
    RateLimited(std::time::Duration),
    /// 429 / RESOURCE_EXHAUSTED: the caller holds all it may of something
    /// (`IdempotencyKeyQuota`); waiting for some to expire helps, retrying at once does not.
    #[error("quota exhausted: {0:?}")]
    Exhausted(Reason),
    /// 500 / INTERNAL. Details are logged, never sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        AppError::Internal(e.into())
    }

    pub(super) fn http_status(&self) -> StatusCode {
        match self {
            AppError::Validation(_) | AppError::Invalid(..) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Unauthorized(..) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) | AppError::Contention(_) | AppError::Precondition(_) => {
                StatusCode::CONFLICT
            }
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::RateLimited(_) | AppError::Exhausted(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(super) fn grpc_code(&self) -> Code {
        match self {
            AppError::Validation(_) | AppError::Invalid(..) => Code::InvalidArgument,
            AppError::Unauthorized(..) => Code::Unauthenticated,
            AppError::Forbidden(_) => Code::PermissionDenied,
            AppError::NotFound(_) => Code::NotFound,
            AppError::Conflict(_) => Code::AlreadyExists,
            AppError::Contention(_) => Code::Aborted,
            AppError::Precondition(_) => Code::FailedPrecondition,
            AppError::PayloadTooLarge => Code::ResourceExhausted,
            AppError::Unavailable(_) => Code::Unavailable,
            AppError::RateLimited(_) | AppError::Exhausted(_) => Code::ResourceExhausted,
            AppError::Internal(_) => Code::Internal,
        }
    }

    pub fn reason(&self) -> Reason {
        match self {
            AppError::Validation(_) => Reason::ValidationFailed,
            AppError::Forbidden(_) => Reason::NotAuthor,
            AppError::PayloadTooLarge => Reason::RequestTooLarge,
            AppError::RateLimited(_) => Reason::RateLimited,
            AppError::Internal(_) => Reason::Internal,
            AppError::Invalid(reason, _)
            | AppError::Unauthorized(reason)
            | AppError::NotFound(reason)
            | AppError::Conflict(reason)
            | AppError::Contention(reason)
            | AppError::Precondition(reason)
            | AppError::Exhausted(reason)
            | AppError::Unavailable(reason) => *reason,
        }
    }

    /// The `{field: [message]}` pairs both mappings share.
    pub(super) fn field_errors(&self) -> Vec<(&'static str, String)> {
        let subject = self.reason().subject();
        let message = match self {
            AppError::Validation(errors) => return errors.clone(),
            AppError::Invalid(_, message) => message.clone(),
            AppError::Unauthorized(Reason::TokenMissing) => "is missing".into(),
            AppError::Unauthorized(Reason::TokenExpired) => "has expired".into(),
            AppError::Unauthorized(Reason::TokenRevoked) => "has been revoked".into(),
            AppError::Unauthorized(Reason::RefreshTokenReused) => {
                "was already used; the session has been ended".into()
            }
            AppError::Unauthorized(Reason::OtpRequired) => "is required".into(),
            AppError::Unauthorized(Reason::OtpInvalid) => "is invalid".into(),
            AppError::Unauthorized(Reason::ReauthenticationRequired) => {
                "needs a recent login to change credentials; log in again".into()
            }
            AppError::Precondition(Reason::TotpAlreadyEnabled) => "is already enabled".into(),
            AppError::Precondition(Reason::TotpNotPending) => {
                "has no enrollment awaiting confirmation".into()
            }
            AppError::Precondition(_) => "is not enabled".into(),
            AppError::Unauthorized(_) => "invalid".into(),
            AppError::Forbidden(resource) => return vec![(resource, "forbidden".into())],
            AppError::NotFound(_) => "not found".into(),
            AppError::Conflict(_) => "has already been taken".into(),
            AppError::Contention(_) => "was changed by a concurrent request; retry".into(),
            AppError::PayloadTooLarge => "is too large".into(),
            AppError::Unavailable(_) => "unavailable".into(),
            AppError::Exhausted(Reason::IdempotencyKeyQuota) => {
                "too many keys in use; reuse one, or wait for older ones to expire".into()
            }
            AppError::Exhausted(_) => "quota exhausted".into(),
            AppError::RateLimited(wait) => {
                format!("too many attempts; retry in {} s", retry_after_secs(*wait))
            }
            AppError::Internal(_) => return vec![("internal", internal_message(None))],
        };
        vec![(subject, message)]
    }

    /// For an internal failure, what the log needs of it (the answer never shows it):
    /// carried out with the answer to the layer that knows the request's ids.
    pub(super) fn failure(&self) -> Option<Failure> {
        match self {
            AppError::Internal(e) => Some(Failure::new(format!("{e:#}"))),
            _ => None,
        }
    }
}

/// Whole seconds to wait, rounded up (`Retry-After` has no fractions).
pub(super) fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// What a client sees of an internal failure: the id to quote, nothing else.
pub(crate) fn internal_message(request_id: Option<&str>) -> String {
    match request_id {
        Some(id) => format!("internal error (request id {id})"),
        None => "internal error".into(),
    }
}

/// Body problems in REST requests become RealWorld errors rather than axum's plain text.
impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return AppError::PayloadTooLarge;
        }
        let message = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                "must be sent as application/json".to_string()
            }
            JsonRejection::JsonSyntaxError(_) => "is not valid JSON".to_string(),
            // serde's message names the field and the expected type; the value it quotes
            // is removed, since the field may be a password or a token.
            JsonRejection::JsonDataError(e) => without_values(&e.body_text().replace(
                "Failed to deserialize the JSON body into the target type: ",
                "",
            )),
            _ => "could not be read".to_string(),
        };
        AppError::Validation(vec![("body", message)])
    }
}

/// serde's `invalid type: integer `12345`, expected …` without the value it quotes
/// (`invalid type: integer, expected …`): what was sent for a secret field is never
/// echoed.
fn without_values(message: &str) -> String {
    for marker in ["invalid type: ", "invalid value: "] {
        let Some(start) = message.find(marker) else {
            continue;
        };
        let after = start + marker.len();
        let Some(length) = message[after..].find(", expected") else {
            continue;
        };
        let kind = message[after..after + length]
            .split(['`', '"', '\''])
            .next()
            .unwrap_or_default()
            .trim_end();
        return format!("{}{kind}{}", &message[..after], &message[after + length..]);
    }
    message.to_string()
}

/// Errors from the database layer: an unreachable database is UNAVAILABLE / 503 (retry
/// later, and not a bug to track); anything else is internal unless a caller maps it first.
impl From<sea_orm::DbErr> for AppError {
    fn from(e: sea_orm::DbErr) -> Self {
        if lost_a_race(&e) {
            AppError::Contention(Reason::ConcurrentModification)
        } else if is_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            AppError::Unavailable(Reason::DatabaseUnavailable)
        } else {
            AppError::Internal(e.into())
        }
    }
}

/// Postgres chose this transaction as a deadlock victim (40P01) or could not serialize it
/// (40001): nothing it did was kept, and running it again can succeed.
fn lost_a_race(e: &sea_orm::DbErr) -> bool {
    use sea_orm::{DbErr, RuntimeErr, sqlx::Error as Sqlx};
    match e {
        DbErr::Query(RuntimeErr::SqlxError(e)) | DbErr::Exec(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                Sqlx::Database(db) => {
                    matches!(db.code().as_deref(), Some("40P01") | Some("40001"))
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// The database could not serve the statement (unreachable, restarting, connection lost
/// mid-query, SQLite locked past its busy timeout), as opposed to a statement that failed.
fn is_unavailable(e: &sea_orm::DbErr) -> bool {
    use sea_orm::{DbErr, RuntimeErr, sqlx::Error as Sqlx};
    let sqlx = match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => return true,
        DbErr::Query(RuntimeErr::SqlxError(e)) | DbErr::Exec(RuntimeErr::SqlxError(e)) => e,
        _ => return false,
    };
    match sqlx.as_ref() {
        Sqlx::Io(_)
        | Sqlx::Protocol(_)
        | Sqlx::PoolTimedOut
        | Sqlx::PoolClosed
        | Sqlx::WorkerCrashed => true,
        Sqlx::Database(db) => {
            // Postgres: 08xxx connection exceptions, 57P0x shutdown/restart;
            // SQLite: 5 (BUSY) and its extended codes, 6 (LOCKED).
            let code = db.code().unwrap_or_default();
            code.starts_with("08")
                || code.starts_with("57P")
                || matches!(code.as_ref(), "5" | "6" | "261" | "517" | "773")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::without_values;

    #[test]
    fn serde_messages_lose_the_values_they_quote() {
        assert_eq!(
            without_values(
                "user.password: invalid type: integer `12345678`, expected a string at line 1 column 9"
            ),
            "user.password: invalid type: integer, expected a string at line 1 column 9"
        );
        assert_eq!(
            without_values("limit: invalid type: string \"hunter2\", expected i64"),
            "limit: invalid type: string, expected i64"
        );
        assert_eq!(
            without_values("missing field `user`"),
            "missing field `user`"
        );
    }
}
