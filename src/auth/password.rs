//! Argon2id password hashing, run off the async workers because one hash takes tens of
//! milliseconds of CPU and 19 MiB of memory. Unbounded, a storm of logins (unknown emails
//! cost a hash too) ran one blocking thread and 19 MiB per request: 200 concurrent logins
//! took the process to 3.8 GB. So hashes run `auth.max_concurrent_hashes` at a time; a
//! request waits at most `auth.hash_queue_timeout` for a slot and is then answered
//! 503 / UNAVAILABLE, while every other request goes on being served.

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    config::AuthSettings,
    error::{AppError, AppResult, Reason},
};

#[derive(Clone)]
pub struct Hasher {
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
}

impl Hasher {
    pub fn new(settings: &AuthSettings) -> Self {
        let slots = match settings.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        };
        Self {
            slots: Arc::new(Semaphore::new(slots)),
            queue_timeout: settings.hash_queue_timeout,
        }
    }

    async fn slot(&self) -> AppResult<OwnedSemaphorePermit> {
        match tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(closed)) => Err(AppError::internal(closed)),
            Err(_) => {
                metrics::counter!(crate::metrics::HASHING_REFUSED).increment(1);
                Err(AppError::Unavailable(Reason::HashingBusy))
            }
        }
    }

    pub async fn hash(&self, password: String) -> AppResult<String> {
        let slot = self.slot().await?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|e| AppError::internal(anyhow::anyhow!("hashing password: {e}")))
        })
        .await
        .map_err(AppError::internal)?
    }

    /// `stored` is `None` when no user matched: a dummy hash is verified anyway so that
    /// the response time does not tell whether an email is registered.
    pub async fn verify(&self, password: String, stored: Option<String>) -> AppResult<bool> {
        let slot = self.slot().await?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
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
        let hasher = Hasher::new(&AuthSettings::default());
        let a = hasher.hash("jakejake".into()).await.expect("hash");
        let b = hasher.hash("jakejake".into()).await.expect("hash");
        assert_ne!(a, b, "salted");
        assert!(
            hasher
                .verify("jakejake".into(), Some(a.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify("wrong".into(), Some(a))
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify("jakejake".into(), None)
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn a_full_queue_is_unavailable_not_unbounded() {
        let hasher = Hasher::new(&AuthSettings {
            max_concurrent_hashes: 1,
            hash_queue_timeout: Duration::from_millis(10),
            ..AuthSettings::default()
        });
        let held = hasher.slot().await.expect("the one slot");
        let refused = hasher.hash("jakejake".into()).await;
        assert!(
            matches!(refused, Err(AppError::Unavailable(Reason::HashingBusy))),
            "{refused:?}"
        );
        drop(held);
        hasher.hash("jakejake".into()).await.expect("a free slot");
    }
}
