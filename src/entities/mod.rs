//! sea-orm entities, shared by the feature modules' repositories. The schema itself is
//! owned by the migrations crate; these mirror it.

pub mod article_tags;
pub mod articles;
pub mod comments;
pub mod favorites;
pub mod follows;
pub mod idempotency_keys;
pub mod job_leases;
pub mod recovery_codes;
pub mod refresh_tokens;
pub mod sessions;
pub mod tags;
pub mod user_totp;
pub mod users;
