//! Rate limits on the requests that guess credentials — login and registration (and, as
//! they arrive, token refresh and one-time-code checks): per client IP and per account,
//! so neither one address trying many accounts nor many addresses trying one account get
//! more than a few guesses a minute. Over the limit: 429 with `Retry-After` /
//! `RESOURCE_EXHAUSTED` with `RetryInfo`, before any password is hashed.
//!
//! The client IP is the connection's peer, or — only when that peer is one of
//! `server.trusted_proxies` — the nearest untrusted address in `X-Forwarded-For`
//! (`client_ip`). Limiter state is per key and swept by the lifecycle's
//! `rate-limit-upkeep` worker, so keys seen once do not stay for ever.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use http::HeaderMap;
use ipnet::IpNet;

use crate::{
    config::RateLimitSettings,
    error::{AppError, AppResult},
    middleware::request_id,
};

#[derive(Clone)]
pub struct Attempts(Arc<Limiters>);

struct Limiters {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_account: Option<DefaultKeyedRateLimiter<String>>,
}

fn per_minute(n: u32) -> Option<Quota> {
    NonZeroU32::new(n).map(Quota::per_minute)
}

impl Attempts {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self(Arc::new(Limiters {
            per_ip: per_minute(settings.per_ip_per_minute).map(RateLimiter::keyed),
            per_account: per_minute(settings.per_account_per_minute).map(RateLimiter::keyed),
        }))
    }

    /// Counts one attempt on `account` (an email, lower-cased) from the current request's
    /// client; refused when either has had its share.
    pub fn check(&self, account: &str) -> AppResult<()> {
        let clock = DefaultClock::default();
        if let (Some(limiter), Some(ip)) = (&self.0.per_ip, request_id::client_ip())
            && let Err(not_until) = limiter.check_key(&ip)
        {
            return Err(refused(not_until.wait_time_from(clock.now())));
        }
        if let Some(limiter) = &self.0.per_account
            && let Err(not_until) = limiter.check_key(&account.to_lowercase())
        {
            return Err(refused(not_until.wait_time_from(clock.now())));
        }
        Ok(())
    }

    /// Forgets keys whose limits have fully recovered.
    pub fn sweep(&self) {
        if let Some(limiter) = &self.0.per_ip {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.0.per_account {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

fn refused(wait: Duration) -> AppError {
    metrics::counter!(crate::metrics::RATE_LIMITED).increment(1);
    AppError::RateLimited(wait.max(Duration::from_secs(1)))
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which case the
/// rightmost `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().expect("header"));
        headers
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.5".parse().expect("ip");
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let stranger: IpAddr = "198.51.100.9".parse().expect("ip");
        assert_eq!(
            client_ip(stranger, &xff("203.0.113.7"), &trusted),
            stranger,
            "an untrusted peer cannot choose its address"
        );
        assert_eq!(
            client_ip(proxy, &xff("203.0.113.7"), &trusted),
            "203.0.113.7".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(
            client_ip(proxy, &xff("1.2.3.4, 203.0.113.7, 10.0.0.9"), &trusted),
            "203.0.113.7".parse::<IpAddr>().expect("ip"),
            "the nearest untrusted hop, not what the client wrote first"
        );
        assert_eq!(client_ip(proxy, &xff("garbage"), &trusted), proxy);
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &[]), proxy);
    }

    #[test]
    fn an_account_gets_its_share_then_waits() {
        let attempts = Attempts::new(&RateLimitSettings {
            per_ip_per_minute: 0,
            per_account_per_minute: 2,
        });
        attempts.check("Jake@Example.io").expect("first");
        attempts
            .check("jake@example.io")
            .expect("second, same account");
        let refused = attempts.check("jake@example.io");
        assert!(
            matches!(refused, Err(AppError::RateLimited(wait)) if wait >= Duration::from_secs(1)),
            "{refused:?}"
        );
        attempts.check("other@example.io").expect("another account");
    }
}
