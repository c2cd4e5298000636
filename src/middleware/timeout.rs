//! Request deadline: the configured timeout, or the caller's `grpc-timeout` (Connect:
//! `Connect-Timeout-Ms`) when shorter.
//! tower-http's TimeoutLayer answers a bare status that gRPC clients read as a transport
//! error, so this layer answers DEADLINE_EXCEEDED (gRPC) or 504 (REST) itself.

use std::time::Duration;

use axum::{
    http::{HeaderMap, HeaderName, StatusCode},
    response::Response,
};

use crate::{context::Protocol, error::layer_error};

/// When the request's deadline passes, in its extensions (`guard::Admitted`): for work
/// it hands to a task of its own, which the guard's timeout does not reach.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: tokio::time::Instant,
    /// How long the request was given, for the log line when it runs out.
    pub after: Duration,
}

/// The request's deadline: `server.request_timeout`, or a shorter one asked for by a
/// gRPC (`grpc-timeout`) or Connect (`Connect-Timeout-Ms`) caller.
pub fn deadline(default: Duration, protocol: Protocol, headers: &HeaderMap) -> Duration {
    let asked = match protocol {
        Protocol::Grpc | Protocol::GrpcWeb => grpc_timeout(headers),
        Protocol::Connect => connect_timeout(headers),
        Protocol::Http => None,
    };
    asked.map_or(default, |asked| asked.min(default))
}

// Names, not `&str`s, which each lookup on every request would parse first.
const CONNECT_TIMEOUT_MS: HeaderName = HeaderName::from_static("connect-timeout-ms");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// `Connect-Timeout-Ms`: 1 to 10 digits of milliseconds.
pub fn connect_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(CONNECT_TIMEOUT_MS)?.as_bytes();
    if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value)
        .ok()?
        .parse()
        .ok()
        .map(Duration::from_millis)
}

/// The answer to a request that ran out of time.
pub fn timed_out(protocol: Protocol, deadline: Duration) -> Response {
    tracing::warn!(
        timeout_ms = deadline.as_millis() as u64,
        "request timed out"
    );
    layer_error(
        protocol,
        crate::error::status(
            tonic::Code::DeadlineExceeded,
            crate::error::Reason::DeadlineExceeded,
            "deadline exceeded",
        ),
        StatusCode::GATEWAY_TIMEOUT,
        "request",
        "timed out",
    )
}

pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Option<Duration> {
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", v.parse().expect("header"));
        grpc_timeout(&h)
    }

    #[test]
    fn parses_grpc_timeout_units() {
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("100n"), Some(Duration::from_nanos(100)));
        assert_eq!(parse("S"), None);
        assert_eq!(parse("5x"), None);
        assert_eq!(parse("123456789S"), None, "at most 8 digits");
    }

    #[test]
    fn connect_callers_ask_in_milliseconds() {
        let asked = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("connect-timeout-ms", v.parse().expect("header"));
            deadline(Duration::from_secs(30), Protocol::Connect, &h)
        };
        assert_eq!(asked("250"), Duration::from_millis(250));
        assert_eq!(
            asked("90000"),
            Duration::from_secs(30),
            "never past the server's own"
        );
        assert_eq!(
            asked("12345678901"),
            Duration::from_secs(30),
            "at most 10 digits"
        );
        assert_eq!(asked("-5"), Duration::from_secs(30));
        assert_eq!(asked("+5"), Duration::from_secs(30));
    }
}
