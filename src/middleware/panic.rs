//! A panicking handler becomes INTERNAL (gRPC) or 500 (REST) for that one request; the
//! connection, the worker and every other request carry on. The payload is logged, never sent.

use std::any::Any;

use axum::response::Response;

use crate::{context::Protocol, error::AppError};

/// The answer to a request whose handler panicked with `payload`: an internal failure,
/// logged with the request's ids on its way out like any other.
pub fn answer(protocol: Protocol, payload: Box<dyn Any + Send>) -> Response {
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    AppError::Internal(anyhow::anyhow!("handler panicked: {detail}")).into_response_for(protocol)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::{
        Router,
        body::Body,
        http::{Request, StatusCode},
        routing::post,
    };
    use tower::ServiceExt;

    use super::*;
    use crate::{config::ServerSettings, middleware::guard::GuardLayer, operations::Operations};

    fn settings() -> ServerSettings {
        ServerSettings {
            request_timeout: Duration::from_secs(5),
            body_limit_bytes: 1024,
            ..ServerSettings::default()
        }
    }

    fn operations() -> &'static Operations {
        static NONE: std::sync::LazyLock<Operations> =
            std::sync::LazyLock::new(|| Operations::new(std::iter::empty()));
        &NONE
    }

    async fn boom() -> &'static str {
        panic!("secret internals")
    }

    fn app() -> Router {
        Router::new()
            .route("/boom", post(boom))
            .layer(GuardLayer::new(&settings(), operations()))
    }

    async fn call(content_type: &str) -> Response {
        let request = Request::post("/boom")
            .header("content-type", content_type)
            .body(Body::empty())
            .expect("request");
        app().oneshot(request).await.expect("infallible")
    }

    #[tokio::test]
    async fn rest_panic_is_a_500_without_internals() {
        let response = call("application/json").await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("internal error") && !text.contains("secret"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn grpc_panic_is_internal() {
        let response = call("application/grpc").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "13");
        let message = response.headers()["grpc-message"].to_str().expect("ascii");
        assert!(!message.contains("secret"), "{message}");
    }
}
