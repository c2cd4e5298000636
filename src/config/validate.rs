//! Checks on loaded settings, so bad configuration fails at startup naming the key.

use std::net::ToSocketAddrs;

use super::{AppEnv, ConfigError, DEV_JWT_SECRET, Settings, redact_url};

impl Settings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, why: String| Err(ConfigError(format!("{key}: {why}")));
        if let Err(e) = self.server.addr.to_socket_addrs() {
            return invalid(
                "server.addr",
                format!("{:?} is not host:port ({e})", self.server.addr),
            );
        }
        if let Some(admin) = &self.server.admin_addr
            && let Err(e) = admin.to_socket_addrs()
        {
            return invalid(
                "server.admin_addr",
                format!("{admin:?} is not host:port ({e})"),
            );
        }
        if let Some(endpoint) = &self.telemetry.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return invalid(
                "telemetry.otlp_endpoint",
                format!(
                    "{:?} must be an http:// or https:// URL",
                    redact_url(endpoint)
                ),
            );
        }
        let base = &self.server.base_path;
        if !base.is_empty() && (!base.starts_with('/') || base.ends_with('/')) {
            return invalid(
                "server.base_path",
                format!("{base:?} must start with '/' and not end with '/'"),
            );
        }
        if http::HeaderValue::from_str(&self.server.hsts).is_err() {
            return invalid(
                "server.hsts",
                format!("{:?} is not a header value", self.server.hsts),
            );
        }
        if let Err(e) = self.server.trusted_proxy_nets() {
            return invalid("server.trusted_proxies", e);
        }
        if self.server.max_connections == 0 {
            return invalid("server.max_connections", "must be greater than 0".into());
        }
        if self.server.workers > 1024 {
            return invalid(
                "server.workers",
                format!(
                    "{} serving threads is past the limit of 1024",
                    self.server.workers
                ),
            );
        }
        if self.server.body_limit_bytes == 0 {
            return invalid("server.body_limit_bytes", "must be greater than 0".into());
        }
        if !(0.0..=1.0).contains(&self.telemetry.trace_sample_ratio) {
            return invalid(
                "telemetry.trace_sample_ratio",
                format!(
                    "{} is not between 0.0 and 1.0",
                    self.telemetry.trace_sample_ratio
                ),
            );
        }
        for (key, value) in [
            ("server.request_timeout", self.server.request_timeout),
            ("server.handshake_timeout", self.server.handshake_timeout),
            ("server.send_timeout", self.server.send_timeout),
            (
                "server.http2_keepalive_interval",
                self.server.http2_keepalive_interval,
            ),
            (
                "server.http2_keepalive_timeout",
                self.server.http2_keepalive_timeout,
            ),
            ("database.connect_timeout", self.database.connect_timeout),
            (
                "database.health_check_interval",
                self.database.health_check_interval,
            ),
            (
                "database.health_check_timeout",
                self.database.health_check_timeout,
            ),
            ("auth.session_ttl", self.auth.session_ttl),
            ("auth.session_idle_timeout", self.auth.session_idle_timeout),
            ("auth.reauth_window", self.auth.reauth_window),
            ("auth.hash_queue_timeout", self.auth.hash_queue_timeout),
            ("idempotency.ttl", self.idempotency.ttl),
            ("cache.ttl", self.cache.ttl),
            ("cache.poll_interval", self.cache.poll_interval),
            ("cache.max_staleness", self.cache.max_staleness),
            ("jobs.cleanup_interval", self.jobs.cleanup_interval),
            (
                "idempotency.purge_interval",
                self.idempotency.purge_interval,
            ),
        ] {
            if value.is_zero() {
                return invalid(key, "must be greater than 0".into());
            }
        }
        for origin in &self.cors.allowed_origins {
            let valid = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && http::HeaderValue::from_str(origin).is_ok()
                    && !origin.ends_with('/'));
            if !valid {
                return invalid(
                    "cors.allowed_origins",
                    format!("{origin:?} is not \"*\" or an origin like https://app.example.com"),
                );
            }
        }
        let url = self.database.url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return invalid(
                "database.url",
                "must start with sqlite:, postgres:// or postgresql://".into(),
            );
        }
        for (module, needs) in [
            ("comments", "articles"),
            ("legacy_feed", "articles"),
            ("identity", "users"),
        ] {
            if self.features.enabled(module) && !self.features.enabled(needs) {
                return invalid(
                    &format!("features.{module}"),
                    format!("needs features.{needs}, which is off"),
                );
            }
        }
        if self.cache.poll_interval >= self.cache.max_staleness {
            return invalid(
                "cache.poll_interval",
                format!(
                    "{:?} must be shorter than cache.max_staleness ({:?}), or every replica would distrust its cache between polls",
                    self.cache.poll_interval, self.cache.max_staleness
                ),
            );
        }
        if let Some(listen) = &self.database.listen_url
            && !(listen.expose().starts_with("postgres://")
                || listen.expose().starts_with("postgresql://"))
        {
            return invalid(
                "database.listen_url",
                "must start with postgres:// or postgresql://".into(),
            );
        }
        if self.rate_limit.ipv6_prefix > 128 {
            return invalid(
                "rate_limit.ipv6_prefix",
                format!(
                    "{} is not a prefix length (0 to 128)",
                    self.rate_limit.ipv6_prefix
                ),
            );
        }
        if self.idempotency.max_keys_per_caller == 0 {
            return invalid(
                "idempotency.max_keys_per_caller",
                "must be greater than 0".into(),
            );
        }
        if self.articles.max_tags == 0 {
            return invalid("articles.max_tags", "must be greater than 0".into());
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be greater than 0".into());
        }
        if self.auth.jwt_secret.expose().len() < 32 {
            return invalid("auth.jwt_secret", "must be at least 32 bytes".into());
        }
        match (
            &self.auth.previous_jwt_secret,
            self.auth.previous_jwt_secret_until,
        ) {
            (Some(previous), Some(_)) => {
                if previous.expose().len() < 32 {
                    return invalid(
                        "auth.previous_jwt_secret",
                        "must be at least 32 bytes".into(),
                    );
                }
                if previous.expose() == self.auth.jwt_secret.expose() {
                    return invalid(
                        "auth.previous_jwt_secret",
                        "is the current jwt_secret; rotating needs a new one".into(),
                    );
                }
            }
            (Some(_), None) => {
                return invalid(
                    "auth.previous_jwt_secret_until",
                    "is required with auth.previous_jwt_secret (when its grace period ends, RFC 3339)"
                        .into(),
                );
            }
            (None, _) => {}
        }
        if self.auth.jwt_secret.expose() == DEV_JWT_SECRET {
            // The built-in secret is in the source: anyone who can reach the server could
            // mint tokens for any account. Only a loopback listener may use it.
            let set_one = "set CONDUIT__AUTH__JWT_SECRET or CONDUIT__AUTH__JWT_SECRET_FILE";
            if self.app_env() == AppEnv::Prod {
                return invalid(
                    "auth.jwt_secret",
                    format!("the built-in development secret is refused in prod; {set_one}"),
                );
            }
            let loopback_only = self
                .server
                .addr
                .to_socket_addrs()
                .is_ok_and(|mut addrs| addrs.all(|a| a.ip().is_loopback()));
            if !loopback_only {
                return invalid(
                    "auth.jwt_secret",
                    format!(
                        "the built-in development secret only serves on a loopback address, not {:?}; {set_one}",
                        self.server.addr
                    ),
                );
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_level).is_err() {
            return invalid(
                "telemetry.log_level",
                format!("{:?} is not a valid filter", self.telemetry.log_level),
            );
        }
        Ok(())
    }
}
