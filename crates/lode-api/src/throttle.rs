//! Throttling per account and per client IP, by operation class, with
//! governor's keyed limiters (GCRA; a full second's quota may come as a burst).

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{Qps, ThrottleConfig};
use crate::error::ApiError;

/// Operation classes of the platform's throttling table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Pub,
    PubBroadcast,
    RRpc,
    Other,
}

impl Class {
    /// The class of a request path. Service calls
    /// (`/api/v1/products/{pk}/devices/{dn}/services/{identifier}`) are RRpc,
    /// whether the service is sync or async.
    pub(crate) fn of_path(path: &str) -> Class {
        if path == "/api/v1/pub" {
            Class::Pub
        } else if path == "/api/v1/rrpc" || is_service_call(path) {
            Class::RRpc
        } else if (path.starts_with("/api/v1/products/") || path.starts_with("/api/v1/groups/"))
            && path.ends_with("/broadcast")
        {
            Class::PubBroadcast
        } else {
            Class::Other
        }
    }

    fn name(self) -> &'static str {
        match self {
            Class::Pub => "Pub",
            Class::PubBroadcast => "PubBroadcast",
            Class::RRpc => "RRpc",
            Class::Other => "API calls",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

fn is_service_call(path: &str) -> bool {
    let levels: Vec<&str> = path.split('/').collect();
    matches!(
        levels.as_slice(),
        ["", "api", "v1", "products", pk, "devices", dn, "services", id]
            if !pk.is_empty() && !dn.is_empty() && !id.is_empty()
    )
}

struct Pair {
    account: Option<DefaultKeyedRateLimiter<String>>,
    ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

fn limiter<K: std::hash::Hash + Eq + Clone>(qps: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    NonZeroU32::new(qps).map(|n| RateLimiter::keyed(Quota::per_second(n)))
}

impl Pair {
    fn new(q: Qps) -> Pair {
        Pair {
            account: limiter(q.per_account),
            ip: limiter(q.per_ip),
        }
    }
}

/// The limiters of every class.
pub(crate) struct Throttle {
    classes: [Pair; 4],
}

impl Throttle {
    pub(crate) fn new(c: &ThrottleConfig) -> Throttle {
        Throttle {
            classes: [
                Pair::new(c.publish),
                Pair::new(c.broadcast),
                Pair::new(c.rrpc),
                Pair::new(c.other),
            ],
        }
    }

    /// Counts a call from `ip`; `Throttling` when over the quota.
    pub(crate) fn check_ip(&self, class: Class, ip: IpAddr) -> Result<(), ApiError> {
        match &self.classes[class.index()].ip {
            Some(l) if l.check_key(&ip).is_err() => Err(ApiError::Throttling(class.name())),
            _ => Ok(()),
        }
    }

    /// Counts a call of `account`; `Throttling` when over the quota.
    pub(crate) fn check_account(&self, class: Class, account: &str) -> Result<(), ApiError> {
        match &self.classes[class.index()].account {
            Some(l) if l.check_key(&account.to_owned()).is_err() => {
                Err(ApiError::Throttling(class.name()))
            }
            _ => Ok(()),
        }
    }

    /// Drops the state of keys whose quota is fully replenished.
    pub(crate) fn retain_recent(&self) {
        for pair in &self.classes {
            if let Some(l) = &pair.account {
                l.retain_recent();
                l.shrink_to_fit();
            }
            if let Some(l) = &pair.ip {
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
    }

    /// Keys held, for tests.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> usize {
        self.classes
            .iter()
            .map(|p| {
                p.account.as_ref().map_or(0, |l| l.len()) + p.ip.as_ref().map_or(0, |l| l.len())
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_limits() {
        assert_eq!(Class::of_path("/api/v1/pub"), Class::Pub);
        assert_eq!(
            Class::of_path("/api/v1/products/a1/broadcast"),
            Class::PubBroadcast
        );
        assert_eq!(
            Class::of_path("/api/v1/groups/g1/broadcast"),
            Class::PubBroadcast
        );
        assert_eq!(Class::of_path("/api/v1/products"), Class::Other);
        assert_eq!(
            Class::of_path("/api/v1/products/a1/devices/d1/services/reboot"),
            Class::RRpc
        );
        assert_eq!(
            Class::of_path("/api/v1/products/a1/devices/d1/service-calls"),
            Class::Other
        );
        assert_eq!(
            Class::of_path("/api/v1/products/a1/devices/d1/services/"),
            Class::Other
        );
        let cfg = ThrottleConfig {
            other: Qps {
                per_account: 2,
                per_ip: 0,
            },
            ..ThrottleConfig::default()
        };
        let t = Throttle::new(&cfg);
        assert!(t.check_account(Class::Other, "a").is_ok());
        assert!(t.check_account(Class::Other, "a").is_ok());
        assert!(t.check_account(Class::Other, "a").is_err());
        assert!(t.check_account(Class::Other, "b").is_ok());
        let ip = IpAddr::from([127, 0, 0, 1]);
        for _ in 0..10 {
            assert!(t.check_ip(Class::Other, ip).is_ok());
        }
        assert!(t.keys() >= 2);
    }
}
