//! What the settings are: every section, its keys and their built-in defaults. Loading
//! (`load`), checking (`validate`) and keeping secrets out of output (`secrets`) are
//! beside it.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};

use super::Secret;

mod server;
pub use server::{CorsSettings, RuntimeLayout, ServerSettings};

/// Built into the binary so `cargo run` works with no setup; refused when `APP_ENV=prod`.
pub const DEV_JWT_SECRET: &str = "conduit-development-secret-do-not-use-in-production";

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
