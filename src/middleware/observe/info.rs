//! What layers deeper in the stack (auth, routing, the gRPC-Web translation, the request
//! body) tell the observing layer about a request while it runs.

use std::sync::{Arc, OnceLock};

use axum::{
    extract::MatchedPath,
    http::{HeaderMap, Uri},
};

use super::labels::grpc_code;

/// Filled by layers deeper in the stack (auth, routing) so the outer layer can report them.
#[derive(Default)]
pub(super) struct RequestInfo {
    pub(super) principal: OnceLock<i64>,
    pub(super) route: OnceLock<MatchedPath>,
    /// `package.Service/Method` (the request path after any base-path rewrite), recorded
    /// when a registered gRPC service matched.
    pub(super) grpc_method: OnceLock<Uri>,
    /// Set from inside the gRPC-Web translation, where the gRPC trailers still exist
    /// (tonic-web folds them into the body before they reach this layer).
    pub(super) grpc_code: OnceLock<i32>,
    /// Reading the request body failed because the client went away (connection closed
    /// or stream reset mid-body): whatever the handler then answered, the outcome is the
    /// client's cancellation.
    pub(super) client_gone: OnceLock<()>,
}

#[derive(Clone, Default)]
pub(super) struct InfoSlot(pub(super) Arc<RequestInfo>);

pub fn record_principal<B>(request: &http::Request<B>, user_id: i64) {
    if let Some(slot) = request.extensions().get::<InfoSlot>() {
        let _ = slot.0.principal.set(user_id);
    }
}

/// Where the request body reports that its client went away.
#[derive(Clone)]
pub struct ClientGone(InfoSlot);

impl ClientGone {
    pub fn of<B>(request: &http::Request<B>) -> Option<ClientGone> {
        request
            .extensions()
            .get::<InfoSlot>()
            .cloned()
            .map(ClientGone)
    }

    pub fn mark(&self) {
        let _ = self.0.0.client_gone.set(());
    }
}

/// Where a layer inside a translation (gRPC-Web, Connect) reports the call's gRPC status.
#[derive(Clone)]
pub struct GrpcOutcome(InfoSlot);

impl GrpcOutcome {
    pub fn of<B>(request: &http::Request<B>) -> Option<GrpcOutcome> {
        request
            .extensions()
            .get::<InfoSlot>()
            .cloned()
            .map(GrpcOutcome)
    }

    /// The call's method (`/package.Service/Method`, one the descriptors hold), for a
    /// translation that refuses a call before the router can name it.
    pub fn record_method(&self, method: &Uri) {
        let _ = self.0.0.grpc_method.set(method.clone());
    }

    pub fn record_headers(&self, headers: &HeaderMap) {
        if let Some(code) = grpc_code(headers) {
            let _ = self.0.0.grpc_code.set(code);
        }
    }
}
