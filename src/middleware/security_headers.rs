//! Browser-facing hardening on every REST answer (JSON, docs, probes, errors): no MIME
//! sniffing, no referrer leaking paths with slugs or usernames to other sites, never
//! framed (clickjacking), and HSTS when `server.hsts` says the deployment is HTTPS-only.
//! gRPC and gRPC-Web answers are left alone: they are not rendered by browsers, and extra
//! headers would only become metadata.

use axum::{
    http::{
        HeaderValue,
        header::{
            CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY,
            X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
        },
    },
    response::Response,
};

pub fn add(mut response: Response, hsts: Option<&HeaderValue>) -> Response {
    let grpc = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return response;
    }
    let headers = response.headers_mut();
    // One growth of the map for all of them, not one per insert that crosses a bound.
    headers.reserve(5);
    let fixed = [
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (REFERRER_POLICY, "no-referrer"),
        (X_FRAME_OPTIONS, "DENY"),
        (CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
    ];
    for (name, value) in fixed {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    if let Some(hsts) = hsts {
        headers
            .entry(STRICT_TRANSPORT_SECURITY)
            .or_insert(hsts.clone());
    }
    response
}
