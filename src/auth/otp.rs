//! One-time passwords as a second factor: TOTP (RFC 6238: HMAC-SHA-1, 6 digits, 30 s
//! steps, ±1 step of clock skew) through `totp-rs`, and single-use recovery codes for a
//! lost authenticator. A TOTP code is accepted once: the step it matched is remembered and
//! only later steps are accepted after it (RFC 6238 §5.2).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect,
    Set, sea_query::Expr,
};
use totp_rs::{Algorithm, Builder, Secret, Totp};

use super::sessions::digest;
use crate::{
    entities::{
        recovery_codes::{self, Entity as RecoveryCodes},
        user_totp::{self, Entity as UserTotp},
    },
    error::{AppError, AppResult},
};

pub const RECOVERY_CODES: usize = 10;

/// An enrollment to show the user once: the secret for manual entry and the URI that
/// authenticator apps read from a QR code.
pub struct Enrollment {
    pub secret: String,
    pub otpauth_uri: String,
}

fn totp(secret_base32: &str, issuer: &str, account: &str) -> AppResult<Totp> {
    let secret = Secret::try_from_base32(secret_base32)
        .map_err(|e| AppError::internal(anyhow::anyhow!("stored TOTP secret: {e}")))?;
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(secret)
        .with_issuer(Some(issuer))
        .with_account_name(account)
        .build()
        .map_err(|e| AppError::internal(anyhow::anyhow!("TOTP parameters: {e}")))
}

/// A new random secret (160 bits, as RFC 4226 recommends) and how to show it.
pub fn enrollment(issuer: &str, account: &str) -> AppResult<Enrollment> {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).map_err(|e| AppError::internal(anyhow::anyhow!("{e}")))?;
    let secret = Secret::from(bytes).to_base32();
    // An issuer or account containing ':' cannot be put in the label; the issuer
    // parameter still names the service.
    let account = account.replace(':', "");
    let otpauth_uri = totp(&secret, &issuer.replace(':', ""), &account)?
        .to_url()
        .map_err(|e| AppError::internal(anyhow::anyhow!("otpauth URI: {e}")))?;
    Ok(Enrollment {
        secret,
        otpauth_uri,
    })
}

/// The step a 6-digit `code` matches for `secret` now (±1 step), if any.
pub fn matching_step(secret_base32: &str, code: &str) -> AppResult<Option<i64>> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    Ok(totp(secret_base32, "conduit", "user")?
        .check(code, now)
        .and_then(|step| i64::try_from(step).ok()))
}

/// Recovery codes as shown to the user: 16 base64url characters (96 bits) in groups of
/// four; compared ignoring dashes, spaces and case of nothing else.
pub fn recovery_codes() -> AppResult<Vec<String>> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 12];
            getrandom::fill(&mut bytes).map_err(|e| AppError::internal(anyhow::anyhow!("{e}")))?;
            let raw = URL_SAFE_NO_PAD.encode(bytes);
            Ok(raw
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("-"))
        })
        .collect()
}

fn recovery_digest(code: &str) -> String {
    let normalized: String = code
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .collect();
    digest(&normalized)
}

/// The user's TOTP row, locked until the transaction ends.
pub async fn lock(
    db: &impl ConnectionTrait,
    user_id: i64,
) -> Result<Option<user_totp::Model>, DbErr> {
    UserTotp::find_by_id(user_id).lock_exclusive().one(db).await
}

/// The user's second factor if it is on (confirmed), locked until the transaction ends.
pub async fn lock_enabled(
    db: &impl ConnectionTrait,
    user_id: i64,
) -> Result<Option<user_totp::Model>, DbErr> {
    Ok(lock(db, user_id)
        .await?
        .filter(|t| t.confirmed_at.is_some()))
}

/// Starts (or restarts) an enrollment awaiting confirmation.
pub async fn begin(db: &impl ConnectionTrait, user_id: i64, secret: &str) -> Result<(), DbErr> {
    UserTotp::delete_by_id(user_id).exec(db).await?;
    user_totp::ActiveModel {
        user_id: Set(user_id),
        secret: Set(secret.to_string()),
        confirmed_at: Set(None),
        last_step: Set(None),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await
    .map(drop)
}

/// Spends `code` for a locked TOTP row: a current TOTP code not used before (its step is
/// remembered), or, when `recovery` allows, an unused recovery code (marked used).
pub async fn spend(
    db: &impl ConnectionTrait,
    row: &user_totp::Model,
    code: &str,
    recovery: bool,
) -> AppResult<bool> {
    if let Some(step) = matching_step(&row.secret, code)? {
        if row.last_step.is_some_and(|last| step <= last) {
            return Ok(false);
        }
        UserTotp::update_many()
            .col_expr(user_totp::Column::LastStep, Expr::val(step))
            .filter(user_totp::Column::UserId.eq(row.user_id))
            .exec(db)
            .await?;
        return Ok(true);
    }
    if !recovery {
        return Ok(false);
    }
    let used = RecoveryCodes::update_many()
        .col_expr(recovery_codes::Column::UsedAt, Expr::val(Utc::now()))
        .filter(recovery_codes::Column::Digest.eq(recovery_digest(code)))
        .filter(recovery_codes::Column::UserId.eq(row.user_id))
        .filter(recovery_codes::Column::UsedAt.is_null())
        .exec(db)
        .await?;
    Ok(used.rows_affected == 1)
}

/// Marks the enrollment confirmed and replaces the user's recovery codes.
pub async fn confirm(
    db: &impl ConnectionTrait,
    user_id: i64,
    codes: &[String],
) -> Result<(), DbErr> {
    UserTotp::update_many()
        .col_expr(user_totp::Column::ConfirmedAt, Expr::val(Utc::now()))
        .filter(user_totp::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    RecoveryCodes::delete_many()
        .filter(recovery_codes::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    RecoveryCodes::insert_many(codes.iter().map(|code| recovery_codes::ActiveModel {
        digest: Set(recovery_digest(code)),
        user_id: Set(user_id),
        used_at: Set(None),
    }))
    .exec_without_returning(db)
    .await
    .map(drop)
}

/// Removes the second factor and its recovery codes.
pub async fn remove(db: &impl ConnectionTrait, user_id: i64) -> Result<(), DbErr> {
    RecoveryCodes::delete_many()
        .filter(recovery_codes::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    UserTotp::delete_by_id(user_id).exec(db).await.map(drop)
}

/// The code for `secret` at `unix_time`: for tests and tools that play the authenticator.
pub fn code_at(secret_base32: &str, unix_time: u64) -> AppResult<String> {
    Ok(totp(secret_base32, "conduit", "user")?
        .generate(unix_time)
        .to_string())
}
