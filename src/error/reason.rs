//! The stable causes clients branch on (`google.rpc.ErrorInfo.reason`).

/// The error domain every `google.rpc.ErrorInfo` carries.
pub const ERROR_DOMAIN: &str = "conduit";

/// Stable, machine-readable causes: `google.rpc.ErrorInfo.reason` on every non-OK gRPC
/// status. Declared once, with when each is returned, as `conduit.v1.Reason` in
/// `proto/conduit/v1/errors.proto`; this is that generated enum.
pub use crate::proto::conduit::v1::Reason;

impl Reason {
    /// The name clients see in `ErrorInfo.reason`: the proto value's name without its
    /// `REASON_` prefix (which buf's enum rules ask for).
    pub fn as_str(self) -> &'static str {
        let name = self.as_str_name();
        name.strip_prefix("REASON_").unwrap_or(name)
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
            | Reason::UnsupportedContentType
            | Reason::MalformedMessage => "body",
            Reason::DeadlineExceeded
            | Reason::HashingBusy
            | Reason::RateLimited
            | Reason::Overloaded => "request",
            Reason::MethodNotFound => "route",
            Reason::MethodNotAllowed => "method",
            Reason::NotAuthor
            | Reason::ValidationFailed
            | Reason::Internal
            | Reason::Unspecified => "request",
        }
    }
}
