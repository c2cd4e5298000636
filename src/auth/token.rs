//! Access tokens: JWTs (HS256) that name a user and the session they belong to. They
//! expire with their session (or sooner, with `auth.token_ttl`): the session itself is
//! checked on every request, so revocation does not wait for expiry. The header's `kid` names the signing key, so a key can be rotated: tokens signed by
//! the previous key stay valid until `auth.previous_jwt_secret_until`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
    errors::ErrorKind,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{config::AuthSettings, error::AppError};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    /// The session the token was issued in.
    sid: Uuid,
    /// The session's version when issued: a password change bumps it.
    sv: i32,
    iss: String,
    iat: u64,
    exp: u64,
}

/// Clock skew tolerated between the issuer and us (jsonwebtoken's default leeway).
const LEEWAY_SECS: u64 = 60;

/// What a genuine, unexpired token says; whether its session still stands is checked
/// separately (`auth::sessions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub user_id: i64,
    pub session_id: Uuid,
    pub session_version: i32,
}

/// Why a token was refused: an expired one is worth a refresh, an invalid one is a bug
/// or an attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    Expired,
    Invalid,
}

struct Key {
    id: String,
    decoding: DecodingKey,
    /// Only the previous key has one: after it, its tokens are refused.
    until: Option<DateTime<Utc>>,
}

pub struct TokenKeys {
    encoding: EncodingKey,
    /// The current key first.
    keys: Vec<Key>,
    validation: Validation,
    issuer: String,
    /// Zero: tokens live as long as their session.
    ttl: Duration,
}

/// A key's public name: the start of a digest of it, so operators need not name keys and
/// the id changes whenever the key does.
fn key_id(secret: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"conduit jwt kid\0")
        .chain_update(secret.as_bytes())
        .finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl TokenKeys {
    pub fn new(settings: &AuthSettings) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&settings.jwt_issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let current = settings.jwt_secret.expose();
        let mut keys = vec![Key {
            id: key_id(current),
            decoding: DecodingKey::from_secret(current.as_bytes()),
            until: None,
        }];
        if let (Some(previous), Some(until)) = (
            &settings.previous_jwt_secret,
            settings.previous_jwt_secret_until,
        ) {
            keys.push(Key {
                id: key_id(previous.expose()),
                decoding: DecodingKey::from_secret(previous.expose().as_bytes()),
                until: Some(until),
            });
        }
        Self {
            encoding: EncodingKey::from_secret(current.as_bytes()),
            keys,
            validation,
            issuer: settings.jwt_issuer.clone(),
            ttl: settings.token_ttl,
        }
    }

    /// The current key's id, as tokens carry it in their `kid` header.
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// A token for the session, expiring when the session ends (`session_ends`) or after
    /// `auth.token_ttl`, whichever comes first.
    pub fn issue(
        &self,
        user_id: i64,
        session_id: Uuid,
        session_version: i32,
        session_ends: DateTime<Utc>,
    ) -> Result<String, AppError> {
        let now = unix_now().map_err(AppError::internal)?;
        let ends = u64::try_from(session_ends.timestamp()).unwrap_or(now);
        let exp = match self.ttl.as_secs() {
            0 => ends,
            ttl => (now + ttl).min(ends),
        };
        let claims = Claims {
            sub: user_id.to_string(),
            sid: session_id,
            sv: session_version,
            iss: self.issuer.clone(),
            iat: now,
            exp,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.keys[0].id.clone());
        encode(&header, &claims, &self.encoding).map_err(AppError::internal)
    }

    /// What the token says, if it is genuine (signed by a key we accept, with HS256 —
    /// `alg` is not the token's choice) and current. The current key is tried first, and
    /// the header parsed apart from the token only when it fails and a previous key is
    /// still in its grace period.
    pub fn verify(&self, token: &str) -> Result<Verified, Rejected> {
        let current = &self.keys[0];
        match self.verify_with(token, current) {
            Err(Rejected::Invalid) if self.keys.len() > 1 => {}
            outcome => return outcome,
        }
        let kid = decode_header(token)
            .map_err(|_| Rejected::Invalid)?
            .kid
            .ok_or(Rejected::Invalid)?;
        let previous = self.keys[1..]
            .iter()
            .find(|k| k.id == kid)
            .filter(|k| k.until.is_none_or(|until| Utc::now() < until))
            .ok_or(Rejected::Invalid)?;
        self.verify_with(token, previous)
    }

    fn verify_with(&self, token: &str, key: &Key) -> Result<Verified, Rejected> {
        let data = decode::<Claims>(token, &key.decoding, &self.validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => Rejected::Expired,
            _ => Rejected::Invalid,
        })?;
        // A token signed with this key names it; one that names another is not ours.
        if data.header.kid.as_deref() != Some(key.id.as_str()) {
            return Err(Rejected::Invalid);
        }
        // Issued in the future: a forged clock, or a key used elsewhere; not ours.
        let now = unix_now().map_err(|_| Rejected::Invalid)?;
        if data.claims.iat > now + LEEWAY_SECS {
            return Err(Rejected::Invalid);
        }
        Ok(Verified {
            user_id: data.claims.sub.parse().map_err(|_| Rejected::Invalid)?,
            session_id: data.claims.sid,
            session_version: data.claims.sv,
        })
    }
}

fn unix_now() -> Result<u64, std::time::SystemTimeError> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> TokenKeys {
        TokenKeys::new(&AuthSettings {
            jwt_secret: secret.into(),
            ..AuthSettings::default()
        })
    }

    fn far() -> DateTime<Utc> {
        Utc::now() + chrono::Duration::days(30)
    }

    #[test]
    fn tokens_expire_with_their_session_or_their_ttl() {
        let k = keys(&"a".repeat(32));
        let sid = Uuid::new_v4();
        let ends = Utc::now() + chrono::Duration::days(3);
        let token = k.issue(1, sid, 0, ends).expect("issue");
        let exp = decode::<Claims>(&token, &k.keys[0].decoding, &k.validation)
            .expect("decode")
            .claims
            .exp;
        assert_eq!(exp, ends.timestamp() as u64, "exp is the session's end");
        let short = TokenKeys::new(&AuthSettings {
            jwt_secret: "a".repeat(32).into(),
            token_ttl: Duration::from_secs(60),
            ..AuthSettings::default()
        });
        let token = short.issue(1, sid, 0, ends).expect("issue");
        let exp = decode::<Claims>(&token, &k.keys[0].decoding, &k.validation)
            .expect("decode")
            .claims
            .exp;
        assert!(
            exp <= unix_now().expect("now") + 60,
            "auth.token_ttl caps it"
        );
    }

    #[test]
    fn tokens_issued_in_the_future_are_refused() {
        let k = keys(&"a".repeat(32));
        let now = unix_now().expect("now");
        let forge = |iat: u64| {
            let claims = Claims {
                sub: "1".into(),
                sid: Uuid::new_v4(),
                sv: 0,
                iss: AuthSettings::default().jwt_issuer,
                iat,
                exp: now + 3600,
            };
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(k.current_key_id().into());
            encode(&header, &claims, &k.encoding).expect("encode")
        };
        assert!(k.verify(&forge(now + 30)).is_ok(), "within the leeway");
        assert_eq!(k.verify(&forge(now + 600)), Err(Rejected::Invalid));
    }

    fn rotated(current: &str, previous: &str, until: DateTime<Utc>) -> TokenKeys {
        TokenKeys::new(&AuthSettings {
            jwt_secret: current.into(),
            previous_jwt_secret: Some(previous.into()),
            previous_jwt_secret_until: Some(until),
            ..AuthSettings::default()
        })
    }

    #[test]
    fn round_trip_and_rejections() {
        let k = keys(&"a".repeat(32));
        let sid = Uuid::new_v4();
        let token = k.issue(42, sid, 3, far()).expect("issue");
        assert_eq!(
            k.verify(&token),
            Ok(Verified {
                user_id: 42,
                session_id: sid,
                session_version: 3
            })
        );
        let invalid = Err(Rejected::Invalid);
        assert_eq!(
            keys(&"b".repeat(32)).verify(&token),
            invalid,
            "other secret"
        );
        assert_eq!(k.verify("not.a.jwt"), invalid);
        assert_eq!(k.verify(&format!("{token}x")), invalid, "tampered");
        // Past the default 60 s of leeway.
        let old = Claims {
            sub: "42".into(),
            sid,
            sv: 0,
            iss: AuthSettings::default().jwt_issuer,
            iat: 1_000,
            exp: 1_100,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(k.current_key_id().into());
        let old = encode(&header, &old, &k.encoding).expect("encode");
        assert_eq!(k.verify(&old), Err(Rejected::Expired));
    }

    #[test]
    fn previous_key_is_accepted_only_during_its_grace_period() {
        let (old, new) = ("o".repeat(32), "n".repeat(32));
        let token = keys(&old)
            .issue(7, Uuid::new_v4(), 0, far())
            .expect("issue");
        let later = Utc::now() + chrono::Duration::hours(1);
        let during = rotated(&new, &old, later);
        assert_eq!(during.verify(&token).map(|v| v.user_id), Ok(7));
        assert_ne!(during.current_key_id(), keys(&old).current_key_id());
        // New tokens are signed with the new key.
        let fresh = during.issue(7, Uuid::new_v4(), 0, far()).expect("issue");
        assert_eq!(keys(&new).verify(&fresh).map(|v| v.user_id), Ok(7));
        let earlier = Utc::now() - chrono::Duration::seconds(1);
        assert_eq!(
            rotated(&new, &old, earlier).verify(&token),
            Err(Rejected::Invalid)
        );
        // A token without a key id names no key we accept.
        let claims = Claims {
            sub: "7".into(),
            sid: Uuid::new_v4(),
            sv: 0,
            iss: AuthSettings::default().jwt_issuer,
            iat: 0,
            exp: u64::MAX / 2,
        };
        let unnamed = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(new.as_bytes()),
        )
        .expect("encode");
        assert_eq!(keys(&new).verify(&unnamed), Err(Rejected::Invalid));
    }
}
