//! Rate limits on the requests that guess credentials — login, registration, token
//! refresh and one-time-code checks — before any password is hashed. Three limits:
//!
//! - per client address (`rate_limit.per_ip_per_minute`): one address trying many
//!   accounts. IPv6 clients count per `rate_limit.ipv6_prefix` network (a /64 by
//!   default), since one host usually holds a whole /64;
//! - per account *from one address* (`per_account_per_minute`), strict: guessing at one
//!   account locks out only the address guessing;
//! - per account from all addresses together (`per_account_total_per_minute`), a much
//!   higher ceiling: a botnet still slows down, but a few addresses cannot lock the owner
//!   out of their account.
//!
//! The account is named by the caller as the database identifies it (the user's id once
//! the email has been looked up), so every spelling the database treats as one account —
//! any case, any Unicode folding Postgres applies — is one key here too.
//!
//! Over a limit: 429 with `Retry-After` / `RESOURCE_EXHAUSTED` with `RetryInfo`. The
//! client IP is the connection's peer, or — only when that peer is one of
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
    context,
    error::{AppError, AppResult},
};

#[derive(Clone)]
pub struct Attempts(Arc<Limiters>);

struct Limiters {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_account_from_ip: Option<DefaultKeyedRateLimiter<(String, Option<IpAddr>)>>,
    per_account: Option<DefaultKeyedRateLimiter<String>>,
    ipv6_prefix: u8,
}

fn per_minute(n: u32) -> Option<Quota> {
    NonZeroU32::new(n).map(Quota::per_minute)
}

impl Attempts {
    pub fn new(settings: &RateLimitSettings) -> Self {
        describe_metrics();
        Self(Arc::new(Limiters {
            per_ip: per_minute(settings.per_ip_per_minute).map(RateLimiter::keyed),
            per_account_from_ip: per_minute(settings.per_account_per_minute)
                .map(RateLimiter::keyed),
            per_account: per_minute(settings.per_account_total_per_minute).map(RateLimiter::keyed),
            ipv6_prefix: settings.ipv6_prefix,
        }))
    }

    /// Counts one attempt on `account` (as the database names it: `user:<id>`, or for an
    /// email no account has, the email folded) from the current request's client;
    /// refused when the client, the account from this client, or the account as a whole
    /// has had its share.
    pub fn check(&self, account: &str) -> AppResult<()> {
        let client = context::client_ip().map(|ip| self.bucket(ip));
        self.check_from(account, client)
    }

    fn check_from(&self, account: &str, client: Option<IpAddr>) -> AppResult<()> {
        let clock = DefaultClock::default();
        let refused =
            |not_until: governor::NotUntil<_>| Err(refused(not_until.wait_time_from(clock.now())));
        if let (Some(limiter), Some(ip)) = (&self.0.per_ip, client)
            && let Err(not_until) = limiter.check_key(&ip)
        {
            return refused(not_until);
        }
        if let Some(limiter) = &self.0.per_account_from_ip
            && let Err(not_until) = limiter.check_key(&(account.to_string(), client))
        {
            return refused(not_until);
        }
        if let Some(limiter) = &self.0.per_account
            && let Err(not_until) = limiter.check_key(&account.to_string())
        {
            return refused(not_until);
        }
        Ok(())
    }

    /// The address a client is counted under: IPv4 as it is, IPv6 by its network.
    fn bucket(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => ipnet::Ipv6Net::new(v6, self.0.ipv6_prefix.min(128))
                    .map_or(ip, |net| IpAddr::V6(net.trunc().addr())),
            },
            v4 => v4,
        }
    }

    /// Forgets keys whose limits have fully recovered.
    pub fn sweep(&self) {
        if let Some(limiter) = &self.0.per_ip {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.0.per_account_from_ip {
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
    metrics::counter!(RATE_LIMITED).increment(1);
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

pub const RATE_LIMITED: &str = "conduit_rate_limited_total";

/// Describes this module's metrics to the recorder (a no-op until one is installed).
pub fn describe_metrics() {
    metrics::describe_counter!(
        RATE_LIMITED,
        "Logins and registrations refused 429 / RESOURCE_EXHAUSTED by the attempt limits"
    );
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

    fn limits(per_ip: u32, per_account: u32, total: u32) -> Attempts {
        Attempts::new(&RateLimitSettings {
            per_ip_per_minute: per_ip,
            per_account_per_minute: per_account,
            per_account_total_per_minute: total,
            ipv6_prefix: 64,
        })
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn an_account_gets_its_share_per_address_then_waits() {
        let attempts = limits(0, 2, 0);
        let attacker = ip("198.51.100.9");
        attempts.check_from("user:7", attacker).expect("first");
        attempts.check_from("user:7", attacker).expect("second");
        let refused = attempts.check_from("user:7", attacker);
        assert!(
            matches!(refused, Err(AppError::RateLimited(wait)) if wait >= Duration::from_secs(1)),
            "{refused:?}"
        );
        attempts
            .check_from("user:7", ip("203.0.113.5"))
            .expect("the owner, from another address, is not locked out");
        attempts
            .check_from("user:8", attacker)
            .expect("another account");
    }

    #[test]
    fn many_addresses_meet_the_accounts_higher_ceiling() {
        let attempts = limits(0, 2, 5);
        for i in 0..5 {
            attempts
                .check_from("user:7", ip(&format!("198.51.100.{i}")))
                .expect("under the ceiling");
        }
        assert!(attempts.check_from("user:7", ip("198.51.100.200")).is_err());
    }

    #[test]
    fn ipv6_clients_count_per_network() {
        let attempts = limits(2, 0, 0);
        let bucket = |s: &str| attempts.bucket(s.parse().expect("ip"));
        assert_eq!(bucket("2001:db8:1:2::1"), bucket("2001:db8:1:2:ffff::9"));
        assert_ne!(bucket("2001:db8:1:2::1"), bucket("2001:db8:1:3::1"));
        assert_eq!(
            bucket("::ffff:192.0.2.1"),
            "192.0.2.1".parse::<IpAddr>().expect("ip")
        );
        let one_host = |suffix: &str| Some(bucket(&format!("2001:db8:1:2::{suffix}")));
        attempts.check_from("a", one_host("1")).expect("first");
        attempts.check_from("b", one_host("2")).expect("second");
        assert!(
            attempts.check_from("c", one_host("3")).is_err(),
            "a host cycling through its /64 is one client"
        );
    }
}
