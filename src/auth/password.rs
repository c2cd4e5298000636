//! Argon2id password hashing, run off the async workers because one hash takes tens of
//! milliseconds of CPU.

use std::sync::LazyLock;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use crate::error::{AppError, AppResult};

pub async fn hash(password: String) -> AppResult<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| AppError::internal(anyhow::anyhow!("hashing password: {e}")))
    })
    .await
    .map_err(AppError::internal)?
}

/// `stored` is `None` when no user matched: a dummy hash is verified anyway so that the
/// response time does not tell whether an email is registered.
pub async fn verify(password: String, stored: Option<String>) -> AppResult<bool> {
    tokio::task::spawn_blocking(move || {
        let matched = Argon2::default()
            .verify_password(
                password.as_bytes(),
                stored.as_deref().unwrap_or(DUMMY_HASH.as_str()),
            )
            .is_ok();
        matched && stored.is_some()
    })
    .await
    .map_err(AppError::internal)
}

/// A real hash with the default parameters, so verifying against it costs what a real
/// verification costs.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    Argon2::default()
        .hash_password(uuid::Uuid::new_v4().as_bytes())
        .map(|hash| hash.to_string())
        .unwrap_or_default()
});

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ() {
        let a = hash("jakejake".into()).await.expect("hash");
        let b = hash("jakejake".into()).await.expect("hash");
        assert_ne!(a, b, "salted");
        assert!(
            verify("jakejake".into(), Some(a.clone()))
                .await
                .expect("verify")
        );
        assert!(!verify("wrong".into(), Some(a)).await.expect("verify"));
        assert!(!verify("jakejake".into(), None).await.expect("verify"));
    }
}
