//! Argon2id password hashing, run off the async workers because one hash takes tens of
//! milliseconds of CPU and 19 MiB of memory. Unbounded, a storm of logins (unknown emails
//! cost a hash too) ran one blocking thread and 19 MiB per request: 200 concurrent logins
//! took the process to 3.8 GB. So hashes run `auth.max_concurrent_hashes` at a time; a
//! request waits at most `auth.hash_queue_timeout` for a slot and is then answered
//! 503 / UNAVAILABLE, while every other request goes on being served.
//!
//! Each slot hashes in a memory block kept for reuse, not allocated per hash: a fresh
//! 19 MiB allocation on whichever blocking thread ran the hash left freed blocks in
//! glibc's per-thread arenas (its mmap threshold rises after the first free), so peak
//! memory grew with the threads that had ever hashed, not with the slots. With the blocks
//! kept, peak memory is about the idle process plus slots × 19 MiB.

use std::{
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    config::AuthSettings,
    error::{AppError, AppResult, Reason},
};

#[derive(Clone)]
pub struct Hasher {
    slots: Arc<Semaphore>,
    /// Memory blocks of slots not hashing right now; at most one per slot ever exists.
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
    queue_timeout: Duration,
}

/// A slot and its memory, for one hash on a blocking thread; the memory goes back to the
/// pool when the work is done, then the slot is freed.
struct Slot {
    _permit: OwnedSemaphorePermit,
    memory: Vec<Block>,
    pool: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let memory = std::mem::take(&mut self.memory);
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(memory);
    }
}

impl Hasher {
    pub fn new(settings: &AuthSettings) -> Self {
        describe_metrics();
        let slots = match settings.max_concurrent_hashes {
            0 => {
                let cores = std::thread::available_parallelism().map_or(2, usize::from);
                let limit = memory_limit();
                let slots = default_slots(cores, limit);
                tracing::info!(
                    slots,
                    cores,
                    memory_limit_mib = limit.map(|l| l / (1024 * 1024)),
                    "password hashing slots (auth.max_concurrent_hashes = 0: one per core, at most half the memory limit)"
                );
                slots
            }
            n => n,
        };
        Self {
            slots: Arc::new(Semaphore::new(slots)),
            memory: Arc::new(Mutex::new(Vec::with_capacity(slots))),
            queue_timeout: settings.hash_queue_timeout,
        }
    }

    async fn slot(&self) -> AppResult<Slot> {
        let permit = match tokio::time::timeout(
            self.queue_timeout,
            self.slots.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(closed)) => return Err(AppError::internal(closed)),
            Err(_) => {
                metrics::counter!(HASHING_REFUSED).increment(1);
                return Err(AppError::Unavailable(Reason::HashingBusy));
            }
        };
        let kept = self.memory.lock().unwrap_or_else(|e| e.into_inner()).pop();
        Ok(Slot {
            _permit: permit,
            // The first hash in a slot allocates its block; every later one reuses it.
            memory: kept.unwrap_or_default(),
            pool: self.memory.clone(),
        })
    }

    pub async fn hash(&self, password: String) -> AppResult<String> {
        let mut slot = self.slot().await?;
        tokio::task::spawn_blocking(move || hash_in(password.as_bytes(), &mut slot.memory))
            .await
            .map_err(AppError::internal)?
    }

    /// `stored` is `None` when no user matched: a dummy hash is verified anyway so that
    /// the response time does not tell whether an email is registered.
    pub async fn verify(&self, password: String, stored: Option<String>) -> AppResult<bool> {
        let mut slot = self.slot().await?;
        tokio::task::spawn_blocking(move || {
            let against = stored.as_deref().unwrap_or(DUMMY_HASH.as_str());
            let matched = verify_in(password.as_bytes(), against, &mut slot.memory);
            matched && stored.is_some()
        })
        .await
        .map_err(AppError::internal)
    }
}

/// Memory one hashing slot holds: Argon2id's default 19 MiB block.
const SLOT_BYTES: u64 = 19 * 1024 * 1024;

/// One slot per core, but no more than half of `memory_limit` in hashing blocks: a
/// 32-core node with a 256 MiB pod limit gets 6 slots, not 32 (600 MiB, an OOM kill).
fn default_slots(cores: usize, memory_limit: Option<u64>) -> usize {
    let by_memory = memory_limit.map_or(usize::MAX, |limit| (limit / 2 / SLOT_BYTES) as usize);
    cores.min(by_memory).max(1)
}

/// The process's memory limit from its cgroup (v2 `memory.max`, v1
/// `memory.limit_in_bytes`); `None` when unlimited or not in a cgroup.
fn memory_limit() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let value = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))?;
    // v2 says "max"; v1 says a number near u64::MAX when unlimited.
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|limit| *limit < (1 << 60))
}

/// `memory` grown to the blocks `params` need (it keeps the size for the next hash).
fn blocks<'m>(memory: &'m mut Vec<Block>, params: &Params) -> &'m mut [Block] {
    let needed = params.block_count();
    if memory.len() < needed {
        memory.resize(needed, Block::default());
    }
    &mut memory[..needed]
}

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) for `password` with the
/// default parameters and a fresh salt.
fn hash_in(password: &[u8], memory: &mut Vec<Block>) -> AppResult<String> {
    let failed =
        |e: &dyn std::fmt::Display| AppError::internal(anyhow::anyhow!("hashing password: {e}"));
    let params = Params::default();
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| failed(&e))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, &salt, &mut out, blocks(memory, &params))
        .map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.into(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| failed(&e))?),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `stored`, with the parameters it names.
fn verify_in(password: &[u8], stored: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(phc) = PasswordHash::new(stored) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(phc.algorithm.as_str()),
        Params::try_from(&phc),
    ) else {
        return false;
    };
    let version = match phc.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let hashed = Argon2::new(algorithm, version, params.clone()).hash_password_into_with_memory(
        password,
        salt,
        &mut out,
        blocks(memory, &params),
    );
    // Compared in constant time: how much of a guess matched must not show in timing.
    hashed.is_ok()
        && out
            .iter()
            .zip(expected.as_bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// A real hash with the default parameters, so verifying against it costs what a real
/// verification costs.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_in(uuid::Uuid::new_v4().as_bytes(), &mut Vec::new()).unwrap_or_default());

pub const HASHING_REFUSED: &str = "conduit_password_hashing_refused_total";

/// Describes this module's metrics to the recorder (a no-op until one is installed).
pub fn describe_metrics() {
    metrics::describe_counter!(
        HASHING_REFUSED,
        "Logins, registrations and password changes answered 503 / UNAVAILABLE because every password-hashing slot stayed busy"
    );
}

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

    #[test]
    fn slots_fit_the_memory_limit() {
        let mib = 1024 * 1024;
        assert_eq!(default_slots(32, Some(256 * mib)), 6);
        assert_eq!(default_slots(2, Some(256 * mib)), 2);
        assert_eq!(default_slots(32, None), 32);
        assert_eq!(default_slots(8, Some(16 * mib)), 1, "always one");
    }

    #[test]
    fn hashes_agree_with_the_argon2_crate() {
        use argon2::{PasswordHasher, PasswordVerifier};
        let ours = hash_in(b"jakejake", &mut Vec::new()).expect("hash");
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        Argon2::default()
            .verify_password(b"jakejake", ours.as_str())
            .expect("the crate verifies ours");
        let theirs = Argon2::default()
            .hash_password(b"jakejake")
            .expect("hash")
            .to_string();
        let mut memory = Vec::new();
        assert!(verify_in(b"jakejake", &theirs, &mut memory));
        assert!(!verify_in(b"jakejakf", &theirs, &mut memory));
        assert!(!verify_in(b"jakejake", "not a hash", &mut memory));
        assert_eq!(
            memory.len(),
            Params::default().block_count(),
            "kept for reuse"
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
