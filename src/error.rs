//! The one domain error of the service layer and its two wire mappings:
//! `tonic::Status` for gRPC and the RealWorld `{"errors": {field: [message]}}` body for REST.

use axum::{
    Json,
    extract::rejection::JsonRejection,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use crate::middleware::request_id;

/// A field (or resource) name and what is wrong with it, as RealWorld words it.
pub type FieldError = (&'static str, String);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 422 / INVALID_ARGUMENT with one violation per field.
    #[error("validation failed: {0:?}")]
    Validation(Vec<FieldError>),
    /// 401 / UNAUTHENTICATED. The pair names what failed: `token: is missing`,
    /// `token: invalid`, `credentials: invalid`.
    #[error("unauthenticated: {0} {1}")]
    Unauthorized(&'static str, &'static str),
    /// 403 / PERMISSION_DENIED on the named resource.
    #[error("{0} forbidden")]
    Forbidden(&'static str),
    /// 404 / NOT_FOUND on the named resource.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 409 / ALREADY_EXISTS: the named field must be unique.
    #[error("{0} has already been taken")]
    Conflict(&'static str),
    /// 409 / ABORTED: lost a race with a concurrent request (a deadlock or serialization
    /// failure that bounded retries did not resolve, an idempotency key still in use).
    /// Nothing was written; the same request may simply be retried.
    #[error("{0}: concurrent request, retry")]
    Contention(&'static str),
    /// 413 / RESOURCE_EXHAUSTED.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// 503 / UNAVAILABLE: a dependency is down; retrying later may succeed.
    #[error("{0} unavailable")]
    Unavailable(&'static str),
    /// 500 / INTERNAL. Details are logged, never sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        AppError::Internal(e.into())
    }

    fn http_status(&self) -> StatusCode {
        match self {
            AppError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Unauthorized(..) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) | AppError::Contention(_) => StatusCode::CONFLICT,
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn grpc_code(&self) -> Code {
        match self {
            AppError::Validation(_) => Code::InvalidArgument,
            AppError::Unauthorized(..) => Code::Unauthenticated,
            AppError::Forbidden(_) => Code::PermissionDenied,
            AppError::NotFound(_) => Code::NotFound,
            AppError::Conflict(_) => Code::AlreadyExists,
            AppError::Contention(_) => Code::Aborted,
            AppError::PayloadTooLarge => Code::ResourceExhausted,
            AppError::Unavailable(_) => Code::Unavailable,
            AppError::Internal(_) => Code::Internal,
        }
    }

    /// The `{field: [message]}` pairs both mappings share.
    fn field_errors(&self) -> Vec<(&'static str, String)> {
        match self {
            AppError::Validation(errors) => errors.clone(),
            AppError::Unauthorized(field, message) => vec![(field, (*message).into())],
            AppError::Forbidden(resource) => vec![(resource, "forbidden".into())],
            AppError::NotFound(resource) => vec![(resource, "not found".into())],
            AppError::Conflict(field) => vec![(field, "has already been taken".into())],
            AppError::Contention(what) => {
                vec![(what, "was changed by a concurrent request; retry".into())]
            }
            AppError::PayloadTooLarge => vec![("body", "is too large".into())],
            AppError::Unavailable(what) => vec![(what, "unavailable".into())],
            AppError::Internal(_) => vec![("internal", internal_message())],
        }
    }

    fn log_if_internal(&self) {
        if let AppError::Internal(e) = self {
            // Fields, not only span context, so error tracking receives them too.
            tracing::error!(
                error = format!("{e:#}"),
                request_id = request_id::current(),
                trace_id = crate::telemetry::current_trace_id(),
                "internal error"
            );
        }
    }
}

impl AppError {
    /// The error in the caller's protocol, for layers that answer before any handler.
    pub fn into_response_for(self, protocol: crate::middleware::Protocol) -> Response {
        if protocol.is_grpc() {
            crate::middleware::grpc_error(protocol, self.into())
        } else {
            self.into_response()
        }
    }
}

/// What a client sees of an internal failure: the id to quote, nothing else.
pub(crate) fn internal_message() -> String {
    match request_id::current() {
        Some(id) => format!("internal error (request id {id})"),
        None => "internal error".into(),
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log_if_internal();
        let mut errors = serde_json::Map::new();
        for (field, message) in self.field_errors() {
            let entry = errors.entry(field).or_insert_with(|| json!([]));
            if let Some(list) = entry.as_array_mut() {
                list.push(message.into());
            }
        }
        (self.http_status(), Json(json!({ "errors": errors }))).into_response()
    }
}

impl From<AppError> for tonic::Status {
    fn from(error: AppError) -> Self {
        error.log_if_internal();
        let code = error.grpc_code();
        let violations = error.field_errors();
        let message = match &error {
            AppError::Internal(_) => internal_message(),
            _ => violations
                .iter()
                .map(|(field, message)| format!("{field} {message}"))
                .collect::<Vec<_>>()
                .join("; "),
        };
        match error {
            AppError::Validation(_) => {
                let mut details = ErrorDetails::new();
                for (field, description) in violations {
                    details.add_bad_request_violation(field, description);
                }
                tonic::Status::with_error_details(code, message, details)
            }
            _ => tonic::Status::new(code, message),
        }
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
            // serde's message names the field and the expected type; it carries no internals.
            JsonRejection::JsonDataError(e) => e.body_text().replace(
                "Failed to deserialize the JSON body into the target type: ",
                "",
            ),
            _ => "could not be read".to_string(),
        };
        AppError::Validation(vec![("body", message)])
    }
}

/// Errors from the database layer: an unreachable database is UNAVAILABLE / 503 (retry
/// later, and not a bug to track); anything else is internal unless a caller maps it first.
impl From<sea_orm::DbErr> for AppError {
    fn from(e: sea_orm::DbErr) -> Self {
        if lost_a_race(&e) {
            AppError::Contention("database")
        } else if is_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            AppError::Unavailable("database")
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

/// The RealWorld error body, for the OpenAPI document.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct GenericErrorModel {
    pub errors: std::collections::HashMap<String, Vec<String>>,
}
