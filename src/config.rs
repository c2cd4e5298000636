//! Typed settings, layered: built-in defaults → `config/default.toml` →
//! `config/{APP_ENV}.toml` → environment (`CONDUIT__SECTION__KEY`, plus `*_FILE` secret
//! mounts). Both profiles are compiled into the binary; copies on disk (in `config/` under
//! the working directory) are optional overrides.
//!
//! Every section denies unknown keys so that a typo fails at startup, naming the key,
//! instead of silently running with a default.

use std::{
    collections::HashMap, fmt, net::ToSocketAddrs, path::Path, str::FromStr, time::Duration,
};

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

/// Built into the binary so `cargo run` works with no setup; refused when `APP_ENV=prod`.
pub const DEV_JWT_SECRET: &str = "conduit-development-secret-do-not-use-in-production";
const ENV_PREFIX: &str = "CONDUIT";
const ENV_SEPARATOR: &str = "__";
/// Keys whose environment values are comma-separated lists.
const LIST_KEYS: &[&str] = &[
    "cors.allowed_origins",
    "docs.servers",
    "server.trusted_proxies",
];
const REDACTED: &str = "<redacted>";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppEnv {
    Local,
    Dev,
    Prod,
}

impl AppEnv {
    pub fn as_str(self) -> &'static str {
        match self {
            AppEnv::Local => "local",
            AppEnv::Dev => "dev",
            AppEnv::Prod => "prod",
        }
    }
}

impl FromStr for AppEnv {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(AppEnv::Local),
            "dev" => Ok(AppEnv::Dev),
            "prod" => Ok(AppEnv::Prod),
            other => Err(ConfigError(format!(
                "APP_ENV: unknown environment {other:?} (expected local, dev or prod)"
            ))),
        }
    }
}

#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Selected by `APP_ENV`, not by a config key.
    #[serde(skip)]
    pub environment: Option<AppEnv>,
    /// The layers that made these settings, in order (for `conduit config check`).
    #[serde(skip)]
    pub layers: Vec<String>,
    pub server: ServerSettings,
    pub cors: CorsSettings,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub docs: DocsSettings,
    pub telemetry: TelemetrySettings,
    pub idempotency: IdempotencySettings,
    pub cache: CacheSettings,
    pub rate_limit: RateLimitSettings,
    pub features: FeatureSettings,
    pub jobs: JobSettings,
    pub articles: ArticleSettings,
}

/// Bounds on what one article may carry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArticleSettings {
    /// Tags one article may have (each at most 32 characters).
    pub max_tags: usize,
}

impl Default for ArticleSettings {
    fn default() -> Self {
        Self { max_tags: 10 }
    }
}

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

impl ServerSettings {
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

/// A setting that must not leak: `Debug` (so any `?settings` in a log line) shows
/// `<redacted>`, and the value is reached only through [`Secret::expose`]. Serializing
/// does write the value — configuration layering needs it — so printing settings goes
/// through [`Settings::redacted_toml`].
#[derive(Clone, Deserialize)]
#[serde(from = "String")]
pub struct Secret(secrecy::SecretString);

impl Secret {
    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value.into())
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `sqlite://path?mode=rwc` or `postgres://user:pass@host:port/db`.
    pub url: Secret,
    pub max_connections: u32,
    /// Per connection attempt.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Retry connecting until this much time has passed, then exit non-zero.
    #[serde(with = "humantime_serde")]
    pub startup_deadline: Duration,
    pub migrate_on_start: bool,
    #[serde(with = "humantime_serde")]
    pub sqlite_busy_timeout: Duration,
    /// How often readiness re-checks the database (and, when migrations are left to a
    /// job, the schema version).
    #[serde(with = "humantime_serde")]
    pub health_check_interval: Duration,
    /// How long one check may take before it counts as failed: with the interval, how
    /// soon readiness reports a lost database (1 s + 1 s by default).
    #[serde(with = "humantime_serde")]
    pub health_check_timeout: Duration,
    /// A direct Postgres connection for LISTEN (change-log wake-ups) when `url` goes
    /// through a pooler in transaction mode, where LISTEN does not work; unset: `url`.
    /// Without working wake-ups replicas still poll the log every `cache.poll_interval`.
    pub listen_url: Option<Secret>,
    /// What stands between conduit and Postgres: `none`, or `transaction` for a pooler
    /// in transaction mode (PgBouncer `pool_mode = transaction`, which must also run
    /// `server_reset_query = DISCARD ALL` with `server_reset_query_always = 1`). Then no
    /// session settings are sent at connect, prepared statements are not kept, and every
    /// statement runs inside a transaction.
    pub pooler: Pooler,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooler {
    #[default]
    None,
    Transaction,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://data/conduit.db?mode=rwc".into(),
            max_connections: 10,
            connect_timeout: Duration::from_secs(3),
            startup_deadline: Duration::from_secs(30),
            migrate_on_start: true,
            sqlite_busy_timeout: Duration::from_secs(5),
            health_check_interval: Duration::from_secs(1),
            health_check_timeout: Duration::from_secs(1),
            listen_url: None,
            pooler: Pooler::None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Signs access tokens (HS256); tokens name it by a key id derived from it (`kid`).
    pub jwt_secret: Secret,
    /// The key `jwt_secret` replaced: tokens it signed are still accepted until
    /// `previous_jwt_secret_until`, so rotating the key logs nobody out.
    pub previous_jwt_secret: Option<Secret>,
    /// End of the previous key's grace period (RFC 3339); required with that key.
    pub previous_jwt_secret_until: Option<chrono::DateTime<chrono::Utc>>,
    pub jwt_issuer: String,
    /// Lifetime of an access token. `0s` (the default): as long as its session, which
    /// every request checks on the server; RealWorld clients never refresh. Set it for
    /// deployments whose clients all refresh.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// A session's absolute lifetime from login; refresh does not extend it.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// A session unused for this long ends; every use renews it.
    #[serde(with = "humantime_serde")]
    pub session_idle_timeout: Duration,
    /// Changing the email, the password or the second factor needs a login at most this
    /// old in the session making the change (refresh does not renew it).
    #[serde(with = "humantime_serde")]
    pub reauth_window: Duration,
    /// A rotated refresh token presented again within this answers the same successor
    /// (two tabs, a retried refresh); later, it ends the session as reuse.
    #[serde(with = "humantime_serde")]
    pub refresh_reuse_grace: Duration,
    /// Password hashes computed at once (argon2id, 19 MiB and tens of milliseconds of CPU
    /// each); 0 means one per CPU core.
    pub max_concurrent_hashes: usize,
    /// How long a login, registration or password change waits for a hashing slot
    /// before it is answered 503 / UNAVAILABLE.
    #[serde(with = "humantime_serde")]
    pub hash_queue_timeout: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: DEV_JWT_SECRET.into(),
            previous_jwt_secret: None,
            previous_jwt_secret_until: None,
            jwt_issuer: "conduit".into(),
            token_ttl: Duration::ZERO,
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            session_idle_timeout: Duration::from_secs(14 * 24 * 3600),
            reauth_window: Duration::from_secs(10 * 60),
            refresh_reuse_grace: Duration::from_secs(10),
            max_concurrent_hashes: 0,
            hash_queue_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DocsSettings {
    pub enabled: bool,
    /// Extra server URLs listed in the OpenAPI document, after the relative one that
    /// follows the request's proxy prefix.
    pub servers: Vec<String>,
}

impl Default for DocsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            servers: Vec::new(),
        }
    }
}

/// `Idempotency-Key` on REST POSTs and `idempotency-key` metadata on gRPC mutations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencySettings {
    /// How long a key's first answer is replayed; after that the key may be used afresh.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How often expired keys are deleted.
    #[serde(with = "humantime_serde")]
    pub purge_interval: Duration,
    /// Live keys one caller may hold; a new key beyond them is refused (429 /
    /// RESOURCE_EXHAUSTED) and its request does not run.
    pub max_keys_per_caller: u64,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
            purge_interval: Duration::from_secs(600),
            max_keys_per_caller: 1_000,
        }
    }
}

/// Attempts at credentials (login, registration, refresh, one-time codes) per minute;
/// 0 turns a limit off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Per client address (IPv6: per `ipv6_prefix` network).
    pub per_ip_per_minute: u32,
    /// Per account from one client address: strict, and it locks out only that address.
    pub per_account_per_minute: u32,
    /// Per account from all addresses together: a much higher ceiling, so that a few
    /// addresses guessing cannot lock the owner out, while a botnet still slows down.
    pub per_account_total_per_minute: u32,
    /// IPv6 clients are counted per network of this prefix length: one host usually
    /// holds a whole /64.
    pub ipv6_prefix: u8,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            per_ip_per_minute: 30,
            per_account_per_minute: 10,
            per_account_total_per_minute: 100,
            ipv6_prefix: 64,
        }
    }
}

/// Which feature modules exist. A disabled module is absent from the REST router (404),
/// the OpenAPI document, gRPC reflection and health — decided at startup.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureSettings {
    pub users: bool,
    /// Sessions (refresh, logout, session list) and TOTP second factors.
    pub identity: bool,
    pub profiles: bool,
    pub articles: bool,
    pub comments: bool,
    pub tags: bool,
    /// `GET /api/feed`, the old path of the feed, answered with `Deprecation` and `Sunset`
    /// headers until it is removed.
    pub legacy_feed: bool,
    /// When the legacy routes go away (the `Sunset` header, RFC 8594).
    pub legacy_sunset: chrono::DateTime<chrono::Utc>,
}

impl Default for FeatureSettings {
    fn default() -> Self {
        Self {
            users: true,
            identity: true,
            profiles: true,
            articles: true,
            comments: true,
            tags: true,
            legacy_feed: true,
            legacy_sunset: chrono::DateTime::from_timestamp(1_814_313_600, 0).unwrap_or_default(),
        }
    }
}

impl FeatureSettings {
    /// Whether the module `name` (`modules::Module::name`) is switched on.
    pub fn enabled(&self, name: &str) -> bool {
        match name {
            "users" => self.users,
            "identity" => self.identity,
            "profiles" => self.profiles,
            "articles" => self.articles,
            "comments" => self.comments,
            "tags" => self.tags,
            "legacy_feed" => self.legacy_feed,
            _ => true,
        }
    }
}

/// Background jobs that run once per interval across all replicas (`jobs.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSettings {
    /// How often `cleanup` runs: ended sessions, spent recovery codes and stale job
    /// leases are deleted.
    #[serde(with = "humantime_serde")]
    pub cleanup_interval: Duration,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            cleanup_interval: Duration::from_secs(600),
        }
    }
}

/// The read cache (`cache/`): parts of article reads, the tag list and list totals,
/// each kept until a write changes what it was read from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Memory for cached parts, in bytes (estimated from their text); 0 turns the cache
    /// off, so every read goes to the database.
    pub max_bytes: u64,
    /// Longest a part is kept; writes invalidate it sooner.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How often each replica reads the change log (Postgres) when nothing wakes it
    /// sooner: the backstop of cross-replica freshness.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A replica that has not read the change log for this long serves no cached part
    /// (and checks sessions in the database) until it has caught up.
    #[serde(with = "humantime_serde")]
    pub max_staleness: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            ttl: Duration::from_secs(600),
            poll_interval: Duration::from_millis(250),
            max_staleness: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON in dev and prod, human-readable locally.
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// Default filter; `RUST_LOG` overrides it.
    pub log_level: String,
    /// `service.name` of traces (`OTEL_SERVICE_NAME` overrides it).
    pub service_name: String,
    /// OTLP/gRPC collector, e.g. `http://otel-collector:4317`. Unset: traces are exported
    /// only if `OTEL_EXPORTER_OTLP_ENDPOINT` is set, else not at all (trace ids still
    /// propagate and appear in logs).
    pub otlp_endpoint: Option<String>,
    /// Share of new traces recorded and exported, 0.0 to 1.0; a request that arrives
    /// with a sampled `traceparent` follows its caller's decision (parent-based).
    pub trace_sample_ratio: f64,
    /// Error tracking (Sentry protocol). Unset: off.
    pub sentry_dsn: Option<Secret>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Auto,
            log_level: "info".into(),
            service_name: "conduit".into(),
            otlp_endpoint: None,
            trace_sample_ratio: 1.0,
            sentry_dsn: None,
        }
    }
}

/// Where the layers come from; `from_process` for the binary, explicit maps for tests.
pub struct Sources<'a> {
    pub config_dir: &'a Path,
    pub app_env: Option<String>,
    pub env: HashMap<String, String>,
}

impl Sources<'static> {
    pub fn from_process() -> Self {
        // A missing .env is normal; values already in the environment win over it.
        let _ = dotenvy::dotenv();
        Sources {
            config_dir: Path::new("config"),
            app_env: std::env::var("APP_ENV").ok(),
            env: std::env::vars().collect(),
        }
    }
}

impl Settings {
    pub fn load(sources: Sources<'_>) -> Result<Settings, ConfigError> {
        let app_env: AppEnv = sources.app_env.as_deref().unwrap_or("local").parse()?;
        let defaults = Config::try_from(&Settings::default()).map_err(err)?;
        let env = resolve_secret_files(sources.env)?;
        let variables = env
            .keys()
            .filter(|k| k.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
            .count();

        let mut environment = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .list_separator(",")
            .try_parsing(true)
            .source(Some(env.into_iter().collect()));
        for key in LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }

        let mut layers = vec!["built-in defaults".to_string()];
        let mut builder = Config::builder().add_source(defaults);
        // The profiles are compiled in, so the binary behaves the same from any working
        // directory (a container, /usr/local/bin); files on disk override them.
        for (name, text) in [
            ("default", BUILT_IN_DEFAULT),
            (app_env.as_str(), built_in_profile(app_env)),
        ] {
            builder = builder.add_source(File::from_str(text, FileFormat::Toml));
            layers.push(format!("built-in config/{name}.toml"));
        }
        for name in ["default", app_env.as_str()] {
            let path = sources.config_dir.join(format!("{name}.toml"));
            if path.is_file() {
                layers.push(format!("{} (file)", path.display()));
            }
            builder = builder.add_source(file(sources.config_dir, name));
        }
        if variables > 0 {
            layers.push(format!(
                "environment ({variables} {ENV_PREFIX}__* variables)"
            ));
        }
        let layered = builder.add_source(environment).build().map_err(err)?;
        let mut settings: Settings = layered.try_deserialize().map_err(err)?;
        settings.environment = Some(app_env);
        settings.layers = layers;
        settings.validate()?;
        Ok(settings)
    }

    pub fn app_env(&self) -> AppEnv {
        self.environment.unwrap_or(AppEnv::Local)
    }

    fn validate(&self) -> Result<(), ConfigError> {
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

    /// The effective configuration as TOML, with secrets replaced.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.auth.jwt_secret = REDACTED.into();
        if shown.auth.previous_jwt_secret.is_some() {
            shown.auth.previous_jwt_secret = Some(REDACTED.into());
        }
        shown.database.url = redact_url(self.database.url.expose()).into();
        shown.database.listen_url = self
            .database
            .listen_url
            .as_ref()
            .map(|url| redact_url(url.expose()).into());
        shown.telemetry.otlp_endpoint = self.telemetry.otlp_endpoint.as_deref().map(redact_url);
        if shown.telemetry.sentry_dsn.is_some() {
            shown.telemetry.sentry_dsn = Some(REDACTED.into());
        }
        let mut out = format!("# APP_ENV = {}\n", self.app_env().as_str());
        out.push_str("# layers, later ones winning:\n");
        for layer in &self.layers {
            out.push_str(&format!("#   {layer}\n"));
        }
        out.push_str(
            &toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n")),
        );
        out
    }
}

const BUILT_IN_DEFAULT: &str = include_str!("../config/default.toml");

fn built_in_profile(app_env: AppEnv) -> &'static str {
    match app_env {
        AppEnv::Local => "",
        AppEnv::Dev => include_str!("../config/dev.toml"),
        AppEnv::Prod => include_str!("../config/prod.toml"),
    }
}

fn file(dir: &Path, name: &str) -> File<config::FileSourceFile, FileFormat> {
    File::from(dir.join(format!("{name}.toml")))
        .format(FileFormat::Toml)
        .required(false)
}

fn err(e: config::ConfigError) -> ConfigError {
    ConfigError(e.to_string())
}

/// `CONDUIT__AUTH__JWT_SECRET_FILE=/run/secrets/jwt` becomes `CONDUIT__AUTH__JWT_SECRET`
/// with the file's content (trailing newline trimmed), as Kubernetes secret mounts expect.
fn resolve_secret_files(
    env: HashMap<String, String>,
) -> Result<HashMap<String, String>, ConfigError> {
    let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
    let mut resolved = HashMap::with_capacity(env.len());
    for (name, value) in env {
        if !name.starts_with(&prefix) {
            continue;
        }
        match name.strip_suffix("_FILE") {
            Some(target) => {
                let content = std::fs::read_to_string(&value).map_err(|e| {
                    ConfigError(format!("{name}: cannot read secret file {value:?}: {e}"))
                })?;
                resolved.insert(
                    target.to_string(),
                    content.trim_end_matches(['\n', '\r']).to_string(),
                );
            }
            None => {
                resolved.entry(name).or_insert(value);
            }
        }
    }
    Ok(resolved)
}

/// The URL with its secrets replaced, for anything that prints it (`config check`, log
/// lines): the password of the user info, and the value of every query parameter whose
/// name says it holds a secret (`?password=`, `sslpassword`, `token`, `api_key`, …).
pub fn redact_url(url: &str) -> String {
    let (head, fragment) = match url.split_once('#') {
        Some((head, fragment)) => (head, Some(fragment)),
        None => (url, None),
    };
    let (base, query) = match head.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (head, None),
    };
    let mut out = redact_user_info(base);
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_name(name) => format!("{name}={REDACTED}"),
                _ => pair.to_string(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "auth",
        "credential",
    ]
    .iter()
    .any(|word| name.contains(word))
}

fn redact_user_info(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // Credentials live in the authority, before the path; the host follows its last '@'
    // (a password may contain '@').
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:{REDACTED}@{host}{tail}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(app_env: Option<&str>, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load(Sources {
            config_dir: Path::new("/nonexistent"),
            app_env: app_env.map(str::to_string),
            env: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    #[test]
    fn env_vars_override_defaults() {
        let s = load(
            None,
            &[
                ("CONDUIT__SERVER__ADDR", "0.0.0.0:9999"),
                ("CONDUIT__AUTH__JWT_SECRET", &"s".repeat(40)),
                ("CONDUIT__CORS__ALLOWED_ORIGINS", "http://a,http://b"),
            ],
        )
        .expect("valid");
        assert_eq!(s.server.addr, "0.0.0.0:9999");
        assert_eq!(s.cors.allowed_origins, vec!["http://a", "http://b"]);
        assert_eq!(s.app_env(), AppEnv::Local);
    }

    #[test]
    fn the_development_secret_serves_only_on_loopback() {
        for addr in ["127.0.0.1:8080", "[::1]:8080", "localhost:8080"] {
            load(None, &[("CONDUIT__SERVER__ADDR", addr)]).expect(addr);
        }
        for addr in ["0.0.0.0:8080", "[::]:8080", "192.0.2.1:8080"] {
            let e = load(None, &[("CONDUIT__SERVER__ADDR", addr)]).expect_err(addr);
            assert!(
                e.to_string().contains("auth.jwt_secret: the built-in"),
                "{e}"
            );
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load(None, &[("CONDUIT__SERVER__ADRESS", "x")]).expect_err("unknown key");
        assert!(e.to_string().contains("adress"), "{e}");
    }

    #[test]
    fn invalid_value_is_named() {
        let e =
            load(None, &[("CONDUIT__SERVER__REQUEST_TIMEOUT", "soon")]).expect_err("bad duration");
        assert!(e.to_string().contains("request_timeout"), "{e}");
        let e = load(None, &[("CONDUIT__SERVER__ADDR", "nope")]).expect_err("bad addr");
        assert!(e.to_string().contains("server.addr"), "{e}");
    }

    #[test]
    fn prod_refuses_the_development_secret() {
        let e = load(Some("prod"), &[]).expect_err("dev secret in prod");
        assert!(e.to_string().contains("auth.jwt_secret"), "{e}");
        let secret = "x".repeat(40);
        assert!(load(Some("prod"), &[("CONDUIT__AUTH__JWT_SECRET", &secret)]).is_ok());
    }

    #[test]
    fn secrets_come_from_files_and_are_redacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwt");
        std::fs::write(&path, format!("{}\n", "s".repeat(48))).expect("write");
        let s = load(
            Some("dev"),
            &[
                (
                    "CONDUIT__AUTH__JWT_SECRET_FILE",
                    path.to_str().expect("utf8"),
                ),
                (
                    "CONDUIT__DATABASE__URL",
                    "postgres://app:hunter2@db:5432/conduit",
                ),
                (
                    "CONDUIT__TELEMETRY__SENTRY_DSN",
                    "https://dsnkey42@errors.example.com/1",
                ),
            ],
        )
        .expect("valid");
        assert_eq!(s.auth.jwt_secret.expose(), "s".repeat(48));
        let debugged = format!("{s:?} {s:#?}");
        assert!(
            !debugged.contains("hunter2")
                && !debugged.contains(&"s".repeat(48))
                && !debugged.contains("dsnkey42"),
            "Debug of the settings leaks a secret: {debugged}"
        );
        let shown = s.redacted_toml();
        assert!(
            !shown.contains("hunter2") && !shown.contains(&"s".repeat(48)),
            "{shown}"
        );
        assert!(
            shown.contains("postgres://app:<redacted>@db:5432/conduit"),
            "{shown}"
        );
    }

    #[test]
    fn shipped_config_files_load_in_every_environment() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let secret = "p".repeat(40);
        for env in ["local", "dev", "prod"] {
            let settings = Settings::load(Sources {
                config_dir: &dir,
                app_env: Some(env.into()),
                env: [("CONDUIT__AUTH__JWT_SECRET".to_string(), secret.clone())].into(),
            })
            .unwrap_or_else(|e| panic!("{env}: {e}"));
            assert_eq!(settings.app_env().as_str(), env);
        }
    }

    #[test]
    fn cors_origins_are_checked() {
        assert!(
            load(
                None,
                &[("CONDUIT__CORS__ALLOWED_ORIGINS", "https://app.example.com")]
            )
            .is_ok()
        );
        let e = load(
            None,
            &[("CONDUIT__CORS__ALLOWED_ORIGINS", "app.example.com")],
        )
        .expect_err("no scheme");
        assert!(e.to_string().contains("cors.allowed_origins"), "{e}");
    }

    #[test]
    fn zero_durations_are_rejected() {
        let e = load(None, &[("CONDUIT__DATABASE__HEALTH_CHECK_INTERVAL", "0s")])
            .expect_err("zero interval");
        assert!(
            e.to_string().contains("database.health_check_interval"),
            "{e}"
        );
    }

    #[test]
    fn passwords_with_at_signs_are_redacted_whole() {
        assert_eq!(
            redact_url("postgres://app:p@ss@db:5432/x"),
            "postgres://app:<redacted>@db:5432/x"
        );
        assert_eq!(
            redact_url("postgres://app:pw@db/x?application_name=a@b"),
            "postgres://app:<redacted>@db/x?application_name=a@b"
        );
    }

    #[test]
    fn secrets_in_query_parameters_are_redacted() {
        assert_eq!(
            redact_url("postgres://app@db/x?sslmode=disable&password=hunter2&sslpassword=k"),
            "postgres://app@db/x?sslmode=disable&password=<redacted>&sslpassword=<redacted>"
        );
        assert_eq!(
            redact_url("https://user:pw@collector:4317/v1?api_key=abc#frag"),
            "https://user:<redacted>@collector:4317/v1?api_key=<redacted>#frag"
        );
        assert_eq!(
            redact_url("sqlite://data/x.db?mode=rwc"),
            "sqlite://data/x.db?mode=rwc"
        );
    }

    #[test]
    fn unknown_app_env_is_rejected() {
        assert!(load(Some("staging"), &[]).is_err());
    }
}
