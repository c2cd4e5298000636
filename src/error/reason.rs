//! The stable causes clients branch on (`google.rpc.ErrorInfo.reason`).

/// The error domain every `google.rpc.ErrorInfo` carries.
pub const ERROR_DOMAIN: &str = "conduit";

/// Stable, machine-readable causes: `google.rpc.ErrorInfo.reason` on every non-OK gRPC
/// status. Clients branch on these, never on message text, so a reason is never renamed
/// or reused for another cause; new causes get new reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Fields failed validation; `BadRequest` names each one.
    ValidationFailed,
    CannotFollowSelf,
    InvalidPageToken,
    InvalidUpdateMask,
    TokenMissing,
    TokenInvalid,
    TokenExpired,
    /// The token's session ended: logout, revocation, a password change, or reuse of a
    /// rotated refresh token.
    TokenRevoked,
    InvalidCredentials,
    /// Not a refresh token of a standing session.
    RefreshTokenInvalid,
    /// A refresh token presented after it was exchanged: its session has been ended.
    RefreshTokenReused,
    /// Password right, but the account has a second factor and no `otp` was sent.
    OtpRequired,
    /// A wrong, stale or already used one-time code.
    OtpInvalid,
    /// A credential change (email, password, second factor) needs a login in this
    /// session within `auth.reauth_window`: log in again, then retry.
    ReauthenticationRequired,
    SessionNotFound,
    /// TOTP is already on: disable it before enrolling again.
    TotpAlreadyEnabled,
    /// No enrollment awaits confirmation.
    TotpNotPending,
    /// The account has no second factor to disable.
    TotpNotEnabled,
    NotAuthor,
    ArticleNotFound,
    CommentNotFound,
    ProfileNotFound,
    EmailTaken,
    UsernameTaken,
    SlugTaken,
    /// Lost a race with a concurrent request that bounded retries did not resolve.
    ConcurrentModification,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    /// The caller holds `idempotency.max_keys_per_caller` live keys already.
    IdempotencyKeyQuota,
    RequestTooLarge,
    RequestUnreadable,
    /// A gRPC call in an encoding this server does not speak (`application/grpc+json`).
    UnsupportedContentType,
    DatabaseUnavailable,
    /// Every password-hashing slot stayed busy for the configured queue time.
    HashingBusy,
    /// Too many attempts at credentials from this client or on this account.
    RateLimited,
    /// More requests in flight than `server.concurrency_limit`: shed at once.
    Overloaded,
    DeadlineExceeded,
    MethodNotFound,
    MethodNotAllowed,
    Internal,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::ValidationFailed => "VALIDATION_FAILED",
            Reason::CannotFollowSelf => "CANNOT_FOLLOW_SELF",
            Reason::InvalidPageToken => "INVALID_PAGE_TOKEN",
            Reason::InvalidUpdateMask => "INVALID_UPDATE_MASK",
            Reason::TokenMissing => "TOKEN_MISSING",
            Reason::TokenInvalid => "TOKEN_INVALID",
            Reason::TokenExpired => "TOKEN_EXPIRED",
            Reason::TokenRevoked => "TOKEN_REVOKED",
            Reason::InvalidCredentials => "INVALID_CREDENTIALS",
            Reason::RefreshTokenInvalid => "REFRESH_TOKEN_INVALID",
            Reason::RefreshTokenReused => "REFRESH_TOKEN_REUSED",
            Reason::OtpRequired => "OTP_REQUIRED",
            Reason::OtpInvalid => "OTP_INVALID",
            Reason::ReauthenticationRequired => "REAUTHENTICATION_REQUIRED",
            Reason::SessionNotFound => "SESSION_NOT_FOUND",
            Reason::TotpAlreadyEnabled => "TOTP_ALREADY_ENABLED",
            Reason::TotpNotPending => "TOTP_NOT_PENDING",
            Reason::TotpNotEnabled => "TOTP_NOT_ENABLED",
            Reason::NotAuthor => "NOT_AUTHOR",
            Reason::ArticleNotFound => "ARTICLE_NOT_FOUND",
            Reason::CommentNotFound => "COMMENT_NOT_FOUND",
            Reason::ProfileNotFound => "PROFILE_NOT_FOUND",
            Reason::EmailTaken => "EMAIL_TAKEN",
            Reason::UsernameTaken => "USERNAME_TAKEN",
            Reason::SlugTaken => "SLUG_TAKEN",
            Reason::ConcurrentModification => "CONCURRENT_MODIFICATION",
            Reason::IdempotencyKeyInUse => "IDEMPOTENCY_KEY_IN_USE",
            Reason::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Reason::InvalidIdempotencyKey => "INVALID_IDEMPOTENCY_KEY",
            Reason::IdempotencyKeyQuota => "IDEMPOTENCY_KEY_QUOTA",
            Reason::RequestTooLarge => "REQUEST_TOO_LARGE",
            Reason::RequestUnreadable => "REQUEST_UNREADABLE",
            Reason::UnsupportedContentType => "UNSUPPORTED_CONTENT_TYPE",
            Reason::DatabaseUnavailable => "DATABASE_UNAVAILABLE",
            Reason::HashingBusy => "HASHING_BUSY",
            Reason::RateLimited => "RATE_LIMITED",
            Reason::Overloaded => "OVERLOADED",
            Reason::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Reason::MethodNotFound => "METHOD_NOT_FOUND",
            Reason::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Reason::Internal => "INTERNAL",
        }
    }

    /// The field or resource a REST error body files this cause under.
    pub const fn subject(self) -> &'static str {
        match self {
            Reason::TokenMissing
            | Reason::TokenInvalid
            | Reason::TokenExpired
            | Reason::TokenRevoked => "token",
            Reason::RefreshTokenInvalid | Reason::RefreshTokenReused => "refreshToken",
            Reason::OtpRequired | Reason::OtpInvalid => "otp",
            Reason::ReauthenticationRequired => "session",
            Reason::SessionNotFound => "session",
            Reason::TotpAlreadyEnabled | Reason::TotpNotPending | Reason::TotpNotEnabled => "totp",
            Reason::InvalidCredentials => "credentials",
            Reason::ArticleNotFound | Reason::SlugTaken => "article",
            Reason::CommentNotFound => "comment",
            Reason::ProfileNotFound | Reason::CannotFollowSelf => "profile",
            Reason::EmailTaken => "email",
            Reason::UsernameTaken => "username",
            Reason::InvalidPageToken => "page_token",
            Reason::InvalidUpdateMask => "update_mask",
            Reason::IdempotencyKeyInUse
            | Reason::IdempotencyKeyReused
            | Reason::InvalidIdempotencyKey
            | Reason::IdempotencyKeyQuota => "Idempotency-Key",
            Reason::DatabaseUnavailable | Reason::ConcurrentModification => "database",
            Reason::RequestTooLarge
            | Reason::RequestUnreadable
            | Reason::UnsupportedContentType => "body",
            Reason::DeadlineExceeded
            | Reason::HashingBusy
            | Reason::RateLimited
            | Reason::Overloaded => "request",
            Reason::MethodNotFound => "route",
            Reason::MethodNotAllowed => "method",
            Reason::NotAuthor | Reason::ValidationFailed | Reason::Internal => "request",
        }
    }
}
