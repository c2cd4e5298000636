//! The `server` and `cors` sections: the listener, its limits, timeouts and drain, the
//! proxies it trusts, and which origins browsers may call from.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// `host:port`; port 0 picks a free port (tests).
    pub addr: String,
    /// When set, `/metrics` moves off the API port to this `host:port` (with copies of the
    /// probes), so scrapes never share the API's listener, limits or exposure.
    pub admin_addr: Option<String>,
    /// Path prefix a reverse proxy forwards without stripping (e.g. `/conduit`); stripped
    /// from requests and prepended to the OpenAPI server URL.
    pub base_path: String,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest request body accepted, in bytes (REST JSON and gRPC messages alike).
    pub body_limit_bytes: usize,
    /// Time between turning NOT_SERVING and closing the listener, so load balancers
    /// notice before connections are refused.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// Upper bound for in-flight requests to finish after the listener closes.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    pub tcp_nodelay: bool,
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_timeout: Duration,
    pub http2_max_concurrent_streams: u32,
    /// Initial HTTP/2 flow-control windows, per stream and per connection, in bytes
    /// (0: hyper's default, 1 MiB); ignored while `http2_adaptive_window` is on.
    pub http2_initial_stream_window_bytes: u32,
    pub http2_initial_connection_window_bytes: u32,
    /// Let h2 size the windows from measured bandwidth-delay (BDP pings).
    pub http2_adaptive_window: bool,
    /// How connections are served: `per-core` (the default), one single-thread runtime
    /// per worker, each accepting on its own `SO_REUSEPORT` socket, so a connection and
    /// its HTTP/2 streams stay on one thread; or `multi`, one multi-thread runtime, which
    /// can spread one connection's streams over every core (docs/PERFORMANCE.md, round 6).
    pub runtime: RuntimeLayout,
    /// Serving threads in the `per-core` layout; 0: one per available core.
    pub workers: usize,
    /// Time a new connection has to complete its first request's headers (HTTP/1.1) or
    /// the HTTP/2 preface before it is closed; also the limit for reading any request's
    /// headers on HTTP/1.1.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Requests in flight at once; more are answered 503 / RESOURCE_EXHAUSTED at once
    /// (probes, `/metrics` and gRPC health never are). 0: no limit.
    pub concurrency_limit: usize,
    /// Longest a response may wait for its client to take more of it (HTTP/2 window,
    /// TCP window) before the connection is closed.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// Addresses or CIDR blocks of the reverse proxies in front of the service: only
    /// from these is `X-Forwarded-For` believed when finding the client's address.
    pub trusted_proxies: Vec<String>,
    /// `Strict-Transport-Security` for REST answers (e.g. `max-age=63072000;
    /// includeSubDomains`) when every client reaches the service over HTTPS; empty: none.
    pub hsts: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeLayout {
    Multi,
    PerCore,
}

impl ServerSettings {
    /// How many per-core runtimes serve: `workers`, or one per available core.
    pub fn serving_threads(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism().map_or(1, usize::from)
    }

    /// `trusted_proxies` parsed: a bare address is a block of one.
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{entry:?} is not an IP address or CIDR block"))
            })
            .collect()
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".into(),
            admin_addr: None,
            base_path: String::new(),
            request_timeout: Duration::from_secs(30),
            body_limit_bytes: 1024 * 1024,
            drain_delay: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(30),
            tcp_nodelay: true,
            http2_keepalive_interval: Duration::from_secs(20),
            http2_keepalive_timeout: Duration::from_secs(20),
            http2_max_concurrent_streams: 200,
            http2_initial_stream_window_bytes: 0,
            http2_initial_connection_window_bytes: 0,
            http2_adaptive_window: false,
            runtime: RuntimeLayout::PerCore,
            workers: 0,
            hsts: String::new(),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 4096,
            concurrency_limit: 1024,
            send_timeout: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsSettings {
    /// Origins allowed to call the API from a browser; `*` allows any origin
    /// (credentials are sent as an Authorization header, never cookies).
    pub allowed_origins: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for CorsSettings {
    fn default() -> Self {
        Self {
            allowed_origins: vec!["*".into()],
            max_age: Duration::from_secs(3600),
        }
    }
}
