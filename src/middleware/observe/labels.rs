//! Metric label values and instruments without per-request allocation: every value is
//! from a bounded set (route templates, registered methods, status codes, code names), so
//! each is interned once for the life of the process, and the counter and histogram of
//! each label set are registered once and reused. Also the gRPC code read off a response
//! and its canonical name.

use axum::http::{HeaderMap, HeaderName};

use std::sync::{LazyLock, RwLock};

use ahash::{HashMap, HashSet};
use metrics::{Counter, Histogram};

use super::{DURATION, REQUESTS};
use crate::metrics::handles::Kept;

type Labels = (&'static str, &'static str, &'static str);

static STRINGS: LazyLock<RwLock<HashSet<&'static str>>> = LazyLock::new(Default::default);
static OPERATIONS: LazyLock<RwLock<HashMap<&'static str, HashMap<String, &'static str>>>> =
    LazyLock::new(Default::default);
static INSTRUMENTS: Kept<Labels, (Counter, Histogram)> = Kept::new();

/// Only call with values from a bounded set: each distinct one lives forever.
pub fn intern(value: &str) -> &'static str {
    if let Some(found) = STRINGS.read().ok().and_then(|s| s.get(value).copied()) {
        return found;
    }
    let Ok(mut strings) = STRINGS.write() else {
        return "unknown";
    };
    if let Some(found) = strings.get(value) {
        return found;
    }
    let leaked: &'static str = Box::leak(value.into());
    strings.insert(leaked);
    leaked
}

/// `"{method} {route}"`, interned.
pub fn operation(method: &'static str, route: &str) -> &'static str {
    let found = OPERATIONS
        .read()
        .ok()
        .and_then(|o| o.get(method).and_then(|routes| routes.get(route).copied()));
    if let Some(found) = found {
        return found;
    }
    let label = intern(&format!("{method} {route}"));
    if let Ok(mut operations) = OPERATIONS.write() {
        operations
            .entry(method)
            .or_default()
            .insert(route.to_string(), label);
    }
    label
}

pub fn status(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        _ => intern(&status.to_string()),
    }
}

pub fn instruments(
    protocol: &'static str,
    operation: &'static str,
    outcome: &'static str,
) -> (Counter, Histogram) {
    INSTRUMENTS.get((protocol, operation, outcome), || {
        let set = [
            ("protocol", protocol),
            ("operation", operation),
            ("outcome", outcome),
        ];
        (
            metrics::counter!(REQUESTS, &set),
            metrics::histogram!(DURATION, &set),
        )
    })
}

/// A `HeaderName` rather than a `&str`, which each lookup would parse first.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

pub(super) fn grpc_code(headers: &HeaderMap) -> Option<i32> {
    headers.get(GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

/// The canonical gRPC code name (`NOT_FOUND`), as grpc-go and the OpenTelemetry
/// conventions spell it.
pub(super) fn grpc_code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// Server-side failures by the OpenTelemetry RPC and HTTP conventions (a 4xx or a
/// NOT_FOUND is the caller's problem, not an error of this span).
pub(super) fn is_server_error(status: u16, grpc_code: Option<i32>) -> bool {
    match grpc_code {
        Some(code) => matches!(code, 2 | 4 | 12 | 13 | 14 | 15),
        None => status >= 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_code_names() {
        assert_eq!(grpc_code_name(0), "OK");
        assert_eq!(grpc_code_name(5), "NOT_FOUND");
        assert_eq!(grpc_code_name(16), "UNAUTHENTICATED");
        assert_eq!(grpc_code_name(99), "UNKNOWN");
        assert_eq!(grpc_code_name(-1), "UNKNOWN");
    }

    #[test]
    fn server_errors_by_convention() {
        assert!(is_server_error(500, None));
        assert!(!is_server_error(404, None));
        assert!(is_server_error(200, Some(13)));
        assert!(!is_server_error(200, Some(5)), "NOT_FOUND is the caller's");
    }
}
