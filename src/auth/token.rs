//! JWTs (HS256) that identify a user to both protocols.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode, errors::ErrorKind,
};
use serde::{Deserialize, Serialize};

use crate::{config::AuthSettings, error::AppError};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    iat: u64,
    exp: u64,
}

/// Why a token was refused: an expired one is worth a re-login, an invalid one is a bug
/// or an attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    Expired,
    Invalid,
}

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    ttl: Duration,
}

impl TokenKeys {
    pub fn new(settings: &AuthSettings) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&settings.jwt_issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(settings.jwt_secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(settings.jwt_secret.expose().as_bytes()),
            validation,
            issuer: settings.jwt_issuer.clone(),
            ttl: settings.token_ttl,
        }
    }

    pub fn issue(&self, user_id: i64) -> Result<String, AppError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(AppError::internal)?
            .as_secs();
        let claims = Claims {
            sub: user_id.to_string(),
            iss: self.issuer.clone(),
            iat: now,
            exp: now + self.ttl.as_secs(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(AppError::internal)
    }

    /// The user id the token was issued to, if the token is genuine and current.
    pub fn verify(&self, token: &str) -> Result<i64, Rejected> {
        let data =
            decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => Rejected::Expired,
                    _ => Rejected::Invalid,
                }
            })?;
        data.claims.sub.parse().map_err(|_| Rejected::Invalid)
    }
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

    #[test]
    fn round_trip_and_rejections() {
        let k = keys(&"a".repeat(32));
        let token = k.issue(42).expect("issue");
        assert_eq!(k.verify(&token), Ok(42));
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
            iss: AuthSettings::default().jwt_issuer,
            iat: 1_000,
            exp: 1_100,
        };
        let old = encode(&Header::new(Algorithm::HS256), &old, &k.encoding).expect("encode");
        assert_eq!(k.verify(&old), Err(Rejected::Expired));
    }
}
