//! The one domain error of the service layer and its two wire mappings:
//! `tonic::Status` for gRPC and the RealWorld `{"errors": {field: [message]}}` body for REST.

mod answer;
mod connect;
mod grpc;
mod kind;
mod reason;
mod rest;

pub use answer::{AnswerIds, Failure, quote_ids};
pub use connect::connect_error;
pub use grpc::{grpc_error, status};
pub(crate) use kind::internal_message;
pub use kind::{AppError, AppResult, FieldError};
pub use reason::{ERROR_DOMAIN, Reason};
pub use rest::{GenericErrorModel, layer_error};
